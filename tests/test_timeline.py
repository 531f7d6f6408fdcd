"""Quality over time: ``score_file(windows=True)``, ``score_timeline``, ``jsqa score --timeline``.

The end-to-end test needs a model that hears noise. A tiny JSQA network is trained
here, in a few seconds, to tell clean LibriVox speech (target 4.5) from the same
speech in white noise (target 1.5) on three of the five sample clips; it is exported
with ``jsqa export`` and scored through the command line on a recording made of the
other two clips, noisy in its first half and clean in its second (the same speech in
both halves, so only the noise differs).
"""

import csv
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from jsqa_sb.cli import main
from jsqa_sb.serving.inference import JSQA, FileScores, WindowScores

REPO = Path(__file__).resolve().parents[1]
SAMPLES = sorted((REPO / "jsqa_sb" / "samples").glob("*.flac"))
SR = 16000


def _clip(index: int) -> np.ndarray:
    audio, sr = sf.read(SAMPLES[index], dtype="float32")
    assert sr == SR
    return audio


def _add_noise(clean: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(clean.size).astype(np.float32)
    gain = np.sqrt(np.mean(clean**2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    return clean + gain * noise


@pytest.fixture(scope="module")
def noise_model(finetune_run, tmp_path_factory) -> Path:
    """An exported tiny model trained to score noisy speech low, clean speech high."""
    from conftest import TINY

    from jsqa_sb.networks import JSQAEncoder, MOSHead
    from jsqa_sb.serving.hub_export import export_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic, and as fast as 2 on a shared machine
    try:
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        encoder, head = JSQAEncoder(**TINY), MOSHead(16, 8)
        speech = np.concatenate([_clip(i) for i in (0, 1, 2)])  # held out: clips 3 and 4
        params = [*encoder.parameters(), *head.parameters()]
        optimizer = torch.optim.Adam(params, lr=3e-3)
        length = 2 * SR
        for _ in range(45):
            wavs, targets = [], []
            for item in range(8):
                start = rng.integers(0, speech.size - length)
                wav = speech[start : start + length].copy()
                if item % 2:
                    wav = _add_noise(wav, rng.uniform(-5, 15), rng)
                wav *= 10 ** (rng.uniform(-20, 0) / 20) / np.abs(wav).max()
                wavs.append(wav)
                targets.append(1.5 if item % 2 else 4.5)
            scores = head(encoder(torch.from_numpy(np.stack(wavs))))[:, 0]
            loss = ((scores - torch.tensor(targets)) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    run = tmp_path_factory.mktemp("noise_run") / "finetune"
    shutil.copytree(finetune_run, run)
    ckpt = next((run / "save").glob("CKPT+*"))
    torch.save(encoder.eval().state_dict(), ckpt / "encoder.ckpt")
    torch.save(head.eval().state_dict(), ckpt / "head.ckpt")
    results = json.loads((run / "results.json").read_text())
    results["checkpoint"] = str(ckpt)  # the copy's, not the original run's
    (run / "results.json").write_text(json.dumps(results))
    return export_model(run, tmp_path_factory.mktemp("noise_hub") / "model")


@pytest.fixture(scope="module")
def half_noisy(tmp_path_factory) -> tuple[Path, float]:
    """Two held-out clips in white noise at 5 dB SNR, then the same two clips clean."""
    rng = np.random.default_rng(1)
    clean = np.concatenate([_clip(3), _clip(4)])
    audio = np.concatenate([_add_noise(clean, 5.0, rng), clean])
    audio = 0.5 * audio / np.abs(audio).max()
    path = tmp_path_factory.mktemp("timeline") / "half_noisy.wav"
    sf.write(path, audio, SR, subtype="PCM_16")
    return path, clean.size / SR


def test_timeline_curve_rises_where_the_noise_stops(noise_model, half_noisy, tmp_path, capsys):
    path, middle = half_noisy
    folder = tmp_path / "timelines"
    out = tmp_path / "scores.csv"
    args = ["score", str(noise_model), str(path), "--out", str(out), "--no_progress"]
    assert main([*args, "--timeline", str(folder)]) == 0
    assert "Timelines of 1 recording(s)" in capsys.readouterr().err

    windows = pd.read_csv(folder / "half_noisy.csv")
    assert list(windows.columns[:2]) == ["start", "end"] and "mos" in windows.columns
    assert windows["start"].iloc[0] == 0 and windows["end"].iloc[-1] == pytest.approx(2 * middle)
    assert (windows["end"] - windows["start"]).round(3).eq(3.0).all()  # the default window
    assert np.diff(windows["start"]).round(3).max() <= 1.0  # the default hop
    noisy = windows[windows["end"] <= middle]["mos"]
    clean = windows[windows["start"] >= middle]["mos"]
    assert len(noisy) >= 5 and len(clean) >= 5
    # Every clean window above every noisy one, by a clear margin on average.
    assert clean.min() > noisy.max(), (noisy.tolist(), clean.tolist())
    assert clean.mean() - noisy.mean() > 1.0, (noisy.tolist(), clean.tolist())
    assert (folder / "half_noisy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(folder / "index.csv", newline="") as file:
        (row,) = list(csv.DictReader(file))
    assert row["path"] == str(path) and row["csv"] == "half_noisy.csv" and not row["error"]
    # The file's score (the scores CSV) is that of today's windows, not of the timeline.
    model = JSQA.from_hparams(source=str(noise_model))
    assert pd.read_csv(out)["mos"].iloc[0] == pytest.approx(model.score_file(path)["mos"], abs=1e-4)


def test_timeline_options_set_the_windows(noise_model, half_noisy, tmp_path):
    path, middle = half_noisy
    folder = tmp_path / "t"
    args = ["score", str(noise_model), str(path), "--out", str(tmp_path / "s.csv")]
    assert main([*args, "--no_progress", "--timeline", str(folder), "--timeline_window", "5"]) == 0
    windows = pd.read_csv(folder / "half_noisy.csv")
    assert (windows["end"] - windows["start"]).round(3).eq(5.0).all()
    args += ["--timeline_window", "2", "--timeline_hop", "0.5"]
    assert main([*args, "--no_progress", "--timeline", str(folder)]) == 0
    windows = pd.read_csv(folder / "half_noisy.csv")
    assert np.diff(windows["start"])[:-1].round(3).tolist() == [0.5] * (len(windows) - 2)


def test_score_file_windows_gives_the_windows_and_the_same_mean(model_folder, speech, tmp_path):
    model = JSQA.from_hparams(source=str(model_folder))
    audio, sr = speech
    path = tmp_path / "long.wav"
    sf.write(path, np.tile(audio, 9)[: 25 * sr], sr, subtype="PCM_16")  # 25 s: 3 windows
    result = model.score_file(path, windows=True)
    assert isinstance(result, FileScores)
    assert result.scores == model.score_file(path)  # the same values, not approximately
    assert [(round(w.start, 3), round(w.end, 3)) for w in result.windows] == [
        (0.0, 8.333),
        (8.333, 16.667),
        (16.667, 25.0),
    ]
    weights = np.array([w.end - w.start for w in result.windows])
    mean = np.average([w.scores["mos"] for w in result.windows], weights=weights)
    assert result.scores["mos"] == pytest.approx(mean, abs=1e-5)


def test_score_timeline_covers_the_recording_to_its_end(model_folder, speech, tmp_path):
    model = JSQA.from_hparams(source=str(model_folder))
    audio, sr = speech
    path = tmp_path / "rec.wav"
    sf.write(path, np.tile(audio, 4)[: int(10.5 * sr)], sr, subtype="PCM_16")
    windows = model.score_timeline(path, window_seconds=3.0, hop_seconds=1.0)
    assert all(isinstance(w, WindowScores) for w in windows)
    assert [w.start for w in windows] == [0, 1, 2, 3, 4, 5, 6, 7, 7.5]  # the last ends at 10.5
    assert windows[-1].end == 10.5 and all(w.end - w.start == 3.0 for w in windows)
    short = tmp_path / "short.wav"
    sf.write(short, audio[: 2 * sr], sr, subtype="PCM_16")
    (only,) = model.score_timeline(short, window_seconds=3.0, hop_seconds=1.0)
    assert (only.start, only.end) == (0.0, 2.0) and 1 <= only.scores["mos"] <= 5


@pytest.mark.parametrize(
    "option, expected",
    [
        (["--timeline_window", "0"], "--timeline_window must be a positive number"),
        (["--timeline_hop", "-1"], "--timeline_hop must be a positive number"),
        (["--timeline_window", "0.01"], "shorter than the minimum of"),
    ],
)
def test_bad_timeline_windows_are_refused(model_folder, speech, tmp_path, capsys, option, expected):
    audio, sr = speech
    sf.write(tmp_path / "a.wav", audio, sr)
    out = tmp_path / "s.csv"
    args = ["score", str(model_folder), str(tmp_path / "a.wav"), "--out", str(out)]
    assert main([*args, "--timeline", str(tmp_path / "t"), *option]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0]
    assert not out.exists()  # refused before scoring


def test_a_timeline_folder_that_cannot_be_written_stops_before_scoring(
    model_folder, speech, tmp_path, capsys
):
    audio, sr = speech
    sf.write(tmp_path / "a.wav", audio, sr)
    (tmp_path / "file.txt").write_text("not a folder")
    out = tmp_path / "s.csv"
    for folder in (tmp_path / "file.txt", tmp_path / "file.txt" / "sub"):
        args = ["score", str(model_folder), str(tmp_path / "a.wav"), "--out", str(out)]
        assert main([*args, "--timeline", str(folder)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("jsqa: error: --timeline ")
        assert not out.exists()


@pytest.mark.parametrize("threads", ["0", "-2", "two"])
def test_threads_must_be_positive(model_folder, speech, tmp_path, capsys, threads):
    audio, sr = speech
    sf.write(tmp_path / "a.wav", audio, sr)
    with pytest.raises(SystemExit) as exit_info:
        main(["score", str(model_folder), str(tmp_path / "a.wav"), "--threads", threads])
    assert exit_info.value.code == 2
    assert "--threads: must be a positive integer" in capsys.readouterr().err


def test_threads_option_is_used_and_restored(model_folder, speech, tmp_path, monkeypatch):
    audio, sr = speech
    sf.write(tmp_path / "a.wav", audio, sr)
    seen = []
    original = JSQA.score_files
    monkeypatch.setattr(
        JSQA,
        "score_files",
        lambda self, p: seen.append(torch.get_num_threads()) or original(self, p),
    )
    before = torch.get_num_threads()
    out = str(tmp_path / "s.csv")
    assert (
        main(["score", str(model_folder), str(tmp_path / "a.wav"), "--out", out, "--threads", "3"])
        == 0
    )
    assert seen == [3] and torch.get_num_threads() == before


def test_default_threads_leave_busy_cpus_to_the_other_processes(monkeypatch):
    """All CPUs on an idle machine, one fewer per busy one, never fewer than one."""
    from jsqa_sb.serving import batch_scoring

    monkeypatch.setattr(batch_scoring.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    for busy, threads in ((0.05, 2), (0.9, 1), (1.2, 1), (2.0, 1)):
        monkeypatch.setattr(batch_scoring, "_busy_cpus", lambda busy=busy: busy)
        assert batch_scoring.default_scoring_threads() == threads


def test_busy_cpus_sees_a_busy_process():
    import multiprocessing

    from jsqa_sb.serving.batch_scoring import _busy_cpus

    stop = multiprocessing.Event()
    spinner = multiprocessing.Process(target=_spin, args=(stop,))
    spinner.start()
    try:
        time.sleep(0.3)
        assert _busy_cpus(0.3) > 0.6  # one core kept busy, whatever else runs
    finally:
        stop.set()
        spinner.join(timeout=10)


def _spin(stop):
    while not stop.is_set():
        pass
