"""End-to-end runs of ``recipes/JSQA/train.py hparams/pretrain.yaml`` on tiny corpora.

Every run here is a real subprocess with a tiny model, so the recipe is tested the way
a user runs it (command line, YAML overrides, SpeechBrain run options).
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from jsqa_sb.data.minicorpus import build_chime3, build_librispeech

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "JSQA"
TINY = [
    "--cnn_channels=4",
    "--d_model=16",
    "--att_layers=1",
    "--att_heads=2",
    "--emb_dim=16",
    "--proj_hidden=16",
    "--proj_dim=8",
    "--segment_seconds=1.0",
    "--batch_size=2",
    "--num_workers=0",
    "--probe_groups=4",
]


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    build_librispeech(root / "libri")
    build_chime3(root / "chime")
    return root


def _command(corpora, out, *extra, launcher=(sys.executable,)):
    return [
        *launcher,
        "train.py",
        "hparams/pretrain.yaml",
        f"--librispeech_folder={corpora / 'libri'}",
        f"--chime3_folder={corpora / 'chime'}",
        f"--output_folder={out}",
        *TINY,
        *extra,
    ]


def _run(cmd, timeout=300, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        cmd, cwd=RECIPE, capture_output=True, text=True, timeout=timeout, env=env, **kwargs
    )


def _log(out):
    return (Path(out) / "train_log.txt").read_text()


def _epochs_logged(out):
    text = _log(out)
    return [int(m) for m in re.findall(r"^Epoch: (\d+)", text, flags=re.M)]


def test_debug_run_leaves_the_usual_files(corpora, tmp_path):
    out = tmp_path / "run"
    result = _run(_command(corpora, out, "--debug"))
    assert result.returncode == 0, result.stderr[-3000:]
    for name in (
        "hyperparams.yaml",
        "log.txt",
        "env.log",
        "train_log.txt",
        "encoder.ckpt",
        "pretrain_summary.json",
        "manifests/jnd_train.json",
    ):
        assert (out / name).exists(), name
    # (--debug checkpoints into a temporary folder, by SpeechBrain's design.)
    log = (out / "train_log.txt").read_text()
    assert "Epoch: 0, init: random" in log and "cross_auc" in log
    summary = json.loads((out / "pretrain_summary.json").read_text())
    assert summary["best_epoch"] >= 1 and "cross_auc" in summary["best_valid"]
    assert "cross_auc" in summary["random_init_valid"]
    state = torch.load(out / "encoder.ckpt", weights_only=True)
    assert state and all(torch.is_tensor(v) for v in state.values())


def test_ecapa_encoder_swapped_in_from_yaml(corpora, tmp_path):
    out = tmp_path / "ecapa"
    cmd = [
        sys.executable,
        "train.py",
        "hparams/pretrain_ecapa.yaml",
        f"--librispeech_folder={corpora / 'libri'}",
        f"--chime3_folder={corpora / 'chime'}",
        f"--output_folder={out}",
        "--ecapa_channels=[16,16,16,16,48]",
        "--n_mels=40",
        "--emb_dim=16",
        "--proj_hidden=16",
        "--proj_dim=8",
        "--segment_seconds=1.0",
        "--batch_size=2",
        "--num_workers=0",
        "--probe_groups=4",
        "--debug",
    ]
    result = _run(cmd)
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(out / "encoder.ckpt", weights_only=True)
    assert any(key.startswith("model.blocks") for key in state)  # ECAPA-TDNN's weights
    summary = json.loads((out / "pretrain_summary.json").read_text())
    assert 0 <= summary["best_valid"]["cross_auc"] <= 1


def test_bf16_precision_and_device_options(corpora, tmp_path):
    result = _run(
        _command(corpora, tmp_path / "bf16", "--debug", "--precision=bf16", "--device=cpu")
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "bf16" / "encoder.ckpt").exists()


def test_killed_run_resumes_and_ends_at_the_same_epoch(corpora, tmp_path):
    out = tmp_path / "resume"
    cmd = _command(corpora, out, "--number_of_epochs=4")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd,
        cwd=RECIPE,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 240
    while not list((out / "save").glob("CKPT+*")) and time.time() < deadline:
        assert proc.poll() is None, "the run ended before its first checkpoint"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # a real kill, no clean-up
    proc.wait()
    first = _epochs_logged(out)
    assert first and max(first) < 4, "killed too late to test resuming"
    result = _run(cmd)
    assert result.returncode == 0, result.stderr[-3000:]
    epochs = _epochs_logged(out)
    assert max(epochs) == 4
    resumed = epochs[len(first) :]
    assert resumed[0] == max(first) + 1  # continued after the checkpoint, not from scratch
    assert 0 not in resumed  # the random-init validation is not rerun on resume
    assert (out / "encoder.ckpt").exists()
    # ... but its metrics, measured before the kill, are still in the summary
    summary = json.loads((out / "pretrain_summary.json").read_text())
    logged = re.search(
        r"^Epoch: 0, init: random - (.*)$", (out / "train_log.txt").read_text(), re.M
    )
    initial = dict(item.split(": ") for item in logged.group(1).split(", "))
    assert summary["random_init_valid"]["cross_auc"] == pytest.approx(
        float(initial["valid cross_auc"]), abs=1e-3
    )
    from jsqa_sb.serving.hub_export import export_model  # needs the summary's random-init figures

    assert (export_model(out, tmp_path / "model") / "encoder.ckpt").exists()
    # The best checkpoint of each selection rule and the most recent one (to resume
    # from) are kept, no more: at most four (last, cross_auc, probe, loss).
    kept = [yaml.safe_load(p.read_text()) for p in (out / "save").glob("CKPT+*/CKPT.yaml")]
    assert 1 <= len(kept) <= 4 and max(meta["epoch"] for meta in kept) == 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_with_gloo(corpora, tmp_path):
    # Not --debug: SpeechBrain's debug mode gives each process its own temporary
    # checkpoint folder, and their checkpoint clean-ups then wait on each other forever.
    out = tmp_path / "ddp"
    launcher = (
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",  # not a fixed one: another run may hold it
    )
    result = _run(
        _command(
            corpora, out, "--number_of_epochs=2", "--distributed_backend=gloo", launcher=launcher
        ),
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "encoder.ckpt").exists()
    assert _epochs_logged(out) == [0, 1, 2]  # logged once, by the main process


def test_wrong_data_folder_fails_before_training(corpora, tmp_path):
    out = tmp_path / "bad"
    cmd = _command(corpora, out, "--debug")
    cmd[3] = f"--librispeech_folder={tmp_path / 'nowhere'}"
    result = _run(cmd)
    assert result.returncode != 0
    assert "is not a LibriSpeech folder" in result.stderr
    assert not list(out.glob("save/CKPT+*")) and not (out / "train_log.txt").exists()
    assert "Traceback" not in result.stderr + result.stdout


def test_yaml_errors_name_the_key(corpora, tmp_path):
    result = _run(_command(corpora, tmp_path / "x", "--debug", "--no_such_key=3"))
    assert result.returncode != 0 and "no_such_key" in result.stderr
    cmd = [
        c
        for c in _command(corpora, tmp_path / "y", "--debug")
        if not c.startswith("--chime3_folder")
    ]
    result = _run(cmd)
    assert result.returncode != 0 and "chime3_folder" in result.stderr


def test_zero_epochs_write_no_encoder(corpora, tmp_path):
    out = tmp_path / "zero"
    result = _run(_command(corpora, out, "--number_of_epochs=0"))
    assert result.returncode != 0
    assert "nothing was trained" in result.stderr or "not trained" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (out / "encoder.ckpt").exists()


@pytest.mark.parametrize("pairs", ["within_group", "snr_only"])
def test_pairing_scheme_and_selection_rule_are_yaml_settings(corpora, tmp_path, pairs):
    out = tmp_path / pairs
    cmd = _command(corpora, out, "--number_of_epochs=2", f"--pairs={pairs}", "--select_by=last")
    result = _run(cmd)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "pretrain_summary.json").read_text())
    assert summary["best_epoch"] == 2 and summary["selection"] == "max epoch"
    assert f"pairs: {pairs}" in (out / "hyperparams.yaml").read_text()


def test_select_by_can_change_after_training(corpora, tmp_path):
    out = tmp_path / "rules"
    cmd = _command(corpora, out, "--number_of_epochs=3", "--select_by=last")
    result = _run(cmd)
    assert result.returncode == 0, result.stderr[-3000:]

    metas = [yaml.safe_load(p.read_text()) for p in out.glob("save/CKPT+*/CKPT.yaml")]
    metas = {meta["epoch"]: meta for meta in metas}
    # The best checkpoint of every rule is kept, not only the one select_by chose.
    assert 3 in metas and 1 < len(metas) <= 4, sorted(metas)
    best_loss = min(metas, key=lambda epoch: metas[epoch]["loss"])
    logged = re.findall(r"valid loss: ([0-9.e+-]+)", _log(out))[1:]  # 3 digits
    assert metas[best_loss]["loss"] == pytest.approx(min(map(float, logged)), abs=0.01)
    # A rerun with another rule trains nothing and exports that rule's choice.
    result = _run(_command(corpora, out, "--number_of_epochs=3", "--select_by=loss"))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "pretrain_summary.json").read_text())
    assert summary["selection"] == "min loss"
    assert summary["best_epoch"] == best_loss
    assert _epochs_logged(out) == [0, 1, 2, 3]


def test_unknown_selection_rule_is_one_line_and_saves_nothing(corpora, tmp_path):
    out = tmp_path / "bad_rule"
    result = _run(_command(corpora, out, "--number_of_epochs=1", "--select_by=best"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "unknown select_by 'best'" in result.stderr
    assert not list(out.glob("save/CKPT+*")) and not (out / "encoder.ckpt").exists()


@pytest.mark.parametrize(
    "setting, message",
    [
        ("--pairs=same_room", "unknown pairs scheme 'same_room'"),
        ("--tau=0", "tau must be positive"),
        (None, "'chime3_folder' is a !PLACEHOLDER"),  # the required folder left out
    ],
)
def test_bad_setting_is_one_line_at_start(corpora, tmp_path, setting, message):
    # Refused while the YAML loads (a constructor, or a required folder left out), before
    # anything is written, with one line instead of a traceback.
    out = tmp_path / "bad"
    cmd = _command(corpora, out, *([setting] if setting else []))
    if setting is None:
        cmd = [arg for arg in cmd if not arg.startswith("--chime3_folder=")]
    result = _run(cmd)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert message in result.stderr
    assert not out.exists()
