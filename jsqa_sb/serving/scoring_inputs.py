"""The inputs and output file of ``jsqa score``: listing, checking, naming.

Collections come as they are: a file reached by several paths (links, a folder linked
into itself) is listed once; a path that is not a regular file, is not valid UTF-8 or
cannot be opened is named by :func:`why_not_openable` without being opened; a folder
that cannot be searched is reported, not fatal.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from jsqa_sb.audio import AUDIO_EXTENSIONS
from jsqa_sb.errors import JSQAError

# The driver's name: the warnings users filter on did not move.
logger = logging.getLogger("jsqa_sb.serving.batch_scoring")

#: Output formats, chosen by the extension of ``out``.
OUTPUT_FORMATS = (".csv", ".json")


class ScoringInputError(JSQAError, ValueError):
    """Bad arguments to ``jsqa score``; the message says which and why."""


@dataclass
class InputListing:
    """The files to score, the inputs they come from, and the folders not searched (why)."""

    paths: list[str]
    sources: list[str] = field(default_factory=list)
    unreadable_folders: list[tuple[str, str]] = field(default_factory=list)


def list_inputs(inputs: Sequence[str | os.PathLike], column: str = "path") -> InputListing:
    """List the files to score, and the folders that could not be searched (logged).

    Each input is a file (kept as given), a folder (searched recursively for audio
    files, sorted), or a ``.csv`` file whose ``column`` holds paths (relative ones
    against the CSV's folder). Paths are absolute (not resolved), each real file once.
    :class:`ScoringInputError` if an input does not exist, a CSV cannot be read or
    lacks ``column``, or no audio is found at all.
    """
    missing = [printable(os.fspath(p)) for p in inputs if not os.path.exists(p)]
    if missing:
        raise ScoringInputError("input not found: " + ", ".join(missing))
    found: list[str] = []
    listing = InputListing([], [os.path.abspath(p) for p in inputs])
    for path in listing.sources:
        if os.path.isdir(path):
            listed = _list_audio(path, listing.unreadable_folders)
            if not listed:
                logger.warning(
                    "No audio files (%s) in %s", ", ".join(AUDIO_EXTENSIONS), printable(path)
                )
            found += listed
        elif path.lower().endswith(".csv"):
            cells = (cell.strip() for cell in read_csv_table(path, column)[column])
            found += [listed_path(path, cell) for cell in cells if cell]
        else:
            found.append(path)
    for folder, reason in listing.unreadable_folders:
        logger.warning("Cannot search %s: %s", printable(folder), reason)
    listing.paths = _unique_files(found)
    if not listing.paths:
        unreadable = "".join(
            f"; cannot search {printable(folder)}: {reason}"
            for folder, reason in listing.unreadable_folders[:3]
        )
        raise ScoringInputError(
            "no audio found in "
            + (", ".join(printable(os.fspath(p)) for p in inputs) or "(no inputs given)")
            + unreadable
        )
    return listing


def check_output(
    out: str | os.PathLike, inputs: Sequence[str | os.PathLike] = (), paths: Sequence[str] = ()
) -> None:
    """:class:`ScoringInputError` unless ``out`` is a ``.csv`` or ``.json`` file, not an input."""
    out_abs = os.path.abspath(out)
    if Path(out_abs).suffix.lower() not in OUTPUT_FORMATS:
        raise ScoringInputError(
            f"cannot write {printable(os.fspath(out))}: the output must end with "
            f"{' or '.join(OUTPUT_FORMATS)}"
        )
    if os.path.isdir(out_abs):
        raise ScoringInputError(f"cannot write {printable(out_abs)}: it is a folder")
    out_key = _file_key_or_none(out_abs)
    for candidate in (*inputs, *paths):
        path = os.path.abspath(candidate)
        if path == out_abs or (out_key is not None and _file_key_or_none(path) == out_key):
            raise ScoringInputError(
                f"the output {printable(os.fspath(out))} is also an input "
                f"({printable(path)}); writing the scores there would destroy it: "
                "choose another output file"
            )


def _list_audio(folder: str, unreadable: list[tuple[str, str]]) -> list[str]:
    """Audio files under ``folder`` (recursively, any extension case), sorted.

    Real subfolders are searched first, then linked ones, each real folder once, so
    links never loop. Folders that cannot be searched are appended to ``unreadable``.
    """
    found, seen = [], set()  # audio paths; (device, inode) of the folders searched
    linked = [folder]  # folders to search from, each through its own path
    while linked:
        start = linked.pop(0)
        try:
            key = _file_key(start)
        except OSError as err:
            unreadable.append((start, _os_reason(err)))
            continue
        if key in seen:
            logger.debug("%s: already searched (a linked folder)", printable(start))
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
                        logger.debug("Skipping %s: %s", printable(entry.path), _os_reason(err))
                if is_audio:
                    found.append(entry.path)
    return sorted(found)


def _unique_files(paths: Sequence[str]) -> list[str]:
    """``paths`` with each real file once: its real path if among them, else the first."""
    groups: dict[Any, list[str]] = {}
    for path in paths:  # a missing file or a link loop: one row per path
        groups.setdefault(_file_key_or_none(path) or path, []).append(path)
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


def _file_key_or_none(path: str) -> tuple[int, int] | None:
    """:func:`_file_key`, or None when the file cannot be reached."""
    try:
        return _file_key(path)
    except OSError:
        return None


_FILE_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def why_not_openable(path: str) -> str | None:
    r"""Why ``path`` must not be opened for scoring (found without opening it), or None.

    Example
    -------
    >>> why_not_openable("/dev/null")
    'not a regular file but a character device'
    >>> why_not_openable(os.fsdecode(b"/tmp/caf\xe9.wav"))
    'the path is not valid UTF-8 (shown with \\x escapes): rename the file to score it'
    """
    if printable(path) != path:
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


def printable(text: str) -> str:
    r"""``text`` as valid UTF-8: undecodable bytes of a file name as ``\xNN`` escapes.

    Example
    -------
    >>> printable(os.fsdecode(b"/d/caf\xe9.wav"))
    '/d/caf\\xe9.wav'
    >>> printable("/d/café.wav")
    '/d/café.wav'
    """
    try:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeError:  # a lone surrogate that no file name decodes to
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def read_csv_table(
    csv_path: str, column: str, error: type[Exception] = ScoringInputError, prefix: str = ""
) -> pd.DataFrame:
    """The cells of a CSV file, as text; ``error`` if it cannot be read or lacks ``column``."""
    if not os.path.isfile(csv_path):  # a named pipe would block, a device never end
        raise error(f"{prefix}cannot read {printable(csv_path)}: not a regular file")
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as err:  # pandas' EmptyDataError, ParserError are ValueErrors
        raise error(f"{prefix}cannot read {printable(csv_path)}: {err}") from err
    if column not in table.columns:
        raise error(
            f"{prefix}{printable(csv_path)} has no column {column!r}; its columns are: "
            + (", ".join(map(str, table.columns)) or "(none)")
        )
    return table


def listed_path(csv_path: str, cell: str) -> str:
    """The absolute path a CSV cell names (a relative one is read from the CSV's folder)."""
    return os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(csv_path)), cell))
