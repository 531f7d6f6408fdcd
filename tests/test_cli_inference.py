"""``jsqa score``, ``distance``, ``export`` and ``upload`` from the command line."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from jsqa_sb.cli import main


@pytest.fixture
def recordings(speech, tmp_path):
    """A folder of real recordings as they come, and one corrupt file among them."""
    audio, sr = speech
    folder = tmp_path / "recs"
    (folder / "sub").mkdir(parents=True)
    sf.write(folder / "a.wav", audio, sr, subtype="PCM_16")
    sf.write(folder / "sub" / "b.flac", audio[: sr * 2], sr)
    sf.write(folder / "c.wav", np.stack([audio, audio], 1), sr, subtype="PCM_24")
    (folder / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    return folder


def test_score_writes_one_row_per_input_and_fails_on_a_bad_file(
    model_folder, recordings, tmp_path, capsys
):
    out = tmp_path / "scores.csv"
    status = main(["score", str(model_folder), str(recordings), "--out", str(out), "--no_progress"])
    assert status == 1  # one bad file: non-zero, the others scored
    rows = pd.read_csv(out)
    assert list(rows.columns) == ["path", "duration", "sample_rate", "mos", "error"]
    assert len(rows) == 4
    bad = rows[rows["path"].str.endswith("broken.wav")].iloc[0]
    assert isinstance(bad["error"], str) and pd.isna(bad["mos"])
    good = rows[rows["error"].isna()]
    assert len(good) == 3 and good["mos"].between(1, 5).all()
    assert "broken.wav" in capsys.readouterr().err  # named in the summary


def test_score_json_and_resume(model_folder, recordings, tmp_path):
    (recordings / "broken.wav").unlink()
    out = tmp_path / "scores.json"
    args = ["score", str(model_folder), str(recordings), "--out", str(out), "--no_progress"]
    assert main(args) == 0
    first = json.loads(out.read_text())
    sf.write(recordings / "d.wav", np.zeros(8000, dtype=np.float32) + 0.01, 16000)
    assert main(args + ["--resume"]) == 0
    second = json.loads(out.read_text())
    assert len(second) == 4 and first == [r for r in second if not r["path"].endswith("d.wav")]


def test_score_without_out_prints_csv(model_folder, recordings, capsys):
    (recordings / "broken.wav").unlink()
    assert main(["score", str(model_folder), str(recordings / "a.wav"), "--no_progress"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0] == "path,duration,sample_rate,mos,error" and len(lines) == 2
    assert "results in standard output" in captured.err


def test_score_refuses_untrusted_yaml_unless_trusted(model_folder, recordings, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(model_folder, folder)
    yaml = folder / "hyperparams.yaml"
    yaml.write_text(yaml.read_text() + "\nwhere: !apply:os.getcwd []\n")
    wav = str(recordings / "a.wav")
    assert main(["score", str(folder), wav, "--no_progress"]) == 2
    err = capsys.readouterr().err
    assert "!apply:os.getcwd" in err and "--trust-remote-code" in err and "Traceback" not in err
    assert main(["score", str(folder), wav, "--no_progress", "--trust-remote-code"]) == 0


def test_score_input_errors_come_before_loading_the_model(tmp_path, capsys):
    status = main(["score", str(tmp_path / "no_model"), str(tmp_path / "missing.wav")])
    assert status == 2
    assert "missing.wav" in capsys.readouterr().err


def test_distance(model_folder, recordings, capsys):
    a = str(recordings / "a.wav")
    assert main(["distance", a, a, "--model", str(model_folder)]) == 0
    assert float(capsys.readouterr().out) == pytest.approx(0.0, abs=1e-6)
    assert main(["distance", a, str(recordings / "c.wav"), "--model", str(model_folder)]) == 0
    assert 0.0 <= float(capsys.readouterr().out) <= 2.0


def test_export_and_upload_errors_are_one_line(finetune_run, tmp_path, capsys):
    assert main(["export", str(tmp_path), str(tmp_path / "m")]) == 2
    assert "no hyperparams.yaml" in capsys.readouterr().err
    assert main(["upload", str(tmp_path), "someone/model"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jsqa: error: ") and "hyperparams.yaml" in err


def test_upload_calls_the_hub(model_folder, monkeypatch, capsys):
    """The hub cannot be reached from the test machine: a stand-in HfApi records the calls."""
    calls = []

    class StandInApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, **kwargs):
            calls.append(("create_repo", kwargs))
            return f"https://huggingface.co/{kwargs['repo_id']}"

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", StandInApi)
    assert main(["upload", str(model_folder), "me/jsqa-test", "--private"]) == 0
    assert [c[0] for c in calls] == ["init", "create_repo", "upload_folder"]
    assert calls[1][1]["private"] is True and calls[2][1]["folder_path"] == str(model_folder)
    assert "https://huggingface.co/me/jsqa-test" in capsys.readouterr().out
