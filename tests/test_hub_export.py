"""``jsqa export``: run folders -> SpeechBrain-hub model folders, usable without jsqa_sb."""

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml

from jsqa_sb import JSQA
from jsqa_sb.serving.hub_export import ExportError, export_model
from jsqa_sb.serving.yaml_security import ALLOWED_CLASSES, UntrustedCodeError, check_hparams_yaml


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
    assert "!new:jsqa_sb.networks.JSQAEncoder" in tags
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
    # --overwrite replaces an earlier export, never a folder holding files of its own
    with pytest.raises(ExportError, match=r"holds files jsqa export does not write \(x\)"):
        export_model(finetune_run, out, overwrite=True)
    assert (out / "x").read_text() == "mine" and sorted(out.iterdir()) == [out / "x"]
    (out / "x").unlink()
    export_model(finetune_run, out)  # an empty folder is fine
    assert (out / "hyperparams.yaml").exists()


def test_overwrite_leaves_no_stale_file_of_the_earlier_export(finetune_run, pretrain_run, tmp_path):
    folder = export_model(finetune_run, tmp_path / "m", verify=False)
    (folder / "__pycache__").mkdir()  # what loading it with foreign_class leaves
    (folder / "__pycache__" / "custom_interface.cpython-311.pyc").write_bytes(b"\0")
    export_model(pretrain_run, folder, overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == PRETRAIN_FILES  # no head.ckpt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary folder left


def test_export_refuses_the_run_folder_inside_it_and_around_it(finetune_run):
    before = sorted(p.relative_to(finetune_run) for p in finetune_run.rglob("*"))
    for hub in (finetune_run, finetune_run / "model", finetune_run / "save" / "m"):
        with pytest.raises(ExportError, match="inside the run folder"):
            export_model(finetune_run, hub, overwrite=True)
    with pytest.raises(ExportError, match="holds the run folder"):
        export_model(finetune_run, finetune_run.parent, overwrite=True)
    assert sorted(p.relative_to(finetune_run) for p in finetune_run.rglob("*")) == before


def test_a_failed_export_leaves_no_half_written_folder(finetune_run, tmp_path, monkeypatch):
    from jsqa_sb.serving import hub_export

    def broken():
        raise RuntimeError("disk full, say")

    monkeypatch.setattr(hub_export, "build_custom_interface", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export_model(finetune_run, tmp_path / "new" / "m")
    assert list((tmp_path / "new").iterdir()) == []  # neither m nor a temporary folder


def _dead_pid() -> int:
    """The id of a process that has exited."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def test_an_export_removes_what_a_killed_export_left(finetune_run, tmp_path):
    dead = _dead_pid()
    left = {
        f".m.export-{dead}-0123abcd": False,  # killed mid-export: removed
        f".m.replaced-{dead}-0123abcd": False,  # killed after the rename: removed
        f".m.export-{os.getpid()}-0123abcd": True,  # a live export's: kept
        f".other.export-{dead}-0123abcd": True,  # another model's: kept
    }
    export_model(finetune_run, tmp_path / "m", verify=False)
    for name in left:
        (tmp_path / name).mkdir()
        (tmp_path / name / "encoder.ckpt").write_bytes(b"\0")
    export_model(finetune_run, tmp_path / "m", verify=False, overwrite=True)
    assert {name: (tmp_path / name).exists() for name in left} == left
    assert (tmp_path / "m" / "hyperparams.yaml").is_file()


def test_an_earlier_export_a_kill_left_aside_is_kept_when_the_model_folder_is_missing(
    finetune_run, tmp_path
):
    aside = tmp_path / f".m.replaced-{_dead_pid()}-0123abcd"
    aside.mkdir()
    export_model(finetune_run, tmp_path / "m", verify=False)
    assert aside.is_dir()


def test_a_failed_overwrite_keeps_the_earlier_export(
    finetune_run, pretrain_run, tmp_path, monkeypatch
):
    from jsqa_sb.serving import hub_export

    folder = export_model(finetune_run, tmp_path / "m", verify=False)
    files = {p.name: p.read_bytes() for p in folder.iterdir()}

    def failing_verification(hub, with_head):
        (hub / "hyperparams.yaml").write_text("half: written\n")
        raise ExportError(f"{hub}: the exported model gives non-finite outputs")

    monkeypatch.setattr(hub_export, "_verify", failing_verification)
    with pytest.raises(ExportError, match="non-finite"):
        export_model(pretrain_run, folder, overwrite=True)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


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
                      "encoder_file": sys.modules["jsqa_sb.networks"].__file__}))
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


PRETRAIN_FILES = [
    "README.md",
    "custom_interface.py",
    "encoder.ckpt",
    "hyperparams.yaml",
    "pretrain_summary.json",
]


def test_pretrain_export_gives_an_encoder_only_folder(pretrain_run, tmp_path):
    folder = export_model(pretrain_run, tmp_path / "enc")
    assert sorted(p.name for p in folder.iterdir()) == PRETRAIN_FILES
    card = (folder / "README.md").read_text()
    assert "| cross_auc | 0.500 | 0.700 |" in card and "no MOS head" in card


def test_model_card_describes_the_exported_window(finetune_run, tmp_path):
    folder = export_model(finetune_run, tmp_path / "m", window_seconds=6.0, verify=False)
    assert "window_seconds: 6.0" in (folder / "hyperparams.yaml").read_text()
    assert "Recordings longer than 6 s are" in (folder / "README.md").read_text()


# ------------------------------------------------- every YAML export writes loads untrusted
REPO = Path(__file__).resolve().parents[1]
TINY = {"cnn_channels": 4, "d_model": 16, "att_layers": 1, "att_heads": 2, "emb_dim": 16}
FINETUNE = {**TINY, "head_hidden": 8, "nisqa_folder": "/d"}
TINY_ECAPA = {"n_mels": 24, "ecapa_channels": "[8, 8, 8, 8, 24]", "emb_dim": 8}


def make_run(folder, yaml_name, values, dims=("mos",), edit=lambda text: text):
    """A finished run of ``hparams/<yaml_name>`` with the weights of its own network."""
    from hyperpyyaml import load_hyperpyyaml

    folder.mkdir(parents=True)
    text = (REPO / "hparams" / yaml_name).read_text()
    for key, value in values.items():
        text, n = re.subn(rf"^{key}: .*$", f"{key}: {value}", text, count=1, flags=re.M)
        assert n == 1, key
    (folder / "hyperparams.yaml").write_text(edit(text))
    finetune = "nisqa_folder" in values
    ckpt = folder / "save" / "CKPT+2026-01-01+00-00-00+00" if finetune else folder
    ckpt.mkdir(parents=True, exist_ok=True)
    names = ("encoder", "head") if finetune else ("encoder",)
    for name in names:
        torch.save({}, ckpt / f"{name}.ckpt")
    if finetune:
        metrics = {"pcc": 0.9, "srcc": 0.9, "rmse": 0.4, "n_files": 10}
        results = {"databases": {"NISQA_TEST_SIM": dict.fromkeys(dims, metrics)}}
        (folder / "results.json").write_text(json.dumps({**results, "checkpoint": str(ckpt)}))
    else:
        summary = {"best_epoch": 1, "best_valid": {"cross_auc": 0.7}}
        (folder / "pretrain_summary.json").write_text(json.dumps(summary))
    # the network the run trained: built from the YAML that export writes for it
    probe = export_model(folder, folder.parent / f"{folder.name}-probe", verify=False)
    built = load_hyperpyyaml((probe / "hyperparams.yaml").read_text())
    for name in names:
        torch.save(built[name].state_dict(), ckpt / f"{name}.ckpt")
    return folder


EXPORTS = {
    "finetune": ("finetune.yaml", {**FINETUNE, "pretrained_encoder": "e.ckpt"}, {}),
    "finetune, two outputs, 2.5 s windows": (
        "finetune.yaml",
        {**FINETUNE, "pretrained_encoder": "e.ckpt"},
        {"dims": ("mos", "noi"), "window_seconds": 2.5},
    ),
    "scratch, 30 s windows": (
        "scratch.yaml",
        FINETUNE,
        {"window_seconds": 30.0},
    ),
    "pretrain": ("pretrain.yaml", {**TINY, "librispeech_folder": "/d", "chime3_folder": "/d"}, {}),
    "pretrain, ECAPA-TDNN encoder": (
        "pretrain_ecapa.yaml",
        {**TINY_ECAPA, "librispeech_folder": "/d", "chime3_folder": "/d"},
        {"window_seconds": 6.0},
    ),
}


@pytest.mark.parametrize("case", list(EXPORTS))
def test_every_yaml_export_writes_loads_without_trust(case, tmp_path, caplog):
    yaml_name, values, options = EXPORTS[case]
    dims = options.get("dims", ("mos",))
    run = make_run(tmp_path / "run", yaml_name, values, dims)
    window = options.get("window_seconds", 10.0)
    with caplog.at_level(logging.WARNING, logger="jsqa_sb.serving.hub_export"):
        folder = export_model(run, tmp_path / "model", window_seconds=window)  # loads it once
    assert "--trust-remote-code" not in caplog.text
    tags = check_hparams_yaml(folder / "hyperparams.yaml")  # no trust: raises if refused
    assert {tag.split(":", 1)[1] for tag in tags} <= set(ALLOWED_CLASSES)
    model = JSQA.from_hparams(source=str(folder), savedir=tmp_path / "sd")
    assert model.window_seconds == window
    assert model.output_names == (dims if "nisqa_folder" in values else ())
    assert model.encode_batch(0.1 * torch.randn(1, 16000)).isfinite().all()


def test_a_run_with_another_encoder_exports_with_a_warning_and_loads_only_trusted(tmp_path, caplog):
    def xvector(text):  # the README: any lobe taking (features, lengths) can be the encoder
        ecapa = re.search(
            r"    model: !new:speechbrain.lobes.models.ECAPA_TDNN.*?\n(?=    \w)", text, re.S
        )
        return text.replace(
            ecapa.group(0),
            "    model: !new:speechbrain.lobes.models.Xvector.Xvector\n"
            "        in_channels: !ref <n_mels>\n"
            "        lin_neurons: !ref <emb_dim>\n"
            "        tdnn_channels: [8, 8, 8, 8, 24]\n",
        )

    values = {**TINY_ECAPA, "librispeech_folder": "/d", "chime3_folder": "/d"}
    run = make_run(tmp_path / "run", "pretrain_ecapa.yaml", values, edit=xvector)
    with caplog.at_level(logging.WARNING, logger="jsqa_sb.serving.hub_export"):
        folder = export_model(run, tmp_path / "model")
    assert "!new:speechbrain.lobes.models.Xvector.Xvector" in caplog.text
    assert "--trust-remote-code" in caplog.text
    with pytest.raises(UntrustedCodeError, match=r"!new:speechbrain\.lobes\.models\.Xvector"):
        JSQA.from_hparams(source=str(folder), savedir=tmp_path / "sd")
    model = JSQA.from_hparams(source=str(folder), savedir=tmp_path / "sd", trust_remote_code=True)
    assert model.encode_batch(0.1 * torch.randn(1, 16000)).shape == (1, 8)


def test_custom_interface_carries_no_yaml_check_and_says_what_loading_it_means(model_folder):
    code = (model_folder / "custom_interface.py").read_text()
    assert "'jsqa_sb.serving.yaml_security'" not in code  # foreign_class would never use it
    assert "'jsqa_sb.errors'" in code  # the carried modules import it
    assert "loading a model that way means trusting its" in code


@pytest.mark.parametrize("text", ["", "# nothing\n", "a: [1, 2\n", "- a list\n", "\xff\xfe"])
def test_export_of_a_run_with_an_unreadable_yaml_is_one_line(finetune_run, tmp_path, text, capsys):
    import shutil

    from jsqa_sb.cli import main

    run = tmp_path / "run"
    shutil.copytree(finetune_run, run)
    (run / "hyperparams.yaml").write_text(text, encoding="latin-1")
    assert main(["export", str(run), str(tmp_path / "model")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jsqa: error: ") and "hyperparams.yaml" in err[0]
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize(
    "name, text",
    [
        ("results.json", "not json"),
        ("results.json", "[1]"),
        ("results.json", '{"databases": {"NISQA_TEST_SIM": {"mos": {"pcc": "high"}}}}'),
        ("pretrain_summary.json", "null"),
        ("pretrain_summary.json", '{"best_valid": {"cross_auc": "x"}}'),
    ],
)
def test_export_of_a_run_with_a_damaged_record_is_one_line(
    finetune_run, pretrain_run, tmp_path, name, text, capsys
):
    import shutil

    from jsqa_sb.cli import main

    run = tmp_path / "run"
    shutil.copytree(finetune_run if name == "results.json" else pretrain_run, run)
    (run / name).write_text(text)
    assert main(["export", str(run), str(tmp_path / "model")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jsqa: error: ") and name in err[0]
    assert not (tmp_path / "model").exists()


def test_a_damaged_config_in_results_still_exports_a_card(finetune_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finetune_run, run)
    results = json.loads((run / "results.json").read_text())
    results["config"].update(manifest_folder=5, train_dbs=3, pretrained_encoder=7)
    (run / "results.json").write_text(json.dumps(results))
    (run / "manifests").mkdir(exist_ok=True)
    (run / "manifests" / "nisqa_splits.json").write_text('{"train": 1}')
    card = (export_model(run, tmp_path / "model") / "README.md").read_text()
    assert "pretrained encoder `7`" in card and "NISQA databases (not recorded) (training)" in card


@pytest.mark.parametrize("what", ["missing", "fifo"])
def test_export_of_a_pretraining_run_without_a_summary_file_is_one_line(
    pretrain_run, tmp_path, what, capsys
):
    import shutil

    from jsqa_sb.cli import main

    run = tmp_path / "run"
    shutil.copytree(pretrain_run, run)
    (run / "pretrain_summary.json").unlink()
    if what == "fifo":
        os.mkfifo(run / "pretrain_summary.json")  # reading it would wait for a writer
    assert main(["export", str(run), str(tmp_path / "model")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no pretrain_summary.json in" in err[0]
