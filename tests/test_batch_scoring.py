import doctest
import json
import logging
import os

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import jsqa_sb.serving.batch_scoring
from jsqa_sb.serving.batch_scoring import (
    ScoringInputError,
    ScoringSummary,
    list_inputs,
    score_collection,
)

NAMES = ("mos", "noi")
COLUMNS = ["path", "duration", "sample_rate", "mos", "noi", "error"]


def test_doctests():
    assert doctest.testmod(jsqa_sb.serving.batch_scoring).failed == 0


def _write(path, seconds, sr=16000, channels=1, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = int(round(seconds * sr))
    shape = (frames,) if channels == 1 else (frames, channels)
    audio = np.random.default_rng(0).uniform(-0.1, 0.1, shape).astype(np.float32)
    sf.write(str(path), audio, sr, format=fmt)
    return str(path)


@pytest.fixture
def corpus(tmp_path):
    """A small collection; returns (INPUT arguments, {name: absolute path}, durations)."""
    root = tmp_path / "data"
    files = {
        "short": _write(root / "a" / "short.wav", 0.5),
        "mid": _write(root / "a" / "b" / "mid.flac", 1.0),
        "upper": _write(root / "a" / "c" / "UPPER.WAV", 1.5, fmt="WAV"),
        "stereo": _write(root / "a" / "b" / "stereo48k.wav", 2.0, sr=48000, channels=2),
        "listed": _write(root / "other" / "listed.wav", 0.25),
        "extra": _write(root / "other" / "extra.wav", 3.0),
    }
    (root / "a" / "notes.txt").write_text("not audio")
    (root / "a" / "corrupt.wav").write_bytes(b"RIFF garbage bytes, certainly not a wave file")
    (root / "a" / "b" / "empty.wav").write_bytes(b"")
    files["corrupt"] = str(root / "a" / "corrupt.wav")
    files["empty"] = str(root / "a" / "b" / "empty.wav")
    lists = root / "lists"
    lists.mkdir()
    pd.DataFrame({"path": ["../other/listed.wav", files["short"]], "mos": [3.0, 4.0]}).to_csv(
        lists / "list.csv", index=False
    )
    durations = {"short": 0.5, "mid": 1.0, "upper": 1.5, "stereo": 2.0, "listed": 0.25}
    durations["extra"] = 3.0
    inputs = [root / "a", str(lists / "list.csv"), files["extra"], files["mid"]]
    return inputs, files, durations


class FakeScorer:
    """Scores = f(duration); records its batches; fails for chosen file names."""

    output_names = NAMES

    def __init__(self, fail_for=(), raise_on_call=None, exc=None):
        self.fail_for, self.raise_on_call = set(fail_for), raise_on_call
        self.exc = exc or RuntimeError("model bug")
        self.calls = []

    def score_files(self, paths):
        self.calls.append(list(paths))
        if len(self.calls) == self.raise_on_call:
            raise self.exc
        results = []
        for path in paths:
            if os.path.basename(path) in self.fail_for:
                results.append(ValueError(f"{path}: cannot decode"))
            else:
                results.append({"mos": 1.0 + sf.info(path).duration, "noi": 2.5, "extra": 0})
        return results

    @property
    def sent(self):
        return [p for call in self.calls for p in call]


def _rows(out):
    """The output as a DataFrame (blank cells: NaN), and its raw rows for JSON."""
    if str(out).endswith(".csv"):
        return pd.read_csv(out)
    rows = json.loads(open(out).read())
    assert all(list(row) == COLUMNS for row in rows)
    return pd.DataFrame(rows, columns=COLUMNS)


def _blank(value):
    return value is None or (isinstance(value, float) and np.isnan(value))


# --- list_inputs ------------------------------------------------------------------------


def test_collect_folder_csv_and_file(corpus):
    inputs, files, _ = corpus
    got = list_inputs(inputs).paths
    folder = sorted(files[k] for k in ("short", "mid", "upper", "stereo", "corrupt", "empty"))
    # Folder (recursive, sorted, case-insensitive extensions, .txt left out), then the CSV's
    # relative path resolved against its folder, then the explicit file; repeats dropped.
    assert got == folder + [files["listed"], files["extra"]]
    assert all(os.path.isabs(p) for p in got)


def test_collect_keeps_explicit_other_extension(tmp_path):
    odd = tmp_path / "clip.raw"
    odd.write_bytes(b"\0" * 10)
    assert list_inputs([odd]).paths == [str(odd)]


def test_collect_missing_path(tmp_path):
    with pytest.raises(ScoringInputError, match="nowhere.wav"):
        list_inputs([tmp_path / "nowhere.wav"])


def test_collect_csv_without_column(tmp_path):
    pd.DataFrame({"file": ["a.wav"], "mos": [3.0]}).to_csv(tmp_path / "l.csv", index=False)
    with pytest.raises(ScoringInputError, match=r"'path'.*file, mos"):
        list_inputs([tmp_path / "l.csv"])
    assert list_inputs([tmp_path / "l.csv"], column="file").paths == [str(tmp_path / "a.wav")]


def test_collect_no_audio(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(ScoringInputError, match="no audio found"):
        list_inputs([tmp_path])


# --- score_collection -------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["csv", "json"])
def test_score_outputs(corpus, tmp_path, ext, caplog):
    inputs, files, durations = corpus
    scorer = FakeScorer()
    out = tmp_path / "res" / f"scores.{ext}"
    with caplog.at_level(logging.WARNING, logger="jsqa_sb.serving.batch_scoring"):
        summary = score_collection(scorer, inputs, out, progress=False)

    table = _rows(out)
    assert list(table.columns) == COLUMNS
    assert sorted(table["path"]) == sorted(files.values())
    rows = {os.path.basename(r["path"]): r for r in table.to_dict("records")}
    for name, seconds in durations.items():
        row = rows[os.path.basename(files[name])]
        assert row["duration"] == pytest.approx(seconds)
        assert row["mos"] == pytest.approx(1.0 + seconds)
        assert _blank(row["error"])
    if ext == "json":  # null, not "", for no error and for missing values
        raw = {os.path.basename(r["path"]): r for r in json.loads(out.read_text())}
        assert raw["short.wav"]["error"] is None and raw["empty.wav"]["duration"] is None
    assert rows["stereo48k.wav"]["sample_rate"] == 48000
    assert rows["short.wav"]["sample_rate"] == 16000
    assert "0 bytes" in rows["empty.wav"]["error"]
    assert "cannot read audio header" in rows["corrupt.wav"]["error"]
    for bad in ("empty.wav", "corrupt.wav"):
        assert _blank(rows[bad]["duration"]) and _blank(rows[bad]["mos"])
        assert _blank(rows[bad]["sample_rate"])

    # Unreadable files never reach the scorer.
    assert sorted(scorer.sent) == sorted(files[k] for k in durations)
    assert (summary.total, summary.scored, summary.failed) == (8, 6, 2)
    assert summary.skipped_resumed == 0 and summary.out == str(out)
    assert {p for p, _ in summary.errors} == {files["corrupt"], files["empty"]}
    text = summary.format()
    assert files["corrupt"] in text and files["empty"] in text and str(out) in text
    assert files["corrupt"] in caplog.text and files["empty"] in caplog.text


def test_batches_sorted_by_length_within_limits(corpus, tmp_path):
    inputs, files, durations = corpus
    scorer = FakeScorer()
    score_collection(scorer, inputs, tmp_path / "s.csv", batch_size=2, max_batch_seconds=2.6)
    by_path = {files[k]: d for k, d in durations.items()}
    lengths = [[by_path[p] for p in call] for call in scorer.calls]
    # 0.25+0.5 | 1.0+1.5 | 2.0 (2.0+3.0 > 2.6) | 3.0 alone although over the limit
    assert lengths == [[0.25, 0.5], [1.0, 1.5], [2.0], [3.0]]

    scorer = FakeScorer()
    score_collection(scorer, inputs, tmp_path / "t.csv", batch_size=4, max_batch_seconds=100)
    assert [len(c) for c in scorer.calls] == [4, 2]
    assert [by_path[p] for p in scorer.sent] == sorted(durations.values())


def test_failing_file_and_failing_batch(corpus, tmp_path):
    inputs, files, _ = corpus
    scorer = FakeScorer(fail_for={"mid.flac"}, raise_on_call=1)
    out = tmp_path / "s.csv"
    summary = score_collection(scorer, inputs, out, batch_size=2, progress=False)
    assert len(scorer.calls) == 3  # the crash on the first batch did not stop the others
    rows = {r["path"]: r for r in _rows(out).to_dict("records")}
    assert len(rows) == 8
    for path in scorer.calls[0]:  # listed + short
        assert rows[path]["error"] == "RuntimeError: model bug"
    assert rows[files["mid"]]["error"] == "ValueError: cannot decode"
    assert _blank(rows[files["upper"]]["error"]) and _blank(rows[files["extra"]]["error"])
    assert summary.failed == 5 and summary.scored == 3
    assert "model bug" in summary.format()


@pytest.mark.parametrize("ext", ["csv", "json"])
def test_resume_after_interruption(corpus, tmp_path, ext):
    inputs, files, _ = corpus
    out = tmp_path / f"s.{ext}"
    first = FakeScorer(fail_for={"listed.wav"}, raise_on_call=2, exc=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        score_collection(first, inputs, out, batch_size=2, progress=False)
    saved = _rows(out)
    assert len(saved) == 4  # corrupt + empty + the first batch (listed failed, short scored)
    assert first.calls[0] == [files["listed"], files["short"]]

    second = FakeScorer()
    summary = score_collection(second, inputs, out, batch_size=2, resume=True, progress=False)
    table = _rows(out)
    assert list(table.columns) == COLUMNS
    assert sorted(table["path"]) == sorted(files.values())  # every path exactly once
    assert files["short"] not in second.sent  # scored before: not sent again
    assert files["listed"] in second.sent  # failed before: retried
    assert sorted(second.sent) == sorted(
        set(files.values()) - {files["short"]} - {files["corrupt"], files["empty"]}
    )
    assert summary.skipped_resumed == 1 and summary.scored == 5 and summary.failed == 2
    assert _blank(table.set_index("path")["error"][files["listed"]])


def test_resume_skips_everything_done(corpus, tmp_path):
    inputs, files, _ = corpus
    out = tmp_path / "s.csv"
    score_collection(FakeScorer(), inputs, out, progress=False)
    again = FakeScorer()
    summary = score_collection(again, inputs, out, resume=True, progress=False)
    assert again.calls == [] and summary.skipped_resumed == 6 and summary.failed == 2
    assert sorted(_rows(out)["path"]) == sorted(files.values())


def test_resume_keeps_rows_of_other_paths_and_drops_truncated(corpus, tmp_path):
    inputs, files, _ = corpus
    out = tmp_path / "s.csv"
    out.write_text(
        ",".join(COLUMNS) + "\n"
        f"/elsewhere/x.wav,1.0,16000,3.0,2.0,\n"
        f"{files['extra']},3.0,16000,4.0,2.0,\n"
        f"{files['mid']},1.0,16000,2.0"  # cut short by a crash
    )
    scorer = FakeScorer()
    summary = score_collection(scorer, inputs, out, resume=True, progress=False)
    assert files["extra"] not in scorer.sent and files["mid"] in scorer.sent
    paths = list(_rows(out)["path"])
    assert sorted(paths) == sorted([*files.values(), "/elsewhere/x.wav"])
    assert summary.skipped_resumed == 1


def test_resume_refuses_other_columns(corpus, tmp_path):
    inputs, _, _ = corpus
    out = tmp_path / "s.csv"
    out.write_text("path,duration,sample_rate,mos,error\n/x.wav,1.0,16000,3.0,\n")
    scorer = FakeScorer()
    with pytest.raises(ScoringInputError, match="columns"):
        score_collection(scorer, inputs, out, resume=True, progress=False)
    assert scorer.calls == []


def test_overwrite_without_resume(corpus, tmp_path):
    inputs, files, _ = corpus
    out = tmp_path / "s.json"
    out.write_text('[{"path": "/old.wav"}]')
    score_collection(FakeScorer(), inputs, out, progress=False)
    assert sorted(_rows(out)["path"]) == sorted(files.values())


def test_unknown_extension_before_scoring(corpus, tmp_path):
    inputs, _, _ = corpus
    scorer = FakeScorer()
    with pytest.raises(ScoringInputError, match=r"\.csv or \.json"):
        score_collection(scorer, inputs, tmp_path / "s.xlsx", progress=False)
    assert scorer.calls == [] and not (tmp_path / "s.xlsx").exists()


def test_bad_results_become_errors(tmp_path):
    wav = _write(tmp_path / "a.wav", 0.1)
    wav2 = _write(tmp_path / "b.wav", 0.2)

    class Odd(FakeScorer):
        def score_files(self, paths):
            self.calls.append(paths)
            return [{"mos": float("nan"), "noi": 1.0}, {"mos": 1.0}]

    summary = score_collection(Odd(), [tmp_path], tmp_path / "s.csv", progress=False)
    assert dict(summary.errors) == {
        wav: "non-finite score: mos=nan",
        wav2: "scorer returned no noi",
    }


def test_progress_bar_runs(corpus, tmp_path, capsys):
    inputs, _, _ = corpus
    score_collection(FakeScorer(), inputs, tmp_path / "s.csv", progress=True)
    err = capsys.readouterr().err
    assert "6/6" in err and "failed=2" in err


def test_summary_format_truncates():
    errors = [(f"/d/{i}.wav", "bad") for i in range(13)]
    text = ScoringSummary(13, 0, 13, 0, "s.csv", errors).format()
    assert "/d/9.wav: bad" in text and "/d/10.wav" not in text
    assert text.endswith("... and 3 more")


def test_missing_file_listed_in_csv_gets_error_row(tmp_path):
    wav = _write(tmp_path / "a.wav", 0.1)
    pd.DataFrame({"path": ["a.wav", "gone.wav", ""]}).to_csv(tmp_path / "l.csv", index=False)
    scorer = FakeScorer()
    summary = score_collection(scorer, [tmp_path / "l.csv"], tmp_path / "s.csv", progress=False)
    assert scorer.sent == [wav]
    assert summary.errors == [(str(tmp_path / "gone.wav"), "file not found")]
    assert len(_rows(tmp_path / "s.csv")) == 2


@pytest.mark.parametrize(
    "names, message",
    [((), "encoder-only"), (("mos", "path"), "clash"), (("mos", "mos"), "clash")],
)
def test_a_scorer_that_cannot_fill_the_columns_is_refused_before_anything_is_written(
    corpus, tmp_path, names, message
):
    inputs, _, _ = corpus
    scorer = FakeScorer()
    scorer.output_names = names
    out = tmp_path / "scores.csv"
    with pytest.raises(ScoringInputError, match=message):
        score_collection(scorer, inputs, out, progress=False)
    assert scorer.calls == [] and not out.exists()
