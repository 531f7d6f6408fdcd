#!/usr/bin/env python3
"""The label-budget experiment: when does JND pretraining pay off, and by how much.

Fine-tunes the MOS model from each pretrained encoder, probes each frozen encoder
(linear probe: the head alone is trained), and trains the same network from scratch,
on nested subsets of the labelled training files, over several seeds:

    python label_budget.py --nisqa_folder=/d \
        --encoder same_noise=results/pretrain_a/encoder.ckpt \
        --encoder within_group=results/pretrain_b/encoder.ckpt \
        --budgets 24 48 96 all --seeds 1 2 3 4 5 --output_folder=results/label_budget

Protocol:

* subsets: the training files are grouped by clean reference (``filename_ref`` of
  the NISQA CSV) and the references shuffled with the seed; a budget takes whole
  references in that order (the last one cut) until it has its number of files. The
  subsets of one seed are nested, and every arm of a seed sees the same files;
* learning rates: every arm gets the same small grid (``--lr`` x ``--lr_encoder``;
  ``--lr`` alone for the frozen arm), run with the first ``--search_seeds`` seeds; the
  setting with the best mean validation PCC (the selected checkpoint's, on the YAML's
  validation databases) is then run with the other seeds. Test data play no part in
  the choice;
* every run is a ``train.py`` run (``finetune.yaml`` or ``scratch.yaml``) in its own
  folder under ``runs/``, evaluated on every test database; a finished run (its
  ``results.json`` written) is skipped when the command is run again, and an
  interrupted one resumes from its checkpoint. Each run records what its results
  depend on (``run_settings.json``: YAML, overrides, training files, encoder SHA-256);
  a rerun with other settings in the same output folder is refused before training,
  instead of mixing old and new runs in one table.

Writes ``runs.csv`` (one row per run: budget, arm, seed, learning rates, validation
PCC, and test PCC, SRCC, RMSE, per-condition PCC per test database), ``summary.md``
(mean +- sd per budget and arm with the chosen learning rates, the mean validation PCC
of the same runs, and each pretrained arm's paired difference to scratch with a paired
t-test and a Wilcoxon test across seeds),
``summary.csv``, ``label_budget.png`` (test PCC against the number of labelled files)
and ``config.json`` (the exact configuration and command). ``--smoke`` runs a tiny
version (what ``make test`` runs); ``--summary_only`` writes the tables from the runs
already finished, training nothing (a look at an experiment still running).

Authors
 * JSQA contributors 2026
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from jsqa_sb.errors import JSQAError
from jsqa_sb.prepare_nisqa import corpus_table, file_key, prepare_nisqa
from jsqa_sb.prepare_utils import file_digest, write_json
from jsqa_sb.reports import RESULTS_FILE

RECIPE = Path(__file__).resolve().parent
SMOKE_OPTIONS = {
    "number_of_epochs": 1,
    "batch_size": 4,
    "num_workers": 0,
    "cnn_channels": 4,
    "d_model": 16,
    "att_layers": 1,
    "att_heads": 2,
    "emb_dim": 16,
    "head_hidden": 8,
}


#: An arm name (``finetune_<name>``, ``frozen_<name>``): a folder name under ``runs/``.
ENCODER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

#: What each run was started with (:func:`run_settings`), compared before it is reused.
SETTINGS_FILE = "run_settings.json"


class BudgetError(JSQAError):
    """A setting of the experiment that cannot be run (named in the message)."""


def parse_args(argv=None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nisqa_folder", required=True, help="the folder that contains NISQA_Corpus/")
    p.add_argument("--output_folder", default="results/label_budget")
    p.add_argument(
        "--encoder",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a pretrained encoder.ckpt (repeatable): fine-tuned and frozen arms",
    )
    p.add_argument(
        "--budgets",
        nargs="+",
        default=["24", "48", "96", "all"],
        help="numbers of labelled training files; 'all' is the whole training set",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    p.add_argument("--search_seeds", type=int, default=2, help="seeds that run the lr grid")
    p.add_argument("--lr", nargs="+", type=float, default=[1e-3, 3e-3])
    p.add_argument("--lr_encoder", nargs="+", type=float, default=[3e-4, 1e-3])
    p.add_argument("--number_of_epochs", type=int, default=40)
    p.add_argument("--no_frozen", action="store_true", help="skip the frozen-encoder arms")
    p.add_argument("--no_scratch", action="store_true", help="skip the scratch arm")
    p.add_argument("--test_db", default="NISQA_TEST_SIM", help="the database of summary.md")
    p.add_argument("--jobs", type=int, default=1, help="train.py runs at once")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--train_option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a train.py override for every run (repeatable), e.g. num_workers=2",
    )
    p.add_argument(
        "--summary_only",
        action="store_true",
        help="train nothing: write the tables from the runs already finished",
    )
    p.add_argument("--smoke", action="store_true", help="a tiny version (tests)")
    args = p.parse_args(argv)
    repeated = sorted({seed for seed in args.seeds if args.seeds.count(seed) > 1})
    if repeated:
        p.error(f"--seeds repeats {', '.join(map(str, repeated))}")
    if args.smoke:
        args.number_of_epochs = SMOKE_OPTIONS["number_of_epochs"]
    return args


def arms(args) -> dict[str, dict]:
    """Each arm: its YAML, encoder and the grid of learning rates it searches."""
    encoders = {}
    for item in args.encoder:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise BudgetError(f"--encoder wants NAME=PATH, got {item!r}")
        if not ENCODER_NAME.fullmatch(name):  # it names folders under runs/
            raise BudgetError(f"--encoder name {name!r}: use letters, digits, '_', '.', '-'")
        if name in encoders:
            raise BudgetError(f"--encoder {name} is given twice")
        encoders[name] = path
    grid = list(itertools.product(args.lr, args.lr_encoder))
    out = {}
    for name, path in encoders.items():
        out[f"finetune_{name}"] = {"yaml": "finetune.yaml", "encoder": path, "grid": grid}
        if not args.no_frozen:
            frozen_grid = [(lr, None) for lr in args.lr]
            out[f"frozen_{name}"] = {"yaml": "finetune.yaml", "encoder": path, "grid": frozen_grid}
    if not args.no_scratch:
        out["scratch"] = {"yaml": "scratch.yaml", "encoder": None, "grid": grid}
    if not out:
        raise BudgetError("nothing to run: no --encoder, and --no_scratch")
    return out


def training_files(args, hparams: dict, manifest_folder: Path) -> dict[str, str]:
    """The training files (``<db>/<file>`` ids, what ``train_files`` takes) -> clean reference.

    The manifests are those ``train.py`` writes (same preparation, same databases).
    """
    prepare_nisqa(
        args.nisqa_folder,
        manifest_folder,
        train_dbs=hparams["train_dbs"],
        valid_dbs=hparams["valid_dbs"],
        test_dbs=hparams["test_dbs"],
    )
    splits = json.loads((manifest_folder / "nisqa_splits.json").read_text())
    table = corpus_table(args.nisqa_folder)
    column = "filename_ref" if "filename_ref" in table.columns else "source"
    references = {
        (row["db"].strip(), file_key(row)): str(row.get(column) or "").strip()
        for row in table.to_dict("records")
    }
    files = {}
    for db in splits["train"]:
        for file in json.loads((manifest_folder / f"{db}.json").read_text()):
            files[f"{db}/{file}"] = references.get((db, file)) or f"{db}/{file}"
    if not files:
        raise BudgetError(f"no training file in {args.nisqa_folder} ({hparams['train_dbs']})")
    return files


def nested_subsets(files: dict[str, str], budgets: list[int], seed: int) -> dict[int, list]:
    """The subset of each budget for one seed: whole references, nested across budgets.

    Example
    -------
    >>> files = {f"DB/{i}": f"ref{i // 3}" for i in range(12)}
    >>> subsets = nested_subsets(files, [4, 12], seed=0)
    >>> len(subsets[4]), set(subsets[4]) < set(subsets[12]), len(subsets[12])
    (4, True, 12)
    """
    rng = np.random.default_rng(seed)
    by_ref: dict[str, list] = {}
    for file in sorted(files):
        by_ref.setdefault(files[file], []).append(file)
    order = [by_ref[ref] for ref in rng.permutation(sorted(by_ref))]
    ranked = [file for group in order for file in rng.permutation(group).tolist()]
    return {budget: sorted(ranked[:budget]) for budget in budgets}


def resolve_budgets(budgets: list[str], available: int) -> list[int]:
    """Budgets as numbers (``all``: every training file); each must fit the training set."""
    out = []
    for budget in budgets:
        if budget.strip().lower() == "all":
            n = available
        elif budget.strip().isdigit():
            n = int(budget)
        else:
            raise BudgetError(f"a budget is a whole number of files or 'all', got {budget!r}")
        if n <= 0:
            raise BudgetError(f"a budget must be a positive number of files, got {budget}")
        if n > available:
            raise BudgetError(
                f"budget {n} is larger than the training set ({available} labelled files)"
            )
        out.append(n)
    return sorted(set(out))


def check_test_db(args, manifest_folder: Path) -> None:
    """Fail before any training if ``--test_db`` is not a test database of the corpus."""
    tests = json.loads((manifest_folder / "nisqa_splits.json").read_text())["test"]
    if args.test_db not in tests:
        raise BudgetError(
            f"--test_db {args.test_db} is not a test database of {args.nisqa_folder} "
            f"(have: {', '.join(tests) or 'none'})"
        )


def recipe_hparams(args, folder: Path) -> dict:
    """finetune.yaml as the runs will see it (with --train_option), loaded in ``folder``."""
    from hyperpyyaml import load_hyperpyyaml

    overrides = {**_train_options(args), "output_folder": str(folder)}
    overrides.update(nisqa_folder=args.nisqa_folder, pretrained_encoder="none")
    with open(RECIPE / "hparams" / "finetune.yaml", encoding="utf-8") as f:
        return load_hyperpyyaml(f, overrides)


def _train_options(args) -> dict:
    options = dict(SMOKE_OPTIONS) if args.smoke else {}
    for item in args.train_option:
        key, sep, value = item.partition("=")
        if not sep:
            raise BudgetError(f"--train_option wants KEY=VALUE, got {item!r}")
        options[key] = yaml.safe_load(value)
    options["number_of_epochs"] = args.number_of_epochs
    return options


def check_encoders(hparams: dict, arm_specs: dict) -> None:
    """Fail before any training if an encoder checkpoint is missing or does not fit."""
    from jsqa_sb.models import check_encoder_checkpoint

    for path in sorted({spec["encoder"] for spec in arm_specs.values() if spec["encoder"]}):
        check_encoder_checkpoint(path, hparams["encoder"])


def run_folder(out: Path, budget: int, arm: str, seed: int, lr: float, lr_enc) -> Path:
    """Where one run lives."""
    rates = f"lr{lr:g}" + ("" if lr_enc is None else f"_enc{lr_enc:g}")
    return out / "runs" / f"n{budget}" / arm / rates / f"seed{seed}"


def overrides(args, spec: dict, subset: Path, seed: int, lr: float, lr_enc) -> dict:
    """The train.py settings of one run, but its output folder."""
    out = {
        **_train_options(args),
        "nisqa_folder": Path(args.nisqa_folder).resolve(),
        "train_files": subset.resolve(),
        "seed": seed,
        "lr": lr,
    }
    if spec["encoder"]:
        out["pretrained_encoder"] = Path(spec["encoder"]).resolve()
    if lr_enc is None:
        out["freeze_encoder"] = True
    else:
        out["lr_encoder"] = lr_enc
    return out


def run_settings(args, spec: dict, subset: Path, seed: int, lr: float, lr_enc) -> dict:
    """What a run's results depend on: the YAML, its overrides, files and encoder weights.

    Paths that only locate an input (the subset file, the encoder) are replaced by what
    they hold, so that equal runs of two output folders compare equal.
    """
    settings = overrides(args, spec, subset, seed, lr, lr_enc)
    settings["train_files"] = json.loads(subset.read_text())
    if spec["encoder"]:
        settings["pretrained_encoder"] = "sha256:" + file_digest(settings["pretrained_encoder"])
    return {"yaml": spec["yaml"], **{k: _plain(v) for k, v in settings.items()}}


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


def train(args, job: tuple, folder: Path, settings: dict) -> Path:
    """One train.py run of a job (skipped when finished), recording its ``settings``."""
    if (folder / RESULTS_FILE).is_file():
        return folder
    seed, lr, lr_enc, spec, subset = job[2:]
    options = {
        **overrides(args, spec, subset, seed, lr, lr_enc),
        "output_folder": folder.resolve(),
    }
    cmd = [sys.executable, "train.py", f"hparams/{spec['yaml']}", f"--device={args.device}"]
    cmd += [f"--{key}={value}" for key, value in options.items()]
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / SETTINGS_FILE, settings)
    (folder / "command.txt").write_text(" ".join(map(str, cmd)) + "\n")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if args.jobs > 1:
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.jobs)))
    with open(folder / "train_stdout.txt", "a") as log:  # a resumed run keeps its first log
        done = subprocess.run(cmd, cwd=RECIPE, stdout=log, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        tail = (folder / "train_stdout.txt").read_text().strip().splitlines()[-1:]
        raise BudgetError(f"train.py failed in {folder}: {' '.join(tail)}")
    return folder


def valid_pcc(folder: Path) -> float:
    """The validation PCC of the checkpoint the run selected (its best)."""
    values = [
        yaml.safe_load(p.read_text()).get("pcc") for p in (folder / "save").glob("CKPT+*/CKPT.yaml")
    ]
    values = [v for v in values if isinstance(v, (int, float)) and np.isfinite(v)]
    return max(values) if values else float("nan")


def run_row(folder: Path, budget: int, arm: str, seed: int, lr: float, lr_enc, out=None) -> dict:
    """One row of runs.csv (``folder`` relative to the output folder ``out``, if given)."""
    results = json.loads((folder / RESULTS_FILE).read_text())
    row = {"budget": budget, "arm": arm, "seed": seed, "lr": lr, "lr_encoder": lr_enc}
    row["valid_pcc"] = valid_pcc(folder)
    for db, dims in results["databases"].items():
        for key in ("pcc", "srcc", "rmse", "pcc_con"):
            row[f"{db}_{key}"] = dims["mos"].get(key)
    row["folder"] = str(folder.relative_to(out)) if out else str(folder)
    return row


def run_all(args, jobs: list) -> list[dict]:
    """Run (or skip) ``(budget, arm, seed, lr, lr_enc, spec, subset)`` jobs; their rows."""
    out = Path(args.output_folder)

    planned = []
    for job in jobs:  # every reuse checked before any training
        folder = run_folder(out, *job[:5])
        settings = run_settings(args, *job[5:], *job[2:5])
        check_reuse(folder, settings)
        planned.append((job, folder, settings))
    if args.summary_only:  # the finished runs only
        planned = [plan for plan in planned if (plan[1] / RESULTS_FILE).is_file()]
    else:
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            list(pool.map(lambda plan: train(args, *plan), planned))
    return [run_row(folder, *job[:5], out=out) for job, folder, _ in planned]


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
    same_enc = (picked["lr_encoder"] == picked["lr_encoder_chosen"]) | (
        picked["lr_encoder"].isna() & picked["lr_encoder_chosen"].isna()
    )
    picked = picked[same_enc]
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
            "pcc_sd": values.std(ddof=1) if len(values) > 1 else float("nan"),
            "values": values.round(3).tolist(),
            "valid_pcc_mean": group["valid_pcc"].mean(),  # what defaults may be chosen on
        }
        scratch = picked[(picked["budget"] == budget) & (picked["arm"] == "scratch")]
        if arm != "scratch" and not scratch.empty:
            paired = pd.concat([values, scratch.set_index("seed")[key]], axis=1).dropna()
            diff = paired.iloc[:, 0] - paired.iloc[:, 1]
            line["diff_mean"] = diff.mean()
            line["diff_sd"] = diff.std(ddof=1) if len(diff) > 1 else float("nan")
            line["wins"] = f"{int((diff > 0).sum())}/{len(diff)}"
            if len(diff) > 1 and diff.std(ddof=1) > 0:
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
        [
            row["budget"],
            row["arm"],
            f"{row['lr']:g}",
            "-" if pd.isna(row["lr_encoder"]) else f"{row['lr_encoder']:g}",
            row["seeds"],
            f"{row['valid_pcc_mean']:.3f}",
            mean_sd(row["pcc_mean"], row["pcc_sd"]),
            _diff(row),
            _p(row.get("t_test_p")),
            _p(row.get("wilcoxon_p")),
        ]
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


def main(argv=None) -> int:
    """Run the experiment; return the exit status."""
    args = parse_args(argv)
    out = Path(args.output_folder)
    try:
        # 1. the arms, the training files and their nested subsets, checked before training
        arm_specs = arms(args)
        with tempfile.TemporaryDirectory() as tmp:
            hparams = recipe_hparams(args, Path(tmp))
            files = training_files(args, hparams, out / "manifests")
            budgets = resolve_budgets(args.budgets, len(files))
            check_test_db(args, out / "manifests")
            check_encoders(hparams, arm_specs)
        subsets = {}
        for seed in args.seeds:
            for budget, ids in nested_subsets(files, budgets, seed).items():
                path = subsets[budget, seed] = out / "subsets" / f"n{budget}_seed{seed}.json"
                if not path.is_file() or json.loads(path.read_text()) != ids:
                    write_json(path, ids)  # atomic: runs of another process may read it
        config = {"args": vars(args), "argv": sys.argv, "arms": arm_specs, "budgets": budgets}
        if not args.summary_only:  # the configuration of the runs, not of a look at them
            (out / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")

        # 2. the learning-rate search, with the first search_seeds seeds
        search_seeds = args.seeds[: max(1, args.search_seeds)]
        jobs = [
            (b, arm, s, lr, enc, spec, subsets[b, s])
            for b in budgets
            for arm, spec in arm_specs.items()
            for (lr, enc) in spec["grid"]
            for s in search_seeds
        ]
        rows = run_all(args, jobs)
        if not rows:
            raise BudgetError(f"no finished run in {out} to summarise")
        chosen = choose(pd.DataFrame(rows))

        # 3. the other seeds with the chosen learning rates
        jobs = [
            (
                c["budget"],
                c["arm"],
                s,
                c["lr"],
                None if pd.isna(c["lr_encoder"]) else c["lr_encoder"],
            )
            for c in chosen.to_dict("records")
            for s in args.seeds[len(search_seeds) :]
        ]
        jobs = [(*job, arm_specs[job[1]], subsets[job[0], job[2]]) for job in jobs]
        rows += run_all(args, jobs)

        # 4. the tables and the plot
        frame = pd.DataFrame(rows).sort_values(["budget", "arm", "seed", "lr", "lr_encoder"])
        summary = summarise(frame, chosen, args.test_db)
    except JSQAError as err:
        print(f"label_budget.py: error: {err}", file=sys.stderr)
        return 2
    frame.to_csv(out / "runs.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    (out / "summary.md").write_text(markdown(summary, args.test_db))
    plot(summary, out / "label_budget.png", args.test_db)
    print((out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
