"""MOS manifests from the NISQA corpus: one JSON manifest per database.

Reads ``NISQA_Corpus/NISQA_corpus_file.csv``, else every ``<DB>/<DB>_file.csv``, and
writes ``<DB>.json`` (per file: ``wav``, ``mos``, ``noi, col, dis, loud`` or null,
``con``, ``db``, ``duration``, ``sample_rate``), ``nisqa_splits.json``,
``prepare_nisqa_report.json`` (every row left out, and why) and, from
``NISQA_corpus_con.csv`` when present, ``conditions.json`` (``{db: {con: scores}}``,
the per-condition truth NISQA's own evaluation uses).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath

import pandas as pd

from jsqa_sb.audio import AudioReadError
from jsqa_sb.common import NISQA_DIMENSIONS, PathLike
from jsqa_sb.data.prepare_utils import (
    DataPreparationError,
    PrepareRecord,
    SkipReport,
    describe_folder,
    fingerprint,
    list_files,
    make_save_folder,
    scan_headers,
    write_json,
)

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("db", "con", "filepath_deg", "mos")
DIMENSIONS = NISQA_DIMENSIONS[1:]
LABEL_MIN, LABEL_MAX = 1.0, 5.0  # the absolute category rating scale of MOS and dimensions
NISQA_LAYOUT = (
    "<nisqa_folder>/NISQA_Corpus/<DB>/deg/*.wav with NISQA_corpus_file.csv or <DB>/<DB>_file.csv"
)
#: Per-condition true scores of NISQA_corpus_con.csv, when the corpus has it.
CONDITIONS_FILE = "conditions.json"
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

    ``nisqa_folder`` holds ``NISQA_Corpus/``. The splits' databases may be shell
    patterns (``NISQA_TEST_*``); absent ones are skipped with a warning. ``strict``:
    fail instead of skipping unusable rows. ``num_workers``: threads reading headers.
    Returns the manifest paths of each split, and ``report`` and ``splits`` (the path of
    ``nisqa_splits.json``). :class:`DataPreparationError` if the folder is not a NISQA
    corpus or a CSV lacks required columns.
    """
    corpus = Path(nisqa_folder) / "NISQA_Corpus"
    csv_files = _csv_files(Path(nisqa_folder))
    con_csv = corpus / "NISQA_corpus_con.csv"
    save_folder = make_save_folder(save_folder)
    splits_cfg = {"train": list(train_dbs), "valid": list(valid_dbs), "test": list(test_dbs)}
    inputs = csv_files + [con_csv] * con_csv.is_file() + list_files(corpus, (".wav",))
    options = {"splits": splits_cfg, "strict": strict}
    record = PrepareRecord(save_folder, "prepare_nisqa", options, fingerprint(inputs, corpus))
    splits_path = save_folder / "nisqa_splits.json"
    report_path = save_folder / "prepare_nisqa_report.json"
    if record.is_done():
        logger.info("NISQA manifests in %s are up to date, skipping preparation", save_folder)
        return _result(save_folder, json.loads(splits_path.read_text()), report_path, splits_path)
    record.invalidate()
    logger.info("Preparing NISQA manifests in %s from %s", save_folder, corpus)

    table = pd.concat([_read_csv(f) for f in csv_files], ignore_index=True)
    if table.empty:
        raise DataPreparationError(
            f"no NISQA rows: {', '.join(map(str, csv_files))} hold(s) a header but no rows"
        )
    report = SkipReport()
    rows = _usable_rows(table, corpus, report)
    infos = scan_headers([row["path"] for row in rows], num_workers, "Reading NISQA")
    manifests: dict[str, dict] = {db: {} for db in table["db"].str.strip().unique() if db}
    for row, info in zip(rows, infos):
        if isinstance(info, AudioReadError):
            report.add(row["path"], str(info).split(": ", 1)[1], db=row["db"])
            continue
        if info.frames == 0:
            report.add(row["path"], "empty (no audio frames)", db=row["db"])
            continue
        manifests[row["db"]][row["key"]] = {
            "wav": f"{{nisqa_folder}}/NISQA_Corpus/{Path(row['filepath_deg']).as_posix()}",
            **{label: row[label] for label in ("mos", *DIMENSIONS, "con", "db")},
            "duration": round(info.duration, 5),
            "sample_rate": info.sample_rate,
        }
    for db, entries in manifests.items():
        if not entries:
            logger.warning("NISQA database %s has no usable row (see %s)", db, report_path)

    splits = _resolve_splits(splits_cfg, sorted(manifests))
    rates = {entry["sample_rate"] for m in manifests.values() for entry in m.values()}
    counts = {db: len(entries) for db, entries in sorted(manifests.items())}
    counts.update(skipped=len(report.skipped), sample_rates=sorted(rates))
    report.write(report_path, counts, strict)  # raises in strict mode: no manifest written
    for db, entries in manifests.items():
        write_json(save_folder / f"{db}.json", entries)
    write_json(splits_path, splits)
    outputs = [save_folder / f"{db}.json" for db in manifests] + [splits_path, report_path]
    conditions_path = save_folder / CONDITIONS_FILE
    conditions_path.unlink(missing_ok=True)
    if con_csv.is_file():
        write_json(conditions_path, _condition_scores(con_csv))
        outputs.append(conditions_path)
    record.mark_done(outputs, counts)
    logger.info("NISQA manifests written: %s", json.dumps(counts))
    return _result(save_folder, splits, report_path, splits_path)


def corpus_table(nisqa_folder: PathLike) -> pd.DataFrame:
    """Every row of the NISQA CSVs that :func:`prepare_nisqa` reads, as text."""
    return pd.concat([_read_csv(f) for f in _csv_files(Path(nisqa_folder))], ignore_index=True)


def file_key(row: dict) -> str:
    """The id of a NISQA row within its database: ``file``, else the file name's stem."""
    return (row.get("file") or "").strip() or Path(row["filepath_deg"].strip()).stem


def _csv_files(folder: Path) -> list[Path]:
    """The CSV files to read: the corpus file if present, else the per-database ones."""
    corpus = folder / "NISQA_Corpus"
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


def _read_csv(path: Path, required: Sequence[str] = REQUIRED_COLUMNS) -> pd.DataFrame:
    """Read one NISQA CSV as text (numbers are parsed per row) and check its columns."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as err:  # pandas raises several parser errors
        raise DataPreparationError(f"{path}: cannot read CSV ({err})") from err
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataPreparationError(
            f"{path} lacks required column(s) {', '.join(missing)} "
            f"(required: {', '.join(required)}; "
            f"found: {', '.join(map(str, table.columns))})"
        )
    if table.empty:
        logger.warning("%s has a header but no rows", path)
    table["_csv"] = str(path)
    table["_line"] = range(2, len(table) + 2)  # line numbers in the file (1 is the header)
    return table


_EMPTY = {"", "nan", "na", "n/a", "none", "null"}


def _usable_rows(table: pd.DataFrame, corpus: Path, report: SkipReport) -> list:
    """Per usable row ``db, con, key, filepath_deg, path`` and the labels; report the rest."""
    rows, seen = [], {}
    for record in table.to_dict("records"):
        where = f"{record['_csv']} line {record['_line']}"
        row = {"db": record["db"].strip(), "filepath_deg": record["filepath_deg"].strip()}
        path = row["path"] = corpus / row["filepath_deg"]
        row["con"] = record["con"].strip() or None
        row["key"] = file_key(record)
        reason = _row_problem(record, row)
        if reason is None and not path.is_file():
            reason = "file listed in the CSV does not exist"
        if reason:
            report.add(path, f"{reason} ({where})", db=row["db"])
            continue
        if (row["db"], row["key"]) in seen:
            raise DataPreparationError(
                f"duplicate file id '{row['key']}' in {row['db']}: {seen[row['db'], row['key']]} "
                f"and {where} (file ids must be unique within a database)"
            )
        seen[row["db"], row["key"]] = where
        rows.append(row)
    return rows


def _row_problem(record: dict, row: dict):
    """Parse the labels of one row into ``row``; return why it is unusable, or None."""
    if not row["db"]:
        return "empty db"
    if not row["filepath_deg"]:
        return "empty filepath_deg"
    relative = PurePosixPath(row["filepath_deg"].replace("\\", "/"))
    if relative.is_absolute() or PureWindowsPath(row["filepath_deg"]).drive:
        return f"filepath_deg must be relative to NISQA_Corpus/, got {row['filepath_deg']!r}"
    if ".." in relative.parts:
        return f"filepath_deg must stay inside NISQA_Corpus/, got {row['filepath_deg']!r}"
    for label in ("mos", *DIMENSIONS):
        text = str(record.get(label, "")).strip()
        if text.lower() in _EMPTY:
            row[label] = None
            if label == "mos":
                return "empty MOS"
            continue
        try:
            row[label] = float(text)
        except ValueError:
            return f"{label} is not a number: {text!r}"
        if not math.isfinite(row[label]):
            return f"{label} is not finite: {text!r}"
        if not LABEL_MIN <= row[label] <= LABEL_MAX:
            return f"{label} {text} is outside {LABEL_MIN:g}..{LABEL_MAX:g}"
    return None


def _condition_scores(path: Path) -> dict:
    """``{db: {con: {dim: score}}}`` from ``NISQA_corpus_con.csv`` (rows with a valid MOS)."""
    table = _read_csv(path, required=("db", "con", "mos"))
    scores: dict = {}
    for record in table.to_dict("records"):
        row = {"db": record["db"].strip(), "filepath_deg": "con"}
        con = record["con"].strip()
        if not row["db"] or not con or _row_problem(record, row) is not None:
            logger.warning("%s line %s: unusable condition row, ignored", path, record["_line"])
            continue
        scores.setdefault(row["db"], {})[con] = {d: row[d] for d in ("mos", *DIMENSIONS)}
    return scores


def _resolve_splits(cfg: dict, available: list[str]) -> dict:
    """Expand patterns to the databases present; warn about absent or shared ones."""
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
    for first, second in (("train", "valid"), ("train", "test"), ("valid", "test")):
        for db in sorted(set(splits[first]) & set(splits[second])):
            logger.warning("NISQA database %s is in both the %s and %s splits", db, first, second)
    return splits


def _result(save_folder: Path, splits: dict, report_path: Path, splits_path: Path) -> dict:
    out = {split: [str(save_folder / f"{db}.json") for db in dbs] for split, dbs in splits.items()}
    out.update(report=str(report_path), splits=str(splits_path))
    return out
