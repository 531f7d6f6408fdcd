"""``jsqa score`` on collections as they come: links, pipes, odd names, bad outputs.

Each test sets up one kind of hostile input and checks what the user sees: the rows
written, the errors named, the exit status, and that the run ends. Runs that hung
before the fixes run the command line in a subprocess with a timeout.
"""

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from jsqa_sb.cli import main
from jsqa_sb.errors import JSQAError
from jsqa_sb.serving.batch_scoring import (
    META_SUFFIX,
    ScoringInputError,
    list_inputs,
    model_fingerprint,
    score_collection,
)

NAMES = ("mos", "noi")
COLUMNS = ["path", "duration", "sample_rate", "mos", "noi", "error"]
TIMEOUT = 240  # seconds: a run that hangs fails instead of blocking the suite


def _write(path, seconds=0.5, sr=16000, audio=None):
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if audio is None:
        frames = int(round(seconds * sr))
        audio = np.random.default_rng(0).uniform(-0.1, 0.1, frames).astype(np.float32)
    sf.write(path, audio, sr, subtype="FLOAT")
    return path


class FakeScorer:
    """Scores = f(duration); records the paths it was given."""

    output_names = NAMES

    def __init__(self, fingerprint=None):
        if fingerprint is not None:
            self.fingerprint = fingerprint
        self.calls = []

    def score_files(self, paths):
        self.calls.append(list(paths))
        return [{"mos": 1.0 + sf.info(p).duration, "noi": 2.5} for p in paths]

    @property
    def sent(self):
        return [p for call in self.calls for p in call]


def _cli(*args, timeout=TIMEOUT):
    """Run ``jsqa`` in a subprocess (so that a hang is a failure, not a stuck suite)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "jsqa_sb.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def _csv_rows(out):
    """The output's rows as dicts of strings, read as bytes must decode as UTF-8."""
    text = open(out, "rb").read().decode("utf-8")  # raises if it is not valid UTF-8
    return list(csv.DictReader(text.splitlines()))


# --- 11: symbolic link loops ------------------------------------------------------------


def test_symlink_loops_and_links_list_each_real_file_once(tmp_path):
    root = tmp_path / "d"
    a = _write(root / "a.wav")
    b = _write(root / "sub" / "b.wav")
    os.symlink(".", root / "loop")  # d/loop/loop/... : os.walk listed a.wav 41 times
    os.symlink("a.wav", root / "z_link.wav")  # the same file by another name
    os.symlink("sub/b.wav", root / "a_link.wav")  # listed first, but b.wav is the real name
    os.symlink("sub", root / "linked_sub")  # the same folder by another name
    assert list_inputs([root]).paths == [a, b]
    # Across inputs too: the link given explicitly adds nothing.
    assert list_inputs([root, root / "z_link.wav"]).paths == [a, b]


def test_linked_folder_outside_is_searched_once_and_its_loop_cut(tmp_path):
    root, outside = tmp_path / "d", tmp_path / "outside"
    a = _write(root / "a.wav")
    _write(outside / "c.wav")
    os.symlink(outside, root / "ext")
    os.symlink(root, outside / "back")  # d/ext/back/ext/back/...
    assert list_inputs([root]).paths == [a, str(root / "ext" / "c.wav")]


def test_symlink_loops_do_not_hang_the_cli(model_folder, speech, tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    sf.write(root / "a.wav", speech[0], speech[1])
    for name in ("loop1", "loop2"):  # 2 ** 40 paths through os.walk
        os.symlink(".", root / name)
    (root / "sub").mkdir()
    os.symlink("..", root / "sub" / "up")
    os.symlink("self.wav", root / "self.wav")  # a file link that points at itself
    out = tmp_path / "s.csv"
    done = _cli("score", model_folder, root, "--out", out, "--no_progress")
    assert done.returncode == 1, done.stderr
    rows = {os.path.basename(r["path"]): r for r in _csv_rows(out)}
    assert sorted(rows) == ["a.wav", "self.wav"]  # each once
    assert rows["a.wav"]["error"] == "" and 1 <= float(rows["a.wav"]["mos"]) <= 5
    assert "symbolic links" in rows["self.wav"]["error"]
    assert "self.wav" in done.stderr


# --- 12: named pipes and other special files ---------------------------------------------


def test_fifo_gets_an_error_row_not_a_hang(model_folder, speech, tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    sf.write(root / "a.wav", speech[0], speech[1])
    os.mkfifo(root / "pipe.wav")  # opening it for reading blocks until a writer comes
    out = tmp_path / "s.csv"
    done = _cli("score", model_folder, root, "--out", out, "--no_progress")
    assert done.returncode == 1, done.stderr
    rows = {os.path.basename(r["path"]): r for r in _csv_rows(out)}
    assert rows["pipe.wav"]["error"] == "not a regular file but a named pipe (FIFO)"
    assert rows["pipe.wav"]["mos"] == "" and rows["a.wav"]["error"] == ""
    assert "pipe.wav: not a regular file" in done.stderr


def test_fifo_given_as_a_csv_list_is_refused_not_read(model_folder, tmp_path):
    os.mkfifo(tmp_path / "list.csv")
    done = _cli("score", model_folder, tmp_path / "list.csv", "--out", tmp_path / "s.csv")
    assert done.returncode == 2
    assert done.stderr.strip().endswith("list.csv: not a regular file")


def test_special_files_get_error_rows_without_being_opened(tmp_path):
    root = tmp_path / "d"
    a = _write(root / "a.wav")
    os.symlink("/dev/zero", root / "zero.wav")  # a character device
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock.wav"))
    (root / "folder.wav").mkdir()  # a folder with an audio name is searched, not scored
    pd.DataFrame({"path": ["folder.wav"]}).to_csv(root / "list.csv", index=False)
    scorer = FakeScorer()
    try:
        summary = score_collection(
            scorer, [root, root / "list.csv"], tmp_path / "s.csv", progress=False
        )
    finally:
        sock.close()
    assert scorer.sent == [a]
    assert dict(summary.errors) == {
        str(root / "sock.wav"): "not a regular file but a socket",
        str(root / "zero.wav"): "not a regular file but a character device",
        str(root / "folder.wav"): "not a regular file but a folder",
    }


def test_broken_link_gets_its_own_reason(tmp_path):
    a = _write(tmp_path / "d" / "a.wav")
    os.symlink("gone.wav", tmp_path / "d" / "dangling.wav")
    scorer = FakeScorer()
    summary = score_collection(scorer, [tmp_path / "d"], tmp_path / "s.csv", progress=False)
    assert scorer.sent == [a] and summary.scored == 1
    assert summary.errors == [(str(tmp_path / "d" / "dangling.wav"), "broken symbolic link")]


# --- 13: file names that are not valid UTF-8 ---------------------------------------------


@pytest.mark.parametrize("ext", ["csv", "json"])
def test_non_utf8_name_gets_an_error_row_and_the_others_are_scored(tmp_path, ext):
    root = tmp_path / "d"
    good = _write(root / "good.wav")
    bad = os.fsdecode(os.path.join(os.fsencode(root), b"caf\xe9.wav"))  # Latin-1 "café"
    shutil.copy(good, bad)  # soundfile itself cannot open such a name
    out = tmp_path / f"s.{ext}"
    scorer = FakeScorer()
    summary = score_collection(scorer, [root], out, progress=False)
    assert scorer.sent == [good]
    shown = f"{root}/caf\\xe9.wav"  # the undecodable byte as an escape
    if ext == "csv":
        rows = {r["path"]: r for r in _csv_rows(out)}
    else:
        rows = {r["path"]: r for r in json.loads(out.read_bytes().decode("utf-8"))}
    assert sorted(rows) == sorted([good, shown])
    assert "not valid UTF-8" in rows[shown]["error"] and not rows[good]["error"]
    assert float(rows[good]["mos"]) == pytest.approx(1.5)
    assert summary.failed == 1 and summary.errors[0][0] == shown
    assert shown in summary.format()
    assert os.path.exists(bad)


def test_non_utf8_name_through_the_cli(model_folder, speech, tmp_path, capsys):
    root = tmp_path / "d"
    root.mkdir()
    sf.write(root / "good.wav", speech[0], speech[1])
    shutil.copy(root / "good.wav", os.fsdecode(os.path.join(os.fsencode(root), b"\xff\xfe.wav")))
    out = tmp_path / "s.csv"
    assert main(["score", str(model_folder), str(root), "--out", str(out), "--no_progress"]) == 1
    rows = {os.path.basename(r["path"]): r for r in _csv_rows(out)}
    assert sorted(rows) == ["\\xff\\xfe.wav", "good.wav"]
    assert "not valid UTF-8" in rows["\\xff\\xfe.wav"]["error"]
    assert 1 <= float(rows["good.wav"]["mos"]) <= 5
    assert "\\xff\\xfe.wav" in capsys.readouterr().err
    # Without --out, the CSV on standard output is complete too.
    assert main(["score", str(model_folder), str(root), "--no_progress"]) == 1
    assert len(capsys.readouterr().out.strip().splitlines()) == 3


# --- 14: folders that cannot be searched -------------------------------------------------


def _deny(monkeypatch, folder):
    """Make listing ``folder`` fail as chmod 000 does for a user who is not root."""
    real_scandir = os.scandir

    def scandir(path="."):
        if isinstance(path, (str, os.PathLike)) and os.path.abspath(path) == str(folder):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_unreadable_subfolder_is_named_in_the_summary(tmp_path, monkeypatch):
    root = tmp_path / "d"
    a = _write(root / "a.wav")
    _write(root / "locked" / "hidden.wav")
    _deny(monkeypatch, root / "locked")
    listing = list_inputs([root])
    assert listing.paths == [a]
    assert listing.unreadable_folders == [(str(root / "locked"), "Permission denied")]
    summary = score_collection(FakeScorer(), [root], tmp_path / "s.csv", progress=False)
    assert summary.unreadable_folders == [(str(root / "locked"), "Permission denied")]
    assert not summary.complete
    text = summary.format()
    assert f"{root / 'locked'}: Permission denied" in text and "could not be searched" in text


def test_unreadable_subfolder_makes_the_cli_fail(
    model_folder, speech, tmp_path, monkeypatch, capsys
):
    root = tmp_path / "d"
    (root / "locked").mkdir(parents=True)
    sf.write(root / "a.wav", speech[0], speech[1])
    _deny(monkeypatch, root / "locked")
    out = tmp_path / "s.csv"
    assert main(["score", str(model_folder), str(root), "--out", str(out), "--no_progress"]) == 1
    assert str(root / "locked") in capsys.readouterr().err
    assert len(_csv_rows(out)) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 folder")
def test_chmod_000_subfolder_is_named_in_the_summary(tmp_path):
    root = tmp_path / "d"
    _write(root / "a.wav")
    _write(root / "locked" / "hidden.wav")
    os.chmod(root / "locked", 0)
    try:
        summary = score_collection(FakeScorer(), [root], tmp_path / "s.csv", progress=False)
    finally:
        os.chmod(root / "locked", 0o755)
    assert [f for f, _ in summary.unreadable_folders] == [str(root / "locked")]


# --- 15: an output that is one of the inputs ---------------------------------------------


@pytest.fixture
def listed(tmp_path):
    """A CSV list of two recordings; returns (list, recordings)."""
    wavs = [_write(tmp_path / "a.wav"), _write(tmp_path / "b.wav")]
    pd.DataFrame({"path": ["a.wav", "b.wav"]}).to_csv(tmp_path / "list.csv", index=False)
    return tmp_path / "list.csv", wavs


def test_out_naming_the_input_list_is_refused(listed, tmp_path):
    lst, _ = listed
    before = lst.read_bytes()
    os.symlink(lst, tmp_path / "alias.csv")
    for out in (lst, tmp_path / "alias.csv", f"{tmp_path}/../{tmp_path.name}/list.csv"):
        scorer = FakeScorer()
        with pytest.raises(ScoringInputError, match=r"is also an input .*list\.csv"):
            score_collection(scorer, [lst], out, progress=False)
        assert scorer.calls == [] and lst.read_bytes() == before


def test_out_naming_an_input_file_or_listed_path_is_refused(tmp_path):
    wav = _write(tmp_path / "a.wav")
    other = tmp_path / "scores.json"
    other.write_text("[]")
    # An explicit input that is not audio is kept as given (it gets an error row).
    with pytest.raises(ScoringInputError, match="is also an input"):
        score_collection(FakeScorer(), [wav, other], other, progress=False)
    pd.DataFrame({"path": ["a.wav", "out.csv"]}).to_csv(tmp_path / "l.csv", index=False)
    with pytest.raises(ScoringInputError, match=r"is also an input .*out\.csv"):
        score_collection(FakeScorer(), [tmp_path / "l.csv"], tmp_path / "out.csv", progress=False)
    assert not (tmp_path / "out.csv").exists()


def test_out_that_is_a_folder_is_refused(tmp_path):
    wav = _write(tmp_path / "a.wav")
    (tmp_path / "res.csv").mkdir()
    with pytest.raises(ScoringInputError, match="is a folder"):
        score_collection(FakeScorer(), [wav], tmp_path / "res.csv", progress=False)


def test_cli_refuses_out_naming_an_input_before_loading_the_model(listed, tmp_path, capsys):
    lst, _ = listed
    before = lst.read_bytes()
    status = main(["score", str(tmp_path / "no_model"), str(lst), "--out", str(lst)])
    assert status == 2 and lst.read_bytes() == before
    err = capsys.readouterr().err.strip()
    assert err.startswith("jsqa: error: the output") and "is also an input" in err
    assert len(err.splitlines()) == 1


# --- 16: --resume ----------------------------------------------------------------------


@pytest.fixture
def two(tmp_path):
    root = tmp_path / "d"
    return [_write(root / f"{name}.wav", seconds) for name, seconds in (("a", 0.5), ("b", 1.0))]


def test_resume_refuses_another_models_output(two, tmp_path):
    out = tmp_path / "s.csv"
    score_collection(FakeScorer("model-A"), two, out, progress=False, model_name="A")
    meta = json.loads((tmp_path / f"s.csv{META_SUFFIX}").read_text())
    assert meta["model"] == "A" and meta["fingerprint"] == "model-A"
    before = out.read_bytes()
    other = FakeScorer("model-B")
    with pytest.raises(ScoringInputError, match=r"another model, A \(model-A\)"):
        score_collection(other, two, out, resume=True, progress=False, model_name="B")
    assert other.calls == [] and out.read_bytes() == before
    same = FakeScorer("model-A")
    summary = score_collection(same, two, out, resume=True, progress=False)
    assert same.calls == [] and summary.skipped_resumed == 2


def test_resume_refuses_an_output_without_a_model_record(two, tmp_path):
    out = tmp_path / "s.csv"
    score_collection(FakeScorer("model-A"), two, out, progress=False)
    (tmp_path / f"s.csv{META_SUFFIX}").unlink()
    with pytest.raises(ScoringInputError, match="no record of the model"):
        score_collection(FakeScorer("model-A"), two, out, resume=True, progress=False)
    # Without --resume the file is replaced, with a new record.
    score_collection(FakeScorer("model-B"), two, out, progress=False)
    assert json.loads((tmp_path / f"s.csv{META_SUFFIX}").read_text())["fingerprint"] == "model-B"


def test_model_fingerprint_follows_the_weights(model_folder, tmp_path):
    from jsqa_sb import JSQA

    first = JSQA.from_hparams(source=str(model_folder), savedir=tmp_path / "sd1")
    again = JSQA.from_hparams(source=str(model_folder), savedir=tmp_path / "sd2")
    assert model_fingerprint(first) == model_fingerprint(again)
    with torch.no_grad():
        next(again.mods.head.parameters()).add_(1e-3)
    assert model_fingerprint(first) != model_fingerprint(again)
    assert model_fingerprint(object()) is None


def test_cli_resume_refuses_another_models_output(model_folder, speech, tmp_path, capsys):
    other = tmp_path / "other_model"
    shutil.copytree(model_folder, other)
    state = torch.load(other / "head.ckpt", weights_only=True)
    torch.save(
        {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}, other / "head.ckpt"
    )
    root = tmp_path / "d"
    root.mkdir()
    sf.write(root / "a.wav", speech[0], speech[1])
    out = tmp_path / "s.csv"
    args = [str(root), "--out", str(out), "--no_progress", "--resume"]
    assert main(["score", str(model_folder), *args]) == 0
    before = out.read_bytes()
    assert main(["score", str(other), *args]) == 2
    err = capsys.readouterr().err
    assert "another model" in err and str(model_folder) in err and "Traceback" not in err
    assert out.read_bytes() == before
    assert main(["score", str(model_folder), *args]) == 0  # the same model continues


def test_resume_retries_missing_cut_short_and_non_numeric_scores(tmp_path):
    root = tmp_path / "d"
    files = {n: _write(root / f"{n}.wav", 0.5) for n in ("ok", "text", "nan", "empty", "cut")}
    out = tmp_path / "s.csv"
    lines = [
        ",".join(COLUMNS),
        f"{files['ok']},0.5,16000,1.5,2.5,",
        f"{files['text']},0.5,16000,abc,2.5,",
        f"{files['nan']},0.5,16000,nan,2.5,",
        f"{files['empty']},0.5,16000,,2.5,",
        f"{files['cut']},0.5,16000,1.5,2.",  # the last line, cut short by a crash
    ]
    out.write_text("\r\n".join(lines))
    scorer = FakeScorer()
    summary = score_collection(scorer, [root], out, resume=True, progress=False)
    assert sorted(scorer.sent) == sorted(files[n] for n in ("text", "nan", "empty", "cut"))
    rows = _csv_rows(out)
    assert sorted(r["path"] for r in rows) == sorted(files.values())  # each once
    assert all(float(r["mos"]) == 1.5 and float(r["noi"]) == 2.5 for r in rows)
    assert summary.skipped_resumed == 1 and summary.scored == 4


def test_resume_drops_junk_rows(tmp_path):
    a = _write(tmp_path / "d" / "a.wav")
    out = tmp_path / "s.csv"
    out.write_text(
        ",".join(COLUMNS) + "\n"
        "/elsewhere/kept.wav,1.0,16000,3.0,2.0,\n"
        "/elsewhere/failed.wav,,,,,cannot read audio header\n"
        f"{a},0.5,16000,1.5,2.5,,one field too many\n"
        ",1.0,16000,3.0,2.0,\n"  # no path
        + ",".join(COLUMNS)  # a second header (two runs' outputs joined)
        + "\n/elsewhere/junk.wav,1.0,16000,x,y,\n"
        "garbage\n"
        "\n"
    )
    scorer = FakeScorer()
    summary = score_collection(scorer, [a], out, resume=True, progress=False)
    assert scorer.sent == [a]
    rows = {r["path"]: r for r in _csv_rows(out)}
    assert sorted(rows) == ["/elsewhere/failed.wav", "/elsewhere/kept.wav", a]
    assert rows["/elsewhere/failed.wav"]["error"] == "cannot read audio header"
    assert summary.dropped_rows == 5 and "5 unusable row(s)" in summary.format()


def test_resume_json_drops_entries_that_are_not_rows(tmp_path):
    a, b = _write(tmp_path / "d" / "a.wav"), _write(tmp_path / "d" / "b.wav", 1.0)
    out = tmp_path / "s.json"
    good = {"path": a, "duration": 0.5, "sample_rate": 16000, "mos": 1.5, "noi": 2.5}
    out.write_text(
        json.dumps(
            [{**good, "error": None}, 7, "junk", {**good, "path": b, "error": None}]
        ).replace(f'"path": "{b}", "duration": 0.5', f'"path": "{b}", "duration": NaN')
    )
    scorer = FakeScorer()
    summary = score_collection(scorer, [a, b], out, resume=True, progress=False)
    assert scorer.sent == [b] and summary.dropped_rows == 2
    rows = json.loads(out.read_text())
    assert [r["path"] for r in rows] == [a, b] and rows[1]["duration"] == 1.0


@pytest.mark.parametrize("damaged", ["meta", "output"])
def test_resume_from_json_nested_too_deep_is_refused_in_one_line(damaged, two, tmp_path):
    out = tmp_path / "s.json"
    score_collection(FakeScorer("model-A"), two, out, progress=False)
    path = tmp_path / f"s.json{META_SUFFIX}" if damaged == "meta" else out
    path.write_text("[" * 100_000)
    with pytest.raises(ScoringInputError, match="nested too deeply"):
        score_collection(FakeScorer("model-A"), two, out, resume=True, progress=False)


# --- 17: NaN and infinite audio ----------------------------------------------------------


def test_nan_and_inf_audio_get_error_rows(model_folder, speech, tmp_path, capsys):
    audio, sr = speech
    root = tmp_path / "d"
    root.mkdir()
    sf.write(root / "good.wav", audio, sr)
    partial = audio.copy()
    partial[100:200] = np.nan
    sf.write(root / "partial_nan.wav", partial, sr, subtype="FLOAT")
    sf.write(root / "inf.wav", np.full(sr, np.inf, dtype=np.float32), sr, subtype="FLOAT")
    out = tmp_path / "s.csv"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        status = main(["score", str(model_folder), str(root), "--out", str(out), "--no_progress"])
    assert status == 1
    assert not [w for w in caught if "digital silence" in str(w.message)]
    rows = {os.path.basename(r["path"]): r for r in _csv_rows(out)}
    for name in ("partial_nan.wav", "inf.wav"):
        assert "NaN or infinite samples" in rows[name]["error"] and rows[name]["mos"] == ""
    assert rows["good.wav"]["error"] == "" and 1 <= float(rows["good.wav"]["mos"]) <= 5
    assert "partial_nan.wav" in capsys.readouterr().err


def test_errors_about_inputs_are_jsqa_errors():
    assert issubclass(ScoringInputError, JSQAError)


@pytest.mark.parametrize("fingerprint", [5, ["x"], {"a": 1}])
def test_resume_refuses_a_model_record_with_a_fingerprint_that_is_not_text(
    fingerprint, two, tmp_path
):
    out = tmp_path / "s.csv"
    score_collection(FakeScorer("model-A"), two, out, progress=False, model_name="A")
    meta = tmp_path / f"s.csv{META_SUFFIX}"
    meta.write_text(json.dumps({"model": "A", "fingerprint": fingerprint}))
    with pytest.raises(ScoringInputError, match="another model"):
        score_collection(FakeScorer("model-A"), two, out, resume=True, progress=False)
