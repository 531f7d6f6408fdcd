#!/usr/bin/env python3
"""Recipe for JSQA: JND contrastive pretraining, then MOS fine-tuning on NISQA.

The YAML file says which stage runs (``stage: pretrain`` or ``stage: finetune``):

    python train.py hparams/pretrain.yaml --librispeech_folder=/d --chime3_folder=/d \
        --output_folder=results/pretrain
    python train.py hparams/finetune.yaml --nisqa_folder=/d \
        --pretrained_encoder=results/pretrain/encoder.ckpt --output_folder=results/finetune
    python train.py hparams/scratch.yaml --nisqa_folder=/d --output_folder=results/scratch

Data preparation runs first (on the main process, skipped when already done). The
pretraining stage writes the best encoder to ``<output_folder>/encoder.ckpt`` with
``pretrain_summary.json``; the fine-tuning stage evaluates every test database and
writes ``results.json``, ``predictions_<DB>.csv``, ``report.md`` and
``scatter_<DB>.png`` (best checkpoint by validation PCC; the last epoch's in
``last_epoch/``).

Authors
 * JSQA contributors 2026
"""

import json
import sys
from pathlib import Path

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import run_on_main

from jsqa_sb.brains import JNDContrastiveBrain, MOSBrain, NoTrainedCheckpointError
from jsqa_sb.errors import JSQAError
from jsqa_sb.jnd_data import make_jnd_dataset
from jsqa_sb.models import check_encoder_checkpoint
from jsqa_sb.mos_data import make_mos_dataset
from jsqa_sb.prepare_nisqa import CONDITIONS_FILE, prepare_nisqa
from jsqa_sb.prepare_utils import DataPreparationError


def dataio_prep(hparams):
    """Build the training, validation and probe datasets of view groups.

    Their view makers are the YAML's: training groups are mixed on the fly (new
    mixtures every epoch, reproducible); validation groups are fixed in their manifest;
    the probe set is a fixed slice of training mixtures for the linear SNR probe.
    """
    folder, replacements = hparams["manifest_folder"], hparams["data_folders"]
    train = make_jnd_dataset(
        f"{folder}/jnd_train.json", replacements, hparams["train_view_maker"], fixed=False
    )
    valid = make_jnd_dataset(
        f"{folder}/jnd_valid.json", replacements, hparams["valid_view_maker"], fixed=True
    )
    probe = make_jnd_dataset(
        f"{folder}/jnd_train.json", replacements, hparams["probe_view_maker"], fixed=False
    )
    return train, valid, probe.filtered_sorted(select_n=hparams["probe_groups"])


def pretrain(hparams, run_opts):
    """Stage 1: JND contrastive pretraining."""
    run_on_main(hparams["prepare_data"])  # the JND manifests, skipped when up to date
    train, valid, probe = dataio_prep(hparams)
    brain = JNDContrastiveBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.set_probe_data(
        brain.make_dataloader(
            probe, sb.Stage.VALID, ckpt_prefix=None, **hparams["valid_dataloader_opts"]
        )
    )
    brain.validate_initial(valid, hparams["valid_dataloader_opts"])
    brain.fit(
        brain.hparams.epoch_counter,
        train,
        valid,
        train_loader_kwargs=hparams["train_dataloader_opts"],
        valid_loader_kwargs=hparams["valid_dataloader_opts"],
    )
    summary = brain.export_encoder(hparams["encoder_ckpt"], hparams["summary_file"])
    sb.utils.logger.get_logger(__name__).info("Pretraining done: %s", summary)


def prepare_mos_data(hparams):
    """Write the NISQA manifests (main process only); return the databases per split."""
    run_on_main(
        prepare_nisqa,
        kwargs={
            "nisqa_folder": hparams["nisqa_folder"],
            "save_folder": hparams["manifest_folder"],
            "train_dbs": hparams["train_dbs"],
            "valid_dbs": hparams["valid_dbs"],
            "test_dbs": hparams["test_dbs"],
            "strict": hparams["strict_preparation"],
        },
    )
    with open(Path(hparams["manifest_folder"]) / "nisqa_splits.json") as f:
        return json.load(f)


def mos_dataio_prep(hparams, splits):
    """Training and validation datasets, and one test dataset per test database."""
    folder = Path(hparams["manifest_folder"])
    replacements = {"nisqa_folder": hparams["nisqa_folder"]}

    def dataset(dbs, split, keep=None):
        if not dbs:
            raise DataPreparationError(f"no NISQA {split} database found (see {folder})")
        paths = [folder / f"{db}.json" for db in dbs]
        return make_mos_dataset(
            paths, replacements, hparams["dims"], hparams["sample_rate"], keep=keep
        )

    keep = None  # a subset of the training files (label-budget experiments)
    if hparams.get("train_files"):
        with open(hparams["train_files"], encoding="utf-8") as f:
            keep = json.load(f)
    train = dataset(splits["train"], "training", keep)
    tests = {db: dataset([db], "test") for db in splits["test"]}
    return train, dataset(splits["valid"], "validation"), tests


def finetune(hparams, run_opts):
    """Stage 2: MOS fine-tuning (or the from-scratch baseline), then the test reports."""
    from jsqa_sb.reports import write_test_reports

    if hparams.get("pretrainer") is not None:  # a bad --pretrained_encoder fails at once
        check_encoder_checkpoint(hparams["pretrained_encoder"], hparams["encoder"])
    splits = prepare_mos_data(hparams)
    train, valid, tests = mos_dataio_prep(hparams, splits)
    if hparams.get("pretrainer") is not None:
        run_on_main(hparams["pretrainer"].collect_files)
        hparams["pretrainer"].load_collected()
    brain = MOSBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.fit(
        brain.hparams.epoch_counter,
        train,
        valid,
        train_loader_kwargs=hparams["train_dataloader_opts"],
        valid_loader_kwargs=hparams["valid_dataloader_opts"],
    )
    if brain.checkpointer.find_checkpoint() is None:
        raise NoTrainedCheckpointError(
            f"no checkpoint in {hparams['save_folder']}: nothing was trained "
            f"(number_of_epochs={hparams['number_of_epochs']}); no test report written"
        )
    conditions = Path(hparams["manifest_folder"]) / CONDITIONS_FILE  # NISQA_corpus_con.csv
    condition_truth = json.loads(conditions.read_text()) if conditions.is_file() else None
    config = {k: v for k, v in hparams.items() if isinstance(v, (str, int, float, bool, list))}
    config["yaml"] = hparams["hparams_file"]
    # The last epoch's model first (the most recent checkpoint), then the selected one.
    for folder, key in (
        (Path(hparams["output_folder"]) / "last_epoch", None),
        (Path(hparams["output_folder"]), "pcc"),
    ):
        predictions = {}
        for db, test in tests.items():
            brain.evaluate(test, max_key=key, test_loader_kwargs=hparams["valid_dataloader_opts"])
            predictions[db] = brain.predictions_frame().drop(columns="db")
        ckpt = brain.checkpointer.find_checkpoint(max_key=key)
        if sb.utils.distributed.if_main_process():
            write_test_reports(
                folder, predictions, config, str(ckpt.path) if ckpt else None, condition_truth
            )


STAGES = {"pretrain": pretrain, "finetune": finetune}


if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        try:
            hparams = load_hyperpyyaml(fin, overrides)
        except JSQAError as err:  # a setting that a constructor refused (e.g. pairs)
            sys.exit(f"train.py: error in the settings: {err}")
        except ValueError as err:  # hyperpyyaml's own word for a required setting left out
            if "!PLACEHOLDER" not in str(err):
                raise
            sys.exit(f"train.py: error: {err} (pass it as --name=value)")
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    hparams["hparams_file"] = hparams_file
    if hparams["stage"] not in STAGES:
        sys.exit(f"train.py: unknown stage '{hparams['stage']}' (known: {', '.join(STAGES)})")
    try:
        STAGES[hparams["stage"]](hparams, run_opts)
    except (JSQAError, FileNotFoundError) as err:
        # The user's data or files, not a bug: one clear line.
        sys.exit(f"train.py: error: {err}")
