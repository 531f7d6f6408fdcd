"""The JND-masked supervised-contrastive loss of JSQA pretraining.

A batch holds B *view groups* (one clean excerpt and one noise excerpt mixed at K
SNRs), flattened to N = B * K views with their SNR (dB) and group index. Pairs of
views are labelled from their SNR difference ``d`` (see ``DESIGN.md`` section 2):

* **positive**: same group and ``d < jnd_db`` (a listener cannot tell them apart);
* **negative**: ``d >= neg_margin_db`` (default ``2 * jnd_db``), whatever the groups,
  so the same utterance and noise at a distant SNR is a *hard* negative;
* **ignored**: everything else (a view with itself, same-group pairs with
  ``jnd_db <= d < neg_margin_db``, different-group pairs with ``d < neg_margin_db``).

The loss is SupCon (Khosla et al., 2020, the ``L_out`` form) whose denominator only
runs over the positives and negatives of each anchor.

Authors
 * JSQA contributors 2026
"""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn


def jnd_pair_masks(
    snrs: torch.Tensor,
    groups: torch.Tensor,
    jnd_db: float = 3.0,
    neg_margin_db: Optional[float] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and negative pair masks of a batch of views.

    Arguments
    ---------
    snrs : torch.Tensor
        (N,) SNR of each view, dB.
    groups : torch.Tensor
        (N,) group index of each view (same index: same utterance and noise excerpt).
    jnd_db : float
        Just-noticeable SNR difference: same-group pairs closer than this are positives.
    neg_margin_db : float, optional
        Pairs at least this far apart (any groups) are negatives; ``None``: ``2 * jnd_db``.
        Must be at least ``jnd_db``.

    Returns
    -------
    pos : torch.Tensor
        (N, N) bool, ``pos[i, j]``: j is a positive of anchor i. Symmetric, false diagonal.
    neg : torch.Tensor
        (N, N) bool, ``neg[i, j]``: j is a negative of anchor i. Symmetric, false diagonal.
        Pairs in neither mask are ignored.

    Example
    -------
    >>> pos, neg = jnd_pair_masks(torch.tensor([0.0, 1.0, 10.0]), torch.tensor([0, 0, 0]))
    >>> pos.int().tolist()
    [[0, 1, 0], [1, 0, 0], [0, 0, 0]]
    >>> neg.int().tolist()
    [[0, 0, 1], [0, 0, 1], [1, 1, 0]]
    """
    neg_margin_db = 2.0 * jnd_db if neg_margin_db is None else float(neg_margin_db)
    if jnd_db < 0:
        raise ValueError(f"jnd_db must be non-negative, got {jnd_db}")
    if neg_margin_db < jnd_db:
        raise ValueError(
            f"neg_margin_db ({neg_margin_db}) must be at least jnd_db ({jnd_db}): "
            "otherwise a pair could be both positive and negative"
        )
    snrs = torch.as_tensor(snrs)
    groups = torch.as_tensor(groups, device=snrs.device)
    if snrs.dim() != 1 or groups.shape != snrs.shape:
        raise ValueError(
            f"snrs and groups must both be 1-D of the same length, got shapes "
            f"{tuple(snrs.shape)} and {tuple(groups.shape)}"
        )
    snrs = snrs.to(torch.float64)  # exact differences for SNRs on a grid (e.g. 0 and 3 dB)
    diff = (snrs[:, None] - snrs[None, :]).abs()
    same_group = groups[:, None] == groups[None, :]
    not_self = ~torch.eye(snrs.numel(), dtype=torch.bool, device=snrs.device)
    pos = same_group & (diff < jnd_db) & not_self
    neg = (diff >= neg_margin_db) & not_self
    return pos, neg


class JNDContrastiveLoss(nn.Module):
    """Supervised-contrastive loss restricted to JND positives and negatives.

    For an anchor i with positives P(i) and negatives N(i) (:func:`jnd_pair_masks`)
    and A(i) = P(i) | N(i)::

        L_i = -1/|P(i)| * sum_{p in P(i)} log( exp(s_ip / tau) / sum_{a in A(i)} exp(s_ia / tau) )

    where ``s`` is the cosine similarity. The loss is the mean of ``L_i`` over the
    anchors that have at least one positive; anchors without positives are left out,
    and a batch without any positive pair gives a zero loss that still back-propagates
    (zero gradients, never NaN). An anchor with positives but no negatives has only its
    positives in the denominator.

    The computation is done in float32 (float64 inputs stay float64) whatever the
    dtype of ``z``, with a masked ``logsumexp``, and without any host-device
    synchronisation.

    Arguments
    ---------
    tau : float
        Temperature.
    jnd_db : float
        Just-noticeable SNR difference, dB.
    neg_margin_db : float, optional
        Negative margin, dB; ``None``: ``2 * jnd_db``.

    Example
    -------
    >>> loss_fn = JNDContrastiveLoss(tau=0.1)
    >>> z = torch.nn.functional.normalize(torch.randn(6, 8), dim=1).requires_grad_()
    >>> snrs = torch.tensor([0.0, 2.0, 10.0, 1.0, 20.0, 4.5])
    >>> groups = torch.tensor([0, 0, 0, 1, 1, 1])
    >>> loss = loss_fn(z, snrs, groups)
    >>> loss.backward()
    >>> bool(torch.isfinite(loss)), loss_fn.last_num_anchors
    (True, 2)
    """

    def __init__(
        self, tau: float = 0.1, jnd_db: float = 3.0, neg_margin_db: Optional[float] = None
    ):
        super().__init__()
        if tau <= 0:
            raise ValueError(f"tau must be positive, got {tau}")
        neg_margin = 2.0 * jnd_db if neg_margin_db is None else float(neg_margin_db)
        if neg_margin < jnd_db:
            raise ValueError(f"neg_margin_db ({neg_margin}) must be at least jnd_db ({jnd_db})")
        self.tau = float(tau)
        self.jnd_db = float(jnd_db)
        self.neg_margin_db = neg_margin
        self.last_stats: dict[str, torch.Tensor] = {}

    @property
    def last_num_anchors(self) -> int:
        """Number of anchors (views with at least one positive) in the last batch."""
        if "num_anchors" not in self.last_stats:
            return 0
        return int(self.last_stats["num_anchors"])

    def forward(
        self,
        z: torch.Tensor,
        snrs: torch.Tensor,
        groups: torch.Tensor,
        return_stats: bool = False,
    ) -> Union[torch.Tensor, tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        """Compute the loss of a batch of embeddings.

        Arguments
        ---------
        z : torch.Tensor
            (N, D) embeddings (L2-normalised here again, defensively).
        snrs : torch.Tensor
            (N,) SNR of each view, dB.
        groups : torch.Tensor
            (N,) group index of each view.
        return_stats : bool
            Also return a dict of detached tensors: ``num_anchors``, ``num_pos_pairs``,
            ``num_neg_pairs`` (ordered pairs), ``pos_sim`` and ``neg_sim`` (mean cosine
            similarity of positive and negative pairs, NaN when there are none).

        Returns
        -------
        loss : torch.Tensor
            Scalar loss (float32, or float64 for float64 inputs).
        stats : dict
            Only with ``return_stats=True``; also kept in ``self.last_stats``.
        """
        if z.dim() != 2:
            raise ValueError(f"z must be (N, D), got shape {tuple(z.shape)}")
        n = z.shape[0]
        snrs = torch.as_tensor(snrs, device=z.device)
        groups = torch.as_tensor(groups, device=z.device)
        if snrs.shape != (n,) or groups.shape != (n,):
            raise ValueError(
                f"snrs and groups must be ({n},) to match z, got {tuple(snrs.shape)} "
                f"and {tuple(groups.shape)}"
            )
        pos, neg = jnd_pair_masks(snrs, groups, self.jnd_db, self.neg_margin_db)

        work_dtype = torch.float64 if z.dtype == torch.float64 else torch.float32
        z = F.normalize(z.to(work_dtype), dim=1)
        sim = z @ z.t()
        logits = sim / self.tau

        has_pos = pos.any(dim=1)
        # Rows without a positive take the logsumexp over every column instead, so that
        # they stay finite (an all -inf row would give NaN gradients); they are then
        # weighted by zero. This keeps the loss free of data-dependent indexing.
        denom_mask = pos | neg | ~has_pos[:, None]
        log_denom = torch.logsumexp(logits.masked_fill(~denom_mask, float("-inf")), dim=1)
        log_prob = logits - log_denom[:, None]
        num_pos = pos.sum(dim=1)
        row_loss = -torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
        row_loss = row_loss / num_pos.clamp(min=1).to(work_dtype)
        num_anchors = has_pos.sum()
        loss = torch.where(has_pos, row_loss, torch.zeros_like(row_loss)).sum()
        loss = loss / num_anchors.clamp(min=1).to(work_dtype)

        with torch.no_grad():
            sim_d = sim.detach()
            num_neg = neg.sum()
            total_pos = num_pos.sum()
            nan = torch.full((), float("nan"), dtype=work_dtype, device=z.device)
            stats = {
                "num_anchors": num_anchors,
                "num_pos_pairs": total_pos,
                "num_neg_pairs": num_neg,
                "pos_sim": torch.where(
                    total_pos > 0, (sim_d * pos).sum() / total_pos.clamp(min=1), nan
                ),
                "neg_sim": torch.where(
                    num_neg > 0, (sim_d * neg).sum() / num_neg.clamp(min=1), nan
                ),
            }
        self.last_stats = stats
        if return_stats:
            return loss, stats
        return loss
