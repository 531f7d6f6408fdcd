"""Signals of the miniature corpora (:mod:`jsqa_sb.data.minicorpus`): speech excerpts, noise.

The speech comes from the five public-domain LibriVox clips in ``jsqa_sb/samples``; the
noise is synthesised, one style per CHiME-3 environment.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import fft as sfft
from scipy import signal

SR = 16000
ENVIRONMENTS = ("BUS", "CAF", "PED", "STR")
NOISE_DBFS = -32.0
_PEAK = 0.99  # written audio never exceeds this (no clipping in 16-bit PCM)


@functools.lru_cache(maxsize=1)
def _clips() -> tuple[tuple[np.ndarray, tuple[str, ...]], ...]:
    """Return the sample clips as (float64 audio at 16 kHz, upper-case words)."""
    folder = Path(__file__).parents[1] / "samples"
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
    """``n`` samples of 16 kHz noise at ``dbfs`` RMS, in the style of a CHiME-3 ``env``."""
    if env not in _NOISES:
        raise ValueError(f"unknown environment {env!r}; expected one of {ENVIRONMENTS}")
    return _set_level(_NOISES[env](rng, n, np.arange(n) / SR), dbfs)
