"""The output of ``jsqa score``: rows, CSV and JSON sinks, resuming, the model record.

Next to ``<out>``, ``<out>.meta.json`` records the model that wrote it
(:func:`model_fingerprint`), so that ``--resume`` never mixes two models' scores.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jsqa_sb.audio import AudioReadError
from jsqa_sb.data.prepare_utils import read_json, write_json
from jsqa_sb.serving.scoring_inputs import ScoringInputError, printable

#: Columns every output row has before and after the scores.
LEAD_COLUMNS = ("path", "duration", "sample_rate")
ERROR_COLUMN = "error"

#: The record of the model that wrote an output: ``<out>`` + this suffix.
META_SUFFIX = ".meta.json"


def model_fingerprint(scorer: Any) -> str | None:
    """What identifies the model behind ``scorer``, recorded in ``<out>.meta.json``.

    The scorer's ``fingerprint`` (an attribute or a method) if it has one; else, for a
    SpeechBrain model, a SHA-256 of its state dict and scoring settings; else None.
    """
    value = getattr(scorer, "fingerprint", None)
    if callable(value):
        value = value()
    if value is not None:
        return str(value)
    mods = getattr(scorer, "mods", None)
    if not callable(getattr(mods, "state_dict", None)):
        return None
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(mods.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}\0{flat.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    settings = ("output_names", "sample_rate", "window_seconds")
    values = {name: getattr(scorer, name, None) for name in settings}
    digest.update(json.dumps(values, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def check_scores(
    result: Any, names: Sequence[str], path: str
) -> tuple[dict[str, float], str | None]:
    """Turn one scorer result into ``(scores, error message or None)``."""
    if isinstance(result, BaseException):
        return {}, describe_error(result, path)
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


def describe_error(err: BaseException, path: str) -> str:
    """One-line message for ``err``, without a leading ``path:`` (the row names it)."""
    text = " ".join(str(err).split()).removeprefix(f"{path}: ")
    if not isinstance(err, AudioReadError):
        text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text


def output_row(
    path: str,
    duration: float | None,
    rate: int | None,
    names: Sequence[str],
    scores: dict[str, float],
    error: str | None,
) -> dict[str, Any]:
    """One output row (missing scores are None; text made valid UTF-8)."""
    row: dict[str, Any] = {"path": printable(path), "duration": duration, "sample_rate": rate}
    row.update({name: scores.get(name) for name in names})
    row[ERROR_COLUMN] = None if error is None else printable(error)
    return row


def _is_blank(value: Any) -> bool:
    """True for an empty cell: None, NaN or an empty string."""
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def is_number(value: Any) -> bool:
    """True for a finite number, or text that reads as one (a CSV cell).

    Example
    -------
    >>> [is_number(v) for v in (3.5, "3.5", " 16000", "", None, "nan", "inf", "3.5x", True)]
    [True, True, True, False, False, False, False, False, False]
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return False
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


def resumable_rows(
    rows: list[dict[str, Any]], columns: Sequence[str], names: Sequence[str], inputs: set[str]
) -> tuple[list[dict[str, Any]], set[str], int]:
    """Split an existing output into the rows to keep and the paths already scored.

    A row is done when it has no error and finite numbers for its duration, sample rate
    and scores. Rows of current inputs that are not done, and repeats, are dropped (to
    be scored again); other rows are kept if done or failed, else counted as junk.
    Returns the rows to write back, the paths not to score again, and the junk count.
    """
    required = ("duration", "sample_rate", *names)
    kept, done, junk = [], set(), 0
    for row in rows:
        cell = row.get("path")
        if not isinstance(cell, str) or not cell.strip() or set(row) != set(columns):
            junk += 1
            continue
        path = os.path.abspath(cell)
        failed = not _is_blank(row.get(ERROR_COLUMN))
        ok = not failed and all(is_number(row.get(c)) for c in required)
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
        return printable(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def check_same_model(
    out: Path, meta_path: Path, meta: dict[str, Any], rows: list[dict[str, Any]]
) -> None:
    """Refuse to resume into an output (with rows) of another model, as its record says."""
    if not rows:
        return
    try:
        found = read_json(meta_path)
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
            return (
                f"{record.get('model') or 'unnamed'} ({str(fp)[:12] if fp else 'no fingerprint'})"
            )

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
            rows = read_json(self.path, errors="replace")
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


def output_sink(path: Path, columns: list[str]) -> _CsvSink | _JsonSink:
    """The sink for ``path``'s extension (``.csv``, else JSON)."""
    return _CsvSink(path, columns) if path.suffix.lower() == ".csv" else _JsonSink(path, columns)


def _check_columns(path: Path, found: list[str], expected: list[str]) -> None:
    """Refuse to resume into a file written with other columns (another model)."""
    if found != expected:
        raise ScoringInputError(
            f"cannot resume from {path}: its columns are {', '.join(found)}; this model "
            f"writes {', '.join(expected)} (choose another output or drop --resume)"
        )
