"""Score a collection of recordings with a trained model: the driver behind ``jsqa score``.

The inputs are listed by :mod:`jsqa_sb.serving.scoring_inputs`; unreadable files get an
error row without reaching the model, the rest are scored in batches of similar
duration, and one row per input is written by :mod:`jsqa_sb.serving.scoring_output`.
Rows follow batch order (unreadable files first, then shortest to longest).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from jsqa_sb.audio import AudioReadError
from jsqa_sb.data.prepare_utils import scan_headers, write_json
from jsqa_sb.serving.scoring_inputs import (  # noqa: F401
    OUTPUT_FORMATS,
    InputListing,
    ScoringInputError,
    check_output,
    list_inputs,
    printable,
    why_not_openable,
)
from jsqa_sb.serving.scoring_output import (
    ERROR_COLUMN,
    LEAD_COLUMNS,
    META_SUFFIX,
    check_same_model,
    check_scores,
    describe_error,
    model_fingerprint,
    output_row,
    output_sink,
    resumable_rows,
)

logger = logging.getLogger(__name__)


class Scorer(Protocol):
    """What :func:`score_collection` needs from a model: named scores for a list of files."""

    output_names: tuple[str, ...]

    def score_files(self, paths: list[str]) -> list[dict[str, float] | Exception]:
        """Score ``paths``; one dict of scores or one exception per path, in order."""


@dataclass
class ScoringSummary:
    """What a :func:`score_collection` run did: counts, and ``(path, message)`` of failures.

    Example
    -------
    >>> summary = ScoringSummary(3, 1, 1, 1, "s.csv", [("/d/a.wav", "empty file (0 bytes)")])
    >>> print(summary.format())
    3 input(s): 1 scored, 1 failed, 1 already scored (resumed); results in s.csv
    Failed:
      /d/a.wav: empty file (0 bytes)
    >>> summary.unreadable_folders.append(("/d/locked", "Permission denied"))
    >>> print(summary.format().splitlines()[-1])
      /d/locked: Permission denied
    """

    total: int
    scored: int
    failed: int
    skipped_resumed: int
    out: str
    errors: list[tuple[str, str]] = field(default_factory=list)
    unreadable_folders: list[tuple[str, str]] = field(default_factory=list)
    dropped_rows: int = 0

    @property
    def complete(self) -> bool:
        """True when every input was scored and every folder searched."""
        return not self.failed and not self.unreadable_folders

    def format(self, limit: int = 10) -> str:
        """A short human summary: counts, output file, first ``limit`` failures."""
        counts = f"{self.total} input(s): {self.scored} scored, {self.failed} failed"
        if self.skipped_resumed:
            counts += f", {self.skipped_resumed} already scored (resumed)"
        if self.dropped_rows:
            counts += f", {self.dropped_rows} unusable row(s) of the old output dropped"
        lines = [f"{counts}; results in {self.out}"]
        folders = "Folders that could not be searched (recordings in them are not scored):"
        for title, items in (("Failed:", self.errors), (folders, self.unreadable_folders)):
            if items:
                lines.append(title)
                lines += [f"  {printable(p)}: {printable(m)}" for p, m in items[:limit]]
                if len(items) > limit:
                    lines.append(f"  ... and {len(items) - limit} more")
        return "\n".join(lines)


def default_scoring_threads() -> int:
    """The torch threads ``jsqa score`` uses: the CPUs that other processes leave free (>= 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, cpus - round(_busy_cpus())))


def _busy_cpus(seconds: float = 0.1) -> float:
    """How many CPUs other processes keep busy now (this process sleeps meanwhile)."""

    def sample():
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except OSError:
            return 1.0  # unknown: leave one CPU, as if one were busy
    total = total1 - total0
    return (os.cpu_count() or 1) * (1.0 - (idle1 - idle0) / total) if total > 0 else 0.0


@contextlib.contextmanager
def scoring_threads(threads: int | None = None) -> Iterator[int]:
    """Set torch's intra-op threads for a block (default: the free CPUs); yields the number."""
    import torch

    if threads is None:
        threads = default_scoring_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ScoringInputError(f"--threads must be a positive number of threads, not {threads}")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(previous)


def score_collection(
    scorer: Scorer,
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    column: str = "path",
    **options: Any,
) -> ScoringSummary:
    """Score every input file with ``scorer`` and write one row per file to ``out``.

    ``inputs`` are audio files, folders and CSV lists whose ``column`` holds the paths
    (:func:`list_inputs`); ``options`` are those of :func:`score_paths`.
    """
    return score_paths(scorer, list_inputs(inputs, column), out, **options)


def score_paths(
    scorer: Scorer,
    paths: Sequence[str] | InputListing,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    batch_size: int = 16,
    max_batch_seconds: float = 160.0,
    progress: bool = True,
    model_name: str | None = None,
) -> ScoringSummary:
    r"""Score files already listed (an :class:`InputListing`, or paths) into ``out``.

    ``out`` (``.csv`` or ``.json``, not an input) gets one row per file: ``path``
    (absolute; a name that is not valid UTF-8 with ``\x`` escapes), ``duration``,
    ``sample_rate``, one column per ``scorer.output_names`` and ``error`` (empty when
    scored). CSV rows are flushed after every batch; JSON is written once, when the run
    ends (also by an error or Ctrl-C). ``<out>.meta.json`` records the model, named
    ``model_name``. ``resume`` keeps the complete rows of an existing ``out`` of the same
    model and skips their paths; without it, ``out`` is replaced. A batch holds at most
    ``batch_size`` files and ``max_batch_seconds`` of audio (a longer file is alone).

    Returns the :class:`ScoringSummary` (also logged). :class:`ScoringInputError`, before
    anything is scored or written, for a bad ``out``, bad batch limits, a scorer without
    output names or whose names clash with the columns, or an ``out`` not to resume.
    """
    listing = paths if isinstance(paths, InputListing) else InputListing(list(paths))
    paths = listing.paths
    out_path = Path(out)
    check_output(out_path, listing.sources, paths)
    if batch_size < 1 or not max_batch_seconds > 0:
        raise ScoringInputError(
            f"batch_size must be >= 1 and max_batch_seconds > 0 "
            f"(got {batch_size} and {max_batch_seconds})"
        )
    names = tuple(scorer.output_names)
    if not names:  # e.g. an encoder-only export of a pretraining run: no MOS head
        raise ScoringInputError(
            "the model gives no scores (no output names): an encoder-only model cannot "
            "score recordings"
        )
    columns = [*LEAD_COLUMNS, *names, ERROR_COLUMN]
    if len(set(columns)) != len(columns):
        raise ScoringInputError(
            f"the model's score names {list(names)} clash with the output's own columns "
            f"{[*LEAD_COLUMNS, ERROR_COLUMN]} (or repeat a name)"
        )
    sink = output_sink(out_path, columns)
    meta_path = out_path.with_name(out_path.name + META_SUFFIX)
    meta = {"model": model_name, "fingerprint": model_fingerprint(scorer), "columns": columns}

    kept, done, dropped = [], set(), 0
    if resume and out_path.exists():
        rows, dropped = sink.read()
        check_same_model(out_path, meta_path, meta, rows)
        kept, done, junk = resumable_rows(rows, columns, names, set(paths))
        dropped += junk
        if dropped:
            logger.warning(
                "Dropped %d unusable row(s) of %s (cut short, not numbers or malformed)",
                dropped,
                out_path,
            )
    todo = [p for p in paths if p not in done]
    skipped, folders = len(paths) - len(todo), list(listing.unreadable_folders)
    summary = ScoringSummary(len(paths), 0, 0, skipped, str(out_path), [], folders, dropped)
    # The old record goes first and the new one comes last, so that a crash in between
    # leaves no record (a refusal to resume), never the record of another model.
    try:
        meta_path.unlink(missing_ok=True)
        sink.start(kept)
        write_json(meta_path, meta)
    except OSError as err:
        raise ScoringInputError(f"cannot write {out_path}: {err.strerror or err}") from err

    def fail(path: str, message: str) -> dict[str, Any]:
        """Count and log a failure; its row, without duration or scores."""
        summary.failed += 1
        summary.errors.append((printable(path), printable(message)))
        logger.warning("Cannot score %s: %s", printable(path), printable(message))
        return output_row(path, None, None, names, {}, message)

    # Paths that must not be opened (a named pipe would block), then headers: unreadable
    # files get their error row without reaching the model.
    why_not = [(path, why_not_openable(path)) for path in todo]
    openable = [path for path, message in why_not if message is None]
    unreadable_rows = [fail(path, message) for path, message in why_not if message is not None]
    readable: list[tuple[str, float, int]] = []
    for path, info in zip(openable, scan_headers(openable, progress=progress)):
        if isinstance(info, AudioReadError):
            message = "file not found" if not os.path.exists(path) else describe_error(info, path)
            unreadable_rows.append(fail(path, message))
        else:
            readable.append((path, info.duration, info.sample_rate))
    if unreadable_rows:
        sink.append(unreadable_rows)

    readable.sort(key=lambda item: item[1])
    batches = _make_batches(readable, batch_size, max_batch_seconds)
    bar = tqdm(total=len(readable), desc="Scoring", unit="file", disable=not progress)
    try:
        with bar, logging_redirect_tqdm() if progress else contextlib.nullcontext():
            bar.set_postfix(failed=summary.failed)
            for batch in batches:
                results = _score_batch(scorer, [path for path, _, _ in batch])
                rows = []
                for (path, duration, rate), result in zip(batch, results):
                    scores, message = check_scores(result, names, path)
                    if message is None:
                        summary.scored += 1
                    else:
                        fail(path, message)  # this row has the duration and rate
                    rows.append(output_row(path, duration, rate, names, scores, message))
                sink.append(rows)
                bar.update(len(batch))
                bar.set_postfix(failed=summary.failed)
    finally:  # JSON: the one write of the rows; CSV: nothing left
        sink.close()
    return summary


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
