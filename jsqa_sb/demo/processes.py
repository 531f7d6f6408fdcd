"""How ``jsqa demo`` runs: training subprocesses stopped with it (signals, Ctrl-C), logs."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

#: Lines of a failed step's log shown on the terminal.
TAIL_LINES = 25
#: Seconds a stopped training run has to exit on SIGTERM before it is killed.
STOP_GRACE_SECONDS = 20.0
#: Signals that stop the demo and its training runs (besides Ctrl-C).
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class DemoStopped(KeyboardInterrupt):
    """The demo was stopped by a signal (SIGTERM, SIGHUP); its training runs were stopped.

    A ``KeyboardInterrupt`` like Ctrl-C: ``jsqa`` prints one line and exits with
    ``128 + signum``.
    """

    def __init__(self, signum: int):
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


class _StepFailed(Exception):
    """A step failed in an expected way; the message is the reason (no traceback)."""


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
            else:
                (process.kill if hard else process.terminate)()

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
