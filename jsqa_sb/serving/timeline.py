"""Quality over time (``jsqa score --timeline out/``): window scores as CSV and picture.

For every input, ``out/<name>.csv`` (``start, end`` in seconds, one column per output),
``out/<name>.png`` (the waveform's envelope above the score curves, on one time axis),
and ``out/index.csv`` (``path, csv, png, windows, error``). Recordings are read a few
windows or blocks at a time, so an hour needs no more memory than a second.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from jsqa_sb.data.prepare_utils import writable_folder
from jsqa_sb.errors import JSQAError

#: Default window length (JND pretraining's excerpts) and hop of ``--timeline``, in seconds.
DEFAULT_WINDOW_SECONDS = 3.0
DEFAULT_HOP_SECONDS = 1.0

#: Columns of the envelope drawn for the waveform (about the figure's width in pixels).
ENVELOPE_POINTS = 2000

#: The index of a timeline folder.
INDEX_NAME = "index.csv"


class TimelineError(JSQAError, ValueError):
    """A timeline folder or setting that cannot be used; the message says why."""


def check_timeline_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed; :class:`TimelineError` if files cannot be written in it."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise TimelineError(f"--timeline {folder}: it is a file, not a folder")
    return writable_folder(path, TimelineError, f"--timeline {folder}")


def check_window(window_seconds: float, hop_seconds: float) -> None:
    """:class:`TimelineError`, naming the option, unless both are positive finite seconds."""
    for option, value in (("--timeline_window", window_seconds), ("--timeline_hop", hop_seconds)):
        if not (math.isfinite(value) and value > 0):
            raise TimelineError(f"{option} must be a positive number of seconds, not {value}")


def timeline_names(paths: Sequence[str]) -> dict[str, str]:
    """A file name stem for each path: its own, or with a hash of the path if not unique.

    Example
    -------
    >>> names = timeline_names(["/a/x.wav", "/b/x.wav", "/b/y.flac"])
    >>> names["/b/y.flac"], names["/a/x.wav"] != names["/b/x.wav"]
    ('y', True)
    """
    stems = [Path(p).stem or "recording" for p in paths]
    counts = Counter(stem.lower() for stem in stems)
    names = {}
    for path, stem in zip(paths, stems):
        if counts[stem.lower()] > 1 or stem.lower() == Path(INDEX_NAME).stem:
            stem = f"{stem}-{hashlib.sha1(os.fsencode(path)).hexdigest()[:8]}"
        names[path] = stem
    return names


def write_timeline_csv(
    windows: Sequence[Any], output_names: Sequence[str], out: str | os.PathLike
) -> None:
    """Write the windows of :meth:`JSQA.score_timeline` as CSV: ``start, end``, the outputs."""
    with open(out, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["start", "end", *output_names])
        writer.writerows(
            [f"{w.start:.3f}", f"{w.end:.3f}", *(f"{w.scores[name]:.4f}" for name in output_names)]
            for w in windows
        )


def waveform_envelope(
    path: str | os.PathLike, points: int = ENVELOPE_POINTS, block_seconds: float = 10.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre (seconds), minimum and maximum of the mono waveform in ``points`` time bins."""
    info = sf.info(str(path))
    total = max(1, int(info.frames))
    bins = max(1, min(points, total))
    edges = np.linspace(0, total, bins + 1)
    low, high = np.full(bins, np.inf), np.full(bins, -np.inf)
    block = max(1, int(block_seconds * info.samplerate))
    offset = 0
    for data in sf.blocks(str(path), blocksize=block, dtype="float32", always_2d=True):
        mono = data.mean(axis=1)
        index = np.searchsorted(edges, offset + np.arange(mono.size), side="right") - 1
        index = np.clip(index, 0, bins - 1)
        np.minimum.at(low, index, mono)
        np.maximum.at(high, index, mono)
        offset += mono.size
    empty = ~np.isfinite(low)
    low[empty], high[empty] = 0.0, 0.0
    times = (edges[:-1] + edges[1:]) / 2 / info.samplerate
    return times, low, high


def plot_timeline(
    path: str | os.PathLike,
    windows: Sequence[Any],
    output_names: Sequence[str],
    out: str | os.PathLike,
) -> None:
    """Draw the waveform above the score curves (each window at its centre) into ``out``."""
    from matplotlib.figure import Figure  # no pyplot: no global state, Agg for PNG

    times, low, high = waveform_envelope(path)
    duration = sf.info(str(path)).duration
    fig = Figure(figsize=(10, 5.5), dpi=100, layout="constrained")
    wave_ax, score_ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1.6]})
    wave_ax.fill_between(times, low, high, color="tab:gray", linewidth=0.5)
    peak = max(float(np.max(np.abs([low, high]))), 1e-6)
    wave_ax.set(ylim=(-1.05 * peak, 1.05 * peak), ylabel="amplitude")
    wave_ax.set_title(f"{Path(path).name}: waveform and scores over time", fontsize=11)
    wave_ax.grid(alpha=0.3)
    centres = [(w.start + w.end) / 2 for w in windows]
    for name in output_names:
        values = [w.scores[name] for w in windows]
        score_ax.plot(centres, values, marker="o", markersize=3, linewidth=1.5, label=name)
    if windows:
        span = f"window {windows[0].end - windows[0].start:.1f} s"
        score_ax.annotate(span, (0.01, 0.03), xycoords="axes fraction", fontsize=9, color="dimgray")
    score_ax.set(xlim=(0, max(duration, 1e-3)), ylim=(0.9, 5.1), xlabel="time (s)")
    score_ax.set_ylabel("predicted score (1-5)")
    score_ax.grid(alpha=0.3)
    score_ax.legend(loc="upper right", fontsize=9, ncol=min(len(output_names), 5))
    fig.savefig(out)


def write_index(folder: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write ``index.csv``: ``path, csv, png, windows, error`` for every input."""
    index = folder / INDEX_NAME
    with open(index, "w", newline="", encoding="utf-8", errors="backslashreplace") as file:
        writer = csv.DictWriter(file, ["path", "csv", "png", "windows", "error"])
        writer.writeheader()
        writer.writerows(rows)
    return index


def write_timelines(
    model: Any,
    paths: Sequence[str],
    folder: str | os.PathLike,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
    hop_seconds: float = DEFAULT_HOP_SECONDS,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Write the timeline CSV and PNG of every recording in ``paths`` into ``folder``.

    ``model`` has ``score_timeline`` and ``output_names``, like :class:`JSQA`. Returns the
    rows of ``index.csv``, where a recording that cannot be scored has its error.
    """
    from tqdm import tqdm

    from jsqa_sb.serving.inference import RecordingError

    check_window(window_seconds, hop_seconds)
    folder = check_timeline_folder(folder)
    names = timeline_names(paths)
    outputs = tuple(model.output_names)
    rows = []
    for path in tqdm(paths, desc="Timelines", unit="file", disable=not progress):
        csv_path, png_path = folder / f"{names[path]}.csv", folder / f"{names[path]}.png"
        row = {"path": path, "csv": csv_path.name, "png": png_path.name, "windows": 0}
        try:
            if not os.path.isfile(path):  # a named pipe would block: never opened
                raise RecordingError("not a regular file")
            windows = model.score_timeline(path, window_seconds, hop_seconds)
            write_timeline_csv(windows, outputs, csv_path)
            plot_timeline(path, windows, outputs, png_path)
            row.update(windows=len(windows), error="")
        except (RecordingError, sf.LibsndfileError) as err:
            row.update(csv="", png="", error=" ".join(str(err).split()))
        rows.append(row)
    write_index(folder, rows)
    return rows
