#!/usr/bin/env python3
"""Recipe for JSQA: JND contrastive pretraining of a speech-quality encoder.

The YAML file says which stage runs (``stage: pretrain``). To run:

    python train.py hparams/pretrain.yaml --librispeech_folder=/d/LibriSpeech_parent \
        --chime3_folder=/d/CHiME3_parent --output_folder=results/pretrain

Data preparation runs first (on the main process, skipped when already done), then
training with validation after each epoch, then the best encoder is written to
``<output_folder>/encoder.ckpt`` with ``pretrain_summary.json`` beside it.

Authors
 * JSQA contributors 2026
"""

import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import run_on_main

from jsqa_sb.jnd_data import JNDViewMaker, make_jnd_dataset, mixing_options
from jsqa_sb.prepare_jnd import prepare_jnd
from jsqa_sb.prepare_utils import DataPreparationError


def prepare_data(hparams):
    """Write the JND manifests (main process only; skipped when up to date)."""
    run_on_main(
        prepare_jnd,
        kwargs={
            "librispeech_folder": hparams["librispeech_folder"],
            "chime3_folder": hparams["chime3_folder"],
            "save_folder": hparams["manifest_folder"],
            "train_subsets": hparams["train_subsets"],
            "valid_subsets": hparams["valid_subsets"],
            "segment_seconds": hparams["segment_seconds"],
            "views_per_group": hparams["views_per_group"],
            "snr_min": hparams["snr_min"],
            "snr_max": hparams["snr_max"],
            "jnd_db": hparams["jnd_db"],
            "neg_margin_db": hparams["neg_margin_db"],
            "seed": hparams["mix_seed"],
            "strict": hparams["strict_preparation"],
        },
    )


def dataio_prep(hparams):
    """Build the training, validation and probe datasets of view groups.

    Training groups are mixed on the fly (new mixtures every epoch, reproducible);
    validation groups are fixed in their manifest; the probe set is a fixed slice of
    training mixtures for the linear SNR probe.
    """
    folder = hparams["manifest_folder"]
    replacements = {
        "librispeech_folder": hparams["librispeech_folder"],
        "chime3_folder": hparams["chime3_folder"],
    }
    mixing = mixing_options(hparams)
    train_views = JNDViewMaker(
        f"{folder}/noise_train.json", replacements, seed=hparams["mix_seed"], **mixing
    )
    probe_views = JNDViewMaker(
        f"{folder}/noise_train.json", replacements, seed=hparams["mix_seed"] + 1, **mixing
    )
    valid_views = JNDViewMaker(**mixing)
    train = make_jnd_dataset(f"{folder}/jnd_train.json", replacements, train_views, fixed=False)
    valid = make_jnd_dataset(f"{folder}/jnd_valid.json", replacements, valid_views, fixed=True)
    probe = make_jnd_dataset(f"{folder}/jnd_train.json", replacements, probe_views, fixed=False)
    probe = probe.filtered_sorted(select_n=hparams["probe_groups"])
    return train, valid, probe, train_views


def pretrain(hparams, run_opts):
    """Stage 1: JND contrastive pretraining."""
    from jsqa_sb.brains import JNDContrastiveBrain

    prepare_data(hparams)
    train, valid, probe, train_views = dataio_prep(hparams)
    hparams["train_view_maker"] = train_views
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


STAGES = {"pretrain": pretrain}


if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    if hparams["stage"] not in STAGES:
        sys.exit(f"train.py: unknown stage '{hparams['stage']}' (known: {', '.join(STAGES)})")
    try:
        STAGES[hparams["stage"]](hparams, run_opts)
    except DataPreparationError as err:  # the user's data, not a bug: one clear line
        sys.exit(f"train.py: error: {err}")
