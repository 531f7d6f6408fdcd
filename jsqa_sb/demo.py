"""The whole JSQA pipeline on the built-in miniature corpora: ``jsqa demo``.

:func:`run_demo` builds the miniature LibriSpeech, CHiME-3 and NISQA corpora
(:func:`jsqa_sb.minicorpus.build_all`), pretrains the encoder on JND pairs, fine-tunes
it on MOS, trains the same network from scratch with the same budget, compares the
two runs' test results (:func:`jsqa_sb.reports.compare_runs`), exports the fine-tuned
model as a SpeechBrain-hub folder (``jsqa export``) and scores a few test files with
it (``jsqa score``). Training runs are the recipe itself (``jsqa_sb/recipe/train.py``,
shipped in the package; ``recipes/JSQA/train.py`` in a clone), as subprocesses.

Everything goes under one folder (``--out``, default ``demo_out``)::

    demo.json           the demo's settings (seed, smoke) and training options
    logs/<step>.log     the full output of each step
    corpora/            librispeech/, chime3/, nisqa/ (the miniature corpora)
    pretrain/           encoder.ckpt, pretrain_summary.json, train_log.txt, ...
    finetune/           results.json, report.md, scatter_<DB>.png, predictions_<DB>.csv
    scratch/            the same for the baseline trained from scratch
    comparison.txt      the text of ``jsqa compare finetune scratch``
    model/              the exported model (hyperparams.yaml, ...)
    scores.csv          the scores of a few NISQA_TEST_SIM files

Running it again reuses what is done: a step whose outputs exist is skipped (an
interrupted training run resumes from its last checkpoint); the comparison and the
scoring are cheap and always rerun. Delete a step's folder to redo it, and the folders
of the steps after it, which would otherwise keep their old results. Stopping the demo
(Ctrl-C, SIGTERM, SIGHUP) stops the training run it is waiting for, with the run's
worker processes, before it exits.

The miniature corpora are synthetic and tiny (12 training utterances for pretraining;
40 training, 12 validation and 12 test files for MOS, with labels that follow the
simulated degradations), so the figures show that the pipeline works end to end, not
how well JSQA predicts human MOS.

Authors
 * JSQA contributors 2026
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from jsqa_sb.errors import JSQAError, signal_name

#: Training options of the full demo (``train.py`` overrides; the YAMLs' model sizes).
#: On the 2-core development VM a pretraining epoch (12 utterances: 3 batches of 4 view
#: groups, then validation and the SNR probe) takes 1.3-3 s and a fine-tuning epoch (40
#: files: 5 batches of 8, then validation) 1.5-3 s, depending on the load, plus 10-20 s
#: of start-up and test evaluation per run: 0.7-2 minutes per run. ``num_workers=0``:
#: with epochs this short, starting loader processes every epoch costs more than it saves.
PRETRAIN_OPTIONS = {"number_of_epochs": 25, "batch_size": 4, "num_workers": 0}
#: Shared by fine-tuning and the from-scratch baseline: the comparison needs the same budget.
MOS_OPTIONS = {"number_of_epochs": 30, "batch_size": 8, "num_workers": 0}
#: ``--smoke``: one epoch per training run (the test suite's setting).
SMOKE_EPOCHS = 1
#: Test database whose files are scored, and how many of them.
SCORE_DB, N_SCORED = "NISQA_TEST_SIM", 4
#: Lines of a failed step's log shown on the terminal.
TAIL_LINES = 25
#: Seconds a stopped training run has to exit on SIGTERM before it is killed.
STOP_GRACE_SECONDS = 20.0
#: Signals that stop the demo and its training runs (besides Ctrl-C).
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)

_SETTINGS_FILE = "demo.json"


class DemoError(JSQAError, RuntimeError):
    """A step of the demo failed; the message says which step, why, and where its log is."""


class DemoStopped(KeyboardInterrupt):
    """The demo was stopped by a signal (SIGTERM, SIGHUP); its training runs were stopped.

    A ``KeyboardInterrupt`` like Ctrl-C: ``jsqa`` prints one line and exits with
    ``128 + signum``.
    """

    def __init__(self, signum: int):
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


@dataclass
class Step:
    """One step of the demo, as the progress lines show it.

    Arguments
    ---------
    key : str
        Short name (``pretrain``); also the name of the step's log file.
    title : str
        What the step does, for the progress line.
    action : callable
        Called with the path of the step's log file; raises on failure.
    outputs : tuple of pathlib.Path
        Files that exist once the step is done; it is skipped when they all exist.
        Empty: the step always runs.
    results : pathlib.Path, optional
        Where the step's results go, shown on the progress line.
    """

    key: str
    title: str
    action: Callable[[Path], None]
    outputs: tuple[Path, ...] = ()
    results: Path | None = None

    def done(self) -> bool:
        """Return True if the step's outputs all exist (the step can be skipped)."""
        return bool(self.outputs) and all(path.exists() for path in self.outputs)


class _StepFailed(Exception):
    """A step failed in an expected way; the message is the reason (no traceback)."""


# --- command line ------------------------------------------------------------------------


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``jsqa demo`` to ``parser``.

    Arguments
    ---------
    parser : argparse.ArgumentParser
        The ``demo`` sub-command's parser; :func:`run_demo` takes the values of
        ``out``, ``seed`` and ``smoke``.
    """
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
    parser.add_argument(
        "--smoke", action="store_true", help=argparse.SUPPRESS
    )  # tiny epochs for tests: one epoch per training run


# --- helpers -----------------------------------------------------------------------------


def _recipe_folder() -> Path:
    """The recipe shipped in the package (``train.py``, ``hparams/``); DemoError if missing."""
    from importlib.resources import files

    recipe = Path(str(files("jsqa_sb.recipe")))
    if not (recipe / "train.py").is_file():
        raise DemoError(f"{recipe / 'train.py'} not found: reinstall the jsqa-sb package")
    return recipe


def _show(path: Path) -> str:
    """``path`` relative to the working folder when it is below it (shorter lines)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _duration(seconds: float) -> str:
    """``8.2 s`` or ``3 min 05 s``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def _tail(path: Path, n: int = TAIL_LINES) -> str:
    """The last ``n`` lines of a text file (carriage-return progress bars collapsed)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    return "\n".join(lines[-n:])


def _options(options: dict[str, Any]) -> list[str]:
    return [f"--{key}={value}" for key, value in options.items()]


def _train(recipe: Path, yaml: str, arguments: Sequence[str], log: Path) -> None:
    """Run ``train.py hparams/<yaml> arguments`` in ``recipe``, its output added to ``log``."""
    command = [sys.executable, str(recipe / "train.py"), str(recipe / "hparams" / yaml), *arguments]
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ cd {recipe}\n$ {' '.join(command)}\n")
        f.flush()
        # In a process group of its own, so that stopping it stops its workers too.
        process = subprocess.Popen(
            command,
            cwd=recipe,
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=hasattr(os, "killpg"),
        )
        try:
            status = process.wait()
        except BaseException:  # Ctrl-C or a stop signal: no orphan keeps training
            _stop(process)
            raise
    if status != 0:
        raise _StepFailed(f"train.py {yaml} exited with status {status}")


def _stop(process: subprocess.Popen) -> None:
    """Stop a training run and its process group: SIGTERM, then SIGKILL; wait for it.

    The run has :data:`STOP_GRACE_SECONDS` to exit; a second Ctrl-C kills it at once.
    """

    def send(hard: bool) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if hasattr(os, "killpg"):
                os.killpg(process.pid, signal.SIGKILL if hard else signal.SIGTERM)
            elif hard:
                process.kill()
            else:
                process.terminate()

    send(hard=False)
    try:
        process.wait(timeout=STOP_GRACE_SECONDS)
    except (subprocess.TimeoutExpired, KeyboardInterrupt) as err:
        send(hard=True)
        process.wait()
        if isinstance(err, KeyboardInterrupt):
            raise
    send(hard=True)  # whatever of its process group outlived it (data loader workers)


@contextlib.contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """Turn :data:`STOP_SIGNALS` into :class:`DemoStopped` for a while (main thread only).

    Without this, SIGTERM would end the demo at once and leave its running
    ``train.py`` writing into the demo folder. Further signals are ignored while the
    demo stops its training run (which takes at most :data:`STOP_GRACE_SECONDS`).
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def stop(signum: int, frame: Any) -> None:
        for other in STOP_SIGNALS:
            signal.signal(other, signal.SIG_IGN)
        raise DemoStopped(signum)

    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def _output_to(log: Path) -> Iterator[None]:
    """Send this process's output (stdout, stderr, logging) to ``log`` for a while."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    with open(log, "a", encoding="utf-8") as f:
        handler = logging.StreamHandler(f)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.handlers, root.level = [handler], logging.INFO
        try:
            with contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                yield
        finally:
            root.handlers, root.level = saved_handlers, saved_level


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Record the demo's settings in ``out``, or refuse a folder made with other ones."""
    path = out / _SETTINGS_FILE
    if path.is_file():
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
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


# --- the demo ----------------------------------------------------------------------------


def _steps(out: Path, recipe: Path, pretrain: list[str], mos: list[str]) -> list[Step]:
    """The steps of the demo, in order."""
    corpora = out / "corpora"
    folders = {
        "librispeech_folder": corpora / "librispeech",
        "chime3_folder": corpora / "chime3",
        "nisqa_folder": corpora / "nisqa",
    }
    pre_run, ft_run, sc_run = out / "pretrain", out / "finetune", out / "scratch"
    model, scores = out / "model", out / "scores.csv"

    def build_corpora(log: Path) -> None:
        from jsqa_sb.minicorpus import build_all

        with _output_to(log):
            built = build_all(corpora)
        (corpora / "corpora.json").write_text(
            json.dumps({k: str(v) for k, v in built.items()}, indent=2) + "\n"
        )

    def run_pretraining(log: Path) -> None:
        data = [f"--{k}={folders[k]}" for k in ("librispeech_folder", "chime3_folder")]
        _train(recipe, "pretrain.yaml", [*data, f"--output_folder={pre_run}", *pretrain], log)

    def run_finetuning(log: Path) -> None:
        _train(
            recipe,
            "finetune.yaml",
            [
                f"--nisqa_folder={folders['nisqa_folder']}",
                f"--pretrained_encoder={pre_run / 'encoder.ckpt'}",
                f"--output_folder={ft_run}",
                *mos,
            ],
            log,
        )

    def run_scratch(log: Path) -> None:
        data = f"--nisqa_folder={folders['nisqa_folder']}"
        _train(recipe, "scratch.yaml", [data, f"--output_folder={sc_run}", *mos], log)

    def compare(log: Path) -> None:
        from jsqa_sb.reports import compare_runs

        with _output_to(log):
            text = compare_runs(ft_run, sc_run)
            print(text)
        (out / "comparison.txt").write_text(text + "\n", encoding="utf-8")

    def export(log: Path) -> None:
        from jsqa_sb.hub_export import export_model

        # Runs only while model/hyperparams.yaml is missing: whatever is there is incomplete.
        with _output_to(log):
            export_model(ft_run, model, overwrite=True)

    def score(log: Path) -> None:
        from jsqa_sb.batch_scoring import score_collection
        from jsqa_sb.inference import JSQA

        with _output_to(log):
            jsqa = JSQA.from_hparams(source=str(model))
            summary = score_collection(jsqa, _scored_files(out), scores, progress=False)
            print(summary.format())
        if not summary.complete:
            raise _StepFailed(f"{len(summary.errors)} file(s) could not be scored: see {scores}")

    return [
        Step(
            "corpora",
            "building the miniature corpora",
            build_corpora,
            (corpora / "corpora.json",),
            corpora,
        ),
        Step(
            "pretrain",
            "JND contrastive pretraining of the encoder",
            run_pretraining,
            (pre_run / "encoder.ckpt", pre_run / "pretrain_summary.json"),
            pre_run,
        ),
        Step(
            "finetune",
            "fine-tuning from the pretrained encoder",
            run_finetuning,
            (ft_run / "results.json",),
            ft_run,
        ),
        Step(
            "scratch",
            "training the same network from scratch, the baseline",
            run_scratch,
            (sc_run / "results.json",),
            sc_run,
        ),
        Step(
            "compare", "comparing the two runs' test results", compare, (), out / "comparison.txt"
        ),
        Step(
            "export",
            "exporting the fine-tuned model to a SpeechBrain-hub folder",
            export,
            (model / "hyperparams.yaml",),
            model,
        ),
        Step("score", f"scoring {N_SCORED} test files with the exported model", score, (), scores),
    ]


def _test_db(out: Path) -> Path:
    """The miniature corpus's test database, whose files the demo scores."""
    return out / "corpora" / "nisqa" / "NISQA_Corpus" / SCORE_DB


def _scored_files(out: Path) -> list[Path]:
    """The first degraded file of each of the first :data:`N_SCORED` test conditions."""
    import pandas as pd

    table = pd.read_csv(_test_db(out) / f"{SCORE_DB}_file.csv")
    first = table.sort_values("filename_deg").groupby("con", sort=True).head(1)
    return [_test_db(out) / "deg" / name for name in first["filename_deg"][:N_SCORED]]


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
        seconds = time.monotonic() - start
        if not isinstance(err, _StepFailed):
            with open(log, "a", encoding="utf-8") as f:
                traceback.print_exc(file=f)
        print(f" FAILED after {_duration(seconds)}", file=stream)
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

    Arguments
    ---------
    out : str or os.PathLike
        Folder for everything the demo writes (see the module's docstring); a folder
        from an earlier run with the same settings is reused.
    seed : int
        Random seed of the training runs (the corpora are always the same).
    smoke : bool
        One epoch per training run: a quick check that every step works (tests).
    stream : file-like, optional
        Where the progress lines and the final summary go (default: ``sys.stdout`` at
        the time of the call).
    until : str, optional
        Internal: the key of the last step to run (``corpora``, ``pretrain``,
        ``finetune``, ``scratch``, ``compare``, ``export``, ``score``); default all.

    Returns
    -------
    dict
        ``out`` (absolute path), ``steps`` (per step key: ``skipped``, ``seconds``,
        ``log``), ``seconds`` (the whole run), the run folders ``pretrain``,
        ``finetune`` and ``scratch``, ``report`` (the fine-tuned run's ``report.md``),
        ``scatter`` (its scatter plots), ``comparison`` (the text of
        :func:`jsqa_sb.reports.compare_runs`), ``pcc`` (test PCC of MOS per run and
        test database), and, once those steps ran, ``model`` (the exported folder),
        ``scores`` (``scores.csv``) and ``scores_table`` (a pandas DataFrame).

    Raises
    ------
    DemoError
        When the installed package lacks its recipe, ``out`` holds a demo made with
        other settings, or a step fails (the message gives the step's log).

    Example
    -------
    >>> run_demo("demo_out", until="compare")  # doctest: +SKIP
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


# --- the summary -------------------------------------------------------------------------


def _summary(out: Path, steps: dict[str, Any], seconds: float) -> dict[str, Any]:
    """What the demo made (the paths that exist) and its main figures."""
    from jsqa_sb.reports import load_results

    summary: dict[str, Any] = {"out": out, "steps": steps, "seconds": seconds, "pcc": {}}
    for run in ("pretrain", "finetune", "scratch"):
        if (out / run).is_dir():
            summary[run] = out / run
        if (out / run / "results.json").is_file():
            databases = load_results(out / run)["databases"]
            summary["pcc"][run] = {
                db: (dims.get("mos") or {}).get("pcc") for db, dims in databases.items()
            }
    if (out / "finetune" / "report.md").is_file():
        summary["report"] = out / "finetune" / "report.md"
        summary["scatter"] = sorted((out / "finetune").glob("scatter_*.png"))
    if (out / "scratch" / "report.md").is_file():
        summary["scratch_report"] = out / "scratch" / "report.md"
    if "compare" in steps:
        summary["comparison"] = (out / "comparison.txt").read_text(encoding="utf-8").rstrip()
    if "export" in steps:
        summary["model"] = out / "model"
    if "score" in steps:
        summary["scores"] = out / "scores.csv"
        summary["scores_table"] = _scores_table(out)
    return summary


def _scores_table(out: Path) -> Any:
    """``scores.csv`` with the corpus's condition and MOS label of each file, as a DataFrame."""
    import pandas as pd

    scores = pd.read_csv(out / "scores.csv")
    corpus = pd.read_csv(_test_db(out) / f"{SCORE_DB}_file.csv")
    labels = dict(zip(corpus["filename_deg"], zip(corpus["con_description"], corpus["mos"])))
    names = [Path(path).name for path in scores["path"]]
    scores.insert(1, "condition", [labels.get(name, ("?", None))[0] for name in names])
    scores.insert(2, "label_mos", [labels.get(name, ("?", None))[1] for name in names])
    return scores


def _print_summary(summary: dict[str, Any], stream: TextIO) -> None:
    """Print the comparison, the scores and the paths of what the demo made."""

    def section(title: str) -> None:
        print(f"\n=== {title} ===", file=stream)

    if "comparison" in summary:
        section("test results: A = fine-tuned from the JND-pretrained encoder, B = from scratch")
        print(summary["comparison"], file=stream)
    if "scores_table" in summary:
        table = summary["scores_table"].drop(columns=["duration", "sample_rate"], errors="ignore")
        table["path"] = [Path(path).name for path in table["path"]]
        if "error" in table and table["error"].isna().all():
            table = table.drop(columns="error")
        section(
            f"scores of {len(table)} {SCORE_DB} files by the exported model (jsqa score; "
            "label_mos: the corpus's label)"
        )
        print(table.to_string(index=False, float_format=lambda x: f"{x:.2f}"), file=stream)

    section("files")
    out = summary["out"]
    rows = (
        ("report (fine-tuned)", "report"),
        ("report (scratch)", "scratch_report"),
        ("scatter plots", "scatter"),
        ("exported model", "model"),
        ("scores", "scores"),
    )
    for label, key in rows:
        if summary.get(key):
            paths = summary[key] if isinstance(summary[key], list) else [summary[key]]
            print(f"{label + ':':<21}{', '.join(_show(p) for p in paths)}", file=stream)
    if "comparison" in summary:
        print(f"{'comparison:':<21}{_show(out / 'comparison.txt')}", file=stream)
    print(f"{'logs:':<21}{_show(out / 'logs')}", file=stream)
    print(
        "\nThe miniature corpora are synthetic and tiny: these figures show that the pipeline "
        "works, not how well JSQA predicts human MOS.",
        file=stream,
    )
    print(f"Demo finished in {_duration(summary['seconds'])}.", file=stream, flush=True)
