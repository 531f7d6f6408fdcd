"""SpeechBrain ``Brain`` subclasses of the JSQA recipe.

``JNDContrastiveBrain`` pretrains the quality encoder on JND view groups and keeps the
best checkpoint of every selection rule; ``MOSBrain`` fine-tunes (or trains from
scratch) an encoder and a MOS head on NISQA and writes the test reports.
"""

from __future__ import annotations

import json
import logging
from itertools import chain
from pathlib import Path
from typing import Optional

import speechbrain as sb
import torch
from speechbrain.utils.distributed import if_main_process

from jsqa_sb.data.pairs import JNDSettingsError
from jsqa_sb.data.prepare_utils import to_json, write_json
from jsqa_sb.evaluation.jnd_metrics import JNDMetricTracker, linear_probe_spearman
from jsqa_sb.training.brain_utils import (
    SELECTION_RULES,
    GlooDDPMixin,
    NonFiniteBatchMixin,
    NoTrainedCheckpointError,
    anneal_learning_rates,
    record_learning_rate_ratios,
)

logger = logging.getLogger(__name__)


class JNDContrastiveBrain(GlooDDPMixin, NonFiniteBatchMixin, sb.Brain):
    """Contrastive JND pretraining of a quality encoder, on JND batches (``JNDBatch``).

    Modules: ``encoder`` (``(wavs, wav_lens) -> (B, D)``), ``projector``. Hparams:
    ``loss`` (whose pair rule the validation metrics share), ``select_by`` (a key of
    :data:`SELECTION_RULES`; default ``cross_auc``), ``train_view_maker``,
    ``epoch_counter``, ``train_logger``; optional ``lr_scheduler``, ``probe_data``
    (a callable giving the linear probe's fixed training mixtures), ``degrader`` (applies
    the views' extra degradations on the device).
    """

    probe_loader = None
    _valid_loader = None
    _initial_validation = False

    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs):
        """SpeechBrain's loader; the validation one is kept for the epoch-0 validation."""
        loader = super().make_dataloader(dataset, stage, ckpt_prefix, **loader_kwargs)
        if stage == sb.Stage.VALID:
            self._valid_loader = loader
        return loader

    def fit_batch(self, batch):
        """Train on the batch, its views made and degraded on the device."""
        return super().fit_batch(self._on_device(batch))

    def evaluate_batch(self, batch, stage):
        """Evaluate the batch, its views made and degraded on the device."""
        return super().evaluate_batch(self._on_device(batch), stage)

    def _on_device(self, batch):
        # Made before the non-finite check, which so also skips degraded views that are
        # not finite or all zero.
        return batch.to(self.device).degrade(getattr(self.hparams, "degrader", None))

    def compute_forward(self, batch, stage):
        """Embed every view (already on the device: :meth:`_on_device`); project for the loss."""
        embeddings = self.modules.encoder(batch.wavs, batch.wav_lens)
        projections = self.modules.projector(embeddings)
        return embeddings, projections

    def compute_objectives(self, predictions, batch, stage):
        """JND-masked contrastive loss; collect validation embeddings."""
        embeddings, projections = predictions
        conditions = {"noises": batch.noises, "environments": batch.environments}
        degradations = {"families": batch.families, "severities": batch.severities}
        loss = self.hparams.loss(
            projections.float(), batch.snrs, batch.groups, **conditions, **degradations
        )
        if stage != sb.Stage.TRAIN:
            self.tracker.append(embeddings.float(), batch.snrs, batch.groups, **degradations)
        return loss

    def on_stage_start(self, stage, epoch=None):
        """Select the epoch's mixtures; reset the validation metrics."""
        if stage == sb.Stage.TRAIN and epoch is not None:
            self.hparams.train_view_maker.set_epoch(epoch)
        if stage != sb.Stage.TRAIN:
            self.tracker = JNDMetricTracker(pair_rule=self.hparams.loss.pair_rule)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log the metrics; keep the best checkpoint of every selection rule."""
        if stage == sb.Stage.TRAIN:
            self.train_stats = {"loss": stage_loss}
            return
        stats = {"loss": stage_loss, **self.tracker.summarize(), **self._probe_stats()}
        stats = {k: round(float(v), 4) for k, v in stats.items()}
        if self._initial_validation:
            # The randomly initialised encoder: the baseline of every curve; not saved.
            self.hparams.train_logger.log_stats({"Epoch": 0, "init": "random"}, valid_stats=stats)
            self.initial_stats = stats
        elif stage == sb.Stage.VALID:
            _anneal_and_log(self, epoch, {"lr": self.optimizer.param_groups[0]["lr"]}, stats)
            # The random encoder's metrics travel in every checkpoint: a resumed run
            # does not validate it again, and its summary still needs them.
            initial = getattr(self, "initial_stats", None)
            # The best checkpoint of every rule is kept (at most four, the last included):
            # select_by can be changed after training; a rerun exports the new choice.
            rules = SELECTION_RULES.values()
            self.checkpointer.save_and_keep_only(
                meta={**stats, "epoch": epoch, "random_init_valid": initial},
                num_to_keep=1,
                max_keys=[key for kind, key in rules if kind == "max_key"],
                min_keys=[key for kind, key in rules if kind == "min_key"],
            )
        else:
            self.hparams.train_logger.log_stats(
                {"Epoch loaded": self.hparams.epoch_counter.current}, test_stats=stats
            )
        self.last_stats = stats

    def on_fit_start(self):
        """Check the selection rule; set up the probe; validate the random encoder as epoch 0.

        A resumed run takes the epoch-0 figures from its checkpoints instead.
        """
        self._selection_key()
        valid_loader = self._valid_loader  # made by fit() just before this hook
        super().on_fit_start()
        if getattr(self.hparams, "probe_data", None) is not None:
            options = getattr(self.hparams, "valid_dataloader_opts", {})
            probe = self.hparams.probe_data()
            self.probe_loader = self.make_dataloader(
                probe, sb.Stage.VALID, ckpt_prefix=None, **options
            )
        latest = self.checkpointer.find_checkpoint() if self.checkpointer else None
        if latest is not None:
            self.initial_stats = latest.meta.get("random_init_valid")
        elif valid_loader is not None:
            self._initial_validation = True
            try:
                self.evaluate(valid_loader)
            finally:
                self._initial_validation = False

    def _selection_key(self) -> tuple[str, str]:
        """How the encoder is chosen (``select_by``): ("max_key" or "min_key", meta key)."""
        rule = getattr(self.hparams, "select_by", "cross_auc")
        if rule not in SELECTION_RULES:
            known = ", ".join(SELECTION_RULES)
            raise JNDSettingsError(f"unknown select_by {rule!r} (known: {known})")
        return SELECTION_RULES[rule]

    def _probe_stats(self) -> dict:
        """Spearman correlations of ridge probes fit on training mixtures, on the validation ones.

        ``probe_snr_spearman`` reads the SNR (of the views with noise only, when there are
        degradations); ``probe_<family>_spearman`` each family's severity.
        """
        names = self.tracker.family_names()
        keys = ["probe_snr_spearman", *(f"probe_{name}_spearman" for name in names)]
        stats, train = dict.fromkeys(keys, float("nan")), []
        if self.probe_loader is not None and self.tracker.embeddings:
            with torch.no_grad():
                for batch in self.probe_loader:
                    batch = self._on_device(batch)
                    if batch.has_nonfinite():
                        continue
                    with self.evaluation_ctx:
                        emb = self.modules.encoder(batch.wavs, batch.wav_lens)
                    train.append(_probe_rows(emb, batch.snrs, batch.families, batch.severities))
        if not train:
            return stats
        train = torch.cat(train)
        valid_emb, valid_snr = self.tracker.tensors()[:2]
        degradations = self.tracker.degradations  # the families and severities, if any
        sides = torch.cat(degradations).T if degradations else (None, None)
        valid = _probe_rows(valid_emb, valid_snr, *sides)
        for key, family in zip(keys, [-1, *range(len(names))]):
            target = 1 if family == -1 else 2  # the SNR, or the family's severity
            tr, va = (rows[rows[:, 0] == family] for rows in (train, valid))
            if len(tr) > 0 and len(va) > 1:
                stats[key] = linear_probe_spearman(
                    tr[:, 3:], tr[:, target], va[:, 3:], va[:, target]
                )
        return stats

    def finish(self, test_sets=None, hparams_file=None) -> dict:
        """After :meth:`fit`: write ``encoder_ckpt`` and ``summary_file`` (hparams)."""
        summary = self.export_encoder(self.hparams.encoder_ckpt, self.hparams.summary_file)
        logger.info("Pretraining done: %s", summary)
        return summary

    def export_encoder(self, path, summary_path=None) -> dict:
        """Save the best checkpoint's encoder state dict and return (and write) its summary.

        ``summary_path``: JSON of the best epoch, its validation metrics and the random
        initialisation's.
        """
        kind, key = self._selection_key()
        ckpt = self.checkpointer.recover_if_possible(**{kind: key})
        if ckpt is None:
            raise NoTrainedCheckpointError(
                f"no checkpoint in {self.checkpointer.checkpoints_dir}: the encoder was not "
                "trained (number_of_epochs is 0?); no encoder.ckpt written"
            )
        summary = {
            "best_epoch": ckpt.meta.get("epoch"),
            "best_valid": {
                k: v
                for k, v in ckpt.meta.items()
                if k not in ("epoch", "unixtime", "random_init_valid")
            },
            "random_init_valid": ckpt.meta.get("random_init_valid")
            or getattr(self, "initial_stats", None),
            "selection": f"{kind.split('_')[0]} {key}",
            "skipped_batches": self.skipped_batches,
        }
        if if_main_process():
            encoder = self.hparams.encoder  # the bare module, also under DDP
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            torch.save(encoder.state_dict(), path)
            if summary_path is not None:
                write_json(Path(summary_path), to_json(summary))  # NaN as null
        return summary


class MOSBrain(GlooDDPMixin, NonFiniteBatchMixin, sb.Brain):
    """MOS (and NISQA dimensions) prediction: encoder + MOS head, MSE over the labels present.

    Modules: ``encoder``, ``head``. Hparams: ``dims`` (the head's outputs, ``mos``
    first), ``epoch_counter``, ``train_logger``; optional ``lr_encoder`` (the encoder's
    learning rate), ``freeze_encoder`` (train the head only: a linear probe),
    ``lr_scheduler``. Batches: ``PaddedBatch`` es with ``sig``, ``targets``, ``con``, ``db``.
    """

    def init_optimizers(self):
        """One optimiser, with the encoder in its own parameter group (or frozen)."""
        if self.opt_class is None:
            return
        encoder, head = self.hparams.encoder, self.hparams.head
        groups = [{"params": list(head.parameters())}]
        if getattr(self.hparams, "freeze_encoder", False):
            encoder.requires_grad_(False)
        else:
            group = {"params": list(encoder.parameters())}
            if getattr(self.hparams, "lr_encoder", None) is not None:
                group["lr"] = self.hparams.lr_encoder
            groups.append(group)
        self.optimizer = self.opt_class(groups)
        record_learning_rate_ratios(self.optimizer)
        self.optimizers_dict = {"opt_class": self.optimizer}
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("optimizer", self.optimizer)

    def compute_forward(self, batch, stage):
        """Predict every dimension of every file, in 1..5."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        if getattr(self.hparams, "freeze_encoder", False):
            self.modules.encoder.eval()
        return self.modules.head(self.modules.encoder(wavs, wav_lens)).float()

    def compute_objectives(self, predictions, batch, stage):
        """MSE over the labels present; collect predictions outside training."""
        targets = batch.targets.data.to(self.device)  # (B, dims); stacked, no padding
        present = torch.isfinite(targets)
        if not present.any():
            loss = predictions.sum() * 0.0
        else:
            loss = ((predictions - torch.nan_to_num(targets)) ** 2)[present].mean()
        if stage != sb.Stage.TRAIN:
            files = list(getattr(batch, "file", batch.id))  # NISQA's file id, not <db>/<file>
            labels = (list(batch.con), list(batch.db), targets.cpu(), predictions.detach().cpu())
            self.collected.append((files, *labels))
        return loss

    def on_stage_start(self, stage, epoch=None):
        """Reset the collected predictions."""
        self.collected = []

    def predictions_frame(self):
        """The collected predictions as a DataFrame: file, con, db, true_<d>, pred_<d>."""
        import pandas as pd

        if not self.collected:
            return pd.DataFrame()
        files, cons, dbs, targets, preds = zip(*self.collected)
        targets, preds = (torch.cat(t).double().numpy() for t in (targets, preds))
        columns = {"file": [*chain(*files)], "con": [*chain(*cons)], "db": [*chain(*dbs)]}
        for j, dim in enumerate(self.hparams.dims):
            columns.update({f"true_{dim}": targets[:, j], f"pred_{dim}": preds[:, j]})
        return pd.DataFrame(columns)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log; keep the checkpoint with the best validation PCC of the MOS."""
        if stage == sb.Stage.TRAIN:
            self.train_stats = {"loss": stage_loss}
            return
        if stage == sb.Stage.VALID:
            from jsqa_sb.evaluation.mos_metrics import pcc, rmse, srcc

            frame = self.predictions_frame()
            true, pred = frame["true_mos"].to_numpy(), frame["pred_mos"].to_numpy()
            metrics = {"pcc": pcc, "srcc": srcc, "rmse": rmse}
            stats = {"loss": stage_loss, **{k: m(true, pred) for k, m in metrics.items()}}
            stats = {k: round(float(v), 4) for k, v in stats.items()}
            meta = {"lr": self.optimizer.param_groups[0]["lr"]}
            if len(self.optimizer.param_groups) > 1:
                meta["lr_encoder"] = self.optimizer.param_groups[1]["lr"]
            _anneal_and_log(self, epoch, meta, stats)
            self.checkpointer.save_and_keep_only(
                meta={**stats, "epoch": epoch}, max_keys=["pcc"], num_to_keep=1
            )
            self.last_stats = stats

    def finish(self, test_sets: dict, hparams_file: Optional[str] = None) -> None:
        """After :meth:`fit`: test reports of the last epoch (``last_epoch/``), then the best.

        The best model is the one of the highest validation PCC; the files are those of
        :func:`jsqa_sb.evaluation.reports.write_test_reports`.
        """
        from jsqa_sb.data.prepare_nisqa import CONDITIONS_FILE
        from jsqa_sb.evaluation.reports import write_test_reports

        hp = self.hparams
        if self.checkpointer.find_checkpoint() is None:
            raise NoTrainedCheckpointError(
                f"no checkpoint in {hp.save_folder}: nothing was trained "
                f"(number_of_epochs={hp.number_of_epochs}); no test report written"
            )
        conditions = Path(hp.manifest_folder) / CONDITIONS_FILE  # NISQA_corpus_con.csv
        condition_truth = json.loads(conditions.read_text()) if conditions.is_file() else None
        plain = (str, int, float, bool, list)
        config = {k: v for k, v in vars(hp).items() if isinstance(v, plain)}
        config["yaml"] = hparams_file
        output = Path(hp.output_folder)
        for folder, key in ((output / "last_epoch", None), (output, "pcc")):
            predictions = {}
            for db, test in test_sets.items():
                self.evaluate(test, max_key=key, test_loader_kwargs=dict(hp.valid_dataloader_opts))
                predictions[db] = self.predictions_frame().drop(columns="db")
            ckpt = self.checkpointer.find_checkpoint(max_key=key)
            if if_main_process():
                path = str(ckpt.path) if ckpt else None
                write_test_reports(folder, predictions, config, path, condition_truth)


def _anneal_and_log(brain, epoch, meta: dict, stats: dict) -> None:
    """Anneal the learning rates on the validation loss (with an ``lr_scheduler``); log."""
    if getattr(brain.hparams, "lr_scheduler", None) is not None:
        _, new_lr = brain.hparams.lr_scheduler(stats["loss"])
        anneal_learning_rates(brain.optimizer, new_lr)
    train_stats = getattr(brain, "train_stats", None)
    brain.hparams.train_logger.log_stats(
        {"Epoch": epoch, **meta}, train_stats=train_stats, valid_stats=stats
    )


def _probe_rows(emb, snrs, families=None, severities=None) -> torch.Tensor:
    """(N, 3 + D) float64 rows: family (-1: none), SNR, severity, embedding."""
    n = emb.shape[0]
    families = torch.full((n,), -1.0) if families is None else families
    severities = torch.zeros(n) if severities is None else severities
    columns = [c.reshape(n, 1) for c in (families, snrs, severities)] + [emb]
    return torch.cat([c.detach().to("cpu", torch.float64) for c in columns], dim=1)
