"""The MOS data pipeline: NISQA manifests -> waveforms at the model's rate + labels."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Optional

import torch
from speechbrain.dataio.dataio import load_data_json
from speechbrain.dataio.dataset import DynamicItemDataset

from jsqa_sb.audio import AudioReadError, read_audio
from jsqa_sb.common import NISQA_DIMENSIONS, PathLike
from jsqa_sb.data.prepare_utils import DataPreparationError

logger = logging.getLogger(__name__)
DIMENSIONS = NISQA_DIMENSIONS


def make_mos_dataset(
    manifests: Sequence[PathLike],
    replacements: dict,
    dims: Sequence[str] = DIMENSIONS,
    sample_rate: int = 16000,
    keep: Optional[Collection[str]] = None,
) -> DynamicItemDataset:
    """One dataset over one or more per-database NISQA manifests.

    Items provide ``id`` (``<db>/<file>``: NISQA numbers files per database),
    ``file`` (the manifest's key), ``sig`` (mono float waveform at ``sample_rate``; files at
    other rates are resampled), ``targets`` (one value per entry of ``dims``, NaN where
    the corpus has no label), ``con`` and ``db``. A file that cannot be decoded gives
    a NaN signal and a warning naming it; the training loop skips such batches. With
    ``keep``, only the items whose ``id`` it holds. DataPreparationError if the
    manifests hold no entry, list a (database, file) pair twice, or lack an id to keep.
    """
    data = {}
    for manifest in manifests:
        for file, entry in load_data_json(str(manifest), replacements).items():
            # NISQA numbers ``file`` per database: only (db, file) is unique in a merge.
            key = f"{entry['db']}/{file}"
            if key in data:
                raise DataPreparationError(f"file '{file}' of {entry['db']} is listed twice")
            data[key] = {**entry, "file": file}
    if keep is not None:
        unknown = sorted(set(keep) - set(data))
        if unknown:
            raise DataPreparationError(
                f"{len(unknown)} file id(s) to keep are not in the manifests, e.g. "
                f"{unknown[0]!r} (ids are <db>/<file>)"
            )
        keep = set(keep)
        data = {key: entry for key, entry in data.items() if key in keep}
    if not data:
        names = ", ".join(str(m) for m in manifests) or "no manifest"
        raise DataPreparationError(f"no NISQA file to use in {names}")
    dataset = DynamicItemDataset(data)

    def read(wav: str):
        try:
            audio, _ = read_audio(wav, target_sr=sample_rate)
        except AudioReadError as err:
            logger.warning("Unreadable file, its batch will be skipped: %s", err)
            return torch.full((sample_rate,), math.nan)
        return torch.from_numpy(audio)

    def labels(*values):
        return torch.tensor([math.nan if v is None else float(v) for v in values])

    dataset.add_dynamic_item(read, takes=["wav"], provides="sig")
    dataset.add_dynamic_item(labels, takes=list(dims), provides="targets")
    dataset.set_output_keys(["id", "file", "sig", "targets", "con", "db"])
    return dataset


def mos_datasets(
    manifest_folder: PathLike,
    replacements: dict,
    dims: Sequence[str] = DIMENSIONS,
    sample_rate: int = 16000,
    train_files: Optional[PathLike] = None,
) -> dict:
    """The recipe's datasets on the prepared NISQA manifests.

    Returns ``{"train": ..., "valid": ..., "test": {db: ...}}``, the databases of each
    split as ``prepare_nisqa`` found them (``nisqa_splits.json``). ``train_files``: a
    JSON list of the training ids to keep (a label-budget subset); None keeps all.
    """
    folder = Path(manifest_folder)
    splits = json.loads((folder / "nisqa_splits.json").read_text(encoding="utf-8"))
    keep = json.loads(Path(train_files).read_text(encoding="utf-8")) if train_files else None

    def dataset(dbs, split, keep=None):
        if not dbs:
            raise DataPreparationError(f"no NISQA {split} database found (see {folder})")
        paths = [folder / f"{db}.json" for db in dbs]
        return make_mos_dataset(paths, replacements, dims, sample_rate, keep=keep)

    return {
        "train": dataset(splits["train"], "training", keep),
        "valid": dataset(splits["valid"], "validation"),
        "test": {db: dataset([db], "test") for db in splits["test"]},
    }
