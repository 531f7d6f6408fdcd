"""The whole JSQA pipeline on the built-in miniature corpora: ``jsqa demo``.

:func:`run_demo` builds the miniature corpora, pretrains the encoder on JND pairs,
fine-tunes it on MOS, trains the same network from scratch with the same budget,
compares the two runs, exports the fine-tuned model and scores a few test files with
it. Training runs are the recipe shipped in the package (``jsqa_sb/recipe/train.py``)
as subprocesses (:mod:`jsqa_sb.demo.processes`). Everything goes under ``--out``::

    demo.json           the demo's settings (seed, smoke) and training options
    logs/<step>.log     the full output of each step
    corpora/            librispeech/, chime3/, nisqa/ (the miniature corpora)
    pretrain/           encoder.ckpt, pretrain_summary.json, train_log.txt, ...
    finetune/           results.json, report.md, scatter_<DB>.png, predictions_<DB>.csv
    scratch/            the same for the baseline trained from scratch
    comparison.txt      the text of ``jsqa compare finetune scratch``
    model/              the exported model (hyperparams.yaml, ...)
    scores.csv          the scores of a few NISQA_TEST_SIM files

A rerun skips the steps whose outputs exist (an interrupted training run resumes from
its checkpoint); delete a step's folder, and those of the steps after it, to redo it.
The corpora are synthetic and tiny: the figures show that the pipeline works end to
end, not how well JSQA predicts human MOS.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, TextIO

from jsqa_sb.data.prepare_utils import read_json
from jsqa_sb.demo.processes import (  # noqa: F401 (re-exported)
    STOP_GRACE_SECONDS,
    STOP_SIGNALS,
    TAIL_LINES,
    DemoStopped,
    _duration,
    _output_to,
    _show,
    _StepFailed,
    _stopped_by_signals,
    _tail,
    _train,
)
from jsqa_sb.demo.summary import (  # noqa: F401 (re-exported)
    N_SCORED,
    SCORE_DB,
    _print_summary,
    _scored_files,
    _summary,
)
from jsqa_sb.errors import JSQAError, signal_name

#: Training options of the full demo (``train.py`` overrides; the YAMLs' model sizes):
#: 1-2 minutes per run on 2 CPU cores. ``num_workers=0``: with epochs this short, starting
#: loader processes every epoch costs more than it saves.
PRETRAIN_OPTIONS = {"number_of_epochs": 25, "batch_size": 4, "num_workers": 0}
#: Shared by fine-tuning and the from-scratch baseline: the comparison needs the same budget.
MOS_OPTIONS = {"number_of_epochs": 30, "batch_size": 8, "num_workers": 0}
#: ``--smoke``: one epoch per training run (the test suite's setting).
SMOKE_EPOCHS = 1


class DemoError(JSQAError, RuntimeError):
    """A step of the demo failed; the message says which step, why, and where its log is."""


@dataclass
class Step:
    """One step of the demo.

    ``action(log)`` raises on failure; the step is skipped when its ``outputs`` all
    exist (never when there are none); ``results`` is shown on its progress line.
    """

    key: str
    title: str
    action: Callable[[Path], None]
    outputs: tuple[Path, ...] = ()
    results: Path | None = None

    def done(self) -> bool:
        """Return True if the step's outputs all exist (the step can be skipped)."""
        return bool(self.outputs) and all(path.exists() for path in self.outputs)


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``jsqa demo`` (``out``, ``seed``, ``smoke``) to ``parser``."""
    parser.description = (
        "Run the whole pipeline on built-in miniature corpora: JND pretraining, MOS "
        "fine-tuning, the from-scratch baseline, their comparison, export and scoring "
        "(a few minutes on a CPU). Running it again reuses the steps already done."
    )
    parser.add_argument(
        "--out",
        default="demo_out",
        help="folder for everything the demo writes (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed of the training runs (default: %(default)s)",
    )
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)


def _recipe_folder() -> Path:
    """The recipe shipped in the package (``train.py``, ``hparams/``); DemoError if missing."""
    recipe = Path(str(files("jsqa_sb.recipe")))
    if not (recipe / "train.py").is_file():
        raise DemoError(f"{recipe / 'train.py'} not found: reinstall the jsqa-sb package")
    return recipe


def _options(options: dict[str, Any]) -> list[str]:
    return [f"--{key}={value}" for key, value in options.items()]


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Record the demo's settings in ``out``, or refuse a folder made with other ones."""
    path = out / "demo.json"
    if path.is_file():
        try:
            before = read_json(path)
        except ValueError:
            before = None
        if before != settings:
            raise DemoError(
                f"{out} holds a demo made with other settings ({path}: {before}; now: "
                f"{settings}); choose another --out or delete {out}"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


def _steps(out: Path, recipe: Path, pretrain: list[str], mos: list[str]) -> list[Step]:
    """The steps of the demo, in order."""
    corpora = out / "corpora"
    nisqa = f"--nisqa_folder={corpora / 'nisqa'}"
    pre_run, ft_run, sc_run = out / "pretrain", out / "finetune", out / "scratch"
    model, scores = out / "model", out / "scores.csv"

    def build_corpora(log: Path) -> None:
        from jsqa_sb.data.minicorpus import build_all

        with _output_to(log):
            built = build_all(corpora)
        (corpora / "corpora.json").write_text(
            json.dumps({k: str(v) for k, v in built.items()}, indent=2) + "\n"
        )

    def run_pretraining(log: Path) -> None:
        data = [f"--{name}_folder={corpora / name}" for name in ("librispeech", "chime3")]
        _train(recipe, "pretrain.yaml", [*data, f"--output_folder={pre_run}", *pretrain], log)

    def run_finetuning(log: Path) -> None:
        encoder = f"--pretrained_encoder={pre_run / 'encoder.ckpt'}"
        _train(recipe, "finetune.yaml", [nisqa, encoder, f"--output_folder={ft_run}", *mos], log)

    def run_scratch(log: Path) -> None:
        _train(recipe, "scratch.yaml", [nisqa, f"--output_folder={sc_run}", *mos], log)

    def compare(log: Path) -> None:
        from jsqa_sb.evaluation.reports import compare_runs

        with _output_to(log):
            text = compare_runs(ft_run, sc_run)
            print(text)
        (out / "comparison.txt").write_text(text + "\n", encoding="utf-8")

    def export(log: Path) -> None:
        from jsqa_sb.serving.hub_export import export_model

        # Runs only while model/hyperparams.yaml is missing: whatever is there is incomplete.
        with _output_to(log):
            export_model(ft_run, model, overwrite=True)

    def score(log: Path) -> None:
        from jsqa_sb.serving.batch_scoring import score_collection
        from jsqa_sb.serving.inference import JSQA

        with _output_to(log):
            jsqa = JSQA.from_hparams(source=str(model))
            summary = score_collection(jsqa, _scored_files(out), scores, progress=False)
            print(summary.format())
        if not summary.complete:
            raise _StepFailed(f"{len(summary.errors)} file(s) could not be scored: see {scores}")

    return [
        Step("corpora", "building the miniature corpora", build_corpora,
             (corpora / "corpora.json",), corpora),
        Step("pretrain", "JND contrastive pretraining of the encoder", run_pretraining,
             (pre_run / "encoder.ckpt", pre_run / "pretrain_summary.json"), pre_run),
        Step("finetune", "fine-tuning from the pretrained encoder", run_finetuning,
             (ft_run / "results.json",), ft_run),
        Step("scratch", "training the same network from scratch, the baseline", run_scratch,
             (sc_run / "results.json",), sc_run),
        Step("compare", "comparing the two runs' test results", compare, (),
             out / "comparison.txt"),
        Step("export", "exporting the fine-tuned model to a SpeechBrain-hub folder", export,
             (model / "hyperparams.yaml",), model),
        Step("score", f"scoring {N_SCORED} test files with the exported model", score, (),
             scores),
    ]  # fmt: skip


def _run_step(step: Step, number: str, log: Path, stream: TextIO, since: float) -> dict[str, Any]:
    """Run (or skip) one step, with its progress line; DemoError if it fails.

    ``log`` is emptied first; ``since`` is the demo's start (``time.monotonic()``).
    """
    where = f" (results in {_show(step.results)})" if step.results else ""
    if step.done():
        print(f"{number} {step.title}: skipped, already done{where}", file=stream, flush=True)
        return {"skipped": True, "seconds": 0.0, "log": log}
    print(f"{number} {step.title}{where} ...", end="", file=stream, flush=True)
    log.write_text("", encoding="utf-8")
    start = time.monotonic()
    try:
        step.action(log)
    except KeyboardInterrupt as err:
        how = "interrupted"
        if isinstance(err, DemoStopped):
            how = f"stopped by {signal_name(err.signum)}"
        print(
            f" {how} after {_duration(time.monotonic() - start)}; running the demo again "
            "continues from here",
            file=stream,
            flush=True,
        )
        raise
    except Exception as err:
        if not isinstance(err, _StepFailed):
            with open(log, "a", encoding="utf-8") as f:
                traceback.print_exc(file=f)
        print(f" FAILED after {_duration(time.monotonic() - start)}", file=stream)
        print(f"--- last lines of {_show(log)} ---", file=stream)
        print(_tail(log), file=stream)
        print(f"--- (full log: {_show(log)}) ---", file=stream, flush=True)
        raise DemoError(f"step {number} ({step.title}) failed: {err}; see its log: {log}") from err
    seconds = time.monotonic() - start
    elapsed = _duration(time.monotonic() - since)
    print(f" done in {_duration(seconds)} (elapsed {elapsed})", file=stream, flush=True)
    return {"skipped": False, "seconds": seconds, "log": log}


def run_demo(
    out: str | os.PathLike = "demo_out",
    *,
    seed: int = 0,
    smoke: bool = False,
    stream: TextIO | None = None,
    until: str | None = None,
) -> dict:
    """Run the whole JSQA pipeline on the miniature corpora (``jsqa demo``).

    ``out`` receives everything the demo writes (a folder with the same settings is
    reused); ``smoke``: one epoch per training run, a quick check that every step works;
    ``stream``: where the progress lines and the summary go (default: ``sys.stdout``);
    ``until``: internal, the key of the last step to run (default: all).

    Returns a dict: ``out``, ``steps`` (per key: ``skipped``, ``seconds``, ``log``),
    ``seconds``, and what exists of: the run folders ``pretrain``, ``finetune``,
    ``scratch``; ``report``, ``scatter``, ``comparison``, ``pcc`` (test PCC of MOS per run
    and database), ``model``, ``scores`` and ``scores_table`` (a DataFrame). Raises
    :class:`DemoError` when the package lacks its recipe, ``out`` holds a demo made with
    other settings, or a step fails (the message gives the step's log).
    """
    start = time.monotonic()
    stream = sys.stdout if stream is None else stream
    out = Path(out).resolve()
    recipe = _recipe_folder()
    epochs = {"number_of_epochs": SMOKE_EPOCHS} if smoke else {}
    pretrain = _options({**PRETRAIN_OPTIONS, **epochs, "seed": seed})
    mos = _options({**MOS_OPTIONS, **epochs, "seed": seed})
    _check_settings(out, {"seed": seed, "smoke": smoke, "pretrain": pretrain, "mos": mos})
    steps = _steps(out, recipe, pretrain, mos)
    keys = [step.key for step in steps]
    if until is not None:
        if until not in keys:
            raise ValueError(f"until={until!r}: expected one of {', '.join(keys)}")
        steps = steps[: keys.index(until) + 1]
    (out / "logs").mkdir(parents=True, exist_ok=True)

    print(f"JSQA demo in {_show(out)} (logs in {_show(out / 'logs')})", file=stream, flush=True)
    done = {}
    with _stopped_by_signals():
        for i, step in enumerate(steps, 1):
            log = out / "logs" / f"{i}_{step.key}.log"
            done[step.key] = _run_step(step, f"[{i}/{len(steps)}]", log, stream, start)
    summary = _summary(out, done, time.monotonic() - start)
    _print_summary(summary, stream)
    return summary
