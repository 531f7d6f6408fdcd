"""End-to-end runs of the fine-tuning stage (``finetune.yaml``, ``scratch.yaml``)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from jsqa_sb.data.minicorpus import build_nisqa
from jsqa_sb.networks import JSQAEncoder

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "JSQA"
TINY = {"cnn_channels": 4, "d_model": 16, "att_layers": 1, "att_heads": 2, "emb_dim": 16}
RUN = {"head_hidden": 8, "batch_size": 4, "num_workers": 0, "number_of_epochs": 2}


@pytest.fixture(scope="module")
def nisqa(tmp_path_factory):
    root = tmp_path_factory.mktemp("nisqa")
    build_nisqa(
        root,
        databases={
            "NISQA_TRAIN_SIM": 16,
            "NISQA_VAL_SIM": 8,
            "NISQA_TEST_SIM": 9,
            "NISQA_TEST_FOO": 6,
        },
    )
    return root


@pytest.fixture(scope="module")
def encoder_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("enc") / "encoder.ckpt"
    torch.manual_seed(0)
    torch.save(JSQAEncoder(**TINY).state_dict(), path)
    return path


def _run(yaml, nisqa, out, **options):
    args = [f"--{k}={v}" for k, v in {**TINY, **RUN, **options}.items()]
    cmd = [sys.executable, "train.py", yaml, f"--nisqa_folder={nisqa}", f"--output_folder={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        cmd + args, cwd=RECIPE, capture_output=True, text=True, timeout=400, env=env
    )


def test_finetune_evaluates_every_test_database(nisqa, encoder_ckpt, tmp_path):
    out = tmp_path / "ft"
    result = _run(
        "hparams/finetune.yaml",
        nisqa,
        out,
        pretrained_encoder=encoder_ckpt,
        test_dbs="[NISQA_TEST_*,NISQA_TEST_ABSENT]",  # listed but absent: skipped
    )
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-2000:]
    assert "NISQA_TEST_ABSENT not found" in result.stdout + result.stderr
    results = json.loads((out / "results.json").read_text())
    assert sorted(results["databases"]) == ["NISQA_TEST_FOO", "NISQA_TEST_SIM"]
    mos = results["databases"]["NISQA_TEST_SIM"]["mos"]
    assert -1 <= mos["pcc"] <= 1 and mos["rmse"] > 0
    for db in ("NISQA_TEST_SIM", "NISQA_TEST_FOO"):
        assert (out / f"scatter_{db}.png").exists()
        frame = pd.read_csv(out / f"predictions_{db}.csv")
        assert frame["pred_mos"].between(1, 5).all()
        assert (out / "last_epoch" / f"predictions_{db}.csv").exists()
    assert (out / "report.md").exists()
    assert "Epoch: 2" in (out / "train_log.txt").read_text()


def test_scratch_baseline_runs_without_an_encoder(nisqa, tmp_path):
    out = tmp_path / "scratch"
    result = _run("hparams/scratch.yaml", nisqa, out)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-2000:]
    assert (out / "results.json").exists()

    # The exported model scores the test files exactly as the run's evaluation did.
    from jsqa_sb.cli import main

    assert main(["export", str(out), str(tmp_path / "model")]) == 0
    card = (tmp_path / "model" / "README.md").read_text()
    assert "databases NISQA_TRAIN_SIM (training) and\n  NISQA_VAL_SIM (checkpoint" in card
    deg = nisqa / "NISQA_Corpus" / "NISQA_TEST_SIM" / "deg"
    scores = tmp_path / "scores.csv"
    assert main(["score", str(tmp_path / "model"), str(deg), "--out", str(scores)]) == 0
    scored = pd.read_csv(scores)
    scored["file"] = scored["path"].map(lambda p: Path(p).stem)
    evaluated = pd.read_csv(out / "predictions_NISQA_TEST_SIM.csv")
    both = scored.merge(evaluated, on="file")
    assert len(both) == len(evaluated) == 9
    assert (both["mos"] - both["pred_mos"]).abs().max() < 1e-4


def test_bad_encoder_checkpoints_fail_before_training(nisqa, encoder_ckpt, tmp_path):
    result = _run(
        "hparams/finetune.yaml",
        nisqa,
        tmp_path / "a",
        pretrained_encoder=tmp_path / "missing.ckpt",
    )
    assert result.returncode != 0 and "missing.ckpt" in result.stderr
    assert "Traceback" not in result.stderr
    result = _run(
        "hparams/finetune.yaml",
        nisqa,
        tmp_path / "b",
        pretrained_encoder=encoder_ckpt,
        d_model=32,
    )
    assert result.returncode != 0 and str(encoder_ckpt) in result.stderr
    assert "checkpoint" in result.stderr and "vs model" in result.stderr
    assert not (tmp_path / "b" / "train_log.txt").exists()


def test_empty_training_set_is_an_error(nisqa, tmp_path):
    result = _run("hparams/scratch.yaml", nisqa, tmp_path / "x", train_dbs="[NISQA_TRAIN_NONE]")
    assert result.returncode != 0
    assert "no NISQA training database" in result.stderr and "Traceback" not in result.stderr


def test_zero_epochs_write_no_report_for_an_untrained_model(nisqa, tmp_path):
    out = tmp_path / "zero"
    result = _run("hparams/scratch.yaml", nisqa, out, number_of_epochs=0)
    assert result.returncode != 0
    assert "nothing was trained (number_of_epochs=0)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (out / "results.json").exists() and not (out / "report.md").exists()
