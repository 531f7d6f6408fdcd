"""``jsqa`` errors: the user's mistakes are one line, bugs keep their traceback.

A user error (a missing or damaged checkpoint, a bad ``hyperparams.yaml``, a device
this machine lacks, an encoder-only model asked to score, Ctrl-C) prints one line,
``jsqa: error: ...`` (``jsqa: interrupted`` for Ctrl-C), and exits non-zero; an
exception that is not about the user's input (a ``ValueError`` or ``TypeError`` from
inside the code) propagates with its traceback.
"""

import csv
import errno
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
import torch

from jsqa_sb import cli
from jsqa_sb.cli import main
from jsqa_sb.errors import JSQAError
from jsqa_sb.networks import CheckpointMismatchError, JSQAEncoder, check_encoder_checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY = {"cnn_channels": 4, "d_model": 16, "att_layers": 1, "att_heads": 2, "emb_dim": 16}


def jsqa_script() -> str:
    """The ``jsqa`` console script of the interpreter running the tests."""
    script = Path(sys.executable).with_name("jsqa")
    return str(script) if script.is_file() else shutil.which("jsqa")


def assert_one_line(stderr: str, *expected: str, prefix: str = "jsqa: error: ") -> str:
    """``stderr`` is exactly one line, starting with ``prefix`` and naming ``expected``."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith(prefix), stderr
    assert "Traceback" not in stderr
    for text in expected:
        assert str(text) in lines[0], (text, lines[0])
    return lines[0]


@pytest.fixture
def wav(speech, tmp_path):
    audio, sr = speech
    path = tmp_path / "speech.wav"
    sf.write(path, audio, sr, subtype="PCM_16")
    return path


def _copy(folder: Path, dest: Path) -> Path:
    shutil.copytree(folder, dest)
    return dest


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:300])


def _zeros_like_checkpoint(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    torch.save({k: torch.zeros(3) for k in state}, path)


def _ints_for_tensors(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    torch.save({k: 1 for k in state}, path)


def _folder_for_file(path: Path) -> None:
    path.unlink()
    path.mkdir()


# name -> (damage done to the model folder, the file the message must name)
DAMAGED_CHECKPOINTS = {
    "missing": (lambda d: (d / "head.ckpt").unlink(), "head.ckpt"),
    "truncated": (lambda d: _truncate(d / "encoder.ckpt"), "encoder.ckpt"),
    "wrong_shape": (lambda d: _zeros_like_checkpoint(d / "head.ckpt"), "head.ckpt"),
    "a_list": (lambda d: torch.save([torch.zeros(3)], d / "head.ckpt"), "head.ckpt"),
    "a_tensor": (lambda d: torch.save(torch.zeros(3), d / "encoder.ckpt"), "encoder.ckpt"),
    "non_tensor_values": (lambda d: _ints_for_tensors(d / "head.ckpt"), "head.ckpt"),
    "text": (lambda d: (d / "head.ckpt").write_text("not a checkpoint"), "head.ckpt"),
    "a_folder": (lambda d: _folder_for_file(d / "encoder.ckpt"), "encoder.ckpt"),
}


def _edit_yaml(folder: Path, old: str, new: str) -> None:
    yaml = folder / "hyperparams.yaml"
    text = yaml.read_text()
    assert old in text
    yaml.write_text(text.replace(old, new, 1))


def _cut_yaml_before(folder: Path, key: str) -> None:
    yaml = folder / "hyperparams.yaml"
    yaml.write_text(yaml.read_text().split(f"\n{key}:")[0] + "\n")


BAD_YAMLS = {
    "empty": lambda d: (d / "hyperparams.yaml").write_text(""),
    "comments_only": lambda d: (d / "hyperparams.yaml").write_text("# nothing here\n"),
    "invalid_syntax": lambda d: (d / "hyperparams.yaml").write_text("a: [1, 2\nb: {\n"),
    "a_list": lambda d: (d / "hyperparams.yaml").write_text("- 1\n- 2\n"),
    "not_utf8": lambda d: (d / "hyperparams.yaml").write_bytes(b"sample_rate: 16000 # \xe9\n"),
    "no_pretrainer": lambda d: _cut_yaml_before(d, "pretrainer"),
    "bad_reference": lambda d: _edit_yaml(d, "!ref <head>\n", "!ref <no_head>\n"),
    "bad_argument": lambda d: _edit_yaml(d, "emb_dim: 16", "emb_dimension: 16"),
    "missing": lambda d: (d / "hyperparams.yaml").unlink(),
}


# ----------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("damage", sorted(DAMAGED_CHECKPOINTS))
def test_a_damaged_checkpoint_is_one_line(damage, model_folder, wav, tmp_path, capsys):
    folder = _copy(model_folder, tmp_path / "model")
    spoil, name = DAMAGED_CHECKPOINTS[damage]
    spoil(folder)
    out = tmp_path / "scores.csv"
    argv = ["score", str(folder), str(wav), "--out", str(out), "--no_progress"]
    assert main(argv) == 2
    assert_one_line(capsys.readouterr().err, folder / name)
    assert not out.exists()


@pytest.mark.parametrize("damage", ["missing", "truncated", "wrong_shape"])
def test_distance_with_a_damaged_checkpoint_is_one_line(
    damage, model_folder, wav, tmp_path, capsys
):
    folder = _copy(model_folder, tmp_path / "model")
    spoil, name = DAMAGED_CHECKPOINTS[damage]
    spoil(folder)
    assert main(["distance", str(wav), str(wav), "--model", str(folder)]) == 2
    assert_one_line(capsys.readouterr().err, folder / name)


def test_export_of_a_run_with_a_truncated_checkpoint_is_one_line(finetune_run, tmp_path, capsys):
    run = _copy(finetune_run, tmp_path / "run")
    ckpt = next((run / "save").glob("CKPT+*"))
    results = run / "results.json"
    results.write_text(results.read_text().replace(str(finetune_run / "save"), str(run / "save")))
    _truncate(ckpt / "head.ckpt")
    assert main(["export", str(run), str(tmp_path / "model")]) == 2
    assert_one_line(capsys.readouterr().err, "head.ckpt")


def test_a_model_that_is_not_there_is_one_line(wav, tmp_path, capsys):
    nowhere = tmp_path / "no_model_here"
    assert main(["distance", str(wav), str(wav), "--model", str(nowhere)]) == 2
    assert_one_line(capsys.readouterr().err, nowhere, "no such folder")


# ----------------------------------------------------------------------------- YAML
@pytest.mark.parametrize("damage", sorted(BAD_YAMLS))
def test_a_bad_hyperparams_yaml_is_one_line(damage, model_folder, wav, tmp_path, capsys):
    folder = _copy(model_folder, tmp_path / "model")
    BAD_YAMLS[damage](folder)
    assert main(["score", str(folder), str(wav), "--no_progress"]) == 2
    line = assert_one_line(capsys.readouterr().err, folder / "hyperparams.yaml")
    if damage in ("empty", "comments_only"):
        assert "is empty" in line
    if damage == "invalid_syntax":
        assert "not valid YAML" in line and "line 2" in line


# ----------------------------------------------------------------------------- encoder only
def test_scoring_with_an_encoder_only_model_is_refused_once_up_front(
    pretrain_run, wav, tmp_path, capsys, monkeypatch
):
    from jsqa_sb.serving.hub_export import export_model
    from jsqa_sb.serving.inference import JSQA

    folder = export_model(pretrain_run, tmp_path / "encoder_only")
    calls = []
    original = JSQA.score_files
    monkeypatch.setattr(JSQA, "score_files", lambda self, p: calls.append(p) or original(self, p))
    for i in range(3):
        shutil.copy(wav, tmp_path / f"rec{i}.wav")
    out = tmp_path / "scores.csv"
    argv = ["score", str(folder), *(str(tmp_path / f"rec{i}.wav") for i in range(3))]
    status = main([*argv, "--batch_size", "1", "--out", str(out), "--no_progress"])
    assert status == 2
    assert_one_line(capsys.readouterr().err, "no MOS head")
    assert calls == [] and not out.exists()  # refused before any batch, nothing written
    # The same model still gives distances: refusing to score is not refusing to load.
    assert main(["distance", str(wav), str(wav), "--model", str(folder)]) == 0
    assert float(capsys.readouterr().out) == pytest.approx(0.0, abs=1e-4)


# ----------------------------------------------------------------------------- devices
def test_an_unknown_device_is_one_line_before_anything_is_read(tmp_path, capsys):
    missing = tmp_path / "missing.wav"  # the device is checked before the inputs
    assert main(["score", str(tmp_path / "model"), str(missing), "--device", "gpu0"]) == 2
    assert_one_line(capsys.readouterr().err, "--device 'gpu0' is not a device")


def test_cuda_without_a_gpu_is_one_line(model_folder, wav, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for command in (
        ["score", str(model_folder), str(wav)],
        ["distance", str(wav), str(wav), "--model", str(model_folder)],
    ):
        assert main([*command, "--device", "cuda"]) == 2
        assert_one_line(capsys.readouterr().err, "--device cuda", "no CUDA GPU")


def test_a_gpu_index_beyond_the_gpus_is_one_line(model_folder, wav, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert main(["score", str(model_folder), str(wav), "--device", "cuda:2"]) == 2
    assert_one_line(capsys.readouterr().err, "cuda:2", "2 CUDA device(s)")


def test_cpu_devices_are_accepted(model_folder, wav, capsys):
    for device in ("cpu", "cpu:0"):
        assert (
            main(["distance", str(wav), str(wav), "--model", str(model_folder), "--device", device])
            == 0
        )
        capsys.readouterr()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_console_script_cuda_without_a_gpu_is_one_line(model_folder, wav):
    result = subprocess.run(
        [jsqa_script(), "score", str(model_folder), str(wav), "--device", "cuda"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert_one_line(result.stderr, "no CUDA GPU")
    assert result.stdout == ""


# ----------------------------------------------------------------------------- user errors vs bugs
def _failing(exc: BaseException):
    def command(args):
        raise exc

    return command


@pytest.mark.parametrize(
    "exc",
    [
        JSQAError("the user's input is wrong"),
        FileNotFoundError(errno.ENOENT, "No such file or directory", "x/results.json"),
        PermissionError(errno.EACCES, "Permission denied", "x/out.csv"),
        IsADirectoryError(errno.EISDIR, "Is a directory", "x/out.csv"),
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EIO, "Input/output error", "x/scores.csv"),
    ],
    ids=lambda e: type(e).__name__ + (f"-{e.errno}" if isinstance(e, OSError) else ""),
)
def test_user_errors_are_one_line_with_status_2(exc, monkeypatch, capsys):
    monkeypatch.setattr(cli, "_compare", _failing(exc))
    assert main(["compare", "a", "b"]) == 2
    assert_one_line(capsys.readouterr().err, str(exc))


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("a bug, not the user's input"),
        TypeError("unsupported operand type(s)"),
        KeyError("missing"),
        RuntimeError("a bug inside torch"),
        OSError(errno.EBADF, "Bad file descriptor"),  # no file named: the program's fault
    ],
    ids=lambda e: type(e).__name__,
)
def test_bugs_keep_their_traceback(exc, monkeypatch, capsys):
    monkeypatch.setattr(cli, "_compare", _failing(exc))
    with pytest.raises(type(exc)):
        main(["compare", "a", "b"])
    assert "jsqa: error" not in capsys.readouterr().err


def test_a_bug_inside_torch_while_scoring_keeps_its_traceback(model_folder, wav, monkeypatch):
    from jsqa_sb.serving.inference import JSQA

    def broken_distance(self, a, b):
        return float(torch.ones(2) @ torch.ones(3))  # RuntimeError from inside torch

    monkeypatch.setattr(JSQA, "distance", broken_distance)
    with pytest.raises(RuntimeError, match="size"):
        main(["distance", str(wav), str(wav), "--model", str(model_folder)])


def test_verbose_shows_the_traceback_of_a_user_error(tmp_path):
    with pytest.raises(JSQAError):
        main(["-v", "compare", str(tmp_path / "a"), str(tmp_path / "b")])


def test_console_script_prints_the_traceback_of_a_bug(tmp_path):
    code = (
        "import sys; from jsqa_sb import cli\n"
        "def _compare(args): return {}['no such key']\n"
        "cli._compare = _compare\n"
        "sys.exit(cli.main(['compare', 'a', 'b']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "KeyError: 'no such key'" in result.stderr
    assert "jsqa: error" not in result.stderr


# ----------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_is_one_line_and_status_130(monkeypatch, capsys):
    monkeypatch.setattr(cli, "_compare", _failing(KeyboardInterrupt()))
    assert main(["compare", "a", "b"]) == 130
    assert_one_line(capsys.readouterr().err, prefix="jsqa: interrupted")


def test_console_script_ctrl_c_is_one_line_and_status_130(tmp_path):
    out = tmp_path / "mini"
    process = subprocess.Popen(
        [jsqa_script(), "build-minicorpus", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,  # a shell's background job inherits it ignored
    )
    try:
        deadline = time.monotonic() + 120
        while not out.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.poll() is None, "the command ended before it could be interrupted"
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert_one_line(stderr, prefix="jsqa: interrupted")


# ----------------------------------------------------------------------------- --pretrained_encoder
@pytest.fixture(scope="module")
def encoder_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("enc") / "encoder.ckpt"
    torch.manual_seed(0)
    torch.save(JSQAEncoder(**TINY).state_dict(), path)
    return path


@pytest.mark.parametrize(
    "damage",
    ["text", "truncated", "a_list", "non_tensor_values", "a_folder", "wrong_shape"],
)
def test_check_encoder_checkpoint_names_a_file_that_is_not_one(damage, encoder_ckpt, tmp_path):
    path = tmp_path / "encoder.ckpt"
    shutil.copy(encoder_ckpt, path)
    if damage == "text":
        path.write_text("results/pretrain/encoder.ckpt\n")
    elif damage == "truncated":
        _truncate(path)
    elif damage == "a_list":
        torch.save([torch.zeros(3)], path)
    elif damage == "non_tensor_values":
        _ints_for_tensors(path)
    elif damage == "a_folder":
        _folder_for_file(path)
    else:
        _zeros_like_checkpoint(path)
    with pytest.raises(CheckpointMismatchError, match=str(path)) as info:
        check_encoder_checkpoint(path, JSQAEncoder(**TINY))
    assert "\n" not in str(info.value)
    check_encoder_checkpoint(encoder_ckpt, JSQAEncoder(**TINY))  # a good one passes


def test_finetuning_from_a_file_that_is_not_a_checkpoint_fails_at_start(tmp_path):
    """``--pretrained_encoder`` is checked before data preparation and training."""
    not_a_ckpt = tmp_path / "encoder.ckpt"
    not_a_ckpt.write_text("this is not a checkpoint\n")
    out = tmp_path / "ft"
    options = {**TINY, "head_hidden": 8, "number_of_epochs": 1, "num_workers": 0}
    cmd = [
        sys.executable,
        "train.py",
        "hparams/finetune.yaml",
        f"--nisqa_folder={tmp_path / 'no_nisqa_here'}",  # never read: the check comes first
        f"--pretrained_encoder={not_a_ckpt}",
        f"--output_folder={out}",
        *(f"--{k}={v}" for k, v in options.items()),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        cmd, cwd=REPO / "recipes" / "JSQA", capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("train.py: error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert str(not_a_ckpt) in errors[0] and "not a checkpoint" in errors[0]
    assert not (out / "train_log.txt").exists()
    assert not (out / "save").exists() or not any((out / "save").iterdir())


def test_scores_still_come_out_for_a_good_model(model_folder, wav, capsys):
    """The checks refuse bad models only (the exported fixture model scores)."""
    assert main(["score", str(model_folder), str(wav), "--no_progress"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 1 and 1 <= float(rows[0]["mos"]) <= 5


def _default_sigint():
    """In the child: Ctrl-C's default action, whatever the test runner's parent ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
