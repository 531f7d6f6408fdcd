#!/usr/bin/env python3
"""Where pretraining helps: a label-budget experiment's test PCC per condition family.

Splits the test files of a finished ``label_budget.py`` output folder by the
degradations of their NISQA condition (``con_description`` of the corpus CSV, a
``;``-separated list such as ``noise=...@5dB; codec=...``) and writes label_budget's
table per family into the folder (``families.md``, ``families.csv``), and per
degradation (``degradations.md``, ``degradations.csv``: the files whose condition
contains clipping, a codec, a band limit or packet loss, with or without other
degradations; a file counts for each it contains):

    python condition_families.py results/label_budget --nisqa_folder=/d

Families: ``noise`` (additive noise only; a gain change or the storage rate allowed),
``other`` (any of clipping, a codec, a band limit or packet loss, with or without noise),
``clean`` (counted, not scored) and ``unknown`` (a degradation this script does not
know: scored apart, never guessed).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd
from label_budget_tables import _diff, _p, mean_sd, summarise, table_text

from jsqa_sb.data.prepare_nisqa import corpus_table, file_key
from jsqa_sb.errors import JSQAError

#: The degradations of a description, by the name before its ``=`` or ``@``.
NEUTRAL = {"clean", "gain", "stored"}  # no degradation: a level or storage-rate change
NOISE = {"noise"}
OTHER = {"clip", "codec", "lowpass", "highpass", "bandpass", "packetloss", "bandwidth"}
#: The families that are scored (``clean`` is only counted).
FAMILIES = ("noise", "other", "unknown")
#: The degradations scored one by one: NISQA's name -> the table's.
DEGRADATIONS = {"clip": "clipping", "codec": "codec", "packetloss": "packet loss"}
DEGRADATIONS.update(dict.fromkeys(("lowpass", "highpass", "bandpass", "bandwidth"), "band limit"))


def _names(description: str) -> set[str]:
    """The degradation names of a description, without the neutral ones."""
    items = str(description or "").split(";")
    return {re.split(r"[=@]", item.strip())[0].strip().lower() for item in items} - NEUTRAL - {""}


def degradations(description: str) -> set[str]:
    """The degradations of :data:`DEGRADATIONS` that a description contains.

    Example
    -------
    >>> sorted(degradations("noise=STR:a.wav@26.0dB; lowpass=7000Hz; clip=3dB"))
    ['band limit', 'clipping']
    """
    return {DEGRADATIONS[name] for name in _names(description) if name in DEGRADATIONS}


def family(description: str) -> str:
    """The family of a NISQA condition description.

    Example
    -------
    >>> family("noise=CAF:University2.wav@0.9dB"), family("clip=9.1dB_below_peak")
    ('noise', 'other')
    >>> family("noise=STR:a.wav@26.0dB; lowpass=7000Hz"), family("clean; gain=-6dB")
    ('other', 'clean')
    >>> family("noise=CAF:a.wav@5dB; reverb=0.6s")
    'unknown'
    """
    names = _names(description)
    if names - NOISE - OTHER:
        return "unknown"
    if names & OTHER:
        return "other"
    return "noise" if names else "clean"


def file_descriptions(nisqa_folder: str, test_db: str) -> dict[str, str]:
    """Test file -> its condition description, from the corpus CSV."""
    table = corpus_table(nisqa_folder)
    if "con_description" not in table.columns:
        raise JSQAError(f"{nisqa_folder}: the corpus CSV has no con_description column")
    rows = [row for row in table.to_dict("records") if str(row["db"]).strip() == test_db]
    if not rows:
        raise JSQAError(f"{nisqa_folder}: no file of {test_db} in the corpus CSV")
    return {file_key(row): row["con_description"] for row in rows}


def family_rows(
    runs: pd.DataFrame, members: dict[str, set], names: tuple, test_db: str, folder: Path
) -> pd.DataFrame:
    """One row per run and family (of ``names``), with its files' PCC as ``<test_db>_pcc``.

    ``members``: test file -> the families it belongs to.
    """
    out = []
    present = set().union(*members.values())
    for run in runs.to_dict("records"):
        predictions = pd.read_csv(folder / run["folder"] / f"predictions_{test_db}.csv")
        belongs = [members.get(f, set()) for f in predictions["file"].astype(str)]
        for name in (name for name in names if name in present):
            part = predictions[[name in families for families in belongs]]
            pcc = part["true_mos"].corr(part["pred_mos"]) if len(part) > 2 else float("nan")
            out.append({**run, "family": name, "files": len(part), f"{test_db}_pcc": pcc})
    return pd.DataFrame(out)


def table(rows: pd.DataFrame, chosen: pd.DataFrame, test_db: str) -> pd.DataFrame:
    """label_budget's summary (mean, sd, paired difference to scratch) per family."""
    parts = []
    for name, group in rows.groupby("family"):
        part = summarise(group.drop(columns="family"), chosen, test_db)
        parts.append(part.assign(family=name, files=int(group["files"].iloc[0])))
    return pd.concat(parts).sort_values(["budget", "family", "arm"])


def markdown(summary: pd.DataFrame, test_db: str, what: str = "condition family") -> str:
    """families.md (or, ``what="degradation"``, degradations.md)."""
    column = "family" if what == "condition family" else f"{what} (files containing it)"
    columns = {"labelled files": ":", column: "", "files": ":", "arm": "", "seeds": ":"}
    columns.update({"PCC mean ± sd": "", "vs scratch (paired mean ± sd, wins)": ""})
    columns["t-test p"] = ":"
    rows = [
        [row["budget"], row["family"], row["files"], row["arm"], row["seeds"]]
        + [mean_sd(row["pcc_mean"], row["pcc_sd"]), _diff(row), _p(row.get("t_test_p"))]
        for row in summary.to_dict("records")
    ]
    return table_text(f"Test PCC per {what} on {test_db} (MOS, files)", columns, rows)


def counts_line(families: dict[str, str]) -> str:
    """How many test files each family has, ``clean`` included (it is not scored)."""
    counts = pd.Series(list(families.values())).value_counts()
    parts = [f"{name} {int(counts.get(name, 0))}" for name in (*FAMILIES, "clean")]
    return "\nTest files per family: " + ", ".join(parts) + " (clean files are not scored).\n"


def main(argv=None) -> int:
    """Write families.md and families.csv; return the exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="a finished label_budget.py output folder")
    p.add_argument("--nisqa_folder", required=True, help="the folder that contains NISQA_Corpus/")
    p.add_argument("--test_db", default="NISQA_TEST_SIM")
    args = p.parse_args(argv)
    folder = Path(args.folder)
    try:
        for name in ("runs.csv", "summary.csv"):
            if not (folder / name).is_file():
                raise JSQAError(f"{folder} has no {name}: run label_budget.py first")
        chosen = pd.read_csv(folder / "summary.csv")[["budget", "arm", "lr", "lr_encoder"]]
        runs = pd.read_csv(folder / "runs.csv")
        descriptions = file_descriptions(args.nisqa_folder, args.test_db)
        families = {f: family(d) for f, d in descriptions.items()}
        members = {f: {name} for f, name in families.items()}
        rows = family_rows(runs, members, FAMILIES, args.test_db, folder)
        contained = {f: degradations(d) for f, d in descriptions.items()}
        names = tuple(dict.fromkeys(DEGRADATIONS.values()))
        degradation_rows = family_rows(runs, contained, names, args.test_db, folder)
    except (JSQAError, OSError) as err:
        print(f"condition_families.py: error: {err}", file=sys.stderr)
        return 2
    summary = table(rows, chosen, args.test_db)
    summary.to_csv(folder / "families.csv", index=False)
    (folder / "families.md").write_text(markdown(summary, args.test_db) + counts_line(families))
    print((folder / "families.md").read_text())
    if not degradation_rows.empty:
        summary = table(degradation_rows, chosen, args.test_db)
        summary.rename(columns={"family": "degradation"}).to_csv(
            folder / "degradations.csv", index=False
        )
        text = markdown(summary, args.test_db, "degradation")
        (folder / "degradations.md").write_text(text)
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
