"""Every command and code block of README.md runs, on the miniature corpora.

The README's ``bash`` blocks are run command by command and its ``python`` blocks are
executed, in a scratch copy of the layout it assumes: ``/data/librispeech``,
``/data/chime3`` and ``/data/nisqa`` are the miniature corpora of ``jsqa
build-minicorpus``, ``recipes/JSQA`` is a copy of the recipe, ``demo_out/model`` a
model exported by ``jsqa export``. Training commands get one epoch and a tiny
network (the real settings take hours). Not run here, and why:

- ``make test`` is what CI runs; ``make demo`` is run by ``tests/test_demo.py``
  (with ``--smoke``);
- ``text`` blocks: the multi-GPU ``torchrun`` command needs GPUs; its CPU form (gloo)
  is run by ``tests/test_pretrain_recipe.py``;
- ``jsqa upload`` runs against a stand-in for the Hugging Face hub, which cannot be
  reached from the test machine;
- ``foreign_class(source="your-name/jsqa-nisqa", ...)`` loads the local exported
  folder instead of the hub id, for the same reason.

A command this test does not know how to run fails it, so the README cannot drift.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from jsqa_sb.cli import main as jsqa
from jsqa_sb.data.minicorpus import build_all

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
TINY = ["--cnn_channels=4", "--d_model=16", "--att_layers=1", "--att_heads=2", "--emb_dim=16"]
NOT_RUN = {"make demo", "make test"}


def blocks(language):
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.M | re.S)


def commands():
    for block in blocks("bash"):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line:
                yield line


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, speech, model_folder):
    """The layout the README assumes, in a scratch folder."""
    root = tmp_path_factory.mktemp("readme")
    build_all(root / "data", seed=0)
    recipe = root / "recipes" / "JSQA"
    recipe.mkdir(parents=True)
    shutil.copy(REPO / "recipes" / "JSQA" / "train.py", recipe)
    (recipe / "hparams").symlink_to(REPO / "hparams")
    shutil.copytree(model_folder, root / "demo_out" / "model")
    audio, sr = speech
    (root / "recordings").mkdir()
    sf.write(root / "recordings" / "a.wav", audio, sr)
    noisy = audio + 0.05 * np.random.default_rng(0).standard_normal(audio.size)
    sf.write(root / "recordings" / "b.wav", noisy.astype(np.float32), sr)
    return root


class StandInHub:
    """Records what ``jsqa upload`` asks of huggingface_hub.HfApi."""

    calls = []

    def __init__(self, token=None):
        pass

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))
        return f"https://huggingface.co/{kwargs['repo_id']}"

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))


def run_command(line, cwd, root, monkeypatch):
    """Run one README command; return the folder the next command runs in."""
    line = line.replace("/data/", f"{root}/data/")
    argv = shlex.split(line)
    if argv[0] == "cd":
        return root / argv[1]
    if argv[0] == "python" and argv[1] == "train.py":
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        extra = ["--number_of_epochs=1", "--num_workers=0", *TINY]
        result = subprocess.run(
            [sys.executable, *argv[1:], *extra],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
        assert result.returncode == 0, f"{line}\n{result.stderr[-3000:]}"
        return cwd
    if argv[0] == "jsqa":
        if argv[1] == "upload":
            import huggingface_hub

            monkeypatch.setattr(huggingface_hub, "HfApi", StandInHub)
        monkeypatch.chdir(cwd)
        assert jsqa(argv[1:]) == 0, line
        return cwd
    raise AssertionError(f"README command this test does not know how to run: {line}")


def test_every_readme_command_runs(workspace, monkeypatch, capsys):
    lines = [line for line in commands() if line not in NOT_RUN]
    assert NOT_RUN <= set(commands())  # the two commands of the first lines
    assert any(line.startswith("python train.py hparams/pretrain.yaml") for line in lines)
    cwd = workspace
    for line in lines:
        if line.startswith("cd "):
            cwd = workspace
        cwd = run_command(line, cwd, workspace, monkeypatch)
    recipe = workspace / "recipes" / "JSQA"
    assert (recipe / "results" / "pretrain" / "encoder.ckpt").is_file()
    assert (recipe / "results" / "finetune" / "results.json").is_file()
    assert (recipe / "models" / "jsqa" / "custom_interface.py").is_file()
    assert (workspace / "scores.csv").is_file()
    assert [c[0] for c in StandInHub.calls] == ["create_repo", "upload_folder"]
    assert StandInHub.calls[0][1]["private"] is True


def test_every_python_block_runs(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    from hyperpyyaml import load_hyperpyyaml

    with open(REPO / "hparams" / "reuse_encoder_example.yaml") as f:
        hparams = load_hyperpyyaml(f, {"pretrained_encoder": "x", "output_folder": "reuse"})
    (workspace / "reuse" / "save").mkdir(parents=True, exist_ok=True)
    torch.save(hparams["encoder"].state_dict(), workspace / "x")
    namespace = {
        "wavs": 0.1 * torch.randn(2, 16000),
        "wav_lens": torch.tensor([1.0, 0.7]),
        "hparams": hparams,
        "run_on_main": lambda f: f(),
    }
    python = blocks("python")
    assert len(python) >= 3
    for code in python:
        code = code.replace('"your-name/jsqa-nisqa"', '"demo_out/model"')
        exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["embeddings"].shape == (2, 128)
    assert set(namespace["model"].score_file("recordings/a.wav")) == {"mos"}


def test_yaml_snippet_is_part_of_the_example_recipe():
    (snippet,) = blocks("yaml")
    example = (REPO / "hparams" / "reuse_encoder_example.yaml").read_text()
    tagless = re.compile(r"!\w+:?[\w.]*")
    snippet_keys = yaml.safe_load(tagless.sub("", snippet))
    example_keys = yaml.safe_load(tagless.sub("", example))
    assert snippet_keys["pretrainer"] == example_keys["pretrainer"]
    assert snippet_keys["encoder"]["emb_dim"] == example_keys["emb_dim"]
