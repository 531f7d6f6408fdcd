"""Read a run's ``results.json`` (or ``pretrain_summary.json``) back; compare two runs.

The shared pieces of :mod:`jsqa_sb.evaluation.reports` (:class:`ReportError`, the number format)
live here, so that :mod:`jsqa_sb.evaluation.reports` can re-export :func:`compare_runs`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from jsqa_sb.common import NISQA_DIMENSIONS, PathLike
from jsqa_sb.data.prepare_utils import read_json
from jsqa_sb.errors import JSQAError

#: Quality dimensions of the NISQA corpus, in the order in which reports list them.
DIMENSIONS = NISQA_DIMENSIONS
#: The file of all metrics that :func:`jsqa_sb.evaluation.reports.write_test_reports` writes.
RESULTS_FILE = "results.json"
#: The validation figures of a pretraining run (the YAML's ``summary_file``).
SUMMARY_FILE = "pretrain_summary.json"
#: Metrics that :func:`compare_runs` shows: (key, label, whether higher is better).
COMPARE_METRICS = (
    ("pcc", "PCC", True), ("srcc", "SRCC", True), ("rmse", "RMSE", False),
    ("rmse_map3", "RMSE map3", False), ("pcc_con", "PCC con", True),
    ("rmse_con", "RMSE con", False),
)  # fmt: skip


class ReportError(JSQAError, ValueError):
    """A report cannot be written, read or compared (with the reason and the path)."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _fmt(value: Any, decimals: int = 3, sign: bool = False) -> str:
    """Format a metric: ``decimals`` places for floats, integers as such, None/NaN as n/a.

    Example
    -------
    >>> _fmt(0.91234), _fmt(12), _fmt(None), _fmt(float("nan")), _fmt(0.1, 4, sign=True)
    ('0.912', '12', 'n/a', 'n/a', '+0.1000')
    """
    if value is None or (_is_number(value) and not math.isfinite(float(value))):
        return "n/a"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"{int(value):+d}" if sign else str(int(value))
    if _is_number(value):
        return f"{float(value):+.{decimals}f}" if sign else f"{float(value):.{decimals}f}"
    return str(value)


def load_results(run_folder: PathLike) -> dict[str, Any]:
    """Read a run's ``results.json`` (``run_folder`` is its folder or the file itself).

    :class:`ReportError`, naming the path, when there is none (the test stage has not
    run), or it is not valid JSON or not a mapping of numbers under ``databases``.
    """
    path = Path(run_folder)
    if not path.is_file():
        if not path.is_dir() and path.name == RESULTS_FILE:
            raise ReportError(f"{path} does not exist: run the test stage first")
        path = path / RESULTS_FILE
    if not path.is_file():
        raise ReportError(f"no {RESULTS_FILE} in {run_folder}: run the test stage first")
    results = _read_record(path)
    if not isinstance(results, dict) or not isinstance(results.get("databases"), dict):
        raise ReportError(f"{path} is not a JSQA results file (no 'databases' mapping)")
    for db, dims in results["databases"].items():
        if not isinstance(dims, dict):
            raise ReportError(f"{path}: {db} is not a mapping of dimensions")
        for dim, metrics in dims.items():
            if not isinstance(metrics, dict):
                raise ReportError(f"{path}: {db}/{dim} is not a mapping of metrics")
            for key, value in metrics.items():
                if value is not None and not _is_number(value):
                    raise ReportError(f"{path}: {db}/{dim}/{key} is not a number: {value!r}")
    results.setdefault("test_sets", sorted(results["databases"]))
    return results


def load_pretrain_summary(run_folder: PathLike) -> dict[str, Any]:
    """Read a pretraining run's ``pretrain_summary.json`` (its validation figures).

    :class:`ReportError`, naming the path, when there is none (as a file), it cannot be
    read, is not a mapping, or its ``best_valid`` or ``random_init_valid`` is not a
    mapping of numbers (or booleans).
    """
    path = Path(run_folder) / SUMMARY_FILE
    if not path.is_file():
        raise ReportError(f"no {SUMMARY_FILE} in {run_folder}: the pretraining has not finished")
    summary = _read_record(path)
    if not isinstance(summary, dict):
        raise ReportError(f"{path} is not a JSQA pretraining summary (a JSON object)")
    for key in ("best_valid", "random_init_valid"):
        figures = summary.get(key, {})
        # Numbers, and the flags SpeechBrain keeps in a checkpoint's meta ("end-of-epoch")
        if not isinstance(figures, dict) or not all(
            v is None or isinstance(v, (int, float)) for v in figures.values()
        ):
            raise ReportError(f"{path}: {key} is not a mapping of numbers")
    return summary


def _read_record(path: Path) -> Any:
    """The JSON in a run's record ``path``; ReportError naming it if it cannot be read."""
    try:
        return read_json(path)
    except (OSError, ValueError) as exc:
        raise ReportError(f"cannot read {path}: {exc}") from exc


def _nisqa_first(dims: Iterable[str]) -> list[str]:
    """``dims`` without repeats, NISQA's dimensions first, in their order."""
    dims = list(dict.fromkeys(dims))
    return [d for d in DIMENSIONS if d in dims] + [d for d in dims if d not in DIMENSIONS]


def _metric_row(label: str, a: Any, b: Any, higher_is_better: bool) -> list[str]:
    """Label, A, B, B - A and which run is better (``=`` for a tie), as table cells."""
    a, b = (v if v is None or math.isfinite(v) else None for v in (a, b))
    if a is None or b is None:
        return [label, _fmt(a, 4), _fmt(b, 4), "n/a", ""]
    better = "=" if a == b else "B" if (b > a) == higher_is_better else "A"
    return [label, _fmt(a, 4), _fmt(b, 4), _fmt(b - a, 4, sign=True), better]


def _table(rows: list[list[str]], right: Iterable[int]) -> list[str]:
    """Align ``rows`` (the first is the header) in columns, ``right`` ones right-aligned."""
    widths = [max(map(len, column)) for column in zip(*rows)]
    align = [str.rjust if i in right else str.ljust for i in range(len(widths))]
    lines = ["  ".join(a(c, w) for a, c, w in zip(align, row, widths)).rstrip() for row in rows]
    return lines[:1] + ["  ".join("-" * w for w in widths)] + lines[1:]


def compare_runs(
    run_a: PathLike, run_b: PathLike, dims: Optional[Union[str, Iterable[str]]] = ("mos",)
) -> str:
    """Two runs' test results side by side, with the differences B - A, as plain text.

    One table per test database and dimension (``dims``; None: every dimension either
    run evaluated) with the columns metric, A, B, diff (4 decimals) and better (higher
    is better for correlations, lower for RMSEs; ``=`` for a tie). Undefined metrics
    show as ``n/a``; a dimension evaluated by one run only is noted. :class:`ReportError`
    when a ``results.json`` is missing or unreadable, or the two runs were evaluated on
    different test sets (the message lists both).
    """
    results_a, results_b = load_results(run_a), load_results(run_b)
    sets_a, sets_b = sorted(results_a["test_sets"]), sorted(results_b["test_sets"])
    if sets_a != sets_b:
        only_a = ", ".join(sorted(set(sets_a) - set(sets_b))) or "none"
        only_b = ", ".join(sorted(set(sets_b) - set(sets_a))) or "none"
        raise ReportError(
            "the runs were evaluated on different test sets: "
            f"A ({run_a}): {', '.join(sets_a) or 'none'}; "
            f"B ({run_b}): {', '.join(sets_b) or 'none'} "
            f"(only in A: {only_a}; only in B: {only_b})"
        )

    lines = [f"A: {run_a}", f"B: {run_b}"]
    for label, results in (("A", results_a), ("B", results_b)):
        if results.get("checkpoint") is not None:
            lines.append(f"{label} checkpoint: {results['checkpoint']}")
    lines.append("diff = B - A")
    for db in sets_a:
        dims_a = results_a["databases"].get(db) or {}
        dims_b = results_b["databases"].get(db) or {}
        if dims is None:
            wanted = _nisqa_first([*dims_a, *dims_b])
        else:
            wanted = [dims] if isinstance(dims, str) else list(dims)
        for dim in wanted:
            lines += ["", f"{db} / {dim}"]
            if dim not in dims_a or dim not in dims_b:
                which = [lbl for lbl, d in (("A", dims_a), ("B", dims_b)) if dim not in d]
                lines.append(f"  not evaluated in run {' and '.join(which)}")
                continue
            rows = [["metric", "A", "B", "diff", "better"]]
            for key, label, higher in COMPARE_METRICS:
                rows.append(_metric_row(label, dims_a[dim].get(key), dims_b[dim].get(key), higher))
            lines += ["  " + line for line in _table(rows, right=(1, 2, 3))]
    return "\n".join(lines) + "\n"
