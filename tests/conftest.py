"""Shared fixtures: small trained-looking runs and the model folders exported from them.

The runs are built directly (the YAML a ``train.py`` run saves, the checkpoints and
the result files it writes), with a tiny randomly initialised network, so that the
inference and export tests need no training. End-to-end runs of ``train.py`` are in
``test_pretrain_recipe.py`` and ``test_finetune_recipe.py``.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from jsqa_sb.networks import JSQAEncoder, MOSHead, ProjectionHead

REPO = Path(__file__).resolve().parents[1]
TINY = {"cnn_channels": 4, "d_model": 16, "att_layers": 1, "att_heads": 2, "emb_dim": 16}


def _run_yaml(name: str, values: dict) -> str:
    """``hparams/<name>`` as a run saves it: placeholders and overrides substituted."""
    text = (REPO / "hparams" / name).read_text()
    for key, value in values.items():
        text, n = re.subn(rf"^{key}: .*$", f"{key}: {value}", text, count=1, flags=re.M)
        assert n == 1, key
    return text


def _encoder() -> JSQAEncoder:
    torch.manual_seed(0)
    return JSQAEncoder(**TINY).eval()


@pytest.fixture
def tiny_jnd_brain(tmp_path):
    """``make(**hparams)``: a JNDContrastiveBrain of a tiny encoder, on the CPU, for 1 epoch.

    Its hparams hold ``encoder``, ``epoch_counter`` and ``train_logger`` besides the given ones.
    """
    from speechbrain.utils.epoch_loop import EpochCounter
    from speechbrain.utils.train_logger import FileTrainLogger

    from jsqa_sb.training.brains import JNDContrastiveBrain
    from jsqa_sb.training.checkpoints import Checkpointer

    def make(**hparams):
        encoder = JSQAEncoder(**TINY)
        counter = EpochCounter(1)
        log = FileTrainLogger(tmp_path / "train_log.txt")
        return JNDContrastiveBrain(
            modules={"encoder": encoder, "projector": ProjectionHead(16, 16, 8)},
            opt_class=lambda p: torch.optim.Adam(p, 1e-3),
            hparams={"encoder": encoder, "epoch_counter": counter, "train_logger": log, **hparams},
            run_opts={"device": "cpu", "noprogressbar": True},
            checkpointer=Checkpointer(tmp_path / "save", {"encoder": encoder, "counter": counter}),
        )

    return make


@pytest.fixture(scope="session")
def finetune_run(tmp_path_factory) -> Path:
    """A finished fine-tuning run folder (random tiny weights)."""
    run = tmp_path_factory.mktemp("runs") / "finetune"
    ckpt = run / "save" / "CKPT+2026-01-01+00-00-00+00"
    ckpt.mkdir(parents=True)
    values = {**TINY, "head_hidden": 8, "nisqa_folder": "/data", "pretrained_encoder": "e.ckpt"}
    (run / "hyperparams.yaml").write_text(_run_yaml("finetune.yaml", values))
    torch.save(_encoder().state_dict(), ckpt / "encoder.ckpt")
    torch.manual_seed(1)
    torch.save(MOSHead(16, 8).state_dict(), ckpt / "head.ckpt")
    metrics = {"pcc": 0.9, "srcc": 0.88, "rmse": 0.4, "rmse_map3": 0.35, "n_files": 90}
    results = {
        "databases": {"NISQA_TEST_SIM": {"mos": metrics}},
        "config": {
            "stage": "finetune",
            "seed": 3,
            "yaml": "hparams/finetune.yaml",
            "train_dbs": ["NISQA_TRAIN_SIM", "NISQA_TRAIN_LIVE"],
            "valid_dbs": ["NISQA_VAL_SIM"],
        },
        "checkpoint": str(ckpt),
        "test_sets": ["NISQA_TEST_SIM"],
    }
    (run / "results.json").write_text(json.dumps(results))
    return run


@pytest.fixture(scope="session")
def pretrain_run(tmp_path_factory) -> Path:
    """A finished pretraining run folder (random tiny encoder)."""
    run = tmp_path_factory.mktemp("runs") / "pretrain"
    run.mkdir()
    values = {**TINY, "librispeech_folder": "/data", "chime3_folder": "/data"}
    (run / "hyperparams.yaml").write_text(_run_yaml("pretrain.yaml", values))
    torch.save(_encoder().state_dict(), run / "encoder.ckpt")
    summary = {
        "best_epoch": 3,
        "best_valid": {
            "cross_auc": 0.7,
            "within_auc": 0.99,
            "probe_snr_spearman": 0.8,
            "end-of-epoch": True,  # as SpeechBrain's checkpoint meta holds it
        },
        "random_init_valid": {"cross_auc": 0.5, "within_auc": 0.99, "probe_snr_spearman": 0.6},
    }
    (run / "pretrain_summary.json").write_text(json.dumps(summary))
    return run


@pytest.fixture(scope="session")
def model_folder(finetune_run, tmp_path_factory) -> Path:
    """The model folder ``jsqa export`` writes for :func:`finetune_run`."""
    from jsqa_sb.serving.hub_export import export_model

    return export_model(finetune_run, tmp_path_factory.mktemp("hub") / "model")


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> tuple[np.ndarray, int]:
    """Three seconds of real speech at 16 kHz (a public-domain LibriVox clip)."""
    sample = sorted((REPO / "jsqa_sb" / "samples").glob("*.flac"))[0]
    audio, sr = sf.read(sample, dtype="float32", frames=3 * 16000)
    assert sr == 16000
    return audio, sr
