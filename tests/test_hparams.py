"""The recipe YAMLs: settings derived from others follow them, and stay overridable."""

from pathlib import Path

import pytest
from hyperpyyaml import load_hyperpyyaml

HPARAMS = Path(__file__).resolve().parents[1] / "hparams"
FOLDERS = {"librispeech_folder": "/data", "chime3_folder": "/data"}


@pytest.mark.parametrize("name", ["pretrain.yaml", "pretrain_ecapa.yaml"])
@pytest.mark.parametrize(
    "overrides, margin",
    [({}, 6.0), ({"jnd_db": 4.0}, 8.0), ({"jnd_db": 4.0, "neg_margin_db": 5.0}, 5.0)],
)
def test_negative_margin_follows_jnd_unless_set(name, overrides, margin):
    with open(HPARAMS / name) as fin:
        hparams = load_hyperpyyaml(fin, {**FOLDERS, **overrides})
    assert hparams["neg_margin_db"] == margin
    assert hparams["loss"].neg_margin_db == margin


@pytest.mark.parametrize("name", ["pretrain.yaml", "pretrain_ecapa.yaml"])
def test_the_loss_is_content_blind_by_default(name):
    # The first version (within_group) rewards recognising the utterance (test_losses.py):
    # neither the YAML nor the class may fall back to it.
    with open(HPARAMS / name) as fin:
        hparams = load_hyperpyyaml(fin, FOLDERS)
    assert hparams["loss"].pairs == "same_noise"
