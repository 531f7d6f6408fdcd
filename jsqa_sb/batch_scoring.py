"""Score a collection of recordings with a trained model: inputs, batching, output, resume.

This is the driver behind ``jsqa score``; everything except the neural network lives here.
The model is anything that follows the :class:`Scorer` protocol. The driver:

* gathers the input files (audio files, folders searched recursively, CSV lists of paths);
* reads every header first (cheap), so that unreadable files get an error row without
  reaching the model, and sorts the readable files by duration to form batches of
  similar length (at most ``batch_size`` files and ``max_batch_seconds`` of audio);
* writes one row per input (``path, duration, sample_rate, <scores>, error``) as a CSV
  or JSON file, saved after every batch so that an interruption loses nothing;
* with ``resume=True``, skips the inputs that already have a row without an error.

Rows are written in batch order (unreadable files first, then the rest from shortest to
longest), not in input order; sort the file afterwards if the order matters.

Authors
 * JSQA contributors 2026
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from jsqa_sb.audio import AUDIO_EXTENSIONS, AudioReadError
from jsqa_sb.errors import JSQAError
from jsqa_sb.prepare_utils import scan_headers, write_json

logger = logging.getLogger(__name__)

#: Output formats, chosen by the extension of ``out``.
OUTPUT_FORMATS = (".csv", ".json")

#: Columns every output row has before and after the scores.
_LEAD_COLUMNS = ("path", "duration", "sample_rate")
_ERROR_COLUMN = "error"


class Scorer(Protocol):
    """What :func:`score_collection` needs from a model.

    ``output_names`` names the scores (e.g. ``("mos", "noi", "col", "dis", "loud")``).
    ``score_files`` returns one entry per path, in order: a dict of scores, or the
    exception raised for that file (it should not raise for a bad file).
    """

    output_names: tuple[str, ...]

    def score_files(self, paths: list[str]) -> list[dict[str, float] | Exception]:
        """Score ``paths``; one dict of scores or one exception per path, in order."""
        ...


class ScoringInputError(JSQAError, ValueError):
    """Bad arguments to ``jsqa score``; the message says which and why."""


@dataclass
class ScoringSummary:
    """What a :func:`score_collection` run did.

    Arguments
    ---------
    total : int
        Number of inputs collected.
    scored : int
        Inputs scored in this run.
    failed : int
        Inputs that got an error row in this run.
    skipped_resumed : int
        Inputs skipped because the output already had a row without an error.
    out : str
        The output file.
    errors : list of (str, str)
        ``(path, message)`` for every failed input.

    Example
    -------
    >>> summary = ScoringSummary(3, 1, 1, 1, "s.csv", [("/d/a.wav", "empty file (0 bytes)")])
    >>> print(summary.format())
    3 input(s): 1 scored, 1 failed, 1 already scored (resumed); results in s.csv
    Failed:
      /d/a.wav: empty file (0 bytes)
    """

    total: int
    scored: int
    failed: int
    skipped_resumed: int
    out: str
    errors: list[tuple[str, str]] = field(default_factory=list)

    def format(self, limit: int = 10) -> str:
        """Return a short human summary: counts, output file, first ``limit`` failures."""
        counts = f"{self.total} input(s): {self.scored} scored, {self.failed} failed"
        if self.skipped_resumed:
            counts += f", {self.skipped_resumed} already scored (resumed)"
        lines = [f"{counts}; results in {self.out}"]
        if self.errors:
            lines.append("Failed:")
            lines += [f"  {path}: {message}" for path, message in self.errors[:limit]]
            if len(self.errors) > limit:
                lines.append(f"  ... and {len(self.errors) - limit} more")
        return "\n".join(lines)


def collect_inputs(inputs: Sequence[str | os.PathLike], column: str = "path") -> list[str]:
    """List the files to score from the ``jsqa score`` INPUT arguments.

    Arguments
    ---------
    inputs : sequence of str or PathLike
        Each is an audio file (extension in ``AUDIO_EXTENSIONS``, any case), a folder
        (searched recursively for audio files, sorted), or a ``.csv`` file whose
        ``column`` holds paths (relative ones are resolved against the CSV's folder).
        Any other existing file is kept as given: the scorer reports it if unreadable.
    column : str
        The CSV column that holds the paths.

    Returns
    -------
    list of str
        Absolute paths (``os.path.abspath``), duplicates removed, first occurrence kept.
        Paths listed in a CSV are not checked here: a missing one gets an error row.

    Raises
    ------
    ScoringInputError
        If an input does not exist, a CSV cannot be read or lacks ``column``, or no
        audio is found at all.
    """
    missing = [str(p) for p in inputs if not os.path.exists(p)]
    if missing:
        raise ScoringInputError("input not found: " + ", ".join(missing))
    found: list[str] = []
    for item in inputs:
        path = os.path.abspath(item)
        if os.path.isdir(path):
            listed = _list_audio(path)
            if not listed:
                logger.warning("No audio files (%s) in %s", ", ".join(AUDIO_EXTENSIONS), path)
            found += listed
        elif path.lower().endswith(".csv"):
            found += _read_path_list(path, column)
        else:
            found.append(path)
    unique = list(dict.fromkeys(found))
    if not unique:
        raise ScoringInputError(
            "no audio found in " + (", ".join(str(p) for p in inputs) or "(no inputs given)")
        )
    return unique


def score_collection(
    scorer: Scorer,
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    column: str = "path",
    resume: bool = False,
    batch_size: int = 16,
    max_batch_seconds: float = 160.0,
    progress: bool = True,
) -> ScoringSummary:
    """Score every input file with ``scorer`` and write one row per file to ``out``.

    The output is saved after every batch: CSV rows are appended and flushed; JSON is
    rewritten whole (atomically), which costs time quadratic in the number of files, so
    prefer CSV for very large collections. Rows follow batch order (unreadable files
    first, then by increasing duration), not input order.

    Arguments
    ---------
    scorer : Scorer
        The model (see :class:`Scorer`).
    inputs : sequence of str or PathLike
        Audio files, folders and CSV lists (see :func:`collect_inputs`).
    out : str or PathLike
        Output file, ``.csv`` or ``.json``; columns ``path`` (absolute), ``duration``
        (seconds), ``sample_rate``, one per ``scorer.output_names``, and ``error``
        (empty in CSV, null in JSON, when the file was scored).
    column : str
        The column of CSV inputs that holds the paths.
    resume : bool
        Keep the rows of an existing ``out`` and skip their paths, except rows with an
        error, which are dropped and retried. Without it an existing ``out`` is replaced.
    batch_size : int
        Most files per call to ``scorer.score_files``.
    max_batch_seconds : float
        Most audio (seconds, summed) per call; a longer file is scored alone.
    progress : bool
        Show a progress bar (tqdm, on stderr) with the failure count.

    Returns
    -------
    ScoringSummary
        Counts and the failed files with their messages (also logged as warnings).

    Raises
    ------
    ScoringInputError
        For an unknown ``out`` extension, bad batch limits, bad inputs (see
        :func:`collect_inputs`) or, with ``resume``, an ``out`` that cannot be read or has
        other columns; all raised before anything is scored or written.
    """
    paths = collect_inputs(inputs, column)
    return score_paths(
        scorer,
        paths,
        out,
        resume=resume,
        batch_size=batch_size,
        max_batch_seconds=max_batch_seconds,
        progress=progress,
    )


def score_paths(
    scorer: Scorer,
    paths: Sequence[str],
    out: str | os.PathLike,
    *,
    resume: bool = False,
    batch_size: int = 16,
    max_batch_seconds: float = 160.0,
    progress: bool = True,
) -> ScoringSummary:
    """Score files already listed by :func:`collect_inputs`: :func:`score_collection`'s work.

    For a caller that lists the inputs first (to report input errors before loading a
    model) and must not list them twice; the arguments are :func:`score_collection`'s.
    """
    out_path = Path(out)
    suffix = out_path.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ScoringInputError(
            f"cannot write {out}: the output must end with {' or '.join(OUTPUT_FORMATS)}"
        )
    if batch_size < 1 or not max_batch_seconds > 0:
        raise ScoringInputError(
            f"batch_size must be >= 1 and max_batch_seconds > 0 "
            f"(got {batch_size} and {max_batch_seconds})"
        )
    names = tuple(scorer.output_names)
    columns = [*_LEAD_COLUMNS, *names, _ERROR_COLUMN]
    if len(set(columns)) != len(columns):
        raise ValueError(f"scorer output names {names} clash with the columns {columns}")
    sink = _CsvSink(out_path, columns) if suffix == ".csv" else _JsonSink(out_path, columns)

    kept: list[dict[str, Any]] = []
    done: set[str] = set()
    if resume and out_path.exists():
        kept, done = _resumable_rows(sink.read(), names, set(paths))
    todo = [p for p in paths if p not in done]
    summary = ScoringSummary(len(paths), 0, 0, len(paths) - len(todo), str(out_path))
    sink.start(kept)

    def fail(path: str, message: str) -> None:
        summary.failed += 1
        summary.errors.append((path, message))
        logger.warning("Cannot score %s: %s", path, message)

    # Headers first: unreadable files get their error row without reaching the model.
    readable: list[tuple[str, float, int]] = []
    unreadable_rows = []
    for path, info in zip(todo, scan_headers(todo, progress=progress)):
        if isinstance(info, AudioReadError):
            message = "file not found" if not os.path.exists(path) else _describe(info, path)
            fail(path, message)
            unreadable_rows.append(_row(path, None, None, names, {}, message))
        else:
            readable.append((path, info.duration, info.sample_rate))
    if unreadable_rows:
        sink.append(unreadable_rows)

    readable.sort(key=lambda item: item[1])
    batches = _make_batches(readable, batch_size, max_batch_seconds)
    bar = tqdm(total=len(readable), desc="Scoring", unit="file", disable=not progress)
    with bar, logging_redirect_tqdm() if progress else contextlib.nullcontext():
        bar.set_postfix(failed=summary.failed)
        for batch in batches:
            results = _score_batch(scorer, [path for path, _, _ in batch])
            rows = []
            for (path, duration, rate), result in zip(batch, results):
                scores, message = _check_scores(result, names, path)
                if message is None:
                    summary.scored += 1
                else:
                    fail(path, message)
                rows.append(_row(path, duration, rate, names, scores, message))
            sink.append(rows)
            bar.update(len(batch))
            bar.set_postfix(failed=summary.failed)
    return summary


def _list_audio(folder: str) -> list[str]:
    """Audio files under ``folder`` (recursively, any extension case), sorted."""
    found = []
    for root, _, files in os.walk(folder, followlinks=True):
        found += [
            os.path.join(root, name)
            for name in files
            if os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS
        ]
    return sorted(found)


def _read_path_list(csv_path: str, column: str) -> list[str]:
    """Absolute paths from ``column`` of a CSV (relative ones against its folder)."""
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as err:  # EmptyDataError is a ValueError
        raise ScoringInputError(f"cannot read {csv_path}: {err}") from err
    if column not in table.columns:
        raise ScoringInputError(
            f"{csv_path} has no column {column!r}; its columns are: "
            + (", ".join(map(str, table.columns)) or "(none)")
        )
    folder = os.path.dirname(csv_path)
    cells = (str(cell).strip() for cell in table[column])
    return [os.path.abspath(os.path.join(folder, cell)) for cell in cells if cell]


def _make_batches(
    items: Sequence[tuple[str, float, int]], batch_size: int, max_seconds: float
) -> list[list[tuple[str, float, int]]]:
    """Group ``(path, duration, rate)`` items, in order, under both batch limits.

    Example
    -------
    >>> items = [("a", 1.0, 16000), ("b", 2.0, 16000), ("c", 3.0, 16000), ("d", 9.0, 16000)]
    >>> [[p for p, _, _ in b] for b in _make_batches(items, batch_size=2, max_seconds=4.0)]
    [['a', 'b'], ['c'], ['d']]
    """
    batches: list[list[tuple[str, float, int]]] = []
    seconds = 0.0
    for item in items:
        if not batches or len(batches[-1]) >= batch_size or seconds + item[1] > max_seconds:
            batches.append([])
            seconds = 0.0
        batches[-1].append(item)
        seconds += item[1]
    return batches


def _score_batch(scorer: Scorer, paths: list[str]) -> list[Any]:
    """Call the scorer; a crash or a wrong-length answer becomes every file's error."""
    try:
        results = list(scorer.score_files(paths))
    except Exception as err:  # a model bug must not lose the other batches
        logger.exception("The scorer failed on a batch of %d file(s)", len(paths))
        return [err] * len(paths)
    if len(results) != len(paths):
        err = RuntimeError(f"scorer returned {len(results)} result(s) for {len(paths)} file(s)")
        return [err] * len(paths)
    return results


def _check_scores(
    result: Any, names: Sequence[str], path: str
) -> tuple[dict[str, float], str | None]:
    """Turn one scorer result into ``(scores, error message or None)``."""
    if isinstance(result, BaseException):
        return {}, _describe(result, path)
    if not isinstance(result, dict):
        return {}, f"scorer returned {type(result).__name__}, not a dict of scores"
    missing = [name for name in names if name not in result]
    if missing:
        return {}, "scorer returned no " + ", ".join(missing)
    try:
        scores = {name: float(result[name]) for name in names}
    except (TypeError, ValueError) as err:
        return {}, f"score is not a number ({err})"
    bad = [f"{name}={value}" for name, value in scores.items() if not math.isfinite(value)]
    if bad:
        return {}, "non-finite score: " + ", ".join(bad)
    return scores, None


def _describe(err: BaseException, path: str) -> str:
    """One-line message for ``err``, without a leading ``path:`` (the row names it)."""
    text = " ".join(str(err).split())
    if text.startswith(f"{path}: "):
        text = text[len(path) + 2 :]
    if not isinstance(err, AudioReadError):
        text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text


def _row(
    path: str,
    duration: float | None,
    rate: int | None,
    names: Sequence[str],
    scores: dict[str, float],
    error: str | None,
) -> dict[str, Any]:
    """One output row (missing scores are None)."""
    row: dict[str, Any] = {"path": path, "duration": duration, "sample_rate": rate}
    row.update({name: scores.get(name) for name in names})
    row[_ERROR_COLUMN] = error
    return row


def _is_blank(value: Any) -> bool:
    """True for an empty cell: None, NaN or an empty string."""
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def _resumable_rows(
    rows: list[dict[str, Any]], names: Sequence[str], inputs: set[str]
) -> tuple[list[dict[str, Any]], set[str]]:
    """Split an existing output into the rows to keep and the paths already scored.

    A row counts as done when it has no error and all of its values (a row cut short by
    a crash has some missing). Rows of the current inputs that are not done, and repeats
    of a done path, are dropped; rows of other paths are kept as they are.
    """
    required = ("path", "duration", "sample_rate", *names)
    kept, done = [], set()
    for row in rows:
        path = os.path.abspath(str(row.get("path")))
        ok = _is_blank(row.get(_ERROR_COLUMN)) and not any(_is_blank(row.get(c)) for c in required)
        if path in done or (path in inputs and not ok):
            continue
        if ok:
            done.add(path)
        kept.append(row)
    return kept, done


class _CsvSink:
    """CSV output: rewritten atomically once at the start, then appended per batch."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = path, columns

    def read(self) -> list[dict[str, Any]]:
        try:
            table = pd.read_csv(self.path, dtype=str, keep_default_na=False)
        except pd.errors.EmptyDataError:  # created but interrupted before the header
            return []
        except (OSError, ValueError, pd.errors.ParserError) as err:
            raise ScoringInputError(f"cannot resume from {self.path}: {err}") from err
        _check_columns(self.path, list(table.columns), self.columns)
        return table.fillna("").to_dict("records")

    def start(self, rows: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="") as file:
            writer = csv.DictWriter(file, self.columns)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)

    def append(self, rows: list[dict[str, Any]]) -> None:
        with open(self.path, "a", newline="") as file:
            csv.DictWriter(file, self.columns).writerows(rows)
            file.flush()


class _JsonSink:
    """JSON output: the whole list of rows, rewritten atomically after every batch."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = path, columns
        self.rows: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        try:
            rows = json.loads(self.path.read_text())
        except (OSError, ValueError) as err:
            raise ScoringInputError(f"cannot resume from {self.path}: {err}") from err
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise ScoringInputError(f"cannot resume from {self.path}: not a list of rows")
        for row in rows[:1]:
            _check_columns(self.path, list(row), self.columns)
        return rows

    def start(self, rows: list[dict[str, Any]]) -> None:
        self.rows = list(rows)
        write_json(self.path, self.rows)

    def append(self, rows: list[dict[str, Any]]) -> None:
        self.rows += rows
        write_json(self.path, self.rows)


def _check_columns(path: Path, found: list[str], expected: list[str]) -> None:
    """Refuse to resume into a file written with other columns (another model)."""
    if found != expected:
        raise ScoringInputError(
            f"cannot resume from {path}: its columns are {', '.join(found)}; this model "
            f"writes {', '.join(expected)} (choose another output or drop --resume)"
        )
