"""The ``jsqa`` command line.

Each sub-command is a thin layer over a package function; errors about the user's
data come out as one clear line (exit status 2), not a traceback.

Authors
 * JSQA contributors 2026
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Optional

logger = logging.getLogger("jsqa_sb")


def _prepare_jnd(args: argparse.Namespace) -> int:
    from jsqa_sb.prepare_jnd import prepare_jnd

    out = prepare_jnd(
        args.librispeech_folder,
        args.chime3_folder,
        args.save_folder,
        train_subsets=args.train_subsets,
        valid_subsets=args.valid_subsets,
        channel=args.channel,
        valid_noise_fraction=args.valid_noise_fraction,
        valid_noise_sessions=args.valid_noise_sessions,
        segment_seconds=args.segment_seconds,
        views_per_group=args.views_per_group,
        snr_min=args.snr_min,
        snr_max=args.snr_max,
        jnd_db=args.jnd_db,
        neg_margin_db=args.neg_margin_db,
        min_clean_seconds=args.min_clean_seconds,
        min_noise_seconds=args.min_noise_seconds,
        check_silence=args.check_silence,
        seed=args.seed,
        strict=args.strict,
        num_workers=args.num_workers,
    )
    _print_summary(out["report"], out)
    return 0


def _prepare_nisqa(args: argparse.Namespace) -> int:
    from jsqa_sb.prepare_nisqa import prepare_nisqa

    out = prepare_nisqa(
        args.nisqa_folder,
        args.save_folder,
        train_dbs=args.train_dbs,
        valid_dbs=args.valid_dbs,
        test_dbs=args.test_dbs,
        strict=args.strict,
        num_workers=args.num_workers,
    )
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
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``jsqa`` command line; return the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from jsqa_sb.prepare_utils import DataPreparationError  # after parsing: --help stays fast

    try:
        return args.func(args)
    except (DataPreparationError, OSError, ValueError) as err:
        print(f"jsqa: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
