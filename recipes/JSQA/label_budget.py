#!/usr/bin/env python3
"""The label-budget experiment: when does JND pretraining pay off, and by how much.

Fine-tunes the MOS model from each pretrained encoder, probes each frozen encoder
(the head alone is trained), and trains the same network from scratch, on nested
subsets of the labelled training files, over several seeds:

    python label_budget.py --nisqa_folder=/d \
        --encoder same_noise=results/pretrain_a/encoder.ckpt \
        --encoder within_group=results/pretrain_b/encoder.ckpt \
        --budgets 24 48 96 all --seeds 1 2 3 4 5 --output_folder=results/label_budget

The protocol (subsets, learning-rate search, reuse of finished runs) and the outputs
(``runs.csv``, ``summary.md``, ``summary.csv``, ``label_budget.png``, ``config.json``)
are described in the recipe's README.md.
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
from label_budget_tables import (  # noqa: F401 (re-exported)
    SETTINGS_FILE,
    BudgetError,
    _plain,
    check_reuse,
    choose,
    markdown,
    plot,
    run_row,
    summarise,
)

from jsqa_sb.data.prepare_nisqa import corpus_table, file_key, prepare_nisqa
from jsqa_sb.data.prepare_utils import file_digest, write_json
from jsqa_sb.errors import JSQAError
from jsqa_sb.evaluation.reports import RESULTS_FILE

RECIPE = Path(__file__).resolve().parent
SMOKE_OPTIONS = {
    "number_of_epochs": 1, "batch_size": 4, "num_workers": 0, "cnn_channels": 4, "d_model": 16,
    "att_layers": 1, "att_heads": 2, "emb_dim": 16, "head_hidden": 8,
}  # fmt: skip


#: An arm name (``finetune_<name>``, ``frozen_<name>``): a folder name under ``runs/``.
ENCODER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


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
    """The training files (``<db>/<file>``, as ``train_files`` takes) -> clean reference."""
    dbs = {f"{split}_dbs": hparams[f"{split}_dbs"] for split in ("train", "valid", "test")}
    manifests = prepare_nisqa(args.nisqa_folder, manifest_folder, **dbs)
    table = corpus_table(args.nisqa_folder)
    column = "filename_ref" if "filename_ref" in table.columns else "source"
    references = {
        (row["db"].strip(), file_key(row)): str(row.get(column) or "").strip()
        for row in table.to_dict("records")
    }
    files = {}
    for manifest in map(Path, manifests["train"]):
        db = manifest.stem
        for file in json.loads(manifest.read_text()):
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
        elif budget.strip().isdecimal():  # int() reads these (not '²')
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
    from jsqa_sb.networks import check_encoder_checkpoint

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
    """What a run's results depend on: YAML, overrides, files and encoder (by content)."""
    settings = overrides(args, spec, subset, seed, lr, lr_enc)
    settings["train_files"] = json.loads(subset.read_text())
    if spec["encoder"]:
        settings["pretrained_encoder"] = "sha256:" + file_digest(settings["pretrained_encoder"])
    return {"yaml": spec["yaml"], **{k: _plain(v) for k, v in settings.items()}}


def train(args, job: tuple, folder: Path, settings: dict) -> Path:
    """One train.py run of a job (skipped when finished), recording its ``settings``."""
    if (folder / RESULTS_FILE).is_file():
        return folder
    seed, lr, lr_enc, spec, subset = job[2:]
    options = overrides(args, spec, subset, seed, lr, lr_enc)
    options["output_folder"] = folder.resolve()
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
    return [run_row(folder, *job[:5], out) for job, folder, _ in planned]


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
        jobs, later = [], args.seeds[len(search_seeds) :]
        for c in chosen.to_dict("records"):
            b, arm = c["budget"], c["arm"]
            enc = None if pd.isna(c["lr_encoder"]) else c["lr_encoder"]
            jobs += [(b, arm, s, c["lr"], enc, arm_specs[arm], subsets[b, s]) for s in later]
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
