"""The JND-masked supervised-contrastive loss of JSQA pretraining.

A batch of B view groups is flattened to N = B * K views with their SNR (dB), group and
noise condition; positives and negatives are those of the pair rule
(:class:`jsqa_sb.data.pairs.JNDPairRule`). The loss is SupCon (Khosla et al., 2020, the
``L_out`` form) whose denominator only runs over the positives and negatives of each
anchor.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from jsqa_sb.data.pairs import JNDPairRule, JNDSettingsError


class JNDContrastiveLoss(nn.Module):
    """Supervised-contrastive loss restricted to JND positives and negatives.

    For an anchor i with positives P(i) and negatives N(i)
    (:meth:`jsqa_sb.data.pairs.JNDPairRule.masks`) and A(i) = P(i) | N(i)::

        L_i = -1/|P(i)| * sum_{p in P(i)} log( exp(s_ip / tau) / sum_{a in A(i)} exp(s_ia / tau) )

    where ``s`` is the cosine similarity. The loss is the mean of ``L_i`` over the
    anchors with at least one positive; a batch without any positive pair gives a zero
    loss that still back-propagates (zero gradients, never NaN). Computed in float32
    (float64 stays float64). ``jnd_db``, ``neg_margin_db`` and ``pairs`` make the pair
    rule unless ``pair_rule`` is given.

    Example
    -------
    >>> loss_fn = JNDContrastiveLoss(tau=0.1)
    >>> z = torch.nn.functional.normalize(torch.randn(6, 8), dim=1).requires_grad_()
    >>> snrs = torch.tensor([0.0, 2.0, 10.0, 1.0, 20.0, 4.5])
    >>> groups = torch.tensor([0, 0, 0, 1, 1, 1])
    >>> noises = torch.tensor([5, 5, 5, 9, 9, 9])  # each group its own noise recording
    >>> loss = loss_fn(z, snrs, groups, noises=noises)
    >>> loss.backward()
    >>> bool(torch.isfinite(loss)), loss_fn.neg_margin_db
    (True, 6.0)
    >>> JNDContrastiveLoss(pairs="snr_only")(z, snrs, groups).item() > 0  # 0, 1 and 2 dB
    True
    """

    def __init__(
        self,
        tau: float = 0.1,
        jnd_db: float = 3.0,
        neg_margin_db: Optional[float] = None,
        pairs: str = "same_noise",
        pair_rule: Optional[JNDPairRule] = None,
    ):
        super().__init__()
        self.pair_rule = (
            JNDPairRule(jnd_db, neg_margin_db, pairs) if pair_rule is None else pair_rule
        )
        if tau <= 0:
            raise JNDSettingsError(f"tau must be positive, got {tau}")
        self.tau = float(tau)

    @property
    def jnd_db(self) -> float:
        """The pair rule's JND, dB."""
        return self.pair_rule.jnd_db

    @property
    def neg_margin_db(self) -> float:
        """The pair rule's negative margin, dB."""
        return self.pair_rule.neg_margin_db

    @property
    def pairs(self) -> str:
        """The pair rule's pairing scheme."""
        return self.pair_rule.pairs

    def forward(
        self,
        z: torch.Tensor,
        snrs: torch.Tensor,
        groups: torch.Tensor,
        noises: Optional[torch.Tensor] = None,
        environments: Optional[torch.Tensor] = None,
        families: Optional[torch.Tensor] = None,
        severities: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Scalar loss of (N, D) embeddings (L2-normalised again here) and their (N,) ids.

        ``noises``, ``environments``, ``families``, ``severities``: see
        :meth:`jsqa_sb.data.pairs.JNDPairRule.masks`.
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
        pos, neg = self.pair_rule.masks(snrs, groups, noises, environments, families, severities)

        work_dtype = torch.float64 if z.dtype == torch.float64 else torch.float32
        z = F.normalize(z.to(work_dtype), dim=1)
        logits = z @ z.t() / self.tau

        has_pos = pos.any(dim=1)
        # Rows without a positive take the logsumexp over every column instead, so that
        # they stay finite (an all -inf row would give NaN gradients); they are then
        # weighted by zero. This keeps the loss free of data-dependent indexing.
        denom_mask = pos | neg | ~has_pos[:, None]
        log_denom = torch.logsumexp(logits.masked_fill(~denom_mask, float("-inf")), dim=1)
        log_prob = logits - log_denom[:, None]
        row_loss = -torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
        row_loss = row_loss / pos.sum(dim=1).clamp(min=1).to(work_dtype)
        loss = torch.where(has_pos, row_loss, torch.zeros_like(row_loss)).sum()
        return loss / has_pos.sum().clamp(min=1).to(work_dtype)
