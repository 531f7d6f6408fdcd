"""The ``jsqa`` argument parser; :mod:`jsqa_sb.cli` runs sub-command ``a-b`` with ``_a_b``."""

from __future__ import annotations

import argparse


def _positive_int(text: str) -> int:
    """An argparse type: a positive integer (``--threads``)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return value


#: ``prepare-jnd`` options after the required folders (those of ``prepare_jnd``):
#: name, type (``+``: a list of str, ``flag``: a switch), default, help.
_JND_OPTIONS = (
    ("train_subsets", "+", ["train-clean-100"], None),
    ("valid_subsets", "+", ["dev-clean"], None),
    ("channel", int, 1, "CHiME-3 background channel"),
    ("valid_noise_fraction", float, 0.25,
     "fraction of each environment's sessions held out for validation"),
    ("valid_noise_sessions", "+", None, "explicit validation sessions, e.g. 150204_020"),
    ("segment_seconds", float, 3.0, None),
    ("views_per_group", int, 4, None),
    ("snr_min", float, -5.0, None),
    ("snr_max", float, 30.0, None),
    ("jnd_db", float, 3.0, None),
    ("neg_margin_db", float, None, "default: 2 * jnd_db"),
    ("min_clean_seconds", float, 1.0, None),
    ("min_noise_seconds", float, 1.0, None),
    ("check_silence", "flag", False, "decode every clean file to leave out silent ones (slower)"),
    ("seed", int, 1234, None),
    ("strict", "flag", False, "fail on any unusable file"),
    ("num_workers", int, 8, None),
)  # fmt: skip


#: ``prepare-nisqa`` options after the required folders (those of ``prepare_nisqa``).
_NISQA_OPTIONS = (
    ("train_dbs", "+", ["NISQA_TRAIN_SIM", "NISQA_TRAIN_LIVE"], None),
    ("valid_dbs", "+", ["NISQA_VAL_SIM", "NISQA_VAL_LIVE"], None),
    ("test_dbs", "+", ["NISQA_TEST_*"], "names or shell patterns"),
    ("strict", "flag", False, "fail on any unusable row"),
    ("num_workers", int, 8, None),
)  # fmt: skip

#: ``score`` options after the model and the inputs.
_SCORE_OPTIONS = (
    ("out", str, None, "scores.csv or scores.json (default: stdout, CSV)"),
    ("column", str, "path", "the path column of CSV inputs"),
    ("resume", "flag", False,
     "skip inputs already scored in --out (refused if another model wrote it)"),
    ("batch_size", int, 16, "recordings per batch"),
    ("max_batch_seconds", float, 160.0, "audio seconds per batch"),
    ("no_progress", "flag", False, "no progress bar"),
    ("timeline", str, None,
     "also write each recording's scores over time (CSV and PNG) into FOLDER", "FOLDER"),
    ("timeline_window", float, 3.0, "timeline window, seconds (3.0)"),
    ("timeline_hop", float, 1.0, "timeline hop between windows, s (1.0)"),
    ("report", str, None, "also write a report of the collection: report.html or report.md",
     "FILE"),
    ("label", str, None,
     "with --report: compare the scores with this column of the input CSV (e.g. mos)", "COLUMN"),
    ("threads", _positive_int, None,
     "torch CPU threads (default: the CPUs other processes leave free, at least 1)"),
)  # fmt: skip


def _add_options(p: argparse.ArgumentParser, options) -> None:
    """Add ``--name`` options from (name, type, default, help[, metavar]) rows."""
    for name, kind, default, text, *metavar in options:
        if kind == "flag":
            p.add_argument(f"--{name}", action="store_true", help=text)
        elif kind == "+":
            p.add_argument(f"--{name}", nargs="+", default=default, help=text)
        else:
            p.add_argument(
                f"--{name}", type=kind, default=default, help=text, metavar=(metavar or [None])[0]
            )


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--savedir", help="where a hub model's files are collected (default: the hub cache)"
    )
    p.add_argument("--device", help="e.g. cpu, cuda, cuda:1 (default: cpu)")
    p.add_argument(
        "--trust-remote-code",
        "--trust_remote_code",
        dest="trust_remote_code",
        action="store_true",
        help="load a model whose hyperparams.yaml creates anything but the objects jsqa "
        "export writes (only for models you trust)",
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the ``jsqa`` argument parser (``command``: the sub-command given)."""
    parser = argparse.ArgumentParser(
        prog="jsqa", description="JSQA speech quality assessment for SpeechBrain."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare-jnd", help="JND-pair manifests from LibriSpeech + CHiME-3")
    p.add_argument("--librispeech_folder", required=True, help="folder containing LibriSpeech/")
    p.add_argument("--chime3_folder", required=True, help="folder containing CHiME3/")
    p.add_argument("--save_folder", required=True, help="where the manifests go")
    _add_options(p, _JND_OPTIONS)

    p = sub.add_parser("prepare-nisqa", help="MOS manifests from the NISQA corpus")
    p.add_argument("--nisqa_folder", required=True, help="folder containing NISQA_Corpus/")
    p.add_argument("--save_folder", required=True, help="where the manifests go")
    _add_options(p, _NISQA_OPTIONS)

    p = sub.add_parser(
        "build-minicorpus", help="write miniature LibriSpeech, CHiME-3 and NISQA corpora"
    )
    p.add_argument("--out", required=True, help="folder to write them into")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("compare", help="side-by-side test metrics of two fine-tuning runs")
    p.add_argument("run_a", help="output folder of a run (with results.json)")
    p.add_argument("run_b", help="output folder of the other run")
    p.add_argument("--dims", nargs="+", default=["mos"], help="dimensions to show")

    p = sub.add_parser("score", help="score recordings with a trained model")
    p.add_argument("model", help="a model folder (from jsqa export) or a hub id")
    p.add_argument("inputs", nargs="+", help="audio files, folders (recursive) or CSV files")
    _add_options(p, _SCORE_OPTIONS)
    _add_model_arguments(p)

    p = sub.add_parser("distance", help="quality distance between two recordings")
    p.add_argument("a", help="first recording")
    p.add_argument("b", help="second recording")
    p.add_argument("--model", required=True, help="a model folder or a hub id")
    _add_model_arguments(p)

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

    p = sub.add_parser("upload", help="publish a model folder on the Hugging Face hub")
    p.add_argument("hub_folder", help="a folder written by jsqa export")
    p.add_argument("repo_id", help="OWNER/NAME on the hub (created if needed)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--token", help="default: huggingface_hub's (HF_TOKEN, login)")
    p.add_argument("--message", help="commit message")
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

    from jsqa_sb.demo import add_demo_arguments

    p = sub.add_parser("demo", help="the whole pipeline on built-in miniature corpora")
    add_demo_arguments(p)
    return parser
