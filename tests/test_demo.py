"""Tests of ``jsqa demo`` (``jsqa_sb.demo``): a smoke run of the pipeline, reuse, failures."""

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jsqa_sb import demo
from jsqa_sb.demo import DemoError, add_demo_arguments, run_demo

TRAINING_STEPS = ("corpora", "pretrain", "finetune", "scratch")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One smoke run up to the comparison (one epoch per training run), then a second."""
    out = tmp_path_factory.mktemp("demo") / "out"
    first_stream, second_stream = io.StringIO(), io.StringIO()
    start = time.monotonic()
    first = run_demo(out, smoke=True, stream=first_stream, until="compare")
    first_seconds = time.monotonic() - start
    start = time.monotonic()
    second = run_demo(out, smoke=True, stream=second_stream, until="compare")
    second_seconds = time.monotonic() - start
    return {
        "out": out,
        "first": (first, first_stream.getvalue(), first_seconds),
        "second": (second, second_stream.getvalue(), second_seconds),
    }


def test_smoke_run_leaves_the_promised_files(smoke_run):
    out = smoke_run["out"]
    summary, text, _ = smoke_run["first"]
    for path in (
        out / "corpora" / "nisqa" / "NISQA_Corpus",
        out / "pretrain" / "encoder.ckpt",
        out / "pretrain" / "pretrain_summary.json",
        out / "finetune" / "results.json",
        out / "scratch" / "results.json",
        out / "finetune" / "report.md",
        out / "finetune" / "scatter_NISQA_TEST_SIM.png",
        out / "comparison.txt",
    ):
        assert path.exists(), path
    for key in TRAINING_STEPS + ("compare",):
        assert any((out / "logs").glob(f"*_{key}.log")), key
    # The fine-tuning run really started from the pretrained encoder.
    log = next((out / "logs").glob("*_finetune.log")).read_text()
    assert f"--pretrained_encoder={out / 'pretrain' / 'encoder.ckpt'}" in log
    assert summary["report"] == out / "finetune" / "report.md"
    assert summary["scatter"] == [out / "finetune" / "scatter_NISQA_TEST_SIM.png"]
    assert set(summary["pcc"]) == {"finetune", "scratch"}
    assert -1 <= summary["pcc"]["finetune"]["NISQA_TEST_SIM"] <= 1
    assert "model" not in summary and "scores" not in summary  # stopped after compare
    assert json.loads((out / "demo.json").read_text())["smoke"] is True


def test_progress_lines_and_the_comparison_are_printed(smoke_run):
    summary, text, _ = smoke_run["first"]
    lines = text.splitlines()
    progress = [line for line in lines if re.match(r"\[\d/5\] ", line)]
    assert [line[:5] for line in progress] == ["[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"]
    duration = r"(\d+\.\d s|\d+ min \d\d s)"
    assert all(re.search(rf"done in {duration} \(elapsed {duration}\)$", p) for p in progress)
    assert "fine-tuning from the pretrained encoder (results in" in text
    assert summary["comparison"] in text and "NISQA_TEST_SIM / mos" in text
    assert "report.md" in text and "scatter_NISQA_TEST_SIM.png" in text
    # The training runs' own output went to the logs, not to the stream.
    assert "speechbrain" not in text and "Epoch" not in text


def test_second_run_reuses_every_training_step(smoke_run):
    first, _, first_seconds = smoke_run["first"]
    second, text, second_seconds = smoke_run["second"]
    for key in TRAINING_STEPS:
        assert second["steps"][key]["skipped"], key
    skipped = [line for line in text.splitlines() if "skipped, already done" in line]
    assert len(skipped) == len(TRAINING_STEPS)
    assert not second["steps"]["compare"]["skipped"]  # cheap: always reruns
    assert second["comparison"] == first["comparison"]
    assert second_seconds < first_seconds / 5


def test_other_settings_in_the_same_folder_are_refused(smoke_run):
    with pytest.raises(DemoError, match="other settings"):
        run_demo(smoke_run["out"], seed=1, smoke=True, stream=io.StringIO(), until="compare")


def _fake_repo(root: Path, train_py: str) -> Path:
    """A repository whose train.py is ``train_py`` (and the package in jsqa_sb/)."""
    recipe = root / "recipes" / "JSQA"
    recipe.mkdir(parents=True)
    (root / "hparams").mkdir()
    for name in ("pretrain.yaml", "finetune.yaml", "scratch.yaml"):
        (root / "hparams" / name).write_text("stage: test\n")
    (recipe / "hparams").symlink_to("../../hparams")
    (recipe / "train.py").write_text(train_py)
    return root


def test_a_failing_training_run_raises_with_its_log(tmp_path, monkeypatch):
    crash = "import sys\nprint('training went wrong: no such key foo')\nsys.exit(3)\n"
    recipe = _fake_repo(tmp_path / "repo", crash) / "recipes" / "JSQA"
    monkeypatch.setattr(demo, "_recipe_folder", lambda: recipe)
    stream = io.StringIO()
    out = tmp_path / "out"
    with pytest.raises(DemoError) as info:
        run_demo(out, smoke=True, stream=stream)
    log = out / "logs" / "2_pretrain.log"
    message = str(info.value)
    assert str(log) in message and "status 3" in message and "pretraining" in message
    text = stream.getvalue()
    assert "[1/7] building the miniature corpora" in text
    assert "[2/7] JND contrastive pretraining" in text and "FAILED" in text
    assert "training went wrong: no such key foo" in text  # the log's tail is shown
    assert "training went wrong" in log.read_text()
    assert "[3/7]" not in text


def test_the_recipe_is_found_in_the_package():
    """The demo needs no clone: the recipe (train.py and its YAMLs) ships in jsqa_sb."""
    import jsqa_sb

    recipe = demo._recipe_folder()
    assert recipe.resolve() == Path(jsqa_sb.__file__).resolve().parent / "recipe"
    assert (recipe / "train.py").is_file()
    for name in ("pretrain.yaml", "finetune.yaml", "scratch.yaml"):
        assert (recipe / "hparams" / name).is_file(), name


def test_demo_arguments():
    import argparse

    parser = argparse.ArgumentParser()
    add_demo_arguments(parser)
    args = parser.parse_args([])
    assert (args.out, args.seed, args.smoke) == ("demo_out", 0, False)
    args = parser.parse_args(["--out", "x", "--seed", "3", "--smoke"])
    assert (args.out, args.seed, args.smoke) == ("x", 3, True)
    assert "--smoke" not in parser.format_help()


def test_export_and_score_finish_the_pipeline(smoke_run):
    out, stream = smoke_run["out"], io.StringIO()
    summary = run_demo(out, smoke=True, stream=stream)
    text = stream.getvalue()
    assert "[6/7] exporting the fine-tuned model" in text and "[7/7] scoring" in text
    assert (out / "model" / "hyperparams.yaml").is_file()
    table = summary["scores_table"]
    assert len(table) == demo.N_SCORED and table["mos"].between(1, 5).all()
    assert table["label_mos"].notna().all()  # each scored file found in the corpus table
    assert "exported model:" in text and "scores:" in text and "label_mos" in text
    again = io.StringIO()
    run_demo(out, smoke=True, stream=again)
    assert "[6/7] exporting the fine-tuned model to a SpeechBrain-hub folder: skipped" in (
        again.getvalue()
    )


def test_make_demo_runs_jsqa_demo(smoke_run):
    """``make demo`` (the README's first command) goes through the Makefile and the CLI."""
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    repo = Path(__file__).resolve().parents[1]
    out = smoke_run["out"]
    result = subprocess.run(
        ["make", "-s", "demo", f"DEMO_ARGS=--smoke --out {out}"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipped, already done" in result.stdout  # the smoke run's steps, reused
    assert "exported model:" in result.stdout and "scores:" in result.stdout


# ----------------------------------------------------------------------------- stopping
def _processes_mentioning(text: str) -> dict[int, str]:
    """Live processes whose command line contains ``text`` (pid -> command line)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended meanwhile
            continue
        if text in cmdline:
            found[int(entry.name)] = cmdline
    return found


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stopped_demo_stops_its_training_run(signum, status, tmp_path):
    """SIGTERM (or Ctrl-C) to ``jsqa demo`` leaves no ``train.py`` writing into its folder."""
    script = Path(sys.executable).with_name("jsqa")
    jsqa = str(script) if script.is_file() else shutil.which("jsqa")
    out = tmp_path / "demo"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [jsqa, "demo", "--smoke", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=_default_sigint,  # a shell's background job inherits it ignored
    )
    try:
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            running = [c for c in _processes_mentioning(str(out)).values() if "train.py" in c]
            if running:
                break
            time.sleep(0.1)
        assert running, "no train.py started"
        time.sleep(1.0)  # let it get going (it has the log file open by now)
        process.send_signal(signum)  # to jsqa alone, as kill or a job scheduler sends it
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == status, stderr[-3000:]
        lines = [line for line in stderr.splitlines() if line.strip()]
        expected = "jsqa: interrupted" if signum == signal.SIGINT else "jsqa: stopped by SIGTERM"
        assert lines == [expected], stderr[-3000:]
        assert "[2/7] JND contrastive pretraining" in stdout
        assert "running the demo again continues from here" in stdout
        survivors = _processes_mentioning(str(out))
        assert survivors == {}, survivors
        before = _files(out)
        time.sleep(3)
        assert _files(out) == before  # nothing keeps writing into the demo folder
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in _processes_mentioning(str(out)):  # what this test started, if it failed
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _default_sigint():
    """In the child: Ctrl-C's default action, whatever the test runner's parent ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
