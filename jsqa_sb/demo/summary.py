"""What ``jsqa demo`` made: its summary dict and the text printed at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TextIO

from jsqa_sb.demo.processes import _duration, _show

#: Test database whose files are scored, and how many of them.
SCORE_DB, N_SCORED = "NISQA_TEST_SIM", 4


def _test_db(out: Path) -> Path:
    """The miniature corpus's test database, whose files the demo scores."""
    return out / "corpora" / "nisqa" / "NISQA_Corpus" / SCORE_DB


def _scored_files(out: Path) -> list[Path]:
    """The first degraded file of each of the first :data:`N_SCORED` test conditions."""
    import pandas as pd

    table = pd.read_csv(_test_db(out) / f"{SCORE_DB}_file.csv")
    first = table.sort_values("filename_deg").groupby("con", sort=True).head(1)
    return [_test_db(out) / "deg" / name for name in first["filename_deg"][:N_SCORED]]


def _summary(out: Path, steps: dict[str, Any], seconds: float) -> dict[str, Any]:
    """What the demo made (the paths that exist) and its main figures."""
    from jsqa_sb.evaluation.reports import load_results

    summary: dict[str, Any] = {"out": out, "steps": steps, "seconds": seconds, "pcc": {}}
    for run in ("pretrain", "finetune", "scratch"):
        if (out / run).is_dir():
            summary[run] = out / run
        if (out / run / "results.json").is_file():
            databases = load_results(out / run)["databases"]
            summary["pcc"][run] = {
                db: (dims.get("mos") or {}).get("pcc") for db, dims in databases.items()
            }
    if (out / "finetune" / "report.md").is_file():
        summary["report"] = out / "finetune" / "report.md"
        summary["scatter"] = sorted((out / "finetune").glob("scatter_*.png"))
    if (out / "scratch" / "report.md").is_file():
        summary["scratch_report"] = out / "scratch" / "report.md"
    if "compare" in steps:
        summary["comparison"] = (out / "comparison.txt").read_text(encoding="utf-8").rstrip()
    if "export" in steps:
        summary["model"] = out / "model"
    if "score" in steps:
        summary["scores"] = out / "scores.csv"
        summary["scores_table"] = _scores_table(out)
    return summary


def _scores_table(out: Path) -> Any:
    """``scores.csv`` with the corpus's condition and MOS label of each file, as a DataFrame."""
    import pandas as pd

    scores = pd.read_csv(out / "scores.csv")
    corpus = pd.read_csv(_test_db(out) / f"{SCORE_DB}_file.csv")
    labels = dict(zip(corpus["filename_deg"], zip(corpus["con_description"], corpus["mos"])))
    names = [Path(path).name for path in scores["path"]]
    scores.insert(1, "condition", [labels.get(name, ("?", None))[0] for name in names])
    scores.insert(2, "label_mos", [labels.get(name, ("?", None))[1] for name in names])
    return scores


def _print_summary(summary: dict[str, Any], stream: TextIO) -> None:
    """Print the comparison, the scores and the paths of what the demo made."""

    def section(title: str) -> None:
        print(f"\n=== {title} ===", file=stream)

    if "comparison" in summary:
        section("test results: A = fine-tuned from the JND-pretrained encoder, B = from scratch")
        print(summary["comparison"], file=stream)
    if "scores_table" in summary:
        table = summary["scores_table"].drop(columns=["duration", "sample_rate"], errors="ignore")
        table["path"] = [Path(path).name for path in table["path"]]
        if "error" in table and table["error"].isna().all():
            table = table.drop(columns="error")
        section(
            f"scores of {len(table)} {SCORE_DB} files by the exported model (jsqa score; "
            "label_mos: the corpus's label)"
        )
        print(table.to_string(index=False, float_format=lambda x: f"{x:.2f}"), file=stream)

    section("files")
    out = summary["out"]
    rows = (
        ("report (fine-tuned)", summary.get("report")),
        ("report (scratch)", summary.get("scratch_report")),
        ("scatter plots", summary.get("scatter")),
        ("exported model", summary.get("model")),
        ("scores", summary.get("scores")),
        ("comparison", out / "comparison.txt" if "comparison" in summary else None),
        ("logs", out / "logs"),
    )
    for label, paths in rows:
        if paths:
            paths = paths if isinstance(paths, list) else [paths]
            print(f"{label + ':':<21}{', '.join(_show(p) for p in paths)}", file=stream)
    print(
        "\nThe miniature corpora are synthetic and tiny: these figures show that the pipeline "
        "works, not how well JSQA predicts human MOS.",
        file=stream,
    )
    print(f"Demo finished in {_duration(summary['seconds'])}.", file=stream, flush=True)
