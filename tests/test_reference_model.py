"""A model exported before the encoder moved onto library layers still loads and scores.

``tests/data/reference_model`` was written by ``make_reference.py`` there, with the code
of the commit that added it: an exported tiny model (old state-dict key names) and the
scores and embedding that code gave. Every way a checkpoint is loaded must still take
it whole, and the scores must not move by more than float rounding.
"""

import json
import logging
import shutil
from pathlib import Path

import pytest
import soundfile as sf
import torch
from speechbrain.utils.parameter_transfer import Pretrainer

from jsqa_sb.networks import JSQAEncoder, check_encoder_checkpoint
from jsqa_sb.serving.hub_export import build_custom_interface
from jsqa_sb.serving.inference import JSQA
from jsqa_sb.training.checkpoints import Checkpointer

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "data" / "reference_model"
MODEL = REFERENCE / "model"
OLD_ENCODER = MODEL / "encoder.ckpt"
SETTINGS = {"cnn_channels": 4, "d_model": 16, "att_layers": 2, "att_heads": 2, "emb_dim": 16}
SAMPLES = sorted((HERE.parent / "jsqa_sb" / "samples").glob("*.flac"))
EXPECTED = json.loads((REFERENCE / "reference_scores.json").read_text())
TOL = 1e-5


def _assert_scores(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=TOL, rel=0), name


def _embedding(encoder: torch.nn.Module) -> torch.Tensor:
    wav = torch.from_numpy(sf.read(SAMPLES[0], dtype="float32")[0][:24000])
    with torch.no_grad():
        return encoder.eval()(wav.unsqueeze(0))[0]


def _assert_reference_encoder(encoder: torch.nn.Module) -> None:
    expected = torch.tensor(EXPECTED["embedding_first_24000"])
    torch.testing.assert_close(_embedding(encoder), expected, atol=TOL, rtol=0)


def _fresh_encoder() -> JSQAEncoder:
    torch.manual_seed(0)
    encoder = JSQAEncoder(**SETTINGS, att_ffn=32)
    assert not torch.allclose(
        _embedding(encoder), torch.tensor(EXPECTED["embedding_first_24000"]), atol=1e-3
    )
    return encoder


def test_reference_model_scores_are_unchanged(tmp_path):
    model = JSQA.from_hparams(source=str(MODEL), savedir=tmp_path / "sd")
    for path in SAMPLES:
        _assert_scores(model.score_file(path), EXPECTED["score_file"][path.name])
    for path, scores in zip(SAMPLES, model.score_files(SAMPLES)):
        _assert_scores(scores, EXPECTED["score_files"][path.name])


def test_reference_model_scores_through_foreign_class(tmp_path):
    """SpeechBrain's own loading (a non-strict Pretrainer transfer) takes it whole too."""
    from speechbrain.inference.interfaces import foreign_class

    folder = tmp_path / "model"
    shutil.copytree(MODEL, folder)
    (folder / "custom_interface.py").write_text(build_custom_interface())
    model = foreign_class(
        source=str(folder),
        pymodule_file="custom_interface.py",
        classname="JSQA",
        savedir=str(tmp_path / "sd"),
    )
    path = SAMPLES[1]
    _assert_scores(model.score_file(path), EXPECTED["score_file"][path.name])


def test_old_encoder_checkpoint_passes_the_fine_tuning_check():
    check_encoder_checkpoint(OLD_ENCODER, JSQAEncoder(**SETTINGS, att_ffn=32))


def test_old_encoder_checkpoint_loads_whole_through_the_pretrainer(tmp_path, caplog):
    encoder = _fresh_encoder()
    pretrainer = Pretrainer(
        collect_in=tmp_path / "collect",
        loadables={"encoder": encoder},
        paths={"encoder": str(OLD_ENCODER)},
    )
    pretrainer.collect_files()
    with caplog.at_level(logging.WARNING):
        pretrainer.load_collected()
    assert "did not have parameters" not in caplog.text
    assert "could not use the parameters" not in caplog.text
    _assert_reference_encoder(encoder)


def test_old_encoder_checkpoint_resumes_through_the_recipes_checkpointer(tmp_path):
    """A fine-tuning run saved before the change resumes its encoder (strict loading)."""
    saved = Checkpointer(tmp_path, {"encoder": _fresh_encoder()}).save_checkpoint()
    shutil.copyfile(OLD_ENCODER, saved.paramfiles["encoder"])
    encoder = _fresh_encoder()
    assert Checkpointer(tmp_path, {"encoder": encoder}).recover_if_possible() is not None
    _assert_reference_encoder(encoder)


def test_old_encoder_checkpoint_loads_strictly_inside_another_module():
    """A Brain's modules, a DDP wrapper: the old keys come with a prefix."""
    old = torch.load(OLD_ENCODER, weights_only=True)
    assert any(".qkv." in key for key in old)  # the old names, really
    modules = torch.nn.ModuleDict({"encoder": _fresh_encoder()})
    modules.load_state_dict({f"encoder.{k}": v for k, v in old.items()}, strict=True)
    _assert_reference_encoder(modules["encoder"])
