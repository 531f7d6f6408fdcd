#!/usr/bin/env python3
"""Recipe for JSQA: JND contrastive pretraining, then MOS fine-tuning on NISQA.

    python train.py hparams/pretrain.yaml --librispeech_folder=/d --chime3_folder=/d \
        --output_folder=results/pretrain
    python train.py hparams/finetune.yaml --nisqa_folder=/d \
        --pretrained_encoder=results/pretrain/encoder.ckpt --output_folder=results/finetune
    python train.py hparams/scratch.yaml --nisqa_folder=/d --output_folder=results/scratch

The YAML file holds everything that differs between them: the data preparation (run
on the main process, skipped when already done), the datasets, the Brain, and what it
writes at the end. Pretraining writes the selected encoder to
``<output_folder>/encoder.ckpt`` with ``pretrain_summary.json``; fine-tuning evaluates
every test database and writes ``results.json``, ``predictions_<DB>.csv``,
``report.md`` and ``scatter_<DB>.png`` (best checkpoint by validation PCC; the last
epoch's in ``last_epoch/``).

Authors
 * JSQA contributors 2026
"""

import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import run_on_main

from jsqa_sb.errors import JSQAError
from jsqa_sb.networks import check_encoder_checkpoint


def load_hparams(hparams_file, overrides):
    """The YAML with the command line's overrides; a bad setting ends in one line."""
    with open(hparams_file, encoding="utf-8") as fin:
        try:
            return load_hyperpyyaml(fin, overrides)
        except JSQAError as err:  # a setting that a constructor refused (e.g. pairs)
            sys.exit(f"train.py: error in the settings: {err}")
        except ValueError as err:  # hyperpyyaml's own word for a required setting left out
            if "!PLACEHOLDER" not in str(err):
                raise
            sys.exit(f"train.py: error: {err} (pass it as --name=value)")


def main(hparams_file, run_opts, overrides):
    """Prepare the data, train the YAML's Brain, and write what it makes."""
    hparams = load_hparams(hparams_file, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    pretrainer = hparams.get("pretrainer")
    if pretrainer is not None:  # a bad --pretrained_encoder fails before the preparation
        check_encoder_checkpoint(hparams["pretrained_encoder"], hparams["encoder"])

    # Data preparation (main process only; skipped when the manifests are up to date).
    run_on_main(hparams["prepare_data"])
    datasets = hparams["datasets"]()
    if pretrainer is not None:
        run_on_main(pretrainer.collect_files)
        pretrainer.load_collected()

    # JNDContrastiveBrain (pretraining) or MOSBrain (fine-tuning), as the YAML says.
    brain = hparams["brain_class"](
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.fit(
        brain.hparams.epoch_counter,
        datasets["train"],
        datasets["valid"],
        train_loader_kwargs=hparams["train_dataloader_opts"],
        valid_loader_kwargs=hparams["valid_dataloader_opts"],
    )
    # encoder.ckpt and its summary, or the test reports of every test database.
    brain.finish(datasets.get("test", {}), hparams_file)


if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    sb.utils.distributed.ddp_init_group(run_opts)
    try:
        main(hparams_file, run_opts, overrides)
    except (JSQAError, FileNotFoundError) as err:  # the user's data or files, not a bug
        sys.exit(f"train.py: error: {err}")
