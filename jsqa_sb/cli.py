"""The ``jsqa`` command line.

Each sub-command is a thin layer over a package function; errors about the user's
data come out as one clear line (exit status 2), not a traceback.

Authors
 * JSQA contributors 2026
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Optional

from jsqa_sb.errors import JSQAError, one_line, signal_name

logger = logging.getLogger("jsqa_sb")

#: OSErrors about the user's files and disks, shown as one line; any other OSError is
#: shown as one line only when it names a file (``filename``), else it keeps its traceback.
USER_OS_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)
_USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENAMETOOLONG, errno.ELOOP}


class DeviceError(JSQAError, ValueError):
    """A ``--device`` that does not name a device this machine has."""


def _keywords(func, args: argparse.Namespace) -> dict:
    """The options of ``args`` that ``func`` takes as keyword arguments (same names)."""
    import inspect

    names = inspect.signature(func).parameters
    return {k: v for k, v in vars(args).items() if k in names and k not in ("command", "func")}


def _prepare_jnd(args: argparse.Namespace) -> int:
    from jsqa_sb.prepare_jnd import prepare_jnd

    out = prepare_jnd(**_keywords(prepare_jnd, args))
    _print_summary(out["report"], out)
    return 0


def _prepare_nisqa(args: argparse.Namespace) -> int:
    from jsqa_sb.prepare_nisqa import prepare_nisqa

    out = prepare_nisqa(**_keywords(prepare_nisqa, args))
    _print_summary(out["report"], out)
    return 0


def _build_minicorpus(args: argparse.Namespace) -> int:
    from jsqa_sb.minicorpus import build_all

    folders = build_all(args.out, seed=args.seed)
    print(json.dumps({k: str(v) for k, v in folders.items()}, indent=2))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from jsqa_sb.reports import compare_runs

    print(compare_runs(args.run_a, args.run_b, dims=tuple(args.dims)))
    return 0


def _load_model(args: argparse.Namespace):
    from jsqa_sb.inference import JSQA

    run_opts = {"device": args.device} if args.device else None
    model = JSQA.from_hparams(
        source=args.model,
        savedir=args.savedir,
        trust_remote_code=args.trust_remote_code,
        run_opts=run_opts,
    )
    if args.command == "score":
        model._head()  # an encoder-only model: refused once, before any recording is read
    return model


def check_device(device: str) -> None:
    """Check that ``device`` (``cpu``, ``cuda``, ``cuda:1``, ...) is one this machine has.

    Arguments
    ---------
    device : str
        A PyTorch device string, as ``--device`` takes it.

    Raises
    ------
    DeviceError
        If ``device`` is not a device string, or names a device that is not available
        (no GPU, or a GPU index beyond the ones there are); the message says which.
    """
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as err:
        raise DeviceError(
            f"--device {device!r} is not a device: use cpu, cuda or cuda:N ({err})"
        ) from err
    if dev.type == "cpu":
        return
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
        return
    backend = getattr(torch.backends, dev.type, None) or getattr(torch, dev.type, None)
    available = getattr(backend, "is_available", None)
    if available is None or not available():
        raise DeviceError(f"--device {device}: no {dev.type} device is available here")


def _score(args: argparse.Namespace) -> int:
    from jsqa_sb.batch_scoring import scoring_threads

    with scoring_threads(args.threads):  # restored after: main() may run in a caller's process
        return _score_with_threads_set(args)


def _score_with_threads_set(args: argparse.Namespace) -> int:
    import tempfile

    from jsqa_sb.batch_scoring import check_output, list_inputs, score_paths

    # Input and output errors before the model is loaded.
    listing = list_inputs(args.inputs, column=args.column)
    if args.out is not None:
        check_output(args.out, listing.sources, listing.paths)
    if args.timeline is not None:
        from jsqa_sb.timeline import check_timeline_folder, check_window

        check_window(args.timeline_window, args.timeline_hop)
        check_timeline_folder(args.timeline)
    labels = None
    if args.label is not None and args.report is None:
        raise JSQAError("--label goes with --report: the labels are compared in the report")
    if args.report is not None:
        from jsqa_sb.collection_report import check_report_path, read_labels

        check_report_path(args.report)
        if args.label is not None:
            labels = read_labels(args.inputs, args.label, column=args.column)
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
            from jsqa_sb.collection_report import write_report

            write_report(
                out,
                model.output_names,
                args.report,
                labels=labels,
                label_name=args.label or "mos",
                model_name=args.model,
            )
    if args.timeline is not None:
        from jsqa_sb.timeline import write_timelines

        failed = {path for path, _ in summary.errors}
        timelines = write_timelines(
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
    from jsqa_sb.hub_export import export_model

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
    from jsqa_sb.hub_upload import check_repo_id, plan_upload, upload_model

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


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--savedir",
        default=None,
        help="where a hub model's files are collected (default: the hub cache)",
    )
    p.add_argument("--device", default=None, help="e.g. cpu, cuda, cuda:1 (default: cpu)")
    p.add_argument(
        "--trust-remote-code",
        "--trust_remote_code",
        dest="trust_remote_code",
        action="store_true",
        help="load a model whose hyperparams.yaml creates anything but the objects jsqa "
        "export writes (only for models you trust)",
    )


def _positive_int(text: str) -> int:
    """An argparse type: a positive integer (``--threads``)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return value


def _print_summary(report_path: str, outputs: dict) -> None:
    with open(report_path) as f:
        report = json.load(f)
    print(json.dumps({"counts": report["counts"], "outputs": outputs}, indent=2))
    if report["skipped"]:
        print(
            f"{len(report['skipped'])} file(s) left out, listed in {report_path}", file=sys.stderr
        )


def build_parser() -> argparse.ArgumentParser:
    """Return the ``jsqa`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="jsqa", description="JSQA speech quality assessment for SpeechBrain."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare-jnd", help="JND-pair manifests from LibriSpeech + CHiME-3")
    p.add_argument("--librispeech_folder", required=True, help="folder containing LibriSpeech/")
    p.add_argument("--chime3_folder", required=True, help="folder containing CHiME3/")
    p.add_argument("--save_folder", required=True, help="where the manifests go")
    p.add_argument("--train_subsets", nargs="+", default=["train-clean-100"])
    p.add_argument("--valid_subsets", nargs="+", default=["dev-clean"])
    p.add_argument("--channel", type=int, default=1, help="CHiME-3 background channel")
    p.add_argument(
        "--valid_noise_fraction",
        type=float,
        default=0.25,
        help="fraction of each environment's sessions held out for validation",
    )
    p.add_argument(
        "--valid_noise_sessions",
        nargs="+",
        default=None,
        help="explicit validation sessions, e.g. 150204_020",
    )
    p.add_argument("--segment_seconds", type=float, default=3.0)
    p.add_argument("--views_per_group", type=int, default=4)
    p.add_argument("--snr_min", type=float, default=-5.0)
    p.add_argument("--snr_max", type=float, default=30.0)
    p.add_argument("--jnd_db", type=float, default=3.0)
    p.add_argument("--neg_margin_db", type=float, default=None, help="default: 2 * jnd_db")
    p.add_argument("--min_clean_seconds", type=float, default=1.0)
    p.add_argument("--min_noise_seconds", type=float, default=1.0)
    p.add_argument(
        "--check_silence",
        action="store_true",
        help="decode every clean file to leave out silent ones (slower)",
    )
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--strict", action="store_true", help="fail on any unusable file")
    p.add_argument("--num_workers", type=int, default=8)
    p.set_defaults(func=_prepare_jnd)

    p = sub.add_parser("prepare-nisqa", help="MOS manifests from the NISQA corpus")
    p.add_argument("--nisqa_folder", required=True, help="folder containing NISQA_Corpus/")
    p.add_argument("--save_folder", required=True, help="where the manifests go")
    p.add_argument("--train_dbs", nargs="+", default=["NISQA_TRAIN_SIM", "NISQA_TRAIN_LIVE"])
    p.add_argument("--valid_dbs", nargs="+", default=["NISQA_VAL_SIM", "NISQA_VAL_LIVE"])
    p.add_argument(
        "--test_dbs", nargs="+", default=["NISQA_TEST_*"], help="names or shell patterns"
    )
    p.add_argument("--strict", action="store_true", help="fail on any unusable row")
    p.add_argument("--num_workers", type=int, default=8)
    p.set_defaults(func=_prepare_nisqa)

    p = sub.add_parser(
        "build-minicorpus", help="write miniature LibriSpeech, CHiME-3 and NISQA corpora"
    )
    p.add_argument("--out", required=True, help="folder to write them into")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_build_minicorpus)
    p = sub.add_parser("compare", help="side-by-side test metrics of two fine-tuning runs")
    p.add_argument("run_a", help="output folder of a run (with results.json)")
    p.add_argument("run_b", help="output folder of the other run")
    p.add_argument("--dims", nargs="+", default=["mos"], help="dimensions to show")
    p.set_defaults(func=_compare)

    p = sub.add_parser("score", help="score recordings with a trained model")
    p.add_argument("model", help="a model folder (from jsqa export) or a hub id")
    p.add_argument("inputs", nargs="+", help="audio files, folders (recursive) or CSV files")
    p.add_argument("--out", default=None, help="scores.csv or scores.json (default: stdout, CSV)")
    p.add_argument("--column", default="path", help="the path column of CSV inputs")
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip inputs already scored in --out (refused if another model wrote it)",
    )
    p.add_argument("--batch_size", type=int, default=16, help="recordings per batch")
    p.add_argument("--max_batch_seconds", type=float, default=160.0, help="audio seconds per batch")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--timeline",
        default=None,
        metavar="FOLDER",
        help="also write each recording's scores over time (CSV and PNG) into FOLDER",
    )
    p.add_argument(
        "--timeline_window", type=float, default=3.0, help="timeline window, seconds (3.0)"
    )
    p.add_argument(
        "--timeline_hop", type=float, default=1.0, help="timeline hop between windows, s (1.0)"
    )
    p.add_argument(
        "--report",
        default=None,
        metavar="FILE",
        help="also write a report of the collection: report.html or report.md",
    )
    p.add_argument(
        "--label",
        default=None,
        metavar="COLUMN",
        help="with --report: compare the scores with this column of the input CSV (e.g. mos)",
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="torch CPU threads (default: the CPUs other processes leave free, at least 1)",
    )
    _add_model_arguments(p)
    p.set_defaults(func=_score)

    p = sub.add_parser("distance", help="quality distance between two recordings")
    p.add_argument("a", help="first recording")
    p.add_argument("b", help="second recording")
    p.add_argument("--model", required=True, help="a model folder or a hub id")
    _add_model_arguments(p)
    p.set_defaults(func=_distance)

    p = sub.add_parser("export", help="a training run -> a SpeechBrain-hub model folder")
    p.add_argument("run_folder", help="output folder of a fine-tuning or pretraining run")
    p.add_argument("hub_folder", help="the model folder to write")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier export in hub_folder (whole: no stale file stays)",
    )
    p.add_argument("--window_seconds", type=float, default=10.0, help="window for long recordings")
    p.add_argument("--license", default="apache-2.0", help="license of the model card")
    p.set_defaults(func=_export)

    p = sub.add_parser("upload", help="publish a model folder on the Hugging Face hub")
    p.add_argument("hub_folder", help="a folder written by jsqa export")
    p.add_argument("repo_id", help="OWNER/NAME on the hub (created if needed)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--token", default=None, help="default: huggingface_hub's (HF_TOKEN, login)")
    p.add_argument("--message", default=None, help="commit message")
    p.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="NAME",
        help="also publish this file of the folder (repeatable); by default only the "
        "model's own files are, and any other file stops the upload",
    )
    p.add_argument(
        "--dry_run",
        "--dry-run",
        dest="dry_run",
        action="store_true",
        help="list the files that would be published, and stop",
    )
    p.set_defaults(func=_upload)

    from jsqa_sb.demo import add_demo_arguments

    p = sub.add_parser("demo", help="the whole pipeline on built-in miniature corpora")
    add_demo_arguments(p)
    p.set_defaults(func=_demo)

    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``jsqa`` command line; return the exit status.

    An error about the user's inputs, settings or environment (a :class:`JSQAError`, or
    an OSError about their files: see :func:`is_user_error`) is printed as one line,
    ``jsqa: error: ...``, with exit status 2; Ctrl-C prints ``jsqa: interrupted`` and
    exits 130 (128 + the signal's number when a command stops on another signal, e.g.
    143 for ``jsqa demo`` on SIGTERM). Any other exception is a bug and keeps its
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
        return args.func(args)
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

    :class:`JSQAError` (the project's errors), and OSErrors about the user's files or
    disks: :data:`USER_OS_ERRORS`, a full or read-only disk, or any OSError that names
    a file. Anything else (a ``ValueError`` or ``TypeError`` from inside the code) is
    a bug and must keep its traceback.
    """
    if isinstance(err, JSQAError):
        return True
    if isinstance(err, OSError):
        return (
            isinstance(err, USER_OS_ERRORS) or err.errno in _USER_ERRNOS or err.filename is not None
        )
    return False


if __name__ == "__main__":
    sys.exit(main())
