"""Score a collection of recordings with a trained model: inputs, batching, output, resume.

This is the driver behind ``jsqa score``; everything except the neural network lives here.
The model is anything that follows the :class:`Scorer` protocol. The driver:

* gathers the input files (audio files, folders searched recursively, CSV lists of paths);
* reads every header first (cheap), so that unreadable files get an error row without
  reaching the model, and sorts the readable files by duration to form batches of
  similar length (at most ``batch_size`` files and ``max_batch_seconds`` of audio);
* writes one row per input (``path, duration, sample_rate, <scores>, error``) as a CSV
  file, saved after every batch so that even a killed run loses nothing, or a JSON file,
  written when the run ends (also by an error or Ctrl-C);
* with ``resume=True``, skips the inputs that already have a complete row without an
  error, after checking that the same model wrote the file (``<out>.meta.json``).

Collections come as they are: a file reached by several paths (symbolic links, a
folder linked into itself) is scored once; a path that is not a regular file (a named
pipe, a device), whose name is not valid UTF-8, or that cannot be opened gets an error
row without being opened; a folder that cannot be searched is named in the summary.

Rows are written in batch order (unreadable files first, then the rest from shortest to
longest), not in input order; sort the file afterwards if the order matters.

Authors
 * JSQA contributors 2026
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import math
import os
import stat
import time
from collections.abc import Iterator, Sequence
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

#: The record of the model that wrote an output: ``<out>`` + this suffix.
META_SUFFIX = ".meta.json"


class Scorer(Protocol):
    """What :func:`score_collection` needs from a model.

    ``output_names`` names the scores (e.g. ``("mos", "noi", "col", "dis", "loud")``).
    ``score_files`` returns one entry per path, in order: a dict of scores, or the
    exception raised for that file (it should not raise for a bad file). What identifies
    the model in ``<out>.meta.json`` is found by :func:`model_fingerprint`.
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
    unreadable_folders : list of (str, str)
        ``(folder, reason)`` for every folder that could not be searched: recordings
        in it may be missing from the output.
    dropped_rows : int
        Rows of a resumed output that were unusable (cut short, not numbers, malformed)
        and were dropped; those of current inputs are scored again.

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
        """Return a short human summary: counts, output file, first ``limit`` failures."""
        counts = f"{self.total} input(s): {self.scored} scored, {self.failed} failed"
        if self.skipped_resumed:
            counts += f", {self.skipped_resumed} already scored (resumed)"
        if self.dropped_rows:
            counts += f", {self.dropped_rows} unusable row(s) of the old output dropped"
        lines = [f"{counts}; results in {self.out}"]
        for title, items in (
            ("Failed:", self.errors),
            (
                "Folders that could not be searched (recordings in them are not scored):",
                self.unreadable_folders,
            ),
        ):
            if items:
                lines.append(title)
                lines += [f"  {_printable(p)}: {_printable(m)}" for p, m in items[:limit]]
                if len(items) > limit:
                    lines.append(f"  ... and {len(items) - limit} more")
        return "\n".join(lines)


@dataclass
class InputListing:
    """The files to score, listed by :func:`list_inputs`.

    Arguments
    ---------
    paths : list of str
        Absolute paths, each real file once, in input order.
    sources : list of str
        The inputs as given (absolute): the output must not be one of them.
    unreadable_folders : list of (str, str)
        ``(folder, reason)`` for every folder that could not be searched.
    """

    paths: list[str]
    sources: list[str] = field(default_factory=list)
    unreadable_folders: list[tuple[str, str]] = field(default_factory=list)


def collect_inputs(inputs: Sequence[str | os.PathLike], column: str = "path") -> list[str]:
    """List the files to score from the ``jsqa score`` INPUT arguments.

    The paths of :func:`list_inputs`; a folder that cannot be searched is logged.

    Arguments
    ---------
    inputs : sequence of str or PathLike
        See :func:`list_inputs`.
    column : str
        The CSV column that holds the paths.

    Returns
    -------
    list of str
        Absolute paths, each real file once.
    """
    return list_inputs(inputs, column).paths


def list_inputs(inputs: Sequence[str | os.PathLike], column: str = "path") -> InputListing:
    """List the files to score, and the folders that could not be searched.

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
    InputListing
        Absolute paths (``os.path.abspath``, not resolved), each real file once (the
        first path that reaches it is kept: a symbolic link to a file already listed,
        or a folder linked into itself, adds nothing). Folders are searched through
        their real subfolders first, then through linked ones not already searched,
        so a link never loops. Paths listed in a CSV are not checked here: a missing
        one gets an error row. A folder that cannot be searched (permissions) is in
        ``unreadable_folders`` and logged as a warning.

    Raises
    ------
    ScoringInputError
        If an input does not exist, a CSV cannot be read or lacks ``column``, or no
        audio is found at all.
    """
    missing = [_printable(os.fspath(p)) for p in inputs if not os.path.exists(p)]
    if missing:
        raise ScoringInputError("input not found: " + ", ".join(missing))
    found: list[str] = []
    listing = InputListing([], [os.path.abspath(p) for p in inputs])
    for path in listing.sources:
        if os.path.isdir(path):
            listed = _list_audio(path, listing.unreadable_folders)
            if not listed:
                logger.warning(
                    "No audio files (%s) in %s", ", ".join(AUDIO_EXTENSIONS), _printable(path)
                )
            found += listed
        elif path.lower().endswith(".csv"):
            found += _read_path_list(path, column)
        else:
            found.append(path)
    for folder, reason in listing.unreadable_folders:
        logger.warning("Cannot search %s: %s", _printable(folder), reason)
    listing.paths = _unique_files(found)
    if not listing.paths:
        unreadable = "".join(
            f"; cannot search {_printable(folder)}: {reason}"
            for folder, reason in listing.unreadable_folders[:3]
        )
        raise ScoringInputError(
            "no audio found in "
            + (", ".join(_printable(os.fspath(p)) for p in inputs) or "(no inputs given)")
            + unreadable
        )
    return listing


def check_output(
    out: str | os.PathLike, inputs: Sequence[str | os.PathLike] = (), paths: Sequence[str] = ()
) -> None:
    """Refuse an output that cannot be written, or that is one of the inputs.

    Arguments
    ---------
    out : str or PathLike
        The output file (``.csv`` or ``.json``).
    inputs : sequence of str or PathLike
        The inputs as given (files, folders, CSV lists).
    paths : sequence of str
        The files to score.

    Raises
    ------
    ScoringInputError
        If ``out`` has another extension, is a folder, or is (the same file as) an
        input or a file to score: writing it would destroy that input.
    """
    out_abs = os.path.abspath(out)
    if Path(out_abs).suffix.lower() not in OUTPUT_FORMATS:
        raise ScoringInputError(
            f"cannot write {_printable(os.fspath(out))}: the output must end with "
            f"{' or '.join(OUTPUT_FORMATS)}"
        )
    if os.path.isdir(out_abs):
        raise ScoringInputError(f"cannot write {_printable(out_abs)}: it is a folder")
    try:
        out_key: tuple[int, int] | None = _file_key(out_abs)
    except OSError:
        out_key = None
    for candidate in (*inputs, *paths):
        path = os.path.abspath(candidate)
        same = path == out_abs
        if not same and out_key is not None:
            with contextlib.suppress(OSError):
                same = _file_key(path) == out_key
        if same:
            raise ScoringInputError(
                f"the output {_printable(os.fspath(out))} is also an input "
                f"({_printable(path)}); writing the scores there would destroy it: "
                "choose another output file"
            )


def default_scoring_threads() -> int:
    """The torch threads ``jsqa score`` uses: the CPUs that other processes leave free.

    Torch's threads wait for each other at the end of every operation, so one that
    shares its core with another busy process holds all the others back: on the 2-core
    machine, two threads beside one CPU-bound process scored 2.3 times slower than
    alone, one thread not at all slower (``benchmarks/README.md``). So the CPUs busy
    with other work, sampled from ``/proc/stat`` over 0.1 s (the 1-minute load average
    where there is none), are left to it: all CPUs on an idle machine, one fewer per
    busy one.

    Returns
    -------
    int
        At least 1.
    """
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
    """Run a block with torch's intra-op threads set for scoring, then restore them.

    Arguments
    ---------
    threads : int, optional
        A positive number of threads (default: :func:`default_scoring_threads`).

    Yields
    ------
    int
        The number of threads set.

    Raises
    ------
    ScoringInputError
        If ``threads`` is not a positive integer (before anything is changed).
    """
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


def model_fingerprint(scorer: Any) -> str | None:
    """What identifies the model behind ``scorer``, recorded in ``<out>.meta.json``.

    The scorer's ``fingerprint`` (an attribute, or a method called without arguments)
    if it has one; otherwise, for a SpeechBrain model (``scorer.mods``, a torch module),
    a SHA-256 of every parameter and buffer (names, types, shapes, values) and of the
    scorer's ``output_names``, ``sample_rate`` and ``window_seconds``: two models give
    the same fingerprint only if they score alike. None when the scorer gives no way
    to tell (the output is then not checked on resume).

    Arguments
    ---------
    scorer : Scorer

    Returns
    -------
    str or None
    """
    value = getattr(scorer, "fingerprint", None)
    if callable(value):
        value = value()
    if value is not None:
        return str(value)
    mods = getattr(scorer, "mods", None)
    if mods is None or not callable(getattr(mods, "state_dict", None)):
        return None
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(mods.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}\0{flat.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    settings = {
        name: getattr(scorer, name, None)
        for name in ("output_names", "sample_rate", "window_seconds")
    }
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


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
    model_name: str | None = None,
) -> ScoringSummary:
    r"""Score every input file with ``scorer`` and write one row per file to ``out``.

    CSV rows are appended and flushed after every batch. JSON is written whole
    (atomically) when the run ends, also when it ends by an exception or Ctrl-C; a run
    killed outright (SIGKILL, power loss) leaves the JSON as the run's start wrote it
    (the rows kept by ``resume``), so prefer CSV for long runs. Rows follow batch order
    (unreadable files first, then by increasing duration), not input order. Next to ``out``,
    ``<out>.meta.json`` records the model that wrote it (:func:`model_fingerprint`).

    Arguments
    ---------
    scorer : Scorer
        The model (see :class:`Scorer`).
    inputs : sequence of str or PathLike
        Audio files, folders and CSV lists (see :func:`list_inputs`).
    out : str or PathLike
        Output file, ``.csv`` or ``.json``; columns ``path`` (absolute; a name that
        is not valid UTF-8 is written with ``\x`` escapes), ``duration`` (seconds),
        ``sample_rate``, one per ``scorer.output_names``, and ``error`` (empty in
        CSV, null in JSON, when the file was scored). It must not be an input.
    column : str
        The column of CSV inputs that holds the paths.
    resume : bool
        Keep the rows of an existing ``out`` and skip their paths, except rows with an
        error or with a score, duration or sample rate missing or not a number (a row
        cut short by a crash), which are dropped and retried; malformed rows are
        dropped. Refused if ``out`` was written by another model. Without it an
        existing ``out`` is replaced.
    batch_size : int
        Most files per call to ``scorer.score_files``.
    max_batch_seconds : float
        Most audio (seconds, summed) per call; a longer file is scored alone.
    progress : bool
        Show a progress bar (tqdm, on stderr) with the failure count.
    model_name : str, optional
        How to name the model in ``<out>.meta.json`` and messages (e.g. its folder).

    Returns
    -------
    ScoringSummary
        Counts, the failed files with their messages and the folders that could not be
        searched (also logged as warnings).

    Raises
    ------
    ScoringInputError
        For an unknown ``out`` extension, an ``out`` that is an input or cannot be
        written, bad batch limits, bad inputs (see :func:`list_inputs`), a scorer
        without output names or with names that clash with the columns, or, with
        ``resume``, an ``out`` that cannot be read, has other columns or was written
        by another model; all raised before anything is scored or written.
    """
    listing = list_inputs(inputs, column)
    return score_paths(
        scorer,
        listing,
        out,
        resume=resume,
        batch_size=batch_size,
        max_batch_seconds=max_batch_seconds,
        progress=progress,
        model_name=model_name,
    )


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
    """Score files already listed by :func:`list_inputs`: :func:`score_collection`'s work.

    For a caller that lists the inputs first (to report input errors before loading a
    model) and must not list them twice; the arguments are :func:`score_collection`'s.
    ``paths`` is the :class:`InputListing` (its unreadable folders go into the
    summary, and ``out`` is checked against its sources) or a plain list of paths.
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
    columns = [*_LEAD_COLUMNS, *names, _ERROR_COLUMN]
    if len(set(columns)) != len(columns):
        raise ScoringInputError(
            f"the model's score names {list(names)} clash with the output's own columns "
            f"{[*_LEAD_COLUMNS, _ERROR_COLUMN]} (or repeat a name)"
        )
    suffix = out_path.suffix.lower()
    sink = _CsvSink(out_path, columns) if suffix == ".csv" else _JsonSink(out_path, columns)
    meta_path = out_path.with_name(out_path.name + META_SUFFIX)
    meta = {"model": model_name, "fingerprint": model_fingerprint(scorer), "columns": columns}

    kept: list[dict[str, Any]] = []
    done: set[str] = set()
    dropped = 0
    if resume and out_path.exists():
        rows, dropped = sink.read()
        _check_same_model(out_path, meta_path, meta, rows)
        kept, done, junk = _resumable_rows(rows, columns, names, set(paths))
        dropped += junk
        if dropped:
            logger.warning(
                "Dropped %d unusable row(s) of %s (cut short, not numbers or malformed)",
                dropped,
                out_path,
            )
    todo = [p for p in paths if p not in done]
    summary = ScoringSummary(len(paths), 0, 0, len(paths) - len(todo), str(out_path))
    summary.unreadable_folders = list(listing.unreadable_folders)
    summary.dropped_rows = dropped
    # The old record goes first and the new one comes last, so that a crash in between
    # leaves no record (a refusal to resume), never the record of another model.
    try:
        meta_path.unlink(missing_ok=True)
        sink.start(kept)
        write_json(meta_path, meta)
    except OSError as err:
        raise ScoringInputError(f"cannot write {out_path}: {err.strerror or err}") from err

    def fail(path: str, message: str) -> None:
        summary.failed += 1
        summary.errors.append((_printable(path), _printable(message)))
        logger.warning("Cannot score %s: %s", _printable(path), _printable(message))

    # Paths that must not be opened (a named pipe would block), then headers: unreadable
    # files get their error row without reaching the model.
    openable, unreadable_rows = [], []
    for path in todo:
        message = _why_not_openable(path)
        if message is None:
            openable.append(path)
        else:
            fail(path, message)
            unreadable_rows.append(_row(path, None, None, names, {}, message))
    readable: list[tuple[str, float, int]] = []
    for path, info in zip(openable, scan_headers(openable, progress=progress)):
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
    try:
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
    finally:  # JSON: the one write of the rows; CSV: nothing left
        sink.close()
    return summary


def _list_audio(folder: str, unreadable: list[tuple[str, str]]) -> list[str]:
    """Audio files under ``folder`` (recursively, any extension case), sorted.

    Real subfolders are searched first; folders reached through symbolic links come
    after, each real folder once (by device and inode), so links never loop and a
    folder linked into the tree is named by its real path when it has one. Any entry
    with an audio extension that is not a folder is listed (a named pipe, a broken
    link: they get their error row later). Folders that cannot be searched are
    appended to ``unreadable`` as ``(folder, reason)``.
    """
    found: list[str] = []
    seen: set[tuple[int, int]] = set()
    linked = [folder]  # folders to search from, each through its own path
    while linked:
        start = linked.pop(0)
        try:
            key = _file_key(start)
        except OSError as err:
            unreadable.append((start, _os_reason(err)))
            continue
        if key in seen:
            logger.debug("%s: already searched (a linked folder)", _printable(start))
            continue
        seen.add(key)
        stack = [start]
        while stack:
            current = stack.pop()
            try:
                with os.scandir(current) as scan:
                    entries = sorted(scan, key=lambda entry: entry.name)
            except OSError as err:
                unreadable.append((current, _os_reason(err)))
                continue
            for entry in entries:
                is_audio = os.path.splitext(entry.name)[1].lower() in AUDIO_EXTENSIONS
                try:
                    if entry.is_symlink():
                        if stat.S_ISDIR(os.stat(entry.path).st_mode):
                            linked.append(entry.path)
                            continue
                    elif entry.is_dir(follow_symlinks=False):
                        key = _file_key(entry.path, follow=False)
                        if key not in seen:  # a bind mount may loop too
                            seen.add(key)
                            stack.append(entry.path)
                        continue
                except OSError as err:  # a link loop, a broken link, no permission
                    if not is_audio:
                        logger.debug("Skipping %s: %s", _printable(entry.path), _os_reason(err))
                        continue
                if is_audio:
                    found.append(entry.path)
    return sorted(found)


def _unique_files(paths: Sequence[str]) -> list[str]:
    """``paths`` with each real file once (by device and inode), in first-occurrence order.

    Of several paths to one file, the one that is its real path (no link in it) is
    kept if there is one, else the first.
    """
    groups: dict[Any, list[str]] = {}
    for path in paths:
        try:
            key: Any = _file_key(path)
        except OSError:  # missing, a link loop: one row per path
            key = path
        groups.setdefault(key, []).append(path)
    return [
        next((p for p in group if os.path.realpath(p) == p), group[0])
        if len(group) > 1
        else group[0]
        for group in groups.values()
    ]


def _file_key(path: str, follow: bool = True) -> tuple[int, int]:
    """``(st_dev, st_ino)``: the identity of the file ``path`` names."""
    info = os.stat(path, follow_symlinks=follow)
    return info.st_dev, info.st_ino


_FILE_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _why_not_openable(path: str) -> str | None:
    r"""Why ``path`` must not be opened for scoring (found without opening it), or None.

    Example
    -------
    >>> _why_not_openable("/dev/null")
    'not a regular file but a character device'
    >>> _why_not_openable(os.fsdecode(b"/tmp/caf\xe9.wav"))
    'the path is not valid UTF-8 (shown with \\x escapes): rename the file to score it'
    """
    if _printable(path) != path:
        # The row could not name it faithfully: a score must not go to an escaped name.
        return "the path is not valid UTF-8 (shown with \\x escapes): rename the file to score it"
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "broken symbolic link" if os.path.islink(path) else "file not found"
    except OSError as err:
        return f"cannot open: {_os_reason(err)}"
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "a special file")
    return f"not a regular file but {kind}"


def _os_reason(err: OSError) -> str:
    """The reason of an OS error without its path (``Permission denied``)."""
    return err.strerror or type(err).__name__


def _printable(text: str) -> str:
    r"""``text`` as valid UTF-8: undecodable bytes of a file name as ``\xNN`` escapes.

    Example
    -------
    >>> _printable(os.fsdecode(b"/d/caf\xe9.wav"))
    '/d/caf\\xe9.wav'
    >>> _printable("/d/café.wav")
    '/d/café.wav'
    """
    try:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeError:  # a lone surrogate that no file name decodes to
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _read_path_list(csv_path: str, column: str) -> list[str]:
    """Absolute paths from ``column`` of a CSV (relative ones against its folder)."""
    if not os.path.isfile(csv_path):  # a named pipe would block, a device never end
        raise ScoringInputError(f"cannot read {_printable(csv_path)}: not a regular file")
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as err:  # EmptyDataError is a ValueError
        raise ScoringInputError(f"cannot read {_printable(csv_path)}: {err}") from err
    if column not in table.columns:
        raise ScoringInputError(
            f"{_printable(csv_path)} has no column {column!r}; its columns are: "
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
    """One output row (missing scores are None; text made valid UTF-8)."""
    row: dict[str, Any] = {"path": _printable(path), "duration": duration, "sample_rate": rate}
    row.update({name: scores.get(name) for name in names})
    row[_ERROR_COLUMN] = None if error is None else _printable(error)
    return row


def _is_blank(value: Any) -> bool:
    """True for an empty cell: None, NaN or an empty string."""
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def _is_number(value: Any) -> bool:
    """True for a finite number, or text that reads as one (a CSV cell).

    Example
    -------
    >>> [_is_number(v) for v in (3.5, "3.5", " 16000", "", None, "nan", "inf", "3.5x", True)]
    [True, True, True, False, False, False, False, False, False]
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return False
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


def _resumable_rows(
    rows: list[dict[str, Any]], columns: Sequence[str], names: Sequence[str], inputs: set[str]
) -> tuple[list[dict[str, Any]], set[str], int]:
    """Split an existing output into the rows to keep and the paths already scored.

    A row counts as done when it has no error and a number (finite) for its duration,
    sample rate and every score. Rows of the current inputs that are not done, and
    repeats of a done path, are dropped (the inputs are scored again); rows of other
    paths are kept if done or if they have an error. The rest (no path, numbers
    missing or not numbers without an error) are junk, dropped and counted.

    Returns
    -------
    kept : list of dict
        The rows to write back, with exactly ``columns``.
    done : set of str
        The paths not to score again.
    junk : int
        Rows dropped that belong to no current input.
    """
    required = ("duration", "sample_rate", *names)
    kept, done, junk = [], set(), 0
    for row in rows:
        cell = row.get("path")
        if not isinstance(cell, str) or not cell.strip() or set(row) != set(columns):
            junk += 1
            continue
        path = os.path.abspath(cell)
        failed = not _is_blank(row.get(_ERROR_COLUMN))
        ok = not failed and all(_is_number(row.get(c)) for c in required)
        if path in done or (path in inputs and not ok):
            continue
        if not ok and not failed:
            junk += 1
            continue
        if ok:
            done.add(path)
        kept.append({c: _clean(row[c]) for c in columns})
    return kept, done, junk


def _clean(value: Any) -> Any:
    """A kept cell as it can be written again: valid UTF-8, no NaN or infinity."""
    if isinstance(value, str):
        return _printable(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _check_same_model(
    out: Path, meta_path: Path, meta: dict[str, Any], rows: list[dict[str, Any]]
) -> None:
    """Refuse to resume into an output of another model (as ``<out>.meta.json`` says).

    An output without rows can be taken over. When the scorer cannot identify its
    model (:func:`model_fingerprint` is None) and the output names none either, there
    is nothing to compare.
    """
    if not rows:
        return
    try:
        found = json.loads(meta_path.read_text(encoding="utf-8"))
        if not isinstance(found, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        found = None
    except (OSError, ValueError) as err:
        raise ScoringInputError(
            f"cannot resume from {out}: its model record {meta_path} cannot be read ({err}); "
            "choose another output, or drop --resume to score everything again"
        ) from err
    fingerprint = meta["fingerprint"]
    if found is None:
        if fingerprint is None:
            return
        raise ScoringInputError(
            f"cannot resume from {out}: there is no record of the model that wrote it "
            f"({meta_path.name} is missing), so its scores may be another model's; choose "
            "another output, or drop --resume to score everything again"
        )
    if found.get("fingerprint") != fingerprint:

        def name(record: dict[str, Any]) -> str:
            fp = record.get("fingerprint")
            return f"{record.get('model') or 'unnamed'} ({fp[:12] if fp else 'no fingerprint'})"

        raise ScoringInputError(
            f"cannot resume from {out}: it holds the scores of another model, "
            f"{name(found)}, not of this one, {name(meta)}; choose another output, or drop "
            "--resume to score everything again with this model"
        )


class _CsvSink:
    """CSV output: rewritten atomically once at the start, then appended per batch."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = path, columns

    def read(self) -> tuple[list[dict[str, Any]], int]:
        """The rows of the existing file, and how many lines were malformed.

        A last line without its line end was cut short by a crash: it is dropped
        whatever it holds (a number cut short still reads as a number).
        """
        try:
            text = self.path.read_bytes().decode("utf-8", "replace")
        except OSError as err:
            raise ScoringInputError(f"cannot resume from {self.path}: {err}") from err
        records, junk = [], 0
        reader = csv.reader(io.StringIO(text, newline=""))
        while True:
            try:
                records.append(next(reader))
            except StopIteration:
                break
            except csv.Error:
                junk += 1
        if records and not text.endswith(("\n", "\r")):
            records.pop()
            junk += 1
        if not records:  # created but interrupted before the header
            return [], 0
        _check_columns(self.path, records[0], self.columns)
        rows = []
        for record in records[1:]:
            if len(record) == len(self.columns) and record != self.columns:
                rows.append(dict(zip(self.columns, record)))
            elif any(cell.strip() for cell in record):
                junk += 1
        return rows, junk

    def start(self, rows: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8", errors="backslashreplace") as file:
            writer = csv.DictWriter(file, self.columns)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)

    def append(self, rows: list[dict[str, Any]]) -> None:
        with open(self.path, "a", newline="", encoding="utf-8", errors="backslashreplace") as file:
            csv.DictWriter(file, self.columns).writerows(rows)
            file.flush()

    def close(self) -> None:
        """Nothing to do: :meth:`append` wrote every row."""


class _JsonSink:
    """JSON output: the rows kept at the start, then all rows once at the end (atomic)."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = path, columns
        self.rows: list[dict[str, Any]] = []

    def read(self) -> tuple[list[dict[str, Any]], int]:
        """The rows of the existing file, and how many entries were not rows."""
        try:
            rows = json.loads(self.path.read_text(encoding="utf-8", errors="replace"))
        except (OSError, ValueError) as err:
            raise ScoringInputError(f"cannot resume from {self.path}: {err}") from err
        if not isinstance(rows, list):
            raise ScoringInputError(f"cannot resume from {self.path}: not a list of rows")
        dicts = [row for row in rows if isinstance(row, dict)]
        for row in dicts[:1]:
            _check_columns(self.path, list(row), self.columns)
        return dicts, len(rows) - len(dicts)

    def start(self, rows: list[dict[str, Any]]) -> None:
        self.rows = list(rows)
        write_json(self.path, self.rows)

    def append(self, rows: list[dict[str, Any]]) -> None:
        self.rows += rows

    def close(self) -> None:
        write_json(self.path, self.rows)


def _check_columns(path: Path, found: list[str], expected: list[str]) -> None:
    """Refuse to resume into a file written with other columns (another model)."""
    if found != expected:
        raise ScoringInputError(
            f"cannot resume from {path}: its columns are {', '.join(found)}; this model "
            f"writes {', '.join(expected)} (choose another output or drop --resume)"
        )
