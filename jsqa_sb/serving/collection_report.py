"""A picture of a scored collection: ``jsqa score ... --report report.html`` (or ``.md``).

Counts and failures, statistics and a histogram per output, the worst and best files,
and, with labels (``--label mos``: a column of the input CSV), PCC, SRCC and RMSE with
a scatter plot. HTML is one self-contained file; Markdown writes its figures beside it,
in ``<report stem>_files/``.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from jsqa_sb.data.prepare_utils import writable_folder
from jsqa_sb.evaluation.reports import ReportError, scatter_png
from jsqa_sb.serving.scoring_inputs import listed_path, read_csv_table
from jsqa_sb.serving.scoring_output import is_number

#: Report formats, chosen by the extension of ``--report``.
REPORT_FORMATS = (".html", ".md")

#: How many of the worst and of the best files the report lists.
TOP_FILES = 10

#: Fewest labelled files for PCC and SRCC (as :mod:`jsqa_sb.evaluation.mos_metrics` needs).
MIN_LABELLED = 3


def check_report_path(path: str | os.PathLike) -> Path:
    """ReportError unless ``path`` (``.html`` or ``.md``) can be written (its folder is created)."""
    report = Path(path)
    if report.suffix.lower() not in REPORT_FORMATS:
        raise ReportError(
            f"--report {path}: the report must end with {' or '.join(REPORT_FORMATS)}"
        )
    if report.is_dir():
        raise ReportError(f"--report {path}: it is a folder")
    writable_folder(report.parent, ReportError, f"--report {path}")
    return report


def read_labels(
    inputs: Sequence[str | os.PathLike], label: str, column: str = "path"
) -> dict[str, float]:
    """``{absolute path: label}`` of the files listed in the ``.csv`` inputs.

    ``label`` is the column of the labels and ``column`` that of the paths; rows with an
    empty label are left out. :class:`ReportError` if no input is a CSV file, a CSV
    lacks the ``label`` column, or a label is not a finite number.
    """
    tables = [os.fspath(p) for p in inputs if os.fspath(p).lower().endswith(".csv")]
    if not tables:
        raise ReportError(
            f"--label {label}: the labels are read from a CSV input, and no input is a CSV file"
        )
    labels: dict[str, float] = {}
    for table_path in tables:
        table = read_csv_table(table_path, label, ReportError, f"--label {label}: ")
        if column not in table.columns:
            continue  # list_inputs names this error
        bad = []
        for number, (cell, value) in enumerate(zip(table[column], table[label]), start=2):
            cell, text = cell.strip(), value.strip()
            if not cell or not text:
                continue
            if is_number(text):
                labels[listed_path(table_path, cell)] = float(text)
            else:
                bad.append(f"line {number}: {text!r}")
        if bad:
            listed = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise ReportError(
                f"--label {label}: column {label!r} of {table_path} is not numeric: {listed}"
            )
    return labels


def load_scores(path: str | os.PathLike) -> pd.DataFrame:
    """The rows ``jsqa score`` wrote (CSV or JSON), with ``error`` as text ('' if none)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        frame = pd.read_json(path, orient="records", dtype=False)
    else:
        frame = pd.read_csv(path, dtype={"path": str, "error": str}, keep_default_na=False)
    frame["error"] = frame["error"].fillna("").astype(str) if "error" in frame.columns else ""
    return frame


def summarize(frame: pd.DataFrame, output_names: Sequence[str]) -> pd.DataFrame:
    """Per output: number of scored files, mean, median, sd (n - 1), min and max."""
    scored = frame[frame["error"] == ""]
    statistics = ["count", "mean", "median", "std", "min", "max"]
    stats = {
        name: pd.to_numeric(scored[name], errors="coerce").dropna().agg(statistics)
        for name in output_names
    }
    return pd.DataFrame(stats).T.set_axis(["files", "mean", "median", "sd", "min", "max"], axis=1)


def label_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """PCC, SRCC and RMSE of ``predictions`` against ``labels`` (``evaluation.mos_metrics``)."""
    from jsqa_sb.evaluation.mos_metrics import pcc, rmse, srcc

    metrics: dict[str, float] = {"files": int(labels.size)}
    for name, metric in (("pcc", pcc), ("srcc", srcc), ("rmse", rmse)):
        metrics[name] = metric(labels, predictions) if labels.size >= MIN_LABELLED else math.nan
    return metrics


def write_report(
    scores: str | os.PathLike | pd.DataFrame,
    output_names: Sequence[str],
    report: str | os.PathLike,
    *,
    labels: Optional[Mapping[str, float]] = None,
    label_name: str = "mos",
    model_name: Optional[str] = None,
    top: int = TOP_FILES,
) -> Path:
    """Write the report of ``scores`` (``jsqa score``'s output file or rows); return its path.

    ``report`` is ``.html`` (self-contained) or ``.md`` (figures in ``<stem>_files/``);
    ``labels`` (:func:`read_labels`) are compared with the output named ``label_name``,
    or the first output if there is none; ``top`` worst and best files are listed.
    """
    report = Path(report)
    frame = scores if isinstance(scores, pd.DataFrame) else load_scores(scores)
    names = list(output_names)
    key = names[0]
    failed = frame[frame["error"] != ""]
    scored = frame[frame["error"] == ""].copy()
    scored[names] = scored[names].apply(pd.to_numeric, errors="coerce")
    ranked = scored.sort_values(key, kind="stable")

    document = _Document(report)
    document.heading(1, "JSQA scores of a collection")
    facts = [
        ("model", model_name or "(unnamed)"),
        ("written", datetime.datetime.now().isoformat(timespec="seconds")),
        ("files", str(len(frame))),
        ("scored", str(len(scored))),
        ("failed", str(len(failed))),
    ]
    document.table(["", "value"], facts)
    document.heading(2, "Scores")
    stats = summarize(frame, names)
    rows = [[name, str(int(row["files"])), *map(_fmt, row[1:])] for name, row in stats.iterrows()]
    document.table(["output", *stats.columns], rows)
    for name in names:
        document.figure(f"hist_{name}.png", f"Histogram of {name}", _histogram(scored[name], name))
    if labels is not None:
        compared = label_name if label_name in names else key
        paths = scored["path"].map(os.path.abspath)
        has = paths.isin(labels.keys())
        true = np.array([labels[p] for p in paths[has]], dtype=np.float64)
        pred = scored.loc[has, compared].to_numpy(np.float64)
        metrics = label_metrics(true, pred)
        unlabelled = int((~has).sum())
        notes = f" ({unlabelled} scored files have none)" if unlabelled else ""
        if metrics["files"] < MIN_LABELLED:
            notes += f"; fewer than {MIN_LABELLED}: no correlation"
        document.heading(2, f"Against the label {label_name}")
        document.paragraph(
            f"Predicted {compared} against the {label_name!r} column of the input CSV, "
            f"on the {metrics['files']} scored files that have a label{notes}."
        )
        values = [_fmt(metrics[k]) for k in ("pcc", "srcc", "rmse")]
        document.table(["files", "PCC", "SRCC", "RMSE"], [[str(metrics["files"]), *values]])
        title = ", ".join(f"{k} {v}" for k, v in zip(("PCC", "SRCC", "RMSE"), values))
        document.figure(
            f"scatter_{compared}.png",
            f"Predicted {compared} against the label {label_name}",
            scatter_png(true, pred, f"label: {label_name}", f"predicted {compared}", title),
        )
    shown = min(top, len(ranked))
    for title, part in (
        (f"The {shown} worst files (lowest {key})", ranked.head(top)),
        (f"The {shown} best files (highest {key})", ranked.tail(top)[::-1]),
    ):
        document.heading(2, title)
        rows = [[str(row["path"]), *map(_fmt, row[names])] for _, row in part.iterrows()]
        document.table(["path", *names], rows)
    if len(failed):
        document.heading(2, f"Failures ({len(failed)})")
        document.table(["path", "error"], failed[["path", "error"]].astype(str).values.tolist())
    document.write()
    return report


def _fmt(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "-" if math.isnan(number) else f"{number:.3f}"


def _histogram(values: pd.Series, name: str) -> bytes:
    """A PNG histogram of one output over the files, on the 1-5 scale."""
    from matplotlib.figure import Figure  # no pyplot: no global state, Agg for PNG

    data = values.dropna().to_numpy(np.float64)
    fig = Figure(figsize=(6.0, 3.6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    low, high = float(np.min(data, initial=1.0)), float(np.max(data, initial=5.0))
    ax.hist(data, bins=np.linspace(low, high, 33), color="tab:blue", edgecolor="white")
    if data.size:
        for stat, color, style in (("mean", "tab:red", "--"), ("median", "black", ":")):
            value = float(getattr(np, stat)(data))
            ax.axvline(value, color=color, linestyle=style, label=f"{stat} {value:.2f}")
        ax.legend(loc="best", framealpha=0.9, fontsize=9)
    ax.set(xlim=(low, high), xlabel=f"predicted {name}", ylabel="number of files")
    ax.set_title(f"{name}: {data.size} files", fontsize=11)
    ax.grid(alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    fig.clear()
    return buffer.getvalue()


class _Document:
    """Markdown or self-contained HTML, written in one go (atomically)."""

    def __init__(self, path: Path):
        self.path = path
        self.html = path.suffix.lower() == ".html"
        self.parts: list[str] = []
        self.files: dict[str, bytes] = {}
        self.folder = path.with_name(f"{path.stem}_files")

    def heading(self, level: int, text: str) -> None:
        self.parts.append(
            f"<h{level}>{html.escape(text)}</h{level}>" if self.html else f"{'#' * level} {text}\n"
        )

    def paragraph(self, text: str) -> None:
        self.parts.append(f"<p>{html.escape(text)}</p>" if self.html else f"{text}\n")

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        if self.html:
            head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in rows
            )
            self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            return

        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

        lines = [line(header), "|" + "|".join("---" for _ in header) + "|", *map(line, rows)]
        self.parts.append("\n".join(lines) + "\n")

    def figure(self, file_name: str, caption: str, png: bytes) -> None:
        if self.html:
            data = base64.b64encode(png).decode("ascii")
            self.parts.append(
                f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        else:
            self.files[file_name] = png
            self.parts.append(f"![{caption}]({self.folder.name}/{file_name})\n")

    def write(self) -> None:
        if self.html:
            style = (
                "body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
                "table{border-collapse:collapse;margin:1em 0}"
                "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
                "img{max-width:100%}"
            )
            text = (
                '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
                f"<title>JSQA report</title><style>{style}</style></head><body>\n"
                + "\n".join(self.parts)
                + "\n</body></html>\n"
            )
        else:
            text = "\n".join(self.parts)
            self.folder.mkdir(parents=True, exist_ok=True)
            for name, png in self.files.items():
                (self.folder / name).write_bytes(png)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(text, encoding="utf-8", errors="backslashreplace")
        os.replace(tmp, self.path)
