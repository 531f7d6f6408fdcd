"""Hostile model folders, each loaded without trust by ``jsqa score``.

Each folder is a real exported model whose ``hyperparams.yaml`` a hostile author has
changed: code runners of ``torch`` and ``speechbrain``, file writers (a ``.pth`` file
runs at every Python start), pickle loaders, includes, Python tags, alias and
arithmetic bombs, loadable names that climb out of the save folder. ``jsqa score``
must refuse each with one line and exit status 2, within seconds, before anything is
built: no marker file appears, and no file is written anywhere but in the save folder
the user named. ``test_the_attacks_are_real`` shows that the payloads do run when
HyperPyYAML loads them as they are.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest
import soundfile as sf
from hyperpyyaml import load_hyperpyyaml

from jsqa_sb.cli import main


def write_marker(path):
    """Python code that writes a marker file: what each payload runs."""
    return f"import pathlib; pathlib.Path({str(path)!r}).write_text('ran')"


def pickle_that_runs(code):
    """A protocol-0 pickle (plain text) whose loading runs ``code``."""
    return f"cbuiltins\nexec\n(V{code}\ntR."


def fx_runner(arena):
    code = json.dumps(write_marker(arena.marker) + "\n")
    return (
        "pwn: !apply:torch.fx.graph_module.reduce_graph_module\n"
        '    - code: "def forward(self):\\n    pass\\n"\n'
        f"    - {code}\n",
        "!apply:torch.fx.graph_module.reduce_graph_module",
    )


def shell_runner(arena):
    return (
        f"pwn: !apply:speechbrain.utils.superpowers.run_shell [touch {arena.marker}]\n",
        "!apply:speechbrain.utils.superpowers.run_shell",
    )


def file_writer(arena):
    return (
        "pwn: !apply:speechbrain.dataio.dataio.write_txt_file\n"
        "    data: written by a model\n"
        f"    filename: {arena.marker}\n",
        "!apply:speechbrain.dataio.dataio.write_txt_file",
    )


def pth_writer(arena):
    arena.marker = arena.site / "evil.pth"  # site-packages/*.pth runs at every start
    payload = json.dumps(write_marker(arena.root / "ran_at_start") + "\n")
    return (
        "pwn: !apply:speechbrain.dataio.dataio.write_txt_file\n"
        f"    data: {payload}\n"
        f"    filename: {arena.marker}\n",
        "!apply:speechbrain.dataio.dataio.write_txt_file",
    )


def pickle_writer_and_loader(arena):
    pkl = arena.root / "evil.pkl"
    return (
        "written: !apply:speechbrain.dataio.dataio.write_txt_file\n"
        f"    data: {json.dumps(pickle_that_runs(write_marker(arena.marker)))}\n"
        f"    filename: {pkl}\n"
        f"loaded: !apply:speechbrain.dataio.dataio.load_pkl [{pkl}]\n",
        "!apply:speechbrain.dataio.dataio.load_pkl",
    )


def shipped_pickle_torch_load(arena):
    pkl = arena.folder / "extra.ckpt"
    pkl.write_text(pickle_that_runs(write_marker(arena.marker)) + "\n")
    return (
        f"loaded: !apply:torch.load\n    f: {pkl}\n    weights_only: false\n",
        "!apply:torch.load",
    )


def other_class(arena):
    return "cache: !new:collections.OrderedDict\n", "!new:collections.OrderedDict"


def torch_class(arena):
    return "layer: !new:torch.nn.Linear [2, 3]\n", "!new:torch.nn.Linear"


def project_class(arena):  # a class of jsqa_sb itself, that makes a folder when built
    return (
        "saver: !new:jsqa_sb.training.checkpoints.Checkpointer\n"
        f"    checkpoints_dir: {arena.marker}\n",
        "!new:jsqa_sb.training.checkpoints.Checkpointer",
    )


def name_exec(arena):
    return "run: !name:builtins.exec\n", "!name:builtins.exec"


def module_os(arena):
    return "os: !module:os\n", "!module:os"


def include(arena):
    (arena.folder / "extra.yaml").write_text(file_writer(arena)[0])
    return "extra: !include:extra.yaml\n", "!include:extra.yaml"


def python_tag(arena):
    return (
        f"pwn: !!python/object/apply:os.system [touch {arena.marker}]\n",
        "!!python/object/apply:os.system",
    )


def tuple_reparse(arena):
    # HyperPyYAML re-parses "(...)" with PyYAML's unsafe loader: quoting does not help
    return (
        f"shape: '(1, !!python/object/apply:os.system [touch {arena.marker}])'\n",
        "!!python/object/apply:os.system",
    )


def billion_laughs(arena):
    lines = ["lol0: &lol0 [" + ", ".join(["lol"] * 10) + "]"]
    lines += [f"lol{i}: &lol{i} [" + ", ".join([f"*lol{i - 1}"] * 10) + "]" for i in range(1, 10)]
    return "\n".join(lines) + "\n", "*lol"


def recursive_alias(arena):
    return "loop: &loop [*loop]\n", "refers to its own parent"


def arithmetic_bomb(arena):
    return "big: 99\nboom: !ref <big> ** <big> ** <big> ** <big>\n", "!ref <big> ** <big>"


def traversal_loadable(arena):
    arena.replace = ("        head: !ref <head>", "        ../../../escape: !ref <head>")
    return "", "loadable '../../../escape'"


def collect_elsewhere(arena):
    arena.replace = (
        "    loadables:\n",
        f"    collect_in: {arena.root / 'outside'}\n    loadables:\n",
    )
    return "", "Pretrainer collect_in"


def run_option(arena):
    return "compile: True\n", "compile"


def oversized(arena):
    return "# padding\n" * 10_000, "larger than 64 kB"


def dense(arena):  # under the size limit: ruamel.yaml alone would take seconds on it
    return "numbers: [" + ", ".join(["1"] * 15_000) + "]\n", "more than 10,000 nodes"


HOSTILE = {
    "torch.fx code runner": fx_runner,
    "speechbrain shell runner": shell_runner,
    "file writer": file_writer,
    ".pth writer": pth_writer,
    "pickle writer and loader": pickle_writer_and_loader,
    "torch.load of a shipped pickle": shipped_pickle_torch_load,
    "a class of the standard library": other_class,
    "a torch class": torch_class,
    "a class of jsqa_sb that is not a model's": project_class,
    "!name: of exec": name_exec,
    "!module:": module_os,
    "!include:": include,
    "!!python tag": python_tag,
    "tuple text re-parsed": tuple_reparse,
    "billion laughs": billion_laughs,
    "recursive alias": recursive_alias,
    "arithmetic bomb": arithmetic_bomb,
    "loadable climbing out": traversal_loadable,
    "Pretrainer collecting elsewhere": collect_elsewhere,
    "SpeechBrain run option": run_option,
    "oversized YAML": oversized,
    "dense YAML": dense,
}


class Arena:
    """A working folder with a hostile model in it, a recording and marker paths."""

    def __init__(self, root, model_folder, speech):
        self.root = root
        self.cwd = root / "cwd"
        self.site = root / "site-packages"
        self.out = root / "out"
        self.savedir = root / "saved" / "model"
        self.folder = root / "models" / "hostile"
        self.marker = root / "marker"
        self.replace = None
        for folder in (self.cwd, self.site, self.out):
            folder.mkdir()
        shutil.copytree(model_folder, self.folder)
        audio, sr = speech
        self.wav = self.cwd / "a.wav"
        sf.write(self.wav, audio, sr)

    def make_hostile(self, case):
        """Change the model's YAML as ``case`` says; return the tag the refusal names."""
        added, shown = HOSTILE[case](self)
        yaml = self.folder / "hyperparams.yaml"
        text = yaml.read_text()
        if self.replace is not None:
            assert self.replace[0] in text
            text = text.replace(*self.replace)
        yaml.write_text(text + "\n" + added)
        return shown

    def files(self):
        return {
            path.relative_to(self.root)
            for path in self.root.rglob("*")
            if path.is_file() or path.is_symlink()
        }

    def args(self):
        return [
            "score",
            str(self.folder),
            str(self.wav),
            "--out",
            str(self.out / "scores.csv"),
            "--savedir",
            str(self.savedir),
            "--no_progress",
        ]


@pytest.fixture
def arena(tmp_path, model_folder, speech, monkeypatch):
    import jsqa_sb.serving.batch_scoring  # noqa: F401  (imports are not what is timed)
    import jsqa_sb.serving.inference  # noqa: F401

    arena = Arena(tmp_path, model_folder, speech)
    monkeypatch.chdir(arena.cwd)
    return arena


@pytest.mark.parametrize("case", list(HOSTILE))
def test_jsqa_score_refuses_a_hostile_model(case, arena, capsys):
    shown = arena.make_hostile(case)
    before = arena.files()
    start = time.perf_counter()
    status = main(arena.args())
    took = time.perf_counter() - start
    err = capsys.readouterr().err
    assert status == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err  # one line, no traceback
    assert lines[0].startswith("jsqa: error: ") and "refusing to load it" in lines[0]
    assert shown in lines[0] and "--trust-remote-code" in lines[0]
    assert "line " in lines[0] or case == "oversized YAML"
    assert took < 5.0, f"{case}: {took:.1f} s"
    assert not arena.marker.exists() and not (arena.root / "ran_at_start").exists()
    written = arena.files() - before
    saved = arena.savedir.relative_to(arena.root)
    assert all(saved in path.parents for path in written), written  # the save folder only
    assert not (arena.out / "scores.csv").exists()


def test_trust_lifts_the_allow_list_but_not_the_limits(arena, capsys):
    arena.make_hostile("billion laughs")
    assert main([*arena.args(), "--trust-remote-code"]) == 2
    err = capsys.readouterr().err
    assert "--trust-remote-code does not lift this limit" in err and "*lol" in err


def test_the_real_command_line_refuses_a_code_runner(arena):
    arena.make_hostile("torch.fx code runner")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "jsqa_sb.cli", *arena.args()],
        capture_output=True,
        text=True,
        cwd=arena.cwd,
        env=env,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "!apply:torch.fx.graph_module.reduce_graph_module" in result.stderr
    assert not arena.marker.exists()


@pytest.mark.parametrize(
    "case",
    [
        "torch.fx code runner",
        "speechbrain shell runner",
        "file writer",
        ".pth writer",
        "pickle writer and loader",
        "torch.load of a shipped pickle",
        "tuple text re-parsed",
        "a class of jsqa_sb that is not a model's",
    ],
)
def test_the_attacks_are_real(case, arena):
    """Loaded as they are by HyperPyYAML (what --trust-remote-code does), they run.

    The re-parse hole is shown in a fresh process: once HyperPyYAML has loaded a file,
    ruamel.yaml keeps "(...)" text as a string, so it only opens in a new process.
    """
    added, _ = HOSTILE[case](arena)
    if case == "tuple text re-parsed":
        script = "import sys; from hyperpyyaml import load_hyperpyyaml as l; l(sys.stdin.read())"
        run = [sys.executable, "-c", script]
        subprocess.run(run, input=added, text=True, cwd=arena.cwd, timeout=300, check=True)
    else:
        try:
            load_hyperpyyaml(added)
        except Exception:  # some fail after their payload ran: the payload is the point
            pass
    assert arena.marker.exists(), case


@pytest.mark.parametrize(
    "setting, value",
    [
        ("window_seconds", "1.0e-9"),
        ("window_seconds", ".nan"),
        ("sample_rate", "1"),
        ("sample_rate", "16000.5"),
        ("window_batch", "100000000"),
    ],
)
def test_plain_numbers_out_of_range_are_refused(setting, value, arena, capsys):
    """Plain data can hurt too: a 1e-9 s window would cut a file into billions."""
    yaml = arena.folder / "hyperparams.yaml"
    text = yaml.read_text()
    text, found = re.subn(rf"^{setting}: .*$", f"{setting}: {value}", text, flags=re.M)
    assert found == 1  # jsqa export writes every one of these settings
    yaml.write_text(text)
    start = time.perf_counter()
    assert main(arena.args()) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"the model's {setting} must be" in err[0], err
    assert time.perf_counter() - start < 10
    assert not (arena.out / "scores.csv").exists()
