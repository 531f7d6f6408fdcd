"""Test-stage reports of a fine-tuned MOS model: :func:`write_test_reports`.

:func:`load_results` and :func:`compare_runs` live in :mod:`jsqa_sb.evaluation.compare` and are
importable from here too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from jsqa_sb.data.prepare_utils import to_json, write_json
from jsqa_sb.evaluation.compare import (  # noqa: F401 (re-exported)
    COMPARE_METRICS,
    DIMENSIONS,
    RESULTS_FILE,
    PathLike,
    ReportError,
    _fmt,
    _nisqa_first,
    compare_runs,
    load_results,
)
from jsqa_sb.evaluation.mos_metrics import evaluate_predictions

logger = logging.getLogger(__name__)

#: Columns of the Markdown report after the dimension: (metric key, header).
REPORT_COLUMNS = (
    ("pcc", "PCC"), ("srcc", "SRCC"), ("rmse", "RMSE"), ("rmse_map1", "RMSE map1"),
    ("rmse_map3", "RMSE map3"), ("pcc_con", "PCC con"), ("rmse_con", "RMSE con"),
    ("n_files", "files"), ("n_conditions", "conditions"),
)  # fmt: skip

#: Axis range of the scatter plots (the MOS scale), widened only to show outliers.
_MOS_RANGE = (1.0, 5.0)


def _check_db_name(name: Any) -> None:
    """Refuse a test database name that is not safe as part of a file name."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name:
        raise ReportError(
            f"test database name {name!r} cannot be part of a file name "
            "(expected a non-empty name without path separators, e.g. 'NISQA_TEST_SIM')"
        )


def _dimensions(frame: pd.DataFrame) -> list[str]:
    """Predicted dimensions of ``frame`` (``pred_<d>`` columns), NISQA ones first."""
    return _nisqa_first(str(c)[len("pred_") :] for c in frame.columns if str(c).startswith("pred_"))


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

    metrics, skipped, notes = {}, [], []
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
                *(db, dim, int((~labelled).sum()), true.size),
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
            metrics[dim] = evaluate_predictions(true[labelled], pred[labelled], conditions, truth)
        except ValueError as exc:
            raise ReportError(f"{db}, dimension {dim!r}: {exc}") from exc
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
    scores = ", ".join(f"{key.upper()} {_fmt(metrics.get(key))}" for key in ("pcc", "srcc", "rmse"))
    title = f"{db}\n{scores}"
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


def write_test_reports(
    output_folder: PathLike,
    predictions: Mapping[str, pd.DataFrame],
    config: Optional[Any] = None,
    checkpoint: Optional[Any] = None,
    condition_truth: Optional[Mapping[str, Mapping[str, Mapping[str, Any]]]] = None,
) -> dict[str, Any]:
    """Evaluate the predictions on every test database and write the reports.

    ``predictions`` maps each test database to a DataFrame of ``file``, optional ``con``
    (the condition, for the per-condition metrics), and ``pred_<d>`` and ``true_<d>``
    for each predicted dimension ``d`` (``mos`` required). A dimension without labels
    is skipped; files whose label alone is NaN are left out (a warning).
    ``condition_truth``: ``{DB: {con: {dim: score}}}`` from ``NISQA_corpus_con.csv``,
    used as NISQA's evaluation does instead of the mean of the files. ``config`` and
    ``checkpoint`` are recorded in ``results.json`` (numpy values as numbers, other
    objects as str).

    Everything is computed before anything is written, so that an error leaves no
    half-written reports. ``output_folder`` (created if needed) gets
    ``predictions_<DB>.csv``, ``scatter_<DB>.png`` (predicted against true MOS, when the
    database has MOS labels), ``report.md`` and, last, ``results.json`` (what this
    returns; NaN as null). :class:`ReportError`, naming the database and dimension, for
    a NaN or infinite prediction, an error of :func:`evaluate_predictions`, a missing
    ``file`` or ``pred_mos`` column, no database, or a name unfit for a file name.

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
    databases, skipped, notes = {}, {}, {}
    for db, frame in predictions.items():
        _check_db_name(db)
        truth = (condition_truth or {}).get(db)
        databases[db], skipped[db], notes[db] = _evaluate_database(db, frame, truth)

    test_sets = sorted(databases)
    results: dict[str, Any] = to_json(
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
