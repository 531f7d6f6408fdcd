"""Builders of miniature corpora in the real LibriSpeech, CHiME-3 and NISQA layouts.

Deterministic for a given seed and offline (signals: :mod:`jsqa_sb.data.minicorpus_signals`),
so the corpora serve the test suite and ``jsqa demo``.
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import signal
from scipy.special import expit

from jsqa_sb.data.minicorpus_signals import (  # noqa: F401  (NOISE_DBFS: re-exported)
    ENVIRONMENTS,
    NOISE_DBFS,
    SR,
    _crop,
    _filter,
    _rms,
    _rng,
    _set_level,
    _write,
    synth_noise,
)
from jsqa_sb.data.prepare_utils import read_json

SPEECH_DBFS = -26.0
NISQA_COLUMNS = (
    "db,con,file,con_description,filename_deg,filename_ref,source,lang,votes,mos,noi,col,dis,"
    "loud,noi_std,col_std,dis_std,loud_std,mos_std,filepath_deg,filepath_ref"
).split(",")
DEFAULT_SUBSETS = {"train-clean-100": (2, 2, 3), "dev-clean": (1, 1, 3)}
DEFAULT_DATABASES = {"NISQA_TRAIN_SIM": 40, "NISQA_VAL_SIM": 12, "NISQA_TEST_SIM": 12}
# Real LibriSpeech speaker ids, used in order (synthetic ids follow if more are needed).
_SPEAKER_IDS = (19, 26, 27, 32, 39, 40, 60, 78, 83, 84, 87, 89, 103, 118, 125, 150, 163, 174)
_MARKER = ".minicorpus_done"
_VERSION = 1


def _prepare(out: Path, args: dict) -> bool:
    """True if ``out`` holds a complete build with ``args``; else make way for one.

    A previous (possibly partial) build is cleared, a folder this module did not make refused.
    """
    marker = out / _MARKER
    wanted = json.loads(json.dumps(dict(args, version=_VERSION)))  # tuples -> lists
    if marker.is_file():
        try:
            done = read_json(marker)
        except ValueError:
            done = {}
        if isinstance(done, dict) and done.get("complete") and done.get("args") == wanted:
            return True
        shutil.rmtree(out)
    elif out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and was not made by jsqa_sb.data.minicorpus")
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"complete": False, "args": wanted}, sort_keys=True))
    return False


def _finish(out: Path, args: dict) -> None:
    done = {"complete": True, "args": dict(args, version=_VERSION)}
    (out / _MARKER).write_text(json.dumps(done, sort_keys=True))


# ----------------------------------------------------------------------------- LibriSpeech
def build_librispeech(
    root: str | os.PathLike,
    subsets: Mapping[str, tuple[int, int, int]] | None = None,
    seed: int = 0,
) -> Path:
    """A tiny LibriSpeech under ``<root>/LibriSpeech`` (FLAC, transcripts, SPEAKERS.TXT, ...).

    ``subsets``: name -> (speakers, chapters per speaker, utterances per chapter),
    :data:`DEFAULT_SUBSETS` by default. The same seed gives byte-identical files, and a
    complete build with the same arguments is not rewritten (as for every builder here).
    """
    subsets = DEFAULT_SUBSETS if subsets is None else subsets
    subsets = {k: tuple(int(n) for n in v) for k, v in subsets.items()}
    out = Path(root) / "LibriSpeech"
    args = {"seed": int(seed), "subsets": subsets}
    if _prepare(out, args):
        return out
    spk_ids = itertools.chain(_SPEAKER_IDS, itertools.count(10000))
    n_chapters = sum(v[0] * v[1] for v in subsets.values())
    chapter_ids = iter(_rng(seed, "chapters").choice(np.arange(100, 200000), n_chapters, False))
    speakers, chapters = [], []
    for subset, (n_speakers, n_chaps, n_utts) in subsets.items():
        for _ in range(n_speakers):
            spk = next(spk_ids)
            rng = _rng(seed, "librispeech", spk)
            sex, level, tilt = rng.choice(["F", "M"]), rng.uniform(-30, -22), rng.uniform(-0.4, 0.6)
            spk_seconds = 0.0
            for _ in range(n_chaps):
                chap = int(next(chapter_ids))
                folder = out / subset / str(spk) / str(chap)
                lines, chap_seconds = [], 0.0
                for utt in range(n_utts):
                    x, words, _ = _crop(rng, 1.5, 4.0)
                    x = x + tilt * (signal.lfilter([0.4], [1, -0.6], x) - x)  # mild speaker EQ
                    uid = f"{spk}-{chap}-{utt:04d}"
                    _write(folder / f"{uid}.flac", _set_level(x, level))
                    lines.append(f"{uid} {' '.join(words)}\n")
                    chap_seconds += len(x) / SR
                (folder / f"{spk}-{chap}.trans.txt").write_text("".join(lines))
                chapters.append((chap, spk, chap_seconds / 60, subset, len(chapters) + 1))
                spk_seconds += chap_seconds
            speakers.append((spk, sex, subset, spk_seconds / 60))
    (out / "SPEAKERS.TXT").write_text(
        "; Miniature LibriSpeech-style corpus made by jsqa_sb.data.minicorpus (LibriVox speech)\n"
        ";ID  |SEX| SUBSET           |MINUTES| NAME\n"
        + "".join(f"{s:<5}| {x} | {sub:<16} | {m:5.2f} | Reader {s}\n" for s, x, sub, m in speakers)
    )
    (out / "CHAPTERS.TXT").write_text(
        "; Miniature LibriSpeech-style corpus made by jsqa_sb.data.minicorpus (LibriVox speech)\n"
        ";ID      |READER|MINUTES| SUBSET           | PROJ.|BOOK ID| CH. TITLE    | PROJECT TITLE\n"
        + "".join(
            f"{c:<8}| {s:<5}| {m:5.2f} | {sub:<16} | {p:<5}| 161   | Chapter {p:<4} "
            "| Sense and Sensibility\n"
            for c, s, m, sub, p in chapters
        )
    )
    _finish(out, args)
    return out


# ----------------------------------------------------------------------------- CHiME-3
def build_chime3(
    root: str | os.PathLike, n_sessions_per_env: int = 2, seconds: float = 8.0, seed: int = 0
) -> Path:
    """CHiME-3-style backgrounds: ``BGD_<yymmdd>_<nnn>_<ENV>.CH1.wav``, each its own session.

    16 kHz mono 16-bit at RMS -32 dBFS, ``n_sessions_per_env`` per environment; returns
    ``<root>/CHiME3/data/audio/16kHz/backgrounds``.
    """
    top = Path(root) / "CHiME3"
    out = top / "data" / "audio" / "16kHz" / "backgrounds"
    args = {"seed": int(seed), "n_sessions_per_env": int(n_sessions_per_env), "seconds": seconds}
    if _prepare(top, args):
        return out
    out.mkdir(parents=True, exist_ok=True)
    sessions = itertools.product(range(int(n_sessions_per_env)), ENVIRONMENTS)
    for k, (session, env) in enumerate(sessions):
        day = datetime.date(2015, 2, 3) + datetime.timedelta(days=k // 2)
        name = f"BGD_{day:%y%m%d}_{10 * (k % 2 + 1):03d}_{env}.CH1.wav"
        rng = _rng(seed, "chime3", env, session)
        _write(out / name, synth_noise(env, int(round(seconds * SR)), rng))
    _finish(top, args)
    return out


# ----------------------------------------------------------------------------- NISQA
def _condition(rng: np.random.Generator) -> dict:
    """Draw a degradation condition; ~10 % are clean, the rest have at least one effect."""
    if rng.random() < 0.1:
        return {}
    cond: dict = {}
    while not cond:
        if rng.random() < 0.8:
            cond["noise"] = (str(rng.choice(ENVIRONMENTS)), round(float(rng.uniform(-5, 35)), 1))
        if rng.random() < 0.3:
            cond["lowpass"] = int(rng.choice([3400, 7000]))
        if rng.random() < 0.15:
            cond["clip"] = round(float(rng.uniform(2, 12)), 1)
        if rng.random() < 0.3:
            cond["level"] = round(float(rng.uniform(-25, -8)), 1)
    return cond


_FORMATS = {
    "noise": "noise={0[0]}@{0[1]}dB",
    "lowpass": "lowpass={0}Hz",
    "clip": "clip={0}dB",
    "level": "level={0}dB",
}


def _describe(cond: dict) -> str:
    """E.g. ``"noise=CAF@7.5dB; lowpass=3400Hz; clip=6.0dB; level=-12.0dB"`` or ``"clean"``."""
    return "; ".join(_FORMATS[k].format(v) for k, v in cond.items()) or "clean"


def _degrade(x: np.ndarray, cond: dict, rng: np.random.Generator) -> np.ndarray:
    """Apply noise (SNR relative to the speech RMS), low-pass, clipping, level change."""
    y = x.copy()
    if "noise" in cond:
        env, snr = cond["noise"]
        y = y + synth_noise(env, len(y), rng, 20 * np.log10(_rms(x)) - snr)
    if "lowpass" in cond:
        y = _filter(y, cond["lowpass"], "lowpass", order=8)
    if "clip" in cond:
        threshold = np.max(np.abs(y)) * 10 ** (-cond["clip"] / 20)
        y = np.clip(y, -threshold, threshold)
    if "level" in cond:
        y = y * 10 ** (cond["level"] / 20)
    return y


def _labels(cond: dict, rng: np.random.Generator) -> dict[str, float]:
    """Subjective scores (1..5) driven by the condition, plus listener noise."""
    snr = cond["noise"][1] if "noise" in cond else 45.0
    lp34, lp7 = cond.get("lowpass") == 3400, cond.get("lowpass") == 7000
    clipped, clip_db = "clip" in cond, cond.get("clip", 0.0)
    level = cond.get("level", 0.0)
    penalty = 0.6 * lp34 + 0.3 * lp7 + 0.5 * clipped + 0.3 * ("level" in cond)
    raw = {
        "mos": 1 + 3.6 * expit((snr - 12) / 5) - penalty + rng.normal(0, 0.1),
        "noi": 1 + 3.6 * expit((snr - 10) / 5) + rng.normal(0, 0.15),
        "col": 4.6 - 2.0 * lp34 - 1.0 * lp7 - 0.4 * clipped + rng.normal(0, 0.15),
        "dis": 4.6 - (1 + clip_db / 6) * clipped + rng.normal(0, 0.15),
        "loud": 4.6 + 3 * level / 25 + rng.normal(0, 0.15),
    }
    return {k: round(float(np.clip(v, 1, 5)), 3) for k, v in raw.items()}


def _nisqa_db(
    out: Path, db: str, n: int, seed: int, with_dimensions: bool, high_rate_fraction: float
) -> list[dict]:
    grouped = "TEST" in db.upper()  # test sets: each condition on 3 different references
    high_rate = set(_rng(seed, "nisqa-sr", db).permutation(n)[: round(high_rate_fraction * n)])
    rows = []
    for i in range(n):
        con = i // 3 + 1 if grouped else i + 1
        con_rng = _rng(seed, "nisqa-con", db, con)
        cond, first_clip = _condition(con_rng), int(con_rng.integers(5))
        rng = _rng(seed, "nisqa", db, i)
        clip = (first_clip + i % 3) % 5 if grouped else None
        x, _, clip = _crop(rng, 2.0, 4.0, clip)
        x = _set_level(x, SPEECH_DBFS)
        y = _degrade(x, cond, rng)
        ref_name = f"lv{clip + 1}_{i + 1:05d}.wav"
        deg_name = f"c{con:05d}_{ref_name}"
        _write(out / db / "ref" / ref_name, x)
        sr = SR
        if i in high_rate:
            y, sr = signal.resample_poly(y, 3, 1), 3 * SR
        _write(out / db / "deg" / deg_name, y, sr)
        labels = _labels(cond, rng)
        row = dict.fromkeys(NISQA_COLUMNS, "")
        row.update(
            db=db,
            con=con,
            file=deg_name[:-4],
            con_description=_describe(cond),
            filename_deg=deg_name,
            filename_ref=ref_name,
            source="LibriVox",
            lang="en",
            mos=labels["mos"],
            filepath_deg=f"{db}/deg/{deg_name}",
            filepath_ref=f"{db}/ref/{ref_name}",
        )
        if with_dimensions:
            row.update({k: labels[k] for k in ("noi", "col", "dis", "loud")}, votes=5)
            for k in ("noi", "col", "dis", "loud", "mos"):
                row[f"{k}_std"] = round(float(rng.uniform(0.4, 1.0)), 3)
        rows.append(row)
    return rows


def _write_csv(path: Path, rows: list[dict]) -> None:
    pd.DataFrame(rows, columns=NISQA_COLUMNS).to_csv(path, index=False, lineterminator="\n")


def build_nisqa(
    root: str | os.PathLike,
    databases: Mapping[str, int] | None = None,
    seed: int = 0,
    with_dimensions: bool = True,
    write_corpus_csv: bool = True,
    high_rate_fraction: float = 0.2,
) -> Path:
    """A tiny NISQA corpus under ``<root>/NISQA_Corpus``: degraded speech, condition-driven labels.

    Each file gets a seeded condition, written to ``con_description`` (e.g.
    ``"noise=CAF@7.5dB; lowpass=3400Hz; clip=6.0dB; level=-12.0dB"`` or ``"clean"``):
    noise at SNR -5..35 dB (p=0.8), low-pass at 3.4 or 7 kHz (p=0.3), clipping (p=0.15),
    attenuation (p=0.3); MOS and the dimensions follow them. ``databases``: name ->
    files (:data:`DEFAULT_DATABASES`); where the name contains ``TEST`` each condition
    is applied to 3 references. ``with_dimensions=False`` leaves votes, dimensions and
    ``*_std`` empty; ``write_corpus_csv`` also writes ``NISQA_corpus_file.csv``;
    ``high_rate_fraction`` of the files are at 48 kHz.
    """
    databases = DEFAULT_DATABASES if databases is None else databases
    databases = {k: int(v) for k, v in databases.items()}
    out = Path(root) / "NISQA_Corpus"
    args = {
        "seed": int(seed),
        "databases": databases,
        "with_dimensions": bool(with_dimensions),
        "write_corpus_csv": bool(write_corpus_csv),
        "high_rate_fraction": high_rate_fraction,
    }
    if _prepare(out, args):
        return out
    all_rows = []
    for db, n in databases.items():
        rows = _nisqa_db(out, db, n, seed, with_dimensions, high_rate_fraction)
        _write_csv(out / db / f"{db}_file.csv", rows)
        all_rows += rows
    if write_corpus_csv:
        _write_csv(out / "NISQA_corpus_file.csv", all_rows)
    _finish(out, args)
    return out


def build_all(root: str | os.PathLike, seed: int = 0) -> dict[str, Path]:
    """The default corpora under ``root``: ``librispeech/``, ``chime3/`` and ``nisqa/``.

    Returns those folders as ``librispeech_folder``, ``chime3_folder``, ``nisqa_folder``.
    """
    builders = {"librispeech": build_librispeech, "chime3": build_chime3, "nisqa": build_nisqa}
    for name, build in builders.items():
        build(Path(root) / name, seed=seed)
    return {f"{name}_folder": Path(root) / name for name in builders}
