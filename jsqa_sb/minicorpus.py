"""Builders of miniature corpora in the real LibriSpeech, CHiME-3 and NISQA layouts.

The speech comes from the five public-domain LibriVox clips shipped in
``jsqa_sb/samples``; the noise is synthesised (one style per CHiME-3 environment).
Everything is deterministic for a given seed and needs no network, so the corpora
serve the test suite and ``jsqa demo``.
"""

from __future__ import annotations

import csv
import datetime
import functools
import json
import os
import shutil
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import fft as sfft
from scipy import signal

SR = 16000
ENVIRONMENTS = ("BUS", "CAF", "PED", "STR")
NOISE_DBFS = -32.0
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
_PEAK = 0.99  # written audio never exceeds this (no clipping in 16-bit PCM)


# ----------------------------------------------------------------------------- helpers
@functools.lru_cache(maxsize=1)
def _clips() -> tuple[tuple[np.ndarray, tuple[str, ...]], ...]:
    """Return the sample clips as (float64 audio at 16 kHz, upper-case words)."""
    folder = Path(__file__).parent / "samples"
    transcripts = {}
    for line in (folder / "README.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].endswith(".flac"):
            transcripts[cells[0]] = tuple(cells[3].upper().split())
    out = []
    for i in range(1, 6):
        name = f"librivox_{i}.flac"
        audio, sr = sf.read(folder / name, dtype="float64", always_2d=False)
        if sr != SR:
            raise ValueError(f"{name}: expected {SR} Hz, got {sr}")
        out.append((audio, transcripts.get(name, ("HE", "WAS", "NOT", "AN", "ILL", "MAN"))))
    return tuple(out)


def _rng(seed: int, *keys: str | int) -> np.random.Generator:
    """Return an independent generator for (seed, keys); stable across processes."""
    ints = [k if isinstance(k, int) else zlib.crc32(k.encode()) for k in keys]
    return np.random.default_rng([int(seed), *ints])


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)) + 1e-20))


def _set_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    return x * (10 ** (dbfs / 20) / _rms(x))


def _write(path: Path, x: np.ndarray, sr: int = SR) -> None:
    """Write mono 16-bit PCM (format from the suffix), peak-normalising only if needed."""
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > _PEAK:
        x = x * (_PEAK / peak)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.round(x * 32767).astype(np.int16), sr, subtype="PCM_16")


def _crop(rng: np.random.Generator, lo: float, hi: float, clip: int | None = None):
    """Cut a lo..hi second excerpt (with 10 ms fades) and the words it roughly covers."""
    clips = _clips()
    idx = int(rng.integers(len(clips))) if clip is None else clip
    audio, words = clips[idx]
    n = min(int(rng.uniform(lo, hi) * SR), len(audio))
    start = int(rng.integers(0, len(audio) - n + 1))
    seg = audio[start : start + n].copy()
    fade = np.linspace(0.0, 1.0, SR // 100)
    seg[: fade.size] *= fade
    seg[-fade.size :] *= fade[::-1]
    w0 = int(start / len(audio) * len(words))
    w1 = max(w0 + 1, round((start + n) / len(audio) * len(words)))
    return seg, words[w0:w1], idx


def _colored(rng: np.random.Generator, n: int, power: float, fmin: float = 20.0) -> np.ndarray:
    """Unit-RMS noise with a 1/f**power spectrum (0 white, 1 pink, 2 brown)."""
    m = sfft.next_fast_len(n, real=True)  # awkward lengths make the FFT slow
    spec = np.fft.rfft(rng.standard_normal(m))
    freqs = np.maximum(np.fft.rfftfreq(m, 1 / SR), fmin)
    x = np.fft.irfft(spec / freqs ** (power / 2), m)[:n]
    return x / _rms(x)


def _filter(x: np.ndarray, cutoff, btype: str, order: int = 4) -> np.ndarray:
    return signal.sosfilt(signal.butter(order, cutoff, btype=btype, fs=SR, output="sos"), x)


def _bus(rng: np.random.Generator, n: int, t: np.ndarray) -> np.ndarray:
    """Low-frequency rumble: brown-ish noise plus a drifting engine hum with harmonics."""
    drift = 1 + 0.03 * np.sin(2 * np.pi * rng.uniform(0.05, 0.2) * t + rng.uniform(0, 6.3))
    phase = 2 * np.pi * np.cumsum(rng.uniform(25, 45) * drift) / SR
    hum = sum(np.sin(h * phase + rng.uniform(0, 6.3)) / h for h in range(1, 9))
    return _colored(rng, n, 2.0) + 0.5 * hum / _rms(hum) + 0.1 * _colored(rng, n, 1.0)


def _caf(rng: np.random.Generator, n: int, t: np.ndarray) -> np.ndarray:
    """Babble from 4-6 time-shifted, gain-varied speech streams plus a little pink noise."""
    babble = np.zeros(n)
    for _ in range(int(rng.integers(4, 7))):
        talker = np.concatenate([_clips()[i][0] for i in rng.permutation(len(_clips()))])
        idx = (np.arange(n) + int(rng.integers(len(talker)))) % len(talker)
        babble += 10 ** (rng.uniform(-6, 0) / 20) * talker[idx]
    return babble / _rms(babble) + 0.15 * _colored(rng, n, 1.0)


def _ped(rng: np.random.Generator, n: int, t: np.ndarray) -> np.ndarray:
    """Pink noise with slow amplitude modulation (passers-by, distant crowd)."""
    mod = 1 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 6.3))
    mod += 0.25 * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * t + rng.uniform(0, 6.3))
    return _colored(rng, n, 1.0) * mod


def _str(rng: np.random.Generator, n: int, t: np.ndarray) -> np.ndarray:
    """Band-passed street noise with swells of passing cars."""
    base = _filter(rng.standard_normal(n), [150, 4000], "bandpass")
    car = _filter(_colored(rng, n, 1.0), [60, 2000], "bandpass")  # tyres and engine
    swell = np.zeros(n)
    for _ in range(1 + int(rng.poisson(n / SR / 3))):
        centre, width = rng.uniform(0, n / SR), rng.uniform(0.5, 1.5)
        swell += rng.uniform(2, 5) * np.exp(-0.5 * ((t - centre) / width) ** 2)
    return 0.5 * base / _rms(base) + swell * car / _rms(car)


_NOISES: dict[str, Callable[..., np.ndarray]] = dict(zip(ENVIRONMENTS, (_bus, _caf, _ped, _str)))


def synth_noise(env: str, n: int, rng: np.random.Generator, dbfs: float = NOISE_DBFS) -> np.ndarray:
    """Synthesise ``n`` samples of 16 kHz noise in the style of a CHiME-3 environment.

    Arguments
    ---------
    env : str
        One of ``"BUS"``, ``"CAF"``, ``"PED"``, ``"STR"``.
    n : int
        Number of samples.
    rng : numpy.random.Generator
        Source of randomness.
    dbfs : float
        RMS level of the result in dB relative to full scale.

    Returns
    -------
    numpy.ndarray
        Float64 mono signal at 16 kHz.
    """
    if env not in _NOISES:
        raise ValueError(f"unknown environment {env!r}; expected one of {ENVIRONMENTS}")
    return _set_level(_NOISES[env](rng, n, np.arange(n) / SR), dbfs)


def _prepare(out: Path, args: dict) -> bool:
    """Return True if ``out`` already holds a complete build with ``args``.

    Otherwise clear a previous (possibly partial) minicorpus build there and record the
    new arguments as "in progress"; refuse to overwrite a folder this module did not make.
    """
    marker = out / _MARKER
    wanted = json.loads(json.dumps(dict(args, version=_VERSION)))  # tuples -> lists
    if marker.is_file():
        try:
            done = json.loads(marker.read_text())
        except ValueError:
            done = {}
        if done.get("complete") and done.get("args") == wanted:
            return True
        shutil.rmtree(out)
    elif out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and was not made by jsqa_sb.minicorpus")
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
    """Build a tiny LibriSpeech (FLAC, transcripts, SPEAKERS.TXT, CHAPTERS.TXT).

    Arguments
    ---------
    root : str or os.PathLike
        Folder that will contain ``LibriSpeech/``.
    subsets : dict, optional
        Subset name -> (n_speakers, n_chapters_per_speaker, n_utts_per_chapter).
        Defaults to ``{"train-clean-100": (2, 2, 3), "dev-clean": (1, 1, 3)}``.
    seed : int
        Random seed; the same seed gives byte-identical files.

    Returns
    -------
    pathlib.Path
        ``<root>/LibriSpeech``. Nothing is rewritten if it is already complete.
    """
    subsets = {
        k: tuple(int(n) for n in v)
        for k, v in (DEFAULT_SUBSETS if subsets is None else subsets).items()
    }
    out = Path(root) / "LibriSpeech"
    args = {"seed": int(seed), "subsets": subsets}
    if _prepare(out, args):
        return out
    n_spk = sum(v[0] for v in subsets.values())
    spk_ids = list(_SPEAKER_IDS[:n_spk]) + [10000 + i for i in range(n_spk - len(_SPEAKER_IDS))]
    n_chapters = sum(v[0] * v[1] for v in subsets.values())
    chapter_ids = iter(_rng(seed, "chapters").choice(np.arange(100, 200000), n_chapters, False))
    speakers, chapters = [], []
    for subset, (n_speakers, n_chaps, n_utts) in subsets.items():
        for _ in range(n_speakers):
            spk = spk_ids.pop(0)
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
        "; Miniature LibriSpeech-style corpus made by jsqa_sb.minicorpus (LibriVox speech)\n"
        ";ID  |SEX| SUBSET           |MINUTES| NAME\n"
        + "".join(f"{s:<5}| {x} | {sub:<16} | {m:5.2f} | Reader {s}\n" for s, x, sub, m in speakers)
    )
    (out / "CHAPTERS.TXT").write_text(
        "; Miniature LibriSpeech-style corpus made by jsqa_sb.minicorpus (LibriVox speech)\n"
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
    """Build CHiME-3-style background noise recordings (synthetic, one style per environment).

    Files are ``BGD_<yymmdd>_<nnn>_<ENV>.CH1.wav`` (16 kHz mono 16-bit, RMS -32 dBFS) for
    ENV in BUS, CAF, PED, STR, each file its own session.

    Arguments
    ---------
    root : str or os.PathLike
        Folder that will contain ``CHiME3/``.
    n_sessions_per_env : int
        Number of recordings per environment.
    seconds : float
        Duration of each recording.
    seed : int
        Random seed; the same seed gives byte-identical files.

    Returns
    -------
    pathlib.Path
        ``<root>/CHiME3/data/audio/16kHz/backgrounds``.
    """
    top = Path(root) / "CHiME3"
    out = top / "data" / "audio" / "16kHz" / "backgrounds"
    args = {"seed": int(seed), "n_sessions_per_env": int(n_sessions_per_env), "seconds": seconds}
    if _prepare(top, args):
        return out
    out.mkdir(parents=True, exist_ok=True)
    k = 0
    for session in range(int(n_sessions_per_env)):
        for env in ENVIRONMENTS:
            day = datetime.date(2015, 2, 3) + datetime.timedelta(days=k // 2)
            name = f"BGD_{day:%y%m%d}_{10 * (k % 2 + 1):03d}_{env}.CH1.wav"
            rng = _rng(seed, "chime3", env, session)
            _write(out / name, synth_noise(env, int(round(seconds * SR)), rng))
            k += 1
    _finish(top, args)
    return out


# ----------------------------------------------------------------------------- NISQA
def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + np.exp(-x))


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
        "mos": 1 + 3.6 * _sigmoid((snr - 12) / 5) - penalty + rng.normal(0, 0.1),
        "noi": 1 + 3.6 * _sigmoid((snr - 10) / 5) + rng.normal(0, 0.15),
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
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=NISQA_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def build_nisqa(
    root: str | os.PathLike,
    databases: Mapping[str, int] | None = None,
    seed: int = 0,
    with_dimensions: bool = True,
    write_corpus_csv: bool = True,
    high_rate_fraction: float = 0.2,
) -> Path:
    """Build a tiny NISQA-style corpus of degraded speech with condition-driven labels.

    Each degraded file gets a seeded random condition, recorded in ``con_description``
    (e.g. ``"noise=CAF@7.5dB; lowpass=3400Hz; clip=6.0dB; level=-12.0dB"`` or ``"clean"``):
    synthetic noise at SNR in [-5, 35] dB (p=0.8), low-pass at 3.4 or 7 kHz (p=0.3),
    hard clipping (p=0.15) and attenuation (p=0.3); about 10 % are clean. MOS and the
    dimensions (noi, col, dis, loud) follow these degradations.

    Arguments
    ---------
    root : str or os.PathLike
        Folder that will contain ``NISQA_Corpus/``.
    databases : dict, optional
        Database name -> number of degraded files. Defaults to
        ``{"NISQA_TRAIN_SIM": 40, "NISQA_VAL_SIM": 12, "NISQA_TEST_SIM": 12}``.
        In databases whose name contains ``TEST`` each condition is applied to 3
        different references; elsewhere every file is its own condition.
    seed : int
        Random seed; the same seed gives byte-identical files.
    with_dimensions : bool
        If False, leave votes, the dimension columns and all ``*_std`` columns empty.
    write_corpus_csv : bool
        Also write ``NISQA_Corpus/NISQA_corpus_file.csv`` covering all databases.
    high_rate_fraction : float
        Fraction of degraded files written at 48 kHz instead of 16 kHz.

    Returns
    -------
    pathlib.Path
        ``<root>/NISQA_Corpus``.
    """
    databases = {
        k: int(v) for k, v in (DEFAULT_DATABASES if databases is None else databases).items()
    }
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
    """Build the default miniature LibriSpeech, CHiME-3 and NISQA corpora under ``root``.

    Arguments
    ---------
    root : str or os.PathLike
        Parent folder; corpora go to ``librispeech/``, ``chime3/`` and ``nisqa/``.
    seed : int
        Random seed.

    Returns
    -------
    dict
        ``librispeech_folder``, ``chime3_folder`` and ``nisqa_folder``: the folders that
        contain ``LibriSpeech/``, ``CHiME3/`` and ``NISQA_Corpus/`` respectively.
    """
    root = Path(root)
    folders = {
        "librispeech_folder": root / "librispeech",
        "chime3_folder": root / "chime3",
        "nisqa_folder": root / "nisqa",
    }
    build_librispeech(folders["librispeech_folder"], seed=seed)
    build_chime3(folders["chime3_folder"], seed=seed)
    build_nisqa(folders["nisqa_folder"], seed=seed)
    return folders
