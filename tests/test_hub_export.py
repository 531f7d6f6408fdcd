"""``jsqa export``: run folders -> SpeechBrain-hub model folders, usable without jsqa_sb."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import soundfile as sf
import torch
import yaml

from jsqa_sb import JSQA
from jsqa_sb.hub_export import ExportError, export_model
from jsqa_sb.yaml_security import check_hparams_yaml


def test_finetune_export_writes_a_complete_model_folder(model_folder, finetune_run):
    files = sorted(p.name for p in model_folder.iterdir())
    assert files == [
        "README.md",
        "custom_interface.py",
        "encoder.ckpt",
        "head.ckpt",
        "hyperparams.yaml",
        "training_results.json",
    ]
    ckpt = finetune_run / "save" / "CKPT+2026-01-01+00-00-00+00"
    for name in ("encoder", "head"):
        saved = torch.load(ckpt / f"{name}.ckpt", weights_only=True)
        exported = torch.load(model_folder / f"{name}.ckpt", weights_only=True)
        assert all(torch.equal(saved[k], exported[k]) for k in saved)
    tags = check_hparams_yaml(model_folder / "hyperparams.yaml")  # loads untrusted-safe
    assert "!new:jsqa_sb.models.JSQAEncoder" in tags
    text = (model_folder / "hyperparams.yaml").read_text()
    assert "nisqa_folder" not in text and "optimizer" not in text  # inference only
    plain = yaml.safe_load(text.split("\nencoder:")[0])
    assert plain["outputs"] == ["mos"] and plain["sample_rate"] == 16000


def test_model_card_has_metrics_usage_license_and_citation(model_folder):
    card = (model_folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: speechbrain\nlicense: apache-2.0\n")
    assert "| NISQA_TEST_SIM | mos | 90 | 0.900 | 0.880 | 0.400 | 0.350 |" in card
    assert "JSQA.from_hparams" in card and "foreign_class" in card
    assert "fan2025jsqa" in card and "Any sample rate" in card
    assert "NISQA_TRAIN_SIM (if present)" in card  # the fixture run kept no manifests


def test_export_refuses_unfinished_runs_and_non_empty_folders(finetune_run, tmp_path):
    with pytest.raises(ExportError, match="no hyperparams.yaml"):
        export_model(tmp_path, tmp_path / "out")
    (tmp_path / "hyperparams.yaml").write_text("stage: finetune\n")
    with pytest.raises(ExportError, match="neither a finished fine-tuning run"):
        export_model(tmp_path, tmp_path / "out")
    out = tmp_path / "taken"
    out.mkdir()
    (out / "x").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export_model(finetune_run, out)
    export_model(finetune_run, out, overwrite=True)
    assert (out / "hyperparams.yaml").exists()


def test_exported_model_scores_like_the_trained_modules(model_folder, finetune_run, tmp_path):
    from hyperpyyaml import load_hyperpyyaml

    with open(finetune_run / "hyperparams.yaml") as f:
        hp = load_hyperpyyaml(f)
    ckpt = finetune_run / "save" / "CKPT+2026-01-01+00-00-00+00"
    hp["encoder"].load_state_dict(torch.load(ckpt / "encoder.ckpt", weights_only=True))
    hp["head"].load_state_dict(torch.load(ckpt / "head.ckpt", weights_only=True))
    hp["encoder"].eval(), hp["head"].eval()
    wav = 0.1 * torch.randn(2, 16000)
    with torch.no_grad():
        expected = hp["head"](hp["encoder"](wav))[:, :1]
    model = JSQA.from_hparams(source=str(model_folder), savedir=tmp_path / "sd")
    torch.testing.assert_close(model.score_batch(wav), expected)


HIDDEN = textwrap.dedent(
    """
    import json, sys

    class HideJsqa:  # jsqa_sb is not installed, as far as this process can tell
        def find_spec(self, name, path=None, target=None):
            if name == "jsqa_sb" or name.startswith("jsqa_sb."):
                raise ModuleNotFoundError(f"No module named {name!r}")

    sys.meta_path.insert(0, HideJsqa())
    try:
        import jsqa_sb  # noqa
        raise SystemExit("jsqa_sb is importable")
    except ModuleNotFoundError:
        pass
    from speechbrain.inference.interfaces import foreign_class

    source, savedir, wav = sys.argv[1:4]
    model = foreign_class(source=source, pymodule_file="custom_interface.py",
                          classname="JSQA", savedir=savedir)
    print(json.dumps({"scores": model.score_file(wav),
                      "module": type(model).__module__,
                      "encoder_file": sys.modules["jsqa_sb.models"].__file__}))
    """
)


def test_foreign_class_works_with_speechbrain_alone(model_folder, speech, tmp_path):
    audio, sr = speech
    wav = tmp_path / "x.wav"
    sf.write(wav, audio, sr)
    script = tmp_path / "hidden.py"
    script.write_text(HIDDEN)
    env = {**os.environ, "PYTHONPATH": "", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(script), str(model_folder), str(tmp_path / "sd"), str(wav)],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the repository: jsqa_sb must not be found next to the script
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["encoder_file"].endswith("custom_interface.py")  # the carried code ran
    model = JSQA.from_hparams(source=str(model_folder), savedir=tmp_path / "sd2")
    assert out["scores"]["mos"] == pytest.approx(model.score_file(wav)["mos"], abs=1e-5)


def test_pretrain_export_gives_an_encoder_only_folder(pretrain_run, tmp_path):
    folder = export_model(pretrain_run, tmp_path / "enc")
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "custom_interface.py",
        "encoder.ckpt",
        "hyperparams.yaml",
        "pretrain_summary.json",
    ]
    card = (folder / "README.md").read_text()
    assert "| cross_auc | 0.500 | 0.700 |" in card and "no MOS head" in card


def test_model_card_describes_the_exported_window(finetune_run, tmp_path):
    folder = export_model(finetune_run, tmp_path / "m", window_seconds=6.0, verify=False)
    assert "window_seconds: 6.0" in (folder / "hyperparams.yaml").read_text()
    assert "Recordings longer than 6 s are" in (folder / "README.md").read_text()
