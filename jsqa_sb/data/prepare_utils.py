"""Machinery shared by the data preparers: skip-if-done records, reports, header scans.

A preparation is skipped only when its options and a fingerprint of its inputs (path,
size, mtime of every file) are unchanged and its outputs intact.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
from tqdm import tqdm

from jsqa_sb.audio import AudioReadError, audio_info
from jsqa_sb.common import PathLike
from jsqa_sb.errors import JSQAError

logger = logging.getLogger(__name__)


class DataPreparationError(JSQAError, RuntimeError):
    """Input data that cannot be prepared; the message says what and where."""


def make_save_folder(path: PathLike) -> Path:
    """Create the output folder, or say clearly why it cannot be used."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataPreparationError(f"save folder {path} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataPreparationError(f"cannot create save folder {path}: {err.strerror}") from err
    return path


def writable_folder(folder: PathLike, error: type[Exception], what: str) -> Path:
    """Create ``folder`` if needed; ``error`` naming ``what`` unless a file can be written there."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".jsqa-write-test-"):
            pass
    except OSError as err:
        raise error(f"{what}: cannot write in {path} ({err.strerror or err})") from err
    return path


def list_files(root: Path, suffixes: Sequence[str]) -> list[Path]:
    """The sorted files under ``root`` whose name ends with a suffix (``os.scandir``: fast)."""
    found, stack, visited = [], [str(root)], set()
    while stack:
        folder = stack.pop()
        stat = os.stat(folder)
        if (stat.st_dev, stat.st_ino) in visited:  # a symlink loop, or a folder linked twice
            continue
        visited.add((stat.st_dev, stat.st_ino))
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=True):
                    stack.append(entry.path)
                elif entry.name.endswith(tuple(suffixes)):
                    found.append(Path(entry.path))
    return sorted(found)


def fingerprint(files: Iterable[Path], root: Path) -> str:
    """Hash the (relative path, size, mtime) listing of ``files``: cheap change detection."""
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class PrepareRecord:
    """The record ``<name>.record.json`` of one finished preparation, beside its manifests."""

    def __init__(self, save_folder: PathLike, name: str, options: dict, input_fingerprint: str):
        self.path = Path(save_folder) / f"{name}.record.json"
        self.options = json.loads(json.dumps(options, sort_keys=True, default=str))
        self.input_fingerprint = input_fingerprint

    def is_done(self) -> bool:
        """Whether the same preparation finished before and its outputs are intact."""
        try:
            record = read_json(self.path)
        except (OSError, ValueError):
            return False
        if not isinstance(record, dict):  # a damaged record: redo
            return False
        same = (
            record.get("options") == self.options
            and record.get("input_fingerprint") == self.input_fingerprint
        )
        outputs = record.get("outputs")
        if not same or not isinstance(outputs, dict):  # a record of an older version: redo
            return False
        return all(
            file_digest(self.path.parent / name) == digest for name, digest in outputs.items()
        )

    def mark_done(self, outputs: Iterable[PathLike], counts: dict) -> None:
        """Write the record (last, so an interrupted preparation is redone)."""
        record = {
            "options": self.options,
            "input_fingerprint": self.input_fingerprint,
            "outputs": {Path(p).name: file_digest(Path(p)) for p in sorted(map(str, outputs))},
            "counts": counts,
        }
        write_json(self.path, record)

    def invalidate(self) -> None:
        """Remove the record before rewriting outputs."""
        self.path.unlink(missing_ok=True)


def file_digest(path: Path) -> Optional[str]:
    """SHA-256 of a file's bytes (None if it cannot be read): a truncated output is redone."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


@dataclass
class SkipReport:
    """Files left out of a preparation, with the reason for each."""

    skipped: list[dict] = field(default_factory=list)

    def add(self, file: PathLike, reason: str, **extra: Any) -> None:
        """Record one left-out file and log it."""
        self.skipped.append({"file": str(file), "reason": reason, **extra})
        logger.warning("Skipping %s: %s", file, reason)

    def write(self, path: Path, counts: dict, strict: bool) -> None:
        """Write the report as JSON; raise if ``strict`` and anything was skipped."""
        write_json(path, {"counts": counts, "skipped": self.skipped})
        if self.skipped:
            logger.warning("%d file(s) left out; the list is in %s", len(self.skipped), path)
            if strict:
                listing = "\n".join(f"  {s['file']}: {s['reason']}" for s in self.skipped[:20])
                more = len(self.skipped) - 20
                raise DataPreparationError(
                    f"strict mode: {len(self.skipped)} file(s) could not be used (see {path}):\n"
                    + listing
                    + (f"\n  ... and {more} more" if more > 0 else "")
                )


def scan_headers(
    paths: Sequence[Path],
    num_workers: int = 8,
    desc: str = "Reading headers",
    progress: bool = True,
):
    """Each path's ``AudioInfo`` or ``AudioReadError``, read by threads (a bar from 500 paths)."""

    def one(path):
        try:
            return audio_info(path)
        except AudioReadError as err:
            return err

    quiet = not progress or len(paths) < 500
    with ThreadPoolExecutor(max(1, min(num_workers, len(paths)))) as pool:
        return list(tqdm(pool.map(one, paths), total=len(paths), desc=desc, disable=quiet))


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file + rename), so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def read_json(path: PathLike, errors: str = "strict") -> Any:
    """The JSON value in ``path`` (UTF-8); ValueError also when it nests too deep to read."""
    text = Path(path).read_text(encoding="utf-8", errors=errors)
    try:
        return json.loads(text)
    except RecursionError as err:  # "[[[[..." : Python's parser recurses
        raise ValueError("JSON nested too deeply to read") from err


def to_json(obj: Any) -> Any:
    """``obj`` as strict JSON: non-finite floats None, numpy as Python, other objects str.

    Example
    -------
    >>> to_json({"a": float("nan"), "b": [np.float32(0.5), np.int64(3)], 1: Path("x")})
    {'a': None, 'b': [0.5, 3], '1': 'x'}
    """
    if isinstance(obj, (np.generic, np.ndarray)):
        obj = obj.tolist()  # Python scalars and lists
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(key): to_json(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=str) if isinstance(obj, (set, frozenset)) else obj
        return [to_json(value) for value in items]
    return str(obj)


def describe_folder(folder: Path, limit: int = 10) -> str:
    """Say what a folder holds, for layout errors."""
    if not folder.exists():
        return f"{folder} does not exist"
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return f"{folder} is empty"
    more = f", ... ({len(names)} entries)" if len(names) > limit else ""
    return f"{folder} holds: {', '.join(names[:limit])}{more}"
