"""Test-stage reports of a fine-tuned MOS model, and the comparison of two runs.

* :func:`write_test_reports`: every metric of :func:`jsqa_sb.mos_metrics.evaluate_predictions`
  for every test database and predicted dimension, written as ``results.json``
  (strict JSON: undefined metrics are ``null``), ``predictions_<DB>.csv``, a Markdown
  ``report.md`` and a ``scatter_<DB>.png`` of predicted against true MOS.
* :func:`load_results`: read a run's ``results.json`` back.
* :func:`compare_runs`: two runs side by side, with the differences, as a plain-text
  table for the terminal.

Authors
 * JSQA contributors 2026
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import pandas as pd

from jsqa_sb.errors import JSQAError
from jsqa_sb.mos_metrics import evaluate_predictions
from jsqa_sb.prepare_utils import write_json

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: Quality dimensions of the NISQA corpus, in the order in which reports list them.
DIMENSIONS = ("mos", "noi", "col", "dis", "loud")

#: Name of the file of all metrics that :func:`write_test_reports` writes.
RESULTS_FILE = "results.json"

#: Columns of the Markdown report: (metric key or None for the dimension, header).
REPORT_COLUMNS = (
    ("pcc", "PCC"),
    ("srcc", "SRCC"),
    ("rmse", "RMSE"),
    ("rmse_map1", "RMSE map1"),
    ("rmse_map3", "RMSE map3"),
    ("pcc_con", "PCC con"),
    ("rmse_con", "RMSE con"),
    ("n_files", "files"),
    ("n_conditions", "conditions"),
)

#: Metrics that :func:`compare_runs` shows: (key, label, whether higher is better).
COMPARE_METRICS = (
    ("pcc", "PCC", True),
    ("srcc", "SRCC", True),
    ("rmse", "RMSE", False),
    ("rmse_map3", "RMSE map3", False),
    ("pcc_con", "PCC con", True),
    ("rmse_con", "RMSE con", False),
)

#: Axis range of the scatter plots (the MOS scale), widened only to show outliers.
_MOS_RANGE = (1.0, 5.0)

_MISSING = "n/a"


class ReportError(JSQAError, ValueError):
    """A report cannot be written, read or compared (with the reason and the path)."""


# --- helpers ---------------------------------------------------------------------------


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
        return _MISSING
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"{int(value):+d}" if sign else str(int(value))
    if _is_number(value):
        return f"{float(value):+.{decimals}f}" if sign else f"{float(value):.{decimals}f}"
    return str(value)


def _to_json(obj: Any) -> Any:
    """Return ``obj`` as strict-JSON-ready Python: non-finite floats become None.

    Numpy scalars and arrays become Python numbers and lists, paths and other
    objects their ``str``; mappings get string keys.

    Example
    -------
    >>> _to_json({"a": float("nan"), "b": [np.float32(0.5), np.int64(3)], 1: Path("x")})
    {'a': None, 'b': [0.5, 3], '1': 'x'}
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, Mapping):
        return {str(key): _to_json(value) for key, value in obj.items()}
    if isinstance(obj, np.ndarray):
        return _to_json(obj.tolist())
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=str) if isinstance(obj, (set, frozenset)) else obj
        return [_to_json(value) for value in items]
    if isinstance(obj, np.bool_):
        return bool(obj)
    return str(obj)


def _check_db_name(name: Any) -> str:
    """Return a test database name that is safe as part of a file name."""
    if (
        not isinstance(name, str)
        or not name
        or name in (".", "..")
        or any(sep in name for sep in ("/", "\\", os.sep))
    ):
        raise ReportError(
            f"test database name {name!r} cannot be part of a file name "
            "(expected a non-empty name without path separators, e.g. 'NISQA_TEST_SIM')"
        )
    return name


def _dimensions(frame: pd.DataFrame) -> list[str]:
    """Predicted dimensions of ``frame`` (``pred_<d>`` columns), NISQA ones first."""
    predicted = [str(c)[len("pred_") :] for c in frame.columns if str(c).startswith("pred_")]
    known = [d for d in DIMENSIONS if d in predicted]
    return known + [d for d in predicted if d not in DIMENSIONS]


def _evaluate_database(
    db: str, frame: pd.DataFrame, condition_truth: Optional[Mapping[str, Mapping]] = None
) -> tuple[dict[str, dict[str, Any]], list[str], list[str]]:
    """Metrics of every labelled dimension of one database, the skipped dimensions, notes."""
    if not isinstance(frame, pd.DataFrame):
        raise ReportError(f"{db}: predictions must be a pandas DataFrame, got {type(frame)}")
    if "file" not in frame.columns:
        raise ReportError(f"{db}: predictions have no 'file' column (columns: {list(frame)})")
    dims = _dimensions(frame)
    if "mos" not in dims:
        raise ReportError(f"{db}: predictions have no 'pred_mos' column (columns: {list(frame)})")

    metrics: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    notes: list[str] = []
    con = frame["con"] if "con" in frame.columns else None
    if con is not None:
        unlabelled = con.isna() | (con.astype(str).str.strip() == "")
        if unlabelled.any():
            notes.append(
                f"{int(unlabelled.sum())} of {len(con)} files have no condition (con): "
                "per-condition metrics not computed"
            )
            con = None
    if con is not None and condition_truth:
        notes.append("per-condition true scores from NISQA_corpus_con.csv")
    for dim in dims:
        pred = pd.to_numeric(frame[f"pred_{dim}"], errors="coerce").to_numpy(np.float64)
        n_bad = int((~np.isfinite(pred)).sum())
        if n_bad:
            raise ReportError(
                f"{db}, dimension {dim!r}: {n_bad} of {pred.size} predictions are NaN, "
                "infinite or not numbers"
            )
        if f"true_{dim}" not in frame.columns:
            skipped.append(dim)
            continue
        true = pd.to_numeric(frame[f"true_{dim}"], errors="coerce").to_numpy(np.float64)
        labelled = ~np.isnan(true)
        if not labelled.any():
            skipped.append(dim)  # the corpus has no label for this dimension
            continue
        if not labelled.all():
            logger.warning(
                "%s, dimension %r: %d of %d files have no label; evaluating the rest",
                db,
                dim,
                int((~labelled).sum()),
                true.size,
            )
        conditions = con.to_numpy()[labelled] if con is not None else None
        truth = None
        if conditions is not None and condition_truth:
            truth = {c: v[dim] for c, v in condition_truth.items() if v.get(dim) is not None}
            truth = truth if {str(c) for c in conditions} <= set(map(str, truth)) else None
            if truth is None:
                notes.append(
                    f"{dim}: the condition table lacks conditions; means of the files used"
                )
        try:
            result = evaluate_predictions(true[labelled], pred[labelled], conditions, truth)
        except ValueError as exc:
            raise ReportError(f"{db}, dimension {dim!r}: {exc}") from exc
        metrics[dim] = result
    return metrics, skipped, notes


def _prediction_columns(frame: pd.DataFrame) -> list[str]:
    """Columns of ``predictions_<DB>.csv``: file, con, then true and predicted per dim."""
    columns = ["file"] + (["con"] if "con" in frame.columns else [])
    for dim in _dimensions(frame):
        columns += [c for c in (f"true_{dim}", f"pred_{dim}") if c in frame.columns]
    return columns


def scatter_png(true: np.ndarray, pred: np.ndarray, xlabel: str, ylabel: str, title: str) -> bytes:
    """A PNG scatter plot of predictions against labels, with the identity line.

    The axes cover at least the MOS range 1-5 and are square, so plots compare at a glance.
    """
    import io

    from matplotlib.figure import Figure  # no pyplot: no global state, Agg for PNG

    both = np.concatenate([true, pred]) if true.size else np.array(_MOS_RANGE)
    low = min(_MOS_RANGE[0], float(both.min()) - 0.1)
    high = max(_MOS_RANGE[1], float(both.max()) + 0.1)
    fig = Figure(figsize=(5.0, 5.0), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.plot([low, high], [low, high], color="0.4", linestyle="--", linewidth=1.0, label="y = x")
    ax.scatter(true, pred, s=12, alpha=0.6, edgecolors="none", label=f"files ({true.size})")
    ax.set(xlim=(low, high), ylim=(low, high), aspect="equal", xlabel=xlabel, ylabel=ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    fig.clear()
    return buffer.getvalue()


def _scatter(path: Path, db: str, frame: pd.DataFrame, metrics: Mapping[str, Any]) -> None:
    """Write the scatter plot of predicted against true MOS (labelled files only)."""
    true = pd.to_numeric(frame["true_mos"], errors="coerce").to_numpy(np.float64)
    pred = pd.to_numeric(frame["pred_mos"], errors="coerce").to_numpy(np.float64)
    keep = ~np.isnan(true)
    title = (
        f"{db}\nPCC {_fmt(metrics.get('pcc'))}, SRCC {_fmt(metrics.get('srcc'))}, "
        f"RMSE {_fmt(metrics.get('rmse'))}"
    )
    path.write_bytes(scatter_png(true[keep], pred[keep], "true MOS", "predicted MOS", title))


def _markdown_report(
    results: Mapping[str, Any], skipped: Mapping[str, list[str]], notes: Mapping[str, list[str]]
) -> str:
    """The text of ``report.md``."""
    lines = ["# JSQA test results", ""]
    if results.get("checkpoint") is not None:
        lines += [f"Checkpoint: `{results['checkpoint']}`", ""]
    lines += [f"Test sets: {', '.join(results['test_sets'])}", ""]
    header = ["dimension"] + [label for _, label in REPORT_COLUMNS]
    for db in results["test_sets"]:
        lines += [f"## {db}", ""]
        dims = results["databases"][db]
        if dims:
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "|".join(["---"] + ["---:"] * len(REPORT_COLUMNS)) + "|")
            for dim, metrics in dims.items():
                cells = [dim] + [_fmt(metrics.get(key)) for key, _ in REPORT_COLUMNS]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
        else:
            lines += ["No labelled dimension: nothing to evaluate.", ""]
        if skipped.get(db):
            lines += [f"Not evaluated (no labels): {', '.join(skipped[db])}.", ""]
        lines += [f"Note: {note}." for note in notes.get(db, [])] + [""] * bool(notes.get(db))
        if "mos" in dims:
            lines += [f"![{db}: predicted against true MOS](scatter_{db}.png)", ""]
    return "\n".join(lines)


# --- public API ------------------------------------------------------------------------


def write_test_reports(
    output_folder: PathLike,
    predictions: Mapping[str, pd.DataFrame],
    config: Optional[Any] = None,
    checkpoint: Optional[Any] = None,
    condition_truth: Optional[Mapping[str, Mapping[str, Mapping[str, Any]]]] = None,
) -> dict[str, Any]:
    """Evaluate the predictions on every test database and write the reports.

    Every metric of :func:`jsqa_sb.mos_metrics.evaluate_predictions` (per condition
    from the ``con`` column) is computed for every database and predicted dimension
    before anything is written, so that an error leaves no half-written reports.

    Arguments
    ---------
    output_folder : str or os.PathLike
        Folder to write into (created if needed; existing reports are overwritten).
    predictions : Mapping[str, pandas.DataFrame]
        Test database name (e.g. ``"NISQA_TEST_SIM"``) to its predictions: columns
        ``file``, ``con`` (condition; optional, without it no per-condition
        metrics), and for each predicted dimension ``d`` (``mos`` required; ``noi``,
        ``col``, ``dis``, ``loud`` or others optional) ``pred_<d>`` and ``true_<d>``.
        A dimension whose ``true_<d>`` is absent or all NaN (the corpus has no label
        for it) is skipped for that database; files whose label alone is NaN are
        left out of that dimension's metrics (with a logged warning).
    config : object, optional
        Configuration of the run (e.g. the hyperparameters), recorded in
        ``results.json`` (numpy values become numbers, other objects strings).
    checkpoint : object, optional
        Checkpoint that was evaluated (e.g. its path), recorded likewise.
    condition_truth : mapping, optional
        ``{DB: {con: {dim: score}}}``, the per-condition true scores of
        ``NISQA_corpus_con.csv`` (see :func:`jsqa_sb.prepare_nisqa.prepare_nisqa`):
        used, as NISQA's own evaluation does, instead of the mean of the files.
        Files without a condition make the per-condition metrics of their database
        skipped, with a note in ``report.md`` and ``results.json``.

    Returns
    -------
    dict
        What ``results.json`` holds: ``{"databases": {DB: {dim: metrics}},
        "config": ..., "checkpoint": ..., "test_sets": sorted database names}``,
        undefined metrics (NaN) as None.

    Raises
    ------
    ReportError
        (a ``ValueError``) naming the database and dimension, for a NaN or infinite
        prediction or any other error of ``evaluate_predictions`` (e.g. fewer than 4
        labelled files); for a missing ``file`` or ``pred_mos`` column, an empty
        ``predictions`` or a database name that cannot be part of a file name.

    Notes
    -----
    Files written: ``results.json``; per database ``predictions_<DB>.csv`` (file,
    con, true and predicted value per dimension), ``scatter_<DB>.png`` (predicted
    against true MOS, axes 1 to 5, widened only if a point falls outside; not
    written when the database has no MOS labels); and ``report.md``, a Markdown table
    per database with 3 decimals.

    Example
    -------
    >>> import tempfile
    >>> frame = pd.DataFrame({"file": list("abcdef"), "con": [0, 0, 1, 1, 2, 2],
    ...                       "true_mos": [1, 2, 3, 4, 5, 4.5],
    ...                       "pred_mos": [1.2, 2.1, 2.8, 4.1, 4.7, 4.4]})
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     results = write_test_reports(tmp, {"NISQA_TEST_X": frame})
    ...     names = sorted(p.name for p in Path(tmp).iterdir())
    >>> names
    ['predictions_NISQA_TEST_X.csv', 'report.md', 'results.json', 'scatter_NISQA_TEST_X.png']
    >>> round(results["databases"]["NISQA_TEST_X"]["mos"]["pcc"], 3)
    0.995
    """
    if not predictions:
        raise ReportError("no test database to report on (predictions is empty)")
    databases: dict[str, dict[str, Any]] = {}
    skipped: dict[str, list[str]] = {}
    notes: dict[str, list[str]] = {}
    for db, frame in predictions.items():
        _check_db_name(db)
        truth = (condition_truth or {}).get(db)
        databases[db], skipped[db], notes[db] = _evaluate_database(db, frame, truth)

    test_sets = sorted(databases)
    results: dict[str, Any] = _to_json(
        {
            "databases": {db: databases[db] for db in test_sets},
            "config": config,
            "checkpoint": checkpoint,
            "test_sets": test_sets,
        }
    )
    if any(notes.values()):  # e.g. per-condition metrics skipped
        results["notes"] = {db: notes[db] for db in test_sets if notes[db]}

    out = Path(output_folder)
    out.mkdir(parents=True, exist_ok=True)
    for db in test_sets:
        frame = predictions[db]
        frame[_prediction_columns(frame)].to_csv(out / f"predictions_{db}.csv", index=False)
        if "mos" in databases[db]:
            _scatter(out / f"scatter_{db}.png", db, frame, databases[db]["mos"])
    (out / "report.md").write_text(_markdown_report(results, skipped, notes), encoding="utf-8")
    # Last and atomic: a results.json means the whole report is there (label_budget.py
    # skips a run that has one).
    write_json(out / RESULTS_FILE, results)
    return results


def load_results(run_folder: PathLike) -> dict[str, Any]:
    """Read the ``results.json`` of a run (written by :func:`write_test_reports`).

    Arguments
    ---------
    run_folder : str or os.PathLike
        Folder of the run's test reports, or the ``results.json`` file itself.

    Returns
    -------
    dict
        The results: ``databases``, ``config``, ``checkpoint``, ``test_sets``.

    Raises
    ------
    ReportError
        Naming the path, when there is no ``results.json`` (the test stage has not
        run), or it is not valid JSON or has no ``databases``.

    Example
    -------
    >>> load_results("/nonexistent/run")
    Traceback (most recent call last):
    ...
    jsqa_sb.reports.ReportError: no results.json in /nonexistent/run: run the test stage first
    """
    path = Path(run_folder)
    if not path.is_file():
        if not path.is_dir() and path.name == RESULTS_FILE:
            raise ReportError(f"{path} does not exist: run the test stage first")
        path = path / RESULTS_FILE
    if not path.is_file():
        raise ReportError(f"no {RESULTS_FILE} in {run_folder}: run the test stage first")
    try:
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
    except (OSError, ValueError) as exc:
        raise ReportError(f"cannot read {path}: {exc}") from exc
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


def _better(a: Any, b: Any, higher_is_better: bool) -> str:
    if a is None or b is None:
        return ""
    if a == b:
        return "="
    return "B" if (b > a) == higher_is_better else "A"


def _table(rows: list[list[str]], right: Iterable[int]) -> list[str]:
    """Align ``rows`` (the first is the header) in columns, ``right`` ones right-aligned."""
    right = set(right)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def compare_runs(
    run_a: PathLike,
    run_b: PathLike,
    dims: Optional[Union[str, Iterable[str]]] = ("mos",),
) -> str:
    """Two runs' test results side by side, with the differences B - A.

    Arguments
    ---------
    run_a, run_b : str or os.PathLike
        Folders holding the runs' ``results.json`` (see :func:`load_results`).
    dims : str or iterable of str, optional
        Dimensions to compare (default MOS only); None compares every dimension
        that either run evaluated.

    Returns
    -------
    str
        A plain-text table per test database and dimension with the columns metric,
        A, B, diff (B - A, 4 decimals) and better (which run is better on that
        metric: higher is better for correlations, lower for RMSEs; ``=`` for a
        tie), for PCC, SRCC, RMSE, RMSE map3, PCC con and RMSE con. Metrics that are
        undefined show as ``n/a``; a dimension evaluated by one run only is noted.

    Raises
    ------
    ReportError
        When a ``results.json`` is missing or unreadable, or the two runs were
        evaluated on different test sets (the message lists both).
    """
    results_a, results_b = load_results(run_a), load_results(run_b)
    sets_a, sets_b = sorted(results_a["test_sets"]), sorted(results_b["test_sets"])
    if sets_a != sets_b:
        only_a = sorted(set(sets_a) - set(sets_b))
        only_b = sorted(set(sets_b) - set(sets_a))
        raise ReportError(
            "the runs were evaluated on different test sets: "
            f"A ({run_a}): {', '.join(sets_a) or 'none'}; "
            f"B ({run_b}): {', '.join(sets_b) or 'none'} "
            f"(only in A: {', '.join(only_a) or 'none'}; only in B: {', '.join(only_b) or 'none'})"
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
            wanted = [d for d in DIMENSIONS if d in dims_a or d in dims_b]
            wanted += [d for d in {**dims_a, **dims_b} if d not in DIMENSIONS]
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
                a, b = dims_a[dim].get(key), dims_b[dim].get(key)
                a = a if a is None or math.isfinite(a) else None
                b = b if b is None or math.isfinite(b) else None
                diff = None if a is None or b is None else b - a
                rows.append(
                    [label, _fmt(a, 4), _fmt(b, 4), _fmt(diff, 4, sign=True), _better(a, b, higher)]
                )
            lines += ["  " + line for line in _table(rows, right=(1, 2, 3))]
    return "\n".join(lines) + "\n"
