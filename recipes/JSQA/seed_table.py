#!/usr/bin/env python3
"""Mean ± sd over seeds of fine-tuned and scratch runs, and their paired PCC difference.

    python seed_table.py results/lrfix 1 2 3 [--db NISQA_TEST_SIM]

reads ``<root>/{finetune,scratch}/<seed>/results.json`` (the selected checkpoint) and
``.../last_epoch/results.json`` and prints the Markdown rows of the recipe README's
tables, then the paired differences (fine-tuned - scratch) with a paired t-test.
"""

import argparse
from pathlib import Path

import numpy as np
from scipy import stats

from jsqa_sb.evaluation.reports import load_results

METRICS = ("pcc", "srcc", "rmse", "rmse_map3", "pcc_con", "rmse_con")


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("seeds", nargs="+")
    parser.add_argument("--db", default="NISQA_TEST_SIM")
    args = parser.parse_args()
    values = {}
    for arm in ("finetune", "scratch"):
        for model, folder in (("best", ""), ("last", "last_epoch")):
            runs = [args.root / arm / seed / folder for seed in args.seeds]
            rows = [load_results(run)["databases"][args.db]["mos"] for run in runs]
            cells = []
            for key in METRICS:
                v = values[arm, model, key] = np.array([row[key] for row in rows])
                listed = ", ".join(f"{x:.3f}" for x in v)
                cells.append(f"{v.mean():.3f} ± {v.std(ddof=1):.3f} ({listed})")
            print(f"| {arm}.yaml | {model} | {len(runs)} | " + " | ".join(cells) + " |")
    for model in ("best", "last"):
        a, b = values["finetune", model, "pcc"], values["scratch", model, "pcc"]
        diff = a - b
        p = stats.ttest_rel(a, b).pvalue
        print(
            f"{model}: fine-tuned - scratch PCC {np.round(diff, 3).tolist()}, "
            f"mean {diff.mean():+.3f} ± {diff.std(ddof=1):.3f}, paired t-test p = {p:.2f}"
        )


if __name__ == "__main__":
    main()
