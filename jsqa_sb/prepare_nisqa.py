"""MOS manifests from the NISQA corpus: one JSON manifest per database.

Reads ``NISQA_Corpus/NISQA_corpus_file.csv`` when present, else every
``NISQA_Corpus/<DB>/<DB>_file.csv``, and writes ``<DB>.json`` for every database
found, with, per file: ``wav`` (``{nisqa_folder}`` placeholder), ``mos``, the
dimensions ``noi, col, dis, loud`` (null where the corpus has none), ``con``, ``db``,
``duration`` and ``sample_rate`` (NISQA mixes rates; the data pipeline resamples).
``nisqa_splits.json`` says which databases are train, valid and test, and
``prepare_nisqa_report.json`` lists every row left out and why.

Authors
 * JSQA contributors 2026
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Union

import pandas as pd

from jsqa_sb.audio import AudioReadError
from jsqa_sb.prepare_utils import (
    DataPreparationError,
    PrepareRecord,
    SkipReport,
    describe_folder,
    fingerprint,
    list_files,
    scan_headers,
    write_json,
)

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]

REQUIRED_COLUMNS = ("db", "con", "filepath_deg", "mos")
DIMENSIONS = ("noi", "col", "dis", "loud")
NISQA_LAYOUT = (
    "<nisqa_folder>/NISQA_Corpus/<DB>/deg/*.wav with NISQA_corpus_file.csv or <DB>/<DB>_file.csv"
)
DEFAULT_TRAIN = ("NISQA_TRAIN_SIM", "NISQA_TRAIN_LIVE")
DEFAULT_VALID = ("NISQA_VAL_SIM", "NISQA_VAL_LIVE")
DEFAULT_TEST = ("NISQA_TEST_*",)


def prepare_nisqa(
    nisqa_folder: PathLike,
    save_folder: PathLike,
    train_dbs: Sequence[str] = DEFAULT_TRAIN,
    valid_dbs: Sequence[str] = DEFAULT_VALID,
    test_dbs: Sequence[str] = DEFAULT_TEST,
    strict: bool = False,
    num_workers: int = 8,
) -> dict:
    """Prepare per-database MOS manifests (skipped when already done with the same inputs).

    Arguments
    ---------
    nisqa_folder : str or Path
        Folder that contains ``NISQA_Corpus/``.
    save_folder : str or Path
        Where manifests, report and record are written.
    train_dbs, valid_dbs, test_dbs : sequence of str
        Database names (shell patterns allowed, e.g. ``NISQA_TEST_*``) of each split.
        Listed databases absent from the corpus are skipped with a warning.
    strict : bool
        Fail instead of skipping rows with missing or unreadable files or empty MOS.
    num_workers : int
        Threads for reading headers.

    Returns
    -------
    dict
        ``{"train": [...], "valid": [...], "test": [...]}`` manifest paths per split,
        plus ``report`` and ``splits`` (the path of ``nisqa_splits.json``).

    Raises
    ------
    DataPreparationError
        If the folder is not a NISQA corpus or a CSV lacks required columns.
    """
    save_folder = Path(save_folder)
    corpus = Path(nisqa_folder) / "NISQA_Corpus"
    csv_files = _csv_files(Path(nisqa_folder), corpus)
    deg_files = list_files(corpus, (".wav",))
    splits_cfg = {"train": list(train_dbs), "valid": list(valid_dbs), "test": list(test_dbs)}
    record = PrepareRecord(
        save_folder,
        "prepare_nisqa",
        {"splits": splits_cfg, "strict": strict},
        fingerprint(csv_files + deg_files, corpus),
    )
    splits_path = save_folder / "nisqa_splits.json"
    report_path = save_folder / "prepare_nisqa_report.json"
    if record.is_done():
        logger.info("NISQA manifests in %s are up to date, skipping preparation", save_folder)
        return _result(save_folder, json.loads(splits_path.read_text()), report_path, splits_path)
    record.invalidate()
    logger.info("Preparing NISQA manifests in %s from %s", save_folder, corpus)

    table = pd.concat([_read_csv(f) for f in csv_files], ignore_index=True)
    report = SkipReport()
    rows = _usable_rows(table, corpus, report)
    infos = scan_headers([corpus / p for p in rows["filepath_deg"]], num_workers, "Reading NISQA")
    manifests: dict[str, dict] = {str(db): {} for db in table["db"].unique()}
    for (_, row), info in zip(rows.iterrows(), infos):
        path = corpus / row["filepath_deg"]
        if isinstance(info, AudioReadError):
            report.add(path, str(info).split(": ", 1)[1], db=row["db"])
            continue
        if info.frames == 0:
            report.add(path, "empty (no audio frames)", db=row["db"])
            continue
        key = str(row["file"]) if "file" in row and _present(row["file"]) else Path(path).stem
        manifests[str(row["db"])][key] = {
            "wav": f"{{nisqa_folder}}/NISQA_Corpus/{Path(row['filepath_deg']).as_posix()}",
            "mos": float(row["mos"]),
            **{d: (float(row[d]) if d in row and _present(row[d]) else None) for d in DIMENSIONS},
            "con": str(row["con"]),
            "db": str(row["db"]),
            "duration": round(info.duration, 5),
            "sample_rate": info.sample_rate,
        }

    splits = _resolve_splits(splits_cfg, sorted(manifests))
    counts = {db: len(entries) for db, entries in sorted(manifests.items())}
    counts["skipped"] = len(report.skipped)
    counts["sample_rates"] = sorted(
        {e["sample_rate"] for m in manifests.values() for e in m.values()}
    )
    for db, entries in manifests.items():
        write_json(save_folder / f"{db}.json", entries)
    write_json(splits_path, splits)
    report.write(report_path, counts, strict)
    record.mark_done(
        [save_folder / f"{db}.json" for db in manifests] + [splits_path, report_path], counts
    )
    logger.info("NISQA manifests written: %s", json.dumps(counts))
    return _result(save_folder, splits, report_path, splits_path)


def _csv_files(folder: Path, corpus: Path) -> list[Path]:
    """The CSV files to read: the corpus file if present, else the per-database ones."""
    if not corpus.is_dir():
        raise DataPreparationError(
            f"{folder} is not a NISQA folder: expected {NISQA_LAYOUT}; " + describe_folder(folder)
        )
    corpus_csv = corpus / "NISQA_corpus_file.csv"
    if corpus_csv.is_file():
        return [corpus_csv]
    per_db = sorted(p for p in corpus.glob("*/*_file.csv") if p.name == f"{p.parent.name}_file.csv")
    if not per_db:
        raise DataPreparationError(
            f"no NISQA_corpus_file.csv and no <DB>/<DB>_file.csv in {corpus}; expected "
            f"{NISQA_LAYOUT}; " + describe_folder(corpus)
        )
    return per_db


def _read_csv(path: Path) -> pd.DataFrame:
    """Read one NISQA CSV and check its columns."""
    try:
        table = pd.read_csv(path)
    except Exception as err:  # pandas raises several parser errors
        raise DataPreparationError(f"{path}: cannot read CSV ({err})") from err
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise DataPreparationError(
            f"{path} lacks required column(s) {', '.join(missing)} "
            f"(required: {', '.join(REQUIRED_COLUMNS)}; "
            f"found: {', '.join(map(str, table.columns))})"
        )
    return table


def _usable_rows(table: pd.DataFrame, corpus: Path, report: SkipReport) -> pd.DataFrame:
    """Drop (and report) rows with an empty MOS or a missing degraded file."""
    keep = []
    for index, row in table.iterrows():
        path = corpus / str(row["filepath_deg"])
        if not _present(row["mos"]):
            report.add(path, "empty MOS", db=row["db"])
        elif not _present(row["filepath_deg"]) or not path.is_file():
            report.add(path, "file listed in the CSV does not exist", db=row["db"])
        else:
            keep.append(index)
    return table.loc[keep]


def _present(value) -> bool:
    """True for a non-empty CSV cell."""
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return str(value).strip() != ""


def _resolve_splits(cfg: dict, available: list[str]) -> dict:
    """Expand patterns to the databases present; warn about absent ones."""
    splits = {}
    for split, patterns in cfg.items():
        chosen = []
        for pattern in patterns:
            matches = fnmatch.filter(available, pattern)
            if not matches:
                logger.warning(
                    "NISQA %s database %s not found in the corpus: skipped", split, pattern
                )
            chosen += [m for m in matches if m not in chosen]
        splits[split] = chosen
    return splits


def _result(save_folder: Path, splits: dict, report_path: Path, splits_path: Path) -> dict:
    out = {split: [str(save_folder / f"{db}.json") for db in dbs] for split, dbs in splits.items()}
    out.update(report=str(report_path), splits=str(splits_path))
    return out
