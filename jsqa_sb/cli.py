"""The ``jsqa`` command line.

Each sub-command is a thin layer over a package function; errors about the user's
data come out as one clear line (exit status 2), not a traceback. The parser is in
:mod:`jsqa_sb.cli_parser`.
"""

from __future__ import annotations

import argparse
import errno
import inspect
import json
import logging
import signal
import sys
import tempfile
from collections.abc import Sequence
from typing import Optional

from jsqa_sb.cli_parser import build_parser
from jsqa_sb.errors import JSQAError, one_line, signal_name

#: OSErrors about the user's files and disks, shown as one line; any other OSError is
#: shown as one line only when it names a file (``filename``), else it keeps its traceback.
USER_OS_ERRORS = (
    FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError
)  # fmt: skip
_USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENAMETOOLONG, errno.ELOOP}


class DeviceError(JSQAError, ValueError):
    """A ``--device`` that does not name a device this machine has."""


def _prepare(args: argparse.Namespace) -> int:
    """``prepare-jnd`` or ``prepare-nisqa``: run the preparer with the options it takes."""
    if args.command == "prepare-jnd":
        from jsqa_sb.data.prepare_jnd import prepare_jnd as prepare
    else:
        from jsqa_sb.data.prepare_nisqa import prepare_nisqa as prepare
    names = inspect.signature(prepare).parameters
    out = prepare(**{k: v for k, v in vars(args).items() if k in names})
    with open(out["report"]) as f:
        report = json.load(f)
    print(json.dumps({"counts": report["counts"], "outputs": out}, indent=2))
    if report["skipped"]:
        print(
            f"{len(report['skipped'])} file(s) left out, listed in {out['report']}", file=sys.stderr
        )
    return 0


_prepare_jnd = _prepare_nisqa = _prepare


def _build_minicorpus(args: argparse.Namespace) -> int:
    from jsqa_sb.data.minicorpus import build_all

    folders = build_all(args.out, seed=args.seed)
    print(json.dumps({k: str(v) for k, v in folders.items()}, indent=2))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from jsqa_sb.evaluation.reports import compare_runs

    print(compare_runs(args.run_a, args.run_b, dims=tuple(args.dims)))
    return 0


def _load_model(args: argparse.Namespace):
    from jsqa_sb.serving.inference import JSQA

    model = JSQA.from_hparams(
        source=args.model,
        savedir=args.savedir,
        trust_remote_code=args.trust_remote_code,
        run_opts={"device": args.device} if args.device else None,
    )
    if args.command == "score":
        model._head()  # an encoder-only model: refused once, before any recording is read
    return model


def check_device(device: str) -> None:
    """DeviceError unless ``device`` (``cpu``, ``cuda``, ``cuda:1``...) is one this machine has."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as err:
        raise DeviceError(
            f"--device {device!r} is not a device: use cpu, cuda or cuda:N ({err})"
        ) from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"--device {device}: no CUDA GPU is available here (torch "
                f"{torch.__version__}, CUDA {torch.version.cuda or 'not built in'}); "
                "use --device cpu"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise DeviceError(
                f"--device {device}: there are {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
            )
    elif dev.type != "cpu":
        backend = getattr(torch.backends, dev.type, None) or getattr(torch, dev.type, None)
        available = getattr(backend, "is_available", None)
        if available is None or not available():
            raise DeviceError(f"--device {device}: no {dev.type} device is available here")


def _score(args: argparse.Namespace) -> int:
    from jsqa_sb.serving.batch_scoring import scoring_threads

    with scoring_threads(args.threads):  # restored after: main() may run in a caller's process
        return _score_with_threads_set(args)


def _score_with_threads_set(args: argparse.Namespace) -> int:
    from jsqa_sb.serving import collection_report, timeline
    from jsqa_sb.serving.batch_scoring import check_output, list_inputs, score_paths

    # Input and output errors before the model is loaded.
    listing = list_inputs(args.inputs, column=args.column)
    if args.out is not None:
        check_output(args.out, listing.sources, listing.paths)
    if args.timeline is not None:
        timeline.check_window(args.timeline_window, args.timeline_hop)
        timeline.check_timeline_folder(args.timeline)
    if args.report is not None:
        collection_report.check_report_path(args.report)
    elif args.label is not None:
        raise JSQAError("--label goes with --report: the labels are compared in the report")
    labels = None
    if args.label is not None:
        labels = collection_report.read_labels(args.inputs, args.label, column=args.column)
    model = _load_model(args)
    if args.timeline is not None and args.timeline_window * model.sample_rate < model.min_samples:
        raise JSQAError(
            f"--timeline_window {args.timeline_window}: shorter than the minimum of "
            f"{model.min_samples / model.sample_rate:.3f} s this model needs"
        )
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or f"{tmp}/scores.csv"
        summary = score_paths(
            model,
            listing,
            out,
            resume=args.resume,
            batch_size=args.batch_size,
            max_batch_seconds=args.max_batch_seconds,
            progress=not args.no_progress,
            model_name=args.model,
        )
        if args.out is None:
            with open(out, encoding="utf-8") as f:
                sys.stdout.write(f.read())
            summary.out = "standard output"
        if args.report is not None:
            collection_report.write_report(
                out,
                model.output_names,
                args.report,
                labels=labels,
                label_name=args.label or "mos",
                model_name=args.model,
            )
    if args.timeline is not None:
        failed = {path for path, _ in summary.errors}
        timelines = timeline.write_timelines(
            model,
            [p for p in listing.paths if p not in failed],
            args.timeline,
            args.timeline_window,
            args.timeline_hop,
            progress=not args.no_progress,
        )
    print(summary.format(), file=sys.stderr)
    if args.report is not None:
        print(f"Report: {args.report}", file=sys.stderr)
    if args.timeline is not None:
        print(
            f"Timelines of {sum(not row['error'] for row in timelines)} recording(s) in "
            f"{args.timeline} (listed in its index.csv)",
            file=sys.stderr,
        )
    return 0 if summary.complete else 1


def _distance(args: argparse.Namespace) -> int:
    model = _load_model(args)
    print(f"{model.distance(args.a, args.b):.6f}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from jsqa_sb.serving.hub_export import export_model

    hub = export_model(
        args.run_folder,
        args.hub_folder,
        overwrite=args.overwrite,
        window_seconds=args.window_seconds,
        license=args.license,
    )
    print(f"Exported {args.run_folder} to {hub}; publish it with: jsqa upload {hub} OWNER/NAME")
    return 0


def _upload(args: argparse.Namespace) -> int:
    from jsqa_sb.serving.hub_upload import check_repo_id, plan_upload, upload_model

    if args.dry_run:  # the same checks and listing, no network call
        check_repo_id(args.repo_id)
        print(plan_upload(args.hub_folder, args.include).format(args.repo_id))
        print("Dry run: nothing was uploaded")
        return 0
    url = upload_model(
        args.hub_folder,
        args.repo_id,
        private=args.private,
        token=args.token,
        commit_message=args.message,
        include=args.include,
        show=lambda listing: print(listing, flush=True),  # before anything is sent
    )
    print(f"Uploaded {args.hub_folder} to {url}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from jsqa_sb.demo import run_demo

    run_demo(args.out, seed=args.seed, smoke=args.smoke)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``jsqa`` command line; return the exit status.

    A user error (:func:`is_user_error`) is printed as one line, ``jsqa: error: ...``,
    exit status 2; Ctrl-C prints ``jsqa: interrupted``, exit status 130 (128 + the
    signal's number for another signal). Any other exception is a bug and keeps its
    traceback; with ``-v`` every error does.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # SpeechBrain's start-up notes (quirks, fetching) only with -v
        logging.getLogger("speechbrain").setLevel(logging.WARNING)
    try:
        if getattr(args, "device", None):  # before reading any input or loading the model
            check_device(args.device)
        handler = "_" + args.command.replace("-", "_")
        return globals()[handler](args)  # looked up here: tests patch the handlers
    except KeyboardInterrupt as err:  # Ctrl-C, or a command's own stop on a signal
        if args.verbose:
            raise
        signum = getattr(err, "signum", signal.SIGINT)
        stopped = "interrupted" if signum == signal.SIGINT else f"stopped by {signal_name(signum)}"
        print(f"jsqa: {stopped}", file=sys.stderr)
        return 128 + int(signum)
    except Exception as err:
        if args.verbose or not is_user_error(err):
            raise
        print(f"jsqa: error: {one_line(err)}", file=sys.stderr)
        return 2


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is about the user's inputs or environment (not a bug).

    :class:`JSQAError`, and OSErrors about the user's files or disks:
    :data:`USER_OS_ERRORS`, a full or read-only disk, or any OSError that names a file.
    """
    if isinstance(err, OSError) and (err.errno in _USER_ERRNOS or err.filename is not None):
        return True
    return isinstance(err, (JSQAError, *USER_OS_ERRORS))


if __name__ == "__main__":
    sys.exit(main())
