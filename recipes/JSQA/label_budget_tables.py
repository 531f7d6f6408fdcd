"""What the label-budget experiment (``label_budget.py``) records of its runs, and its tables."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from jsqa_sb.errors import JSQAError
from jsqa_sb.evaluation.reports import RESULTS_FILE

#: What each run was started with (``label_budget.run_settings``), checked before reuse.
SETTINGS_FILE = "run_settings.json"


class BudgetError(JSQAError):
    """A setting of the experiment that cannot be run (named in the message)."""


def _plain(value):
    """A setting as JSON keeps it (paths as text)."""
    return value if isinstance(value, (bool, int, float, str, list, type(None))) else str(value)


def check_reuse(folder: Path, settings: dict) -> None:
    """Refuse to reuse (or resume) a run that was started with other settings."""
    path = folder / SETTINGS_FILE
    if not path.is_file():  # a new run, or one written before the settings were recorded
        return
    before = json.loads(path.read_text())
    changed = sorted(
        key for key in settings.keys() | before.keys() if settings.get(key) != before.get(key)
    )
    if changed:
        shown = ", ".join(
            f"{key}: {_short(before.get(key))} -> {_short(settings.get(key))}" for key in changed
        )
        raise BudgetError(
            f"{folder} was run with other settings ({shown}); use another --output_folder, "
            "or delete that run to redo it"
        )


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def valid_pcc(folder: Path) -> float:
    """The validation PCC of the checkpoint the run selected (its best)."""
    values = [
        yaml.safe_load(p.read_text()).get("pcc") for p in (folder / "save").glob("CKPT+*/CKPT.yaml")
    ]
    values = [v for v in values if isinstance(v, (int, float)) and np.isfinite(v)]
    return max(values) if values else float("nan")


def run_row(folder: Path, budget: int, arm: str, seed: int, lr: float, lr_enc, out: Path) -> dict:
    """One row of runs.csv (``folder`` relative to the output folder ``out``)."""
    results = json.loads((folder / RESULTS_FILE).read_text())
    row = {"budget": budget, "arm": arm, "seed": seed, "lr": lr, "lr_encoder": lr_enc}
    row["valid_pcc"] = valid_pcc(folder)
    for db, dims in results["databases"].items():
        for key in ("pcc", "srcc", "rmse", "pcc_con"):
            row[f"{db}_{key}"] = dims["mos"].get(key)
    row["folder"] = str(folder.relative_to(out))
    return row


def choose(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (budget, arm), the learning rates with the best mean validation PCC."""
    rates = rows.assign(lr_encoder=rows["lr_encoder"].fillna(-1.0))
    means = rates.groupby(["budget", "arm", "lr", "lr_encoder"], as_index=False)["valid_pcc"]
    best = means.mean().sort_values("valid_pcc", ascending=False, na_position="last")
    best = best.groupby(["budget", "arm"], as_index=False).head(1)
    for row in best[best["valid_pcc"].isna()].to_dict("records"):
        print(
            f"label_budget.py: warning: no finite validation PCC for {row['arm']} at "
            f"{row['budget']} files: its learning rates are not a choice",
            file=sys.stderr,
        )
    best = best.drop(columns="valid_pcc")
    best["lr_encoder"] = best["lr_encoder"].where(best["lr_encoder"] >= 0)
    return best


def summarise(rows: pd.DataFrame, chosen: pd.DataFrame, test_db: str) -> pd.DataFrame:
    """Mean and sd per budget and arm (chosen rates), paired differences to scratch."""
    key = f"{test_db}_pcc"
    if key not in rows.columns:
        raise BudgetError(f"no test results for {test_db} (have: {sorted(rows.columns)})")
    picked = rows.merge(chosen, on=["budget", "arm", "lr"], suffixes=("", "_chosen"))
    rates = picked[["lr_encoder", "lr_encoder_chosen"]].fillna(-1.0)  # frozen arms: none
    picked = picked[rates["lr_encoder"] == rates["lr_encoder_chosen"]]
    lines = []
    for (budget, arm), group in picked.groupby(["budget", "arm"]):
        values = group.set_index("seed")[key]
        line = {
            "budget": budget,
            "arm": arm,
            "lr": group["lr"].iloc[0],
            "lr_encoder": group["lr_encoder"].iloc[0],
            "seeds": int(values.notna().sum()),
            "pcc_mean": values.mean(),
            "pcc_sd": values.std(ddof=1),  # NaN for a single seed
            "values": values.round(3).tolist(),
            "valid_pcc_mean": group["valid_pcc"].mean(),  # what defaults may be chosen on
        }
        scratch = picked[(picked["budget"] == budget) & (picked["arm"] == "scratch")]
        if arm != "scratch" and not scratch.empty:
            paired = pd.concat([values, scratch.set_index("seed")[key]], axis=1).dropna()
            diff = paired.iloc[:, 0] - paired.iloc[:, 1]
            line["diff_mean"] = diff.mean()
            line["diff_sd"] = diff.std(ddof=1)
            line["wins"] = f"{int((diff > 0).sum())}/{len(diff)}"
            if line["diff_sd"] > 0:  # False for NaN: a single seed
                line["t_test_p"] = stats.ttest_rel(paired.iloc[:, 0], paired.iloc[:, 1]).pvalue
                line["wilcoxon_p"] = stats.wilcoxon(diff).pvalue
        lines.append(line)
    return pd.DataFrame(lines)


def markdown(summary: pd.DataFrame, test_db: str) -> str:
    """summary.md."""
    columns = {"labelled files": ":", "arm": "", "lr": ":", "lr_encoder": ":", "seeds": ":"}
    columns.update({"validation PCC": ":", "PCC mean ± sd": ""})
    columns.update({"vs scratch (paired mean ± sd, wins)": "", "t-test p": ":", "Wilcoxon p": ":"})
    rows = [
        [row["budget"], row["arm"], f"{row['lr']:g}", _rate(row["lr_encoder"]), row["seeds"]]
        + [f"{row['valid_pcc_mean']:.3f}", mean_sd(row["pcc_mean"], row["pcc_sd"]), _diff(row)]
        + [_p(row.get("t_test_p")), _p(row.get("wilcoxon_p"))]
        for row in summary.to_dict("records")
    ]
    return table_text(f"Label budget: test PCC on {test_db} (MOS, files)", columns, rows)


def table_text(title: str, columns: dict, rows: list) -> str:
    """A Markdown table under a title.

    ``columns`` maps each header to ":" (a right-aligned column) or "" (left-aligned).

    Example
    -------
    >>> print(table_text("T", {"n": ":", "arm": ""}, [[24, "scratch"]]), end="")
    # T
    <BLANKLINE>
    | n | arm |
    |---:|---|
    | 24 | scratch |
    """
    out = [f"# {title}", "", "| " + " | ".join(columns) + " |"]
    out.append("|" + "|".join("---:" if align else "---" for align in columns.values()) + "|")
    out += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def _diff(row: dict) -> str:
    """The paired difference to scratch as a table cell (empty for scratch itself)."""
    if pd.isna(row.get("diff_mean", float("nan"))):
        return ""
    return f"{mean_sd(row['diff_mean'], row['diff_sd'], '+.3f')} ({row['wins']})"


def mean_sd(mean: float, sd: float, spec: str = ".3f") -> str:
    """``mean ± sd`` as a table cell; a single seed has no sd.

    Example
    -------
    >>> mean_sd(0.8512, 0.0461), mean_sd(0.02, float("nan"), "+.3f")
    ('0.851 ± 0.046', '+0.020 ± -')
    """
    return f"{mean:{spec}} ± " + ("-" if pd.isna(sd) else f"{sd:.3f}")


def _p(value) -> str:
    return "" if value is None or pd.isna(value) else f"{value:.3g}"


def _rate(value) -> str:
    return "-" if pd.isna(value) else f"{value:g}"


def plot(summary: pd.DataFrame, path: Path, test_db: str) -> None:
    """Test PCC against the number of labelled files, one line per arm, sd as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    arms = sorted(summary["arm"].unique())
    for i, (arm, group) in enumerate(summary.groupby("arm")):
        group = group.sort_values("budget")
        dodge = 1.0 + 0.03 * (i - (len(arms) - 1) / 2)  # side by side, not on top
        ax.errorbar(
            group["budget"] * dodge,
            group["pcc_mean"],
            yerr=group["pcc_sd"].fillna(0),
            marker="o",
            capsize=3,
            label=arm,
        )
    ax.set_xscale("log")
    budgets = sorted(summary["budget"].unique())
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.minorticks_off()
    ax.set_xlim(budgets[0] / 1.25, budgets[-1] * 1.25)
    ax.set_xlabel("labelled training files")
    ax.set_ylabel(f"test PCC ({test_db}, mean ± sd over seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
