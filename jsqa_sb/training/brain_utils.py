"""What the JSQA Brains share: checkpoint selection rules, learning rates, batch guards."""

from __future__ import annotations

import logging

import torch

from jsqa_sb.errors import JSQAError

logger = logging.getLogger(__name__)


#: Pretraining checkpoint selection rules (``select_by``): how to rank checkpoint meta.
SELECTION_RULES = {
    "cross_auc": ("max_key", "cross_auc"),
    "probe_snr_spearman": ("max_key", "probe_snr_spearman"),
    "loss": ("min_key", "loss"),
    "last": ("max_key", "epoch"),
}


class NoTrainedCheckpointError(JSQAError):
    """A run has no checkpoint to export or evaluate: nothing was trained."""


def record_learning_rate_ratios(optimizer: torch.optim.Optimizer) -> None:
    """Store each group's learning rate relative to the default (in the state dict: resumable)."""
    base = optimizer.defaults["lr"]
    for group in optimizer.param_groups:
        group.setdefault("lr_ratio", group["lr"] / base if base else 1.0)


def anneal_learning_rates(optimizer: torch.optim.Optimizer, new_lr: float) -> None:
    """Set every group's learning rate to ``new_lr`` times its recorded ratio.

    Unlike SpeechBrain's ``update_learning_rate``, it keeps an encoder's own smaller one.

    Example
    -------
    >>> a, b = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    >>> opt = torch.optim.SGD([{"params": a.parameters()},
    ...                        {"params": b.parameters(), "lr": 0.3}], lr=1.0)
    >>> record_learning_rate_ratios(opt)
    >>> anneal_learning_rates(opt, 0.5)
    >>> [round(g["lr"], 6) for g in opt.param_groups]
    [0.5, 0.15]
    """
    record_learning_rate_ratios(optimizer)  # the groups added since, if any
    for group in optimizer.param_groups:
        group["lr"] = new_lr * group["lr_ratio"]


class NonFiniteBatchMixin:
    """Skip batches whose inputs hold NaN or Inf (a corrupt file that slipped through).

    The batch is named in a warning and counted in ``skipped_batches``; its loss is NaN,
    which SpeechBrain's running average ignores.
    """

    skipped_batches = 0

    def _is_bad(self, batch) -> bool:
        if hasattr(batch, "has_nonfinite"):  # JNDBatch
            bad = batch.has_nonfinite()
        else:  # SpeechBrain PaddedBatch with a ``sig`` entry
            rows = ~torch.isfinite(batch.sig.data).all(dim=1)
            bad = [batch.id[i] for i in torch.nonzero(rows).flatten().tolist()]
        if bad:
            self.skipped_batches += 1
            logger.warning(
                "Skipping a batch with non-finite audio (item(s) %s); %d batch(es) skipped so far",
                ", ".join(map(str, bad)),
                self.skipped_batches,
            )
        return bool(bad)

    def fit_batch(self, batch):
        """Train on one batch unless its inputs are not finite."""
        if self._is_bad(batch):
            return torch.tensor(float("nan"))
        return super().fit_batch(batch)

    def evaluate_batch(self, batch, stage):
        """Evaluate one batch unless its inputs are not finite."""
        if self._is_bad(batch):
            return torch.tensor(float("nan"))
        return super().evaluate_batch(batch, stage)


class GlooDDPMixin:
    """DDP on the CPU (``--distributed_backend=gloo``) without SyncBatchNorm.

    SpeechBrain makes every BatchNorm a SyncBatchNorm under DDP, which runs on GPUs only;
    with gloo each process keeps its own BatchNorm statistics.
    """

    def _wrap_distributed(self):
        if not (self.distributed_launch and self.distributed_backend == "gloo"):
            return super()._wrap_distributed()
        for name, module in self.modules.items():
            if any(p.requires_grad for p in module.parameters()):
                self.modules[name] = torch.nn.parallel.DistributedDataParallel(
                    module, device_ids=None, find_unused_parameters=self.find_unused_parameters
                )
