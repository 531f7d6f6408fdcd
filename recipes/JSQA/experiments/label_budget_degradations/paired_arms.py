"""Paired test-PCC differences of two arms of a label-budget folder.

Overall, per condition family and per degradation (the files containing it). Run from
``recipes/JSQA``::

    python experiments/label_budget_degradations/paired_arms.py \
        results/label_budget_degradations finetune_multi_levels finetune_same_noise_levels \
        --nisqa_folder=../../../shared/data/nisqa_mini
"""

import argparse
import sys
from pathlib import Path

import pandas as pd
from scipy.stats import ttest_rel

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import condition_families as cf  # noqa: E402

p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
p.add_argument("folder")
p.add_argument("arm")
p.add_argument("against")
p.add_argument("--nisqa_folder", required=True)
p.add_argument("--test_db", default="NISQA_TEST_SIM")
args = p.parse_args()
folder, db = Path(args.folder), args.test_db
chosen = pd.read_csv(folder / "summary.csv")[["budget", "arm", "lr", "lr_encoder"]]
runs = pd.read_csv(folder / "runs.csv").merge(chosen, on=list(chosen.columns))
descriptions = cf.file_descriptions(args.nisqa_folder, db)
views = [
    ({f: {"all files"} for f in descriptions}, ("all files",)),
    ({f: {cf.family(d)} for f, d in descriptions.items()}, cf.FAMILIES),
    (
        {f: cf.degradations(d) for f, d in descriptions.items()},
        tuple(dict.fromkeys(cf.DEGRADATIONS.values())),
    ),
]
print(f"# {args.arm} minus {args.against}: paired test PCC on {db}\n")
print("| labelled files | test files | seeds | difference (mean ± sd) | wins | t-test p |")
print("|---:|---|---:|---|---|---:|")
for members, names in views:
    rows = cf.family_rows(runs, members, names, db, folder)
    for (budget, name), group in rows.groupby(["budget", "family"], sort=False):
        pcc = {arm: g.set_index("seed")[f"{db}_pcc"] for arm, g in group.groupby("arm")}
        diff = (pcc[args.arm] - pcc[args.against]).dropna()
        pvalue = ttest_rel(pcc[args.arm][diff.index], pcc[args.against][diff.index]).pvalue
        print(
            f"| {budget} | {name} | {len(diff)} | {diff.mean():+.3f} ± {diff.std(ddof=1):.3f} "
            f"| {(diff > 0).sum()}/{len(diff)} | {pvalue:.3g} |"
        )
