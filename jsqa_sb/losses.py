"""The JND-masked supervised-contrastive loss of JSQA pretraining.

A batch holds B *view groups* (one clean excerpt and one noise excerpt mixed at K
SNRs), flattened to N = B * K views with their SNR (dB), group index and noise
condition. Pairs of views are labelled from their SNR difference ``d``:

* **positive**: ``d < jnd_db`` (a listener cannot tell them apart) and the two views
  are *comparable* under the pairing scheme ``pairs`` (below);
* **negative**: ``d >= neg_margin_db`` (default ``2 * jnd_db``), whatever the content,
  so the same utterance and noise at a distant SNR is a *hard* negative;
* **ignored**: everything else (a view with itself, comparable pairs with
  ``jnd_db <= d < neg_margin_db``, other pairs with ``d < neg_margin_db``).

Pairing schemes (:data:`PAIR_SCHEMES`), i.e. which close pairs count as positives:

* ``within_group``: views of the same group only (same utterance and noise excerpt),
  the first version. The loss can then be lowered by recognising the utterance:
  almost every negative of an anchor is another utterance.
* ``same_noise``: views mixed with the same noise recording, whatever the utterance.
* ``same_environment``: views whose noise comes from the same environment (CHiME-3's
  BUS, CAF, PED, STR), whatever the utterance and recording.
* ``snr_only``: every pair of views, by SNR alone.

The last three make the loss blind to the content: positives and negatives both span
utterances, so a code of the utterance no longer separates them.

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

from jsqa_sb.jnd_mixing import JNDSettingsError

#: The pairing schemes of :class:`JNDContrastiveLoss` (see the module docstring).
PAIR_SCHEMES = ("within_group", "same_noise", "same_environment", "snr_only")


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
        (N,) comparability key of each view: only views with the same key can be
        positives (the group index for ``within_group``, the noise recording id for
        ``same_noise``, ...; see :func:`pair_keys`).
    jnd_db : float
        Just-noticeable SNR difference: comparable pairs closer than this are positives.
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


def pair_keys(
    scheme: str,
    groups: torch.Tensor,
    noises: Optional[torch.Tensor] = None,
    environments: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The (N,) comparability key of each view under a pairing scheme.

    Example
    -------
    >>> groups, noises = torch.tensor([0, 0, 1, 1]), torch.tensor([7, 7, 7, 7])
    >>> pair_keys("same_noise", groups, noises).tolist()
    [7, 7, 7, 7]
    >>> pair_keys("snr_only", groups).tolist()
    [0, 0, 0, 0]
    """
    if scheme == "within_group":
        return groups
    if scheme == "snr_only":
        return torch.zeros_like(groups)
    keys = {"same_noise": noises, "same_environment": environments}.get(scheme)
    if scheme not in PAIR_SCHEMES:
        raise ValueError(f"unknown pairs scheme {scheme!r} (known: {', '.join(PAIR_SCHEMES)})")
    if keys is None:
        raise ValueError(f"the {scheme!r} pairs need the noise condition of every view")
    return keys


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
    pairs : str
        The pairing scheme, one of :data:`PAIR_SCHEMES`: which close pairs are
        positives. The default, ``same_noise``, is blind to the content.

    Example
    -------
    >>> loss_fn = JNDContrastiveLoss(tau=0.1)
    >>> z = torch.nn.functional.normalize(torch.randn(6, 8), dim=1).requires_grad_()
    >>> snrs = torch.tensor([0.0, 2.0, 10.0, 1.0, 20.0, 4.5])
    >>> groups = torch.tensor([0, 0, 0, 1, 1, 1])
    >>> noises = torch.tensor([5, 5, 5, 9, 9, 9])  # each group its own noise recording
    >>> loss = loss_fn(z, snrs, groups, noises=noises)
    >>> loss.backward()
    >>> bool(torch.isfinite(loss)), loss_fn.last_num_anchors
    (True, 2)
    >>> _ = JNDContrastiveLoss(pairs="snr_only")(z, snrs, groups)  # 0, 1 and 2 dB: 4 anchors
    >>> _.item() > 0, JNDContrastiveLoss(pairs="snr_only").pairs
    (True, 'snr_only')
    """

    def __init__(
        self,
        tau: float = 0.1,
        jnd_db: float = 3.0,
        neg_margin_db: Optional[float] = None,
        pairs: str = "same_noise",
    ):
        super().__init__()
        if pairs not in PAIR_SCHEMES:
            raise JNDSettingsError(
                f"unknown pairs scheme {pairs!r} (known: {', '.join(PAIR_SCHEMES)})"
            )
        self.pairs = pairs
        if tau <= 0:
            raise JNDSettingsError(f"tau must be positive, got {tau}")
        neg_margin = 2.0 * jnd_db if neg_margin_db is None else float(neg_margin_db)
        if neg_margin < jnd_db:
            raise JNDSettingsError(
                f"neg_margin_db ({neg_margin}) must be at least jnd_db ({jnd_db})"
            )
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
        noises: Optional[torch.Tensor] = None,
        environments: Optional[torch.Tensor] = None,
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
        noises, environments : torch.Tensor, optional
            (N,) noise recording and environment id of each view; needed by the
            ``same_noise`` and ``same_environment`` schemes.

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
        keys = pair_keys(self.pairs, groups, noises, environments)
        pos, neg = jnd_pair_masks(snrs, keys, self.jnd_db, self.neg_margin_db)

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
