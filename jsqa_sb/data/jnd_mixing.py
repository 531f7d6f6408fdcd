"""Signal levels, SNR mixing and the settings of JND view groups.

A *view group* is one clean speech excerpt mixed with one noise excerpt at K
signal-to-noise ratios, drawn by the pair rule
(:meth:`jsqa_sb.data.pairs.JNDPairRule.sample_snrs`) so that every group holds at least
one alike pair and one different pair.

Levels follow the usual speech-quality conventions: the SNR is the speech *active*
level (an ITU-T P.56-style estimate that ignores pauses) against the noise RMS over
the same excerpt; mixtures are normalised to a fixed active level in dBFS, where
0 dBFS is the RMS of a full-scale square wave.
"""

from __future__ import annotations

import numpy as np

from jsqa_sb.data.pairs import JNDPairRule, JNDSettingsError, finite_number
from jsqa_sb.errors import JSQAError

#: Levels below this (dBFS) count as digital silence.
SILENCE_DB = -90.0


class SilentSignalError(JSQAError, ValueError):
    """A signal whose level is too low to define an SNR or a level."""


def rms_db(x: np.ndarray) -> float:
    """RMS level in dBFS (``-inf`` for digital silence).

    Example
    -------
    >>> round(rms_db(np.full(100, 0.1)), 2)
    -20.0
    """
    x = np.ravel(x)
    power = float(np.einsum("i,i->", x, x, dtype=np.float64)) / x.size if x.size else 0.0
    return float(10.0 * np.log10(power)) if power > 0 else float("-inf")


def frame_powers(
    x: np.ndarray, sample_rate: int = 16000, frame_ms: float = 10.0, y: np.ndarray | None = None
) -> np.ndarray:
    """Mean of ``x * y`` (default ``x * x``) over ``frame_ms`` frames; the tail is dropped."""
    frame = max(1, int(sample_rate * frame_ms / 1000))
    n_frames = x.size // frame
    xs = x[: n_frames * frame].reshape(n_frames, frame)
    ys = xs if y is None else y[: n_frames * frame].reshape(n_frames, frame)
    return np.einsum("ij,ij->i", xs, ys, dtype=np.float64) / frame


def level_from_frame_powers(powers: np.ndarray, margin_db: float = 15.9) -> np.ndarray | float:
    """Active level (dB, P.56-style) of (F,) frame powers, or (K,) levels of (K, F) ones.

    Frames within ``margin_db`` of the active level are active; the level and the active
    frames are a fixed point reached from the overall mean power, as in ITU-T P.56
    (method B) but on frame powers instead of a smoothed envelope.
    """
    powers = np.asarray(powers, dtype=np.float64)
    rows = np.atleast_2d(powers)
    threshold_ratio = 10.0 ** (-margin_db / 10.0)
    level = rows.mean(axis=1)
    for _ in range(4):  # the fixed point is reached in two or three steps
        active = rows >= (level * threshold_ratio)[:, None]
        level = np.where(
            active.any(axis=1), (rows * active).sum(axis=1) / np.maximum(active.sum(axis=1), 1), 0
        )
    with np.errstate(divide="ignore"):
        levels = 10.0 * np.log10(level)
    return float(levels[0]) if powers.ndim == 1 else levels


def mix_gains(
    speech: np.ndarray,
    noise: np.ndarray,
    snrs_db: np.ndarray,
    sample_rate: int = 16000,
    target_level_db: float | np.ndarray = -26.0,
    peak_limit: float = 0.99,
) -> np.ndarray:
    """The ``(K, 2)`` float32 speech and noise gains of one excerpt's mixtures at K SNRs.

    Mixture ``k`` is ``gains[k, 0] * speech + gains[k, 1] * noise`` (:func:`apply_gains`):
    the speech active level minus the noise RMS level is ``snrs_db[k]``, and the
    mixture's active level ``target_level_db`` (one value, or one per mixture), or less
    if its peak would exceed ``peak_limit`` (no clipping, ever). Raises
    :class:`SilentSignalError` if either excerpt is digital silence.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> s, n = rng.standard_normal(16000) * 0.1, rng.standard_normal(16000) * 0.1
    >>> g = mix_gains(s, n, np.array([0.0, 10.0]))
    >>> noise_re_speech_db = 20 * np.log10(g[:, 1] / g[:, 0])
    >>> g.shape, round(float(noise_re_speech_db[0] - noise_re_speech_db[1]), 2)
    ((2, 2), 10.0)
    """
    if speech.shape != noise.shape:
        raise ValueError(f"speech {speech.shape} and noise {noise.shape} differ in shape")
    speech = np.asarray(speech, dtype=np.float32)
    noise = np.asarray(noise, dtype=np.float32)
    p_ss = frame_powers(speech, sample_rate)
    speech_db = level_from_frame_powers(p_ss) if p_ss.size else rms_db(speech)
    noise_db = rms_db(noise)
    if speech_db < SILENCE_DB:
        raise SilentSignalError("the speech excerpt is digital silence")
    if noise_db < SILENCE_DB:
        raise SilentSignalError("the noise excerpt is digital silence")
    snrs = np.asarray(snrs_db, dtype=np.float64)
    gains = 10.0 ** ((speech_db - snrs - noise_db) / 20.0)
    # Levels of s + g n from the frame powers of s, n and their cross term: no mixture needed.
    p_nn = frame_powers(noise, sample_rate)
    p_sn = frame_powers(speech, sample_rate, y=noise)
    if p_ss.size:
        powers = p_ss + np.outer(gains**2, p_nn) + np.outer(2.0 * gains, p_sn)
        levels = level_from_frame_powers(powers)
    else:  # shorter than one frame
        levels = np.array([rms_db(speech + g * noise) for g in gains])
    scales = 10.0 ** ((target_level_db - levels) / 20.0)
    mix = np.stack([scales, scales * gains], axis=1).astype(np.float32)
    # Mixtures whose peak bound a max|s| + b max|n| exceeds the limit (with a margin for
    # float32 rounding) are made to find their peak, and scaled down if it is over.
    bound = mix.astype(np.float64) @ np.array([_peak(speech), _peak(noise)])
    check = np.flatnonzero(bound * (1.0 + 1e-5) > peak_limit)
    if check.size:
        peaks = _peak(apply_gains(speech, noise, mix[check]))
        loud = check[peaks > peak_limit]
        factor = peak_limit * (1.0 - 1e-6) / peaks[peaks > peak_limit]
        mix[loud] *= factor.astype(np.float32)[:, None]
    return mix


def _peak(x: np.ndarray) -> np.ndarray:
    """Largest absolute value along the last axis (no ``|x|`` temporary)."""
    return np.maximum(x.max(axis=-1), -x.min(axis=-1))


def apply_gains(speech: np.ndarray, noise: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """The ``(K, T)`` mixtures ``gains[k, 0] * speech + gains[k, 1] * noise`` (float32).

    Example
    -------
    >>> apply_gains(np.ones(3), np.full(3, 2.0), np.array([[1.0, 0.5], [0.0, 1.0]]))
    array([[2., 2., 2.],
           [2., 2., 2.]], dtype=float32)
    """
    gains = np.asarray(gains, dtype=np.float32)
    mixtures = gains[:, 0:1] * np.asarray(speech, dtype=np.float32)[None, :]
    mixtures += gains[:, 1:2] * np.asarray(noise, dtype=np.float32)[None, :]
    return mixtures


def check_jnd_settings(
    segment_seconds: float, views_per_group: int, snr_min: float, snr_max: float, rule: JNDPairRule
) -> None:
    """JNDSettingsError naming the first setting that would make wrong view groups.

    Example
    -------
    >>> check_jnd_settings(3.0, 4, float("nan"), 30.0, JNDPairRule())
    Traceback (most recent call last):
    ...
    jsqa_sb.data.pairs.JNDSettingsError: snr_min must be a finite number of dB, got nan
    """
    if finite_number("segment_seconds", segment_seconds, "seconds") <= 0:
        raise JNDSettingsError(f"segment_seconds must be positive, got {segment_seconds}")
    rule.check_views(views_per_group, snr_min, snr_max)


def check_level_range(level_range_db) -> tuple[float, float] | None:
    """A ``[low, high]`` dBFS range of view levels as a tuple (None stays None).

    JNDSettingsError unless two finite numbers, low <= high <= 0.

    Example
    -------
    >>> check_level_range([-36, -16])
    (-36.0, -16.0)
    >>> check_level_range([-16, -36])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    jsqa_sb.data.pairs.JNDSettingsError: level_range_db must be [low, high] dBFS ...
    """
    if level_range_db is None:
        return None
    values = list(level_range_db) if isinstance(level_range_db, (list, tuple)) else []
    ok = len(values) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in values
    )
    if not ok or not values[0] <= values[1] <= 0:
        raise JNDSettingsError(
            f"level_range_db must be [low, high] dBFS with low <= high <= 0, got {level_range_db}"
        )
    return float(values[0]), float(values[1])
