"""Manifests for JND contrastive pretraining from LibriSpeech and CHiME-3 backgrounds.

Writes into ``save_folder``: ``jnd_train.json`` (clean training utterances; mixed on
the fly), ``jnd_valid.json`` (validation utterances with their fixed noise, offsets and
K SNRs), ``noise_train.json`` / ``noise_valid.json`` (CHiME-3 backgrounds split by
recording session) and ``prepare_jnd_report.json`` (counts, files left out and why).
Paths use the ``{librispeech_folder}`` and ``{chime3_folder}`` placeholders.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import numpy as np

from jsqa_sb.audio import AudioReadError, read_audio
from jsqa_sb.common import PathLike
from jsqa_sb.data.jnd_mixing import SILENCE_DB, check_jnd_settings, rms_db
from jsqa_sb.data.pairs import JNDPairRule, JNDSettingsError
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

ENVIRONMENTS = ("BUS", "CAF", "PED", "STR")
BACKGROUNDS = Path("CHiME3", "data", "audio", "16kHz", "backgrounds")
LIBRISPEECH_LAYOUT = (
    "<librispeech_folder>/LibriSpeech/<subset>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac"
)
CHIME3_LAYOUT = f"<chime3_folder>/{BACKGROUNDS.as_posix()}/BGD_<date>_<n>_<ENV>.CH<k>.wav"


def prepare_jnd(
    librispeech_folder: PathLike,
    chime3_folder: PathLike,
    save_folder: PathLike,
    train_subsets: Sequence[str] = ("train-clean-100",),
    valid_subsets: Sequence[str] = ("dev-clean",),
    channel: int = 1,
    valid_noise_fraction: float = 0.25,
    valid_noise_sessions: Optional[Sequence[str]] = None,
    segment_seconds: float = 3.0,
    views_per_group: int = 4,
    snr_min: float = -5.0,
    snr_max: float = 30.0,
    jnd_db: float = 3.0,
    neg_margin_db: Optional[float] = None,
    min_clean_seconds: float = 1.0,
    min_noise_seconds: float = 1.0,
    check_silence: bool = False,
    seed: int = 1234,
    strict: bool = False,
    num_workers: int = 8,
    pair_rule: Optional[JNDPairRule] = None,
) -> dict:
    """Prepare the JND manifests (skipped when done before with the same inputs).

    ``librispeech_folder`` and ``chime3_folder`` contain ``LibriSpeech/`` and ``CHiME3/``.
    Validation holds out ``valid_noise_fraction`` of each environment's CHiME-3 recording
    sessions (at least one of two or more), or the ``valid_noise_sessions`` (``<date>_<n>``,
    e.g. ``150204_020``); its fixed SNRs in [``snr_min``, ``snr_max``] are drawn by the
    pair rule (``pair_rule``, else made of ``jnd_db`` and ``neg_margin_db``). Unreadable,
    empty, silent (clean files: checked only with ``check_silence``) or shorter files
    (``min_clean_seconds``, ``min_noise_seconds``) are left out and reported, or with
    ``strict`` make it fail.

    Returns the paths of the manifests (``train``, ``valid``, ``noise_train``,
    ``noise_valid``) and of the ``report``; raises :class:`DataPreparationError` for a
    folder of the wrong layout or (``strict``) an unusable file.
    """
    options = {k: v for k, v in locals().items() if k not in _NOT_OPTIONS}
    try:
        rule = JNDPairRule(jnd_db, neg_margin_db) if pair_rule is None else pair_rule
        check_jnd_settings(segment_seconds, views_per_group, snr_min, snr_max, rule)
    except JNDSettingsError as err:
        raise DataPreparationError(str(err)) from err
    options.update(jnd_db=rule.jnd_db, neg_margin_db=rule.neg_margin_db)  # the rule's steps
    subsets = [*train_subsets, *valid_subsets]
    libri_root = _librispeech_root(Path(librispeech_folder), subsets)
    noise_dir = _backgrounds_dir(Path(chime3_folder))
    clean_files = {s: list_files(libri_root / s, (".flac",)) for s in subsets}
    noise_files = sorted(noise_dir.glob(f"BGD_*.CH{channel}.wav"))
    save_folder = make_save_folder(save_folder)
    if not noise_files:
        raise DataPreparationError(
            f"no CHiME-3 background for channel {channel}; expected {CHIME3_LAYOUT}; "
            + describe_folder(noise_dir)
        )
    for subset, files in clean_files.items():
        if not files:
            raise DataPreparationError(
                f"LibriSpeech subset '{subset}' has no FLAC file; expected {LIBRISPEECH_LAYOUT}"
            )

    all_clean = [f for files in clean_files.values() for f in files]
    record = PrepareRecord(
        save_folder,
        "prepare_jnd",
        options,
        fingerprint(all_clean, libri_root) + fingerprint(noise_files, noise_dir),
    )
    names = ("jnd_train", "jnd_valid", "noise_train", "noise_valid", "prepare_jnd_report")
    keys = ("train", "valid", "noise_train", "noise_valid", "report")
    outputs = {key: save_folder / f"{name}.json" for key, name in zip(keys, names)}
    if record.is_done():
        logger.info("JND manifests in %s are up to date, skipping preparation", save_folder)
        return {k: str(v) for k, v in outputs.items()}
    record.invalidate()
    logger.info("Preparing JND manifests in %s", save_folder)

    report = SkipReport()
    noises = _noise_entries(noise_files, min_noise_seconds, report)
    train_noise, valid_noise = _split_sessions(
        noises, valid_noise_fraction, valid_noise_sessions, seed
    )
    clean = {}
    for subset, files in clean_files.items():
        clean[subset] = _clean_entries(
            files, subset, libri_root, min_clean_seconds, check_silence, report, num_workers
        )
    train = {k: v for s in train_subsets for k, v in clean[s].items()}
    valid = {k: v for s in valid_subsets for k, v in clean[s].items()}
    for name, entries in (
        ("training utterances", train),
        ("training noises", train_noise),
        ("validation utterances", valid),
        ("validation noises", valid_noise),
    ):
        if not entries:
            raise DataPreparationError(f"no usable {name} left (see {outputs['report']})")

    rng = np.random.default_rng(seed)
    noise_ids = sorted(valid_noise)
    for uid in sorted(valid):
        entry, sr = valid[uid], valid[uid]["sample_rate"]
        noise = valid_noise[noise_ids[rng.integers(len(noise_ids))]]
        seg = int(round(segment_seconds * sr))
        frames = int(round(entry["duration"] * sr))
        noise_frames = int(round(noise["duration"] * noise["sample_rate"]))
        entry.update(
            crop_start=int(rng.integers(0, max(1, frames - seg + 1))),
            noise_wav=noise["wav"],
            noise_offset=int(rng.integers(0, noise_frames)),
            snrs=[
                round(float(s), 3) for s in rule.sample_snrs(rng, views_per_group, snr_min, snr_max)
            ],
        )

    counts = {
        "train_utterances": len(train),
        "valid_utterances": len(valid),
        "train_noises": len(train_noise),
        "valid_noises": len(valid_noise),
        "train_hours": round(sum(e["duration"] for e in train.values()) / 3600, 4),
        "valid_hours": round(sum(e["duration"] for e in valid.values()) / 3600, 4),
        "skipped": len(report.skipped),
    }
    report.write(outputs["report"], counts, strict)  # raises in strict mode: no manifest written
    for key, entries in zip(keys, (train, valid, train_noise, valid_noise)):
        write_json(outputs[key], entries)
    record.mark_done(outputs.values(), counts)
    logger.info("JND manifests written: %s", json.dumps(counts))
    return {k: str(v) for k, v in outputs.items()}


# The arguments recorded as options are all but these: the folders (manifests use placeholders,
# so a moved corpus stays valid), the thread count and the rule (its steps are recorded).
_NOT_OPTIONS = {"librispeech_folder", "chime3_folder", "save_folder", "num_workers", "pair_rule"}


def _librispeech_root(folder: Path, subsets: Sequence[str]) -> Path:
    """``<folder>/LibriSpeech``, checked to hold the subsets."""
    root = folder / "LibriSpeech"
    if not root.is_dir():
        raise DataPreparationError(
            f"{folder} is not a LibriSpeech folder: expected {LIBRISPEECH_LAYOUT}; "
            + describe_folder(folder)
        )
    missing = [s for s in subsets if not (root / s).is_dir()]
    if missing:
        raise DataPreparationError(
            f"LibriSpeech subset(s) {', '.join(missing)} not found in {root}; "
            + describe_folder(root)
        )
    return root


def _backgrounds_dir(folder: Path) -> Path:
    """The CHiME-3 backgrounds folder under ``folder``."""
    path = folder / BACKGROUNDS
    if not path.is_dir():
        deepest = next((p for p in path.parents if p.is_dir() and p.is_relative_to(folder)), folder)
        raise DataPreparationError(
            f"{folder} is not a CHiME-3 folder: expected {CHIME3_LAYOUT}; "
            + describe_folder(deepest)
        )
    return path


_BGD = re.compile(r"^BGD_(\d+)_(\d+)_([A-Z]+)\.CH(\d+)\.wav$")


def _noise_entries(files: Sequence[Path], min_seconds: float, report: SkipReport) -> dict:
    """Manifest entries of the usable backgrounds (decoded and checked), keyed by name."""
    entries = {}
    for path in files:
        match = _BGD.match(path.name)
        if not match or match.group(3) not in ENVIRONMENTS:
            reason = (
                f"name does not match BGD_<date>_<n>_<ENV>.CH<k>.wav with ENV in "
                f"{', '.join(ENVIRONMENTS)}"
            )
        else:
            reason, seconds, sr = _decode(path, min_seconds)
        if reason:
            report.add(path, reason)
            continue
        date, num, env, _ = match.groups()
        entries[path.name.split(".")[0]] = {
            "wav": f"{{chime3_folder}}/{BACKGROUNDS.as_posix()}/{path.name}",
            "duration": round(seconds, 5),
            "sample_rate": sr,
            "env": env,
            "session": f"{date}_{num}",
        }
    return entries


def _split_sessions(noises: dict, fraction: float, sessions: Optional[Sequence[str]], seed: int):
    """Split backgrounds into training and validation by recording session."""
    if sessions is not None:
        if any(not isinstance(session, str) for session in sessions):
            raise DataPreparationError(
                f"valid_noise_sessions must be strings like '150204_020', got {list(sessions)} "
                "(quote them: YAML reads 150204_020 as the number 150204020)"
            )
        held_out = set(sessions)
        unknown = held_out - {e["session"] for e in noises.values()}
        if unknown:
            raise DataPreparationError(f"valid_noise_sessions not found: {sorted(unknown)}")
    else:
        rng = np.random.default_rng(seed)
        held_out = set()
        for env in ENVIRONMENTS:
            env_sessions = sorted({e["session"] for e in noises.values() if e["env"] == env})
            if len(env_sessions) >= 2:
                n_valid = min(len(env_sessions) - 1, max(1, round(fraction * len(env_sessions))))
                held_out.update(rng.choice(env_sessions, n_valid, replace=False).tolist())
    train = {k: v for k, v in noises.items() if v["session"] not in held_out}
    valid = {k: v for k, v in noises.items() if v["session"] in held_out}
    return train, valid


def _clean_entries(files, subset, root, min_seconds, check_silence, report, num_workers) -> dict:
    """Manifest entries of the usable clean utterances (header-scanned, optionally decoded)."""
    entries = {}
    infos = scan_headers(files, num_workers, desc=f"Reading {subset}")
    for path, info in zip(files, infos):
        reason = None
        if isinstance(info, AudioReadError):
            reason = str(info).split(": ", 1)[1]
        elif info.frames == 0:
            reason = "empty (no audio frames)"
        elif info.duration < min_seconds:
            reason = f"too short ({info.duration:.2f} s < min_clean_seconds={min_seconds} s)"
        elif check_silence:
            reason = _decode(path, min_seconds)[0]
        if reason:
            report.add(path, reason)
            continue
        spk, chapter = path.parent.parent.name, path.parent.name
        entries[path.stem] = {
            "wav": f"{{librispeech_folder}}/{path.relative_to(root.parent).as_posix()}",
            "duration": round(info.duration, 5),
            "sample_rate": info.sample_rate,
            "spk_id": spk,
            "chapter": chapter,
            "subset": subset,
        }
    return entries


def _decode(path: Path, min_seconds: float) -> tuple[Optional[str], float, int]:
    """Why a decoded file cannot be used (None if it can), its duration (s) and rate."""
    try:
        audio, sr = read_audio(path)
    except AudioReadError as err:
        return str(err).split(": ", 1)[1], 0.0, 0
    seconds = audio.size / sr
    if audio.size == 0:
        return "empty (no audio frames)", seconds, sr
    if seconds < min_seconds:
        return f"too short ({seconds:.2f} s < {min_seconds} s)", seconds, sr
    if rms_db(audio) < SILENCE_DB:
        return "digital silence", seconds, sr
    return None, seconds, sr
