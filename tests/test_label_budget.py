"""The label-budget experiment (``recipes/JSQA/label_budget.py``), in its --smoke form."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from jsqa_sb.data.minicorpus import build_nisqa
from jsqa_sb.networks import JSQAEncoder

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "JSQA"
sys.path.insert(0, str(RECIPE))
import condition_families  # noqa: E402
import label_budget  # noqa: E402

TINY = {"cnn_channels": 4, "d_model": 16, "att_layers": 1, "att_heads": 2, "emb_dim": 16}


@pytest.fixture(scope="module")
def nisqa(tmp_path_factory):
    root = tmp_path_factory.mktemp("nisqa")
    build_nisqa(root, databases={"NISQA_TRAIN_SIM": 16, "NISQA_VAL_SIM": 8, "NISQA_TEST_SIM": 9})
    return root


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    path = tmp_path_factory.mktemp("enc") / "encoder.ckpt"
    torch.manual_seed(0)
    torch.save(JSQAEncoder(**TINY).state_dict(), path)
    return path


def _run(nisqa, out, *extra, timeout=600):
    cmd = [sys.executable, "label_budget.py", "--smoke", f"--nisqa_folder={nisqa}"]
    cmd += [f"--output_folder={out}", *extra]
    return subprocess.run(cmd, cwd=RECIPE, capture_output=True, text=True, timeout=timeout)


def test_smoke_runs_every_arm_and_writes_the_tables(nisqa, encoder, tmp_path):
    out = tmp_path / "lb"
    args = [f"--encoder=tiny={encoder}", "--budgets", "6", "--seeds", "1", "2"]
    args += ["--search_seeds=1", "--lr", "1e-3", "--lr_encoder", "3e-4", "--jobs=2"]
    result = _run(nisqa, out, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = pd.read_csv(out / "runs.csv")
    arms = {"finetune_tiny", "frozen_tiny", "scratch"}
    assert set(runs["arm"]) == arms and set(runs["budget"]) == {6} and len(runs) == 6
    assert runs["NISQA_TEST_SIM_pcc"].between(-1, 1).all()
    assert runs["valid_pcc"].notna().all()
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["arm"]) == arms and (summary["seeds"] == 2).all()
    assert summary.loc[summary["arm"] != "scratch", "wins"].notna().all()
    assert "| 6 | finetune_tiny |" in (out / "summary.md").read_text()
    assert (out / "label_budget.png").stat().st_size > 10_000
    config = json.loads((out / "config.json").read_text())
    assert config["budgets"] == [6] and config["args"]["seeds"] == [1, 2]
    # A look at an experiment with more seeds planned: the finished runs only.
    before = (out / "config.json").read_text()
    result = _run(nisqa, out, *args, "--seeds", "1", "2", "3", "--summary_only")  # last wins
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(pd.read_csv(out / "runs.csv")) == 6 and not list(out.glob("runs/*/*/*/seed3"))
    assert (out / "config.json").read_text() == before
    result = _run(nisqa, tmp_path / "empty", *args, "--summary_only")
    assert result.returncode == 2 and "no finished run" in result.stderr
    # Where it helps: the same table per condition family of the test files.
    assert condition_families.main([str(out), f"--nisqa_folder={nisqa}"]) == 0
    families = pd.read_csv(out / "families.csv")
    described = pd.read_csv(nisqa / "NISQA_Corpus" / "NISQA_corpus_file.csv")
    described = described[described["db"] == "NISQA_TEST_SIM"]["con_description"]
    expected = described.map(condition_families.family).value_counts()
    assert set(families["family"]) == set(expected.index) - {"clean"}  # the families present
    assert set(families["arm"]) == arms
    for name, group in families.groupby("family"):
        assert (group["files"] == expected.get(name, 0)).all()
    assert "| 6 | noise |" in (out / "families.md").read_text()
    assert "Test files per family: noise" in (out / "families.md").read_text()
    # ... and per degradation: each file counts for every degradation its condition has
    contains = described.map(condition_families.degradations)
    assert (out / "degradations.csv").is_file() == bool(set().union(*contains))
    # run folders are relative to the output folder, so the tables survive a move
    assert not any(Path(f).is_absolute() for f in runs["folder"])
    # every arm of a seed trains on the same files; the frozen arm freezes the encoder
    commands = {p.parts[-4]: p.read_text() for p in out.rglob("seed1/command.txt")}
    assert set(commands) == arms and all("n6_seed1.json" in c for c in commands.values())
    assert "--freeze_encoder=True" in commands["frozen_tiny"]
    assert "pretrained_encoder" not in commands["scratch"]

    # run again: every finished run is skipped, the tables are the same
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("results.json")}
    again = _run(nisqa, out, *args, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("results.json")} == stamps
    assert pd.read_csv(out / "runs.csv").equals(runs)

    # an interrupted run (no results.json) is the only one that trains again
    redo = next(out.rglob("scratch/*/seed2/results.json"))
    redo.unlink()
    again = _run(nisqa, out, *args, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert redo.is_file()
    others = {p: t for p, t in stamps.items() if redo.parent not in (p.parent, *p.parents)}
    assert len(others) == len(stamps) - 2  # the run's results.json and last_epoch's
    assert {p: p.stat().st_mtime_ns for p in others} == others

    # other settings in the same folder: refused before any training, naming what changed
    changed = _run(nisqa, out, *args, "--train_option", "head_hidden=4", timeout=120)
    assert changed.returncode == 2 and "was run with other settings" in changed.stderr
    assert "head_hidden: 8 -> 4" in changed.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("results.json")}.keys() == stamps.keys()


def test_subsets_are_nested_whole_references_and_differ_by_seed():
    files = {f"DB/{i}": f"ref{i // 4}" for i in range(40)}  # 10 references of 4 files
    subsets = label_budget.nested_subsets(files, [6, 12, 40], seed=1)
    assert set(subsets[6]) < set(subsets[12]) < set(subsets[40]) == set(files)
    refs = [files[f] for f in subsets[12]]
    assert len(set(refs)) == 3  # whole references: 4 + 4 + 4
    assert subsets[6] != label_budget.nested_subsets(files, [6], seed=2)[6]


def test_learning_rates_are_chosen_on_validation_only():
    rows = pd.DataFrame(
        {
            "budget": [6] * 4,
            "arm": ["scratch"] * 4,
            "seed": [1, 2, 1, 2],
            "lr": [1e-3, 1e-3, 3e-3, 3e-3],
            "lr_encoder": [3e-4] * 4,
            "valid_pcc": [0.5, 0.6, 0.7, 0.8],
            "NISQA_TEST_SIM_pcc": [0.9, 0.9, 0.1, 0.1],  # the test split must not matter
        }
    )
    chosen = label_budget.choose(rows)
    assert chosen.to_dict("records") == [
        {"budget": 6, "arm": "scratch", "lr": 3e-3, "lr_encoder": 3e-4}
    ]
    summary = label_budget.summarise(rows, chosen, "NISQA_TEST_SIM")
    assert summary["valid_pcc_mean"].tolist() == pytest.approx([0.75])  # the chosen runs'
    assert summary["pcc_mean"].tolist() == pytest.approx([0.1])
    assert "| 0.750 | 0.100 ± 0.000 |" in label_budget.markdown(summary, "NISQA_TEST_SIM")


def test_budget_larger_than_the_training_set_fails_before_training(nisqa, tmp_path):
    result = _run(nisqa, tmp_path / "lb", "--budgets", "17", timeout=120)
    assert result.returncode == 2
    assert "budget 17 is larger than the training set (16 labelled files)" in result.stderr
    assert not (tmp_path / "lb" / "runs").exists()


def test_missing_or_mismatched_encoder_fails_before_training(nisqa, tmp_path):
    missing = f"--encoder=x={tmp_path / 'none.ckpt'}"
    result = _run(nisqa, tmp_path / "a", missing, "--budgets", "6", timeout=120)
    assert result.returncode == 2 and "not found" in result.stderr
    wrong = tmp_path / "wrong.ckpt"
    torch.save(JSQAEncoder(**{**TINY, "emb_dim": 32}).state_dict(), wrong)
    result = _run(nisqa, tmp_path / "b", f"--encoder=x={wrong}", "--budgets", "6", timeout=120)
    assert result.returncode == 2 and "does not fit the encoder" in result.stderr
    assert not (tmp_path / "a" / "runs").exists() and not (tmp_path / "b" / "runs").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--budgets", "24.0"], "a budget is a whole number of files or 'all', got '24.0'"),
        (["--test_db", "NISQA_TEST_FOO"], "--test_db NISQA_TEST_FOO is not a test database"),
        (["--encoder=a/b=x.ckpt"], "--encoder name 'a/b'"),
        (["--encoder=x=a.ckpt", "--encoder=x=b.ckpt"], "--encoder x is given twice"),
        (["--seeds", "1", "2", "1"], "--seeds repeats 1"),
    ],
)
def test_bad_settings_fail_in_one_line_before_training(nisqa, tmp_path, capsys, extra, message):
    argv = ["--smoke", f"--nisqa_folder={nisqa}", f"--output_folder={tmp_path / 'lb'}"]
    try:  # in-process: what the command prints, without a Python start per case
        status = label_budget.main([*argv, "--budgets", "6", *extra])
    except SystemExit as stop:  # argparse's own errors
        status = stop.code
    assert status == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "lb" / "runs").exists()


def test_an_encoder_folder_is_refused(nisqa, tmp_path, capsys):
    argv = ["--smoke", f"--nisqa_folder={nisqa}", f"--output_folder={tmp_path / 'lb'}"]
    assert label_budget.main([*argv, f"--encoder=x={tmp_path}", "--budgets", "6"]) == 2
    assert "is not a file" in capsys.readouterr().err


def test_budget_all_in_any_case_is_the_whole_training_set():
    assert label_budget.resolve_budgets(["ALL", "6", "all"], 16) == [6, 16]


@pytest.mark.parametrize("budget", ["\u00b2", "6.5", "-3", "six"])
def test_a_budget_that_is_not_a_whole_number_is_a_budget_error(budget):
    with pytest.raises(label_budget.BudgetError, match="whole number"):
        label_budget.resolve_budgets([budget], 16)


def test_training_files_are_grouped_by_their_clean_reference(nisqa, tmp_path):
    # nisqa_mini-like corpora degrade each reference several times: a budget must take
    # whole references, through the corpus CSV's filename_ref column.
    corpus = tmp_path / "nisqa"
    shutil.copytree(nisqa, corpus)
    csv = corpus / "NISQA_Corpus" / "NISQA_corpus_file.csv"
    table = pd.read_csv(csv)
    train = table["db"] == "NISQA_TRAIN_SIM"
    table.loc[train, "filename_ref"] = [f"ref{i // 4}.wav" for i in range(int(train.sum()))]
    table.to_csv(csv, index=False)
    args = label_budget.parse_args([f"--nisqa_folder={corpus}", "--smoke"])
    hparams = label_budget.recipe_hparams(args, tmp_path / "run")
    files = label_budget.training_files(args, hparams, tmp_path / "manifests")
    assert len(files) == 16 and sorted(set(files.values())) == [f"ref{i}.wav" for i in range(4)]
    subset = label_budget.nested_subsets(files, [6], seed=3)[6]
    assert sorted(pd.Series([files[f] for f in subset]).value_counts()) == [2, 4]


def test_a_file_counts_for_every_degradation_it_contains(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame(
        {"file": list("abcdef"), "true_mos": [1, 2, 3, 4, 5, 3], "pred_mos": [1, 2, 3, 4, 5, 1]}
    ).to_csv(run / "predictions_T.csv", index=False)
    members = {f: condition_families.degradations(d) for f, d in zip("abcdef", [
        "clip=3dB", "clip=6dB; lowpass=3400Hz", "clip=9dB; codec=G711", "lowpass=7000Hz",
        "noise=CAF@5dB; lowpass=3400Hz; clip=1dB", "noise=CAF@5dB"])}  # fmt: skip
    names = ("clipping", "band limit", "codec")
    runs = pd.DataFrame([{"folder": "run"}])
    rows = condition_families.family_rows(runs, members, names, "T", tmp_path)
    assert rows.set_index("family")["files"].to_dict() == {
        "clipping": 4, "band limit": 3, "codec": 1}  # fmt: skip
    clipping = rows.set_index("family").loc["clipping", "T_pcc"]
    assert clipping == pytest.approx(pd.Series([1, 2, 3, 5]).corr(pd.Series([1, 2, 3, 5])))
