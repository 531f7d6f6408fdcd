"""Reference code the tests compare the package with, or use to check it.

Not part of the package: nothing in ``jsqa_sb`` or the recipes uses these.
"""

import numpy as np

from jsqa_sb.data.jnd_mixing import (
    apply_gains,
    frame_powers,
    level_from_frame_powers,
    mix_gains,
    rms_db,
)
from jsqa_sb.data.pairs import JNDPairRule
from jsqa_sb.evaluation.mos_metrics import (
    ArrayLike,
    _check_order,
    _check_pair,
    _fit_mapping_scaled,
    _mapped_errors,
    _to_array,
)


def fit_mapping(y_true: ArrayLike, y_pred: ArrayLike, order: int = 1) -> np.ndarray:
    """The mapping of ``jsqa_sb.evaluation.mos_metrics.rmse_mapped``, in powers of the prediction.

    ``[a, b]`` (order 1) or ``[a, b, c, d]`` (order 3, increasing over the predictions'
    range); constant predictions give the constant map to the mean true score.
    """
    order = _check_order(order)
    t, p = _check_pair(y_true, y_pred, order + 1, f"order-{order} mapping")
    coefs_z, center, scale = _fit_mapping_scaled(t, p, order)
    # Compose the polynomial in z with z = (x - center) / scale.
    in_x = np.polynomial.Polynomial(coefs_z)(np.polynomial.Polynomial([-center / scale, 1 / scale]))
    out = np.zeros(order + 1)
    out[: in_x.coef.size] = in_x.coef
    return out


def apply_mapping(coefficients: ArrayLike, y_pred: ArrayLike) -> np.ndarray:
    """Apply a mapping of :func:`fit_mapping` (coefficients in increasing powers)."""
    coefs = _to_array(coefficients, "coefficients")
    return np.polynomial.polynomial.polyval(_to_array(y_pred, "y_pred"), coefs)


def rmse_mapped_dof(y_true: ArrayLike, y_pred: ArrayLike, order: int = 1) -> float:
    """Mapped RMSE with P.1401's degrees-of-freedom correction: sqrt(SSE / (N - order - 1))."""
    order = _check_order(order)
    err = _mapped_errors(y_true, y_pred, order, order + 2)
    return float(np.sqrt(np.sum(err**2) / (err.size - (order + 1))))


def active_level_db(
    x: np.ndarray, sample_rate: int = 16000, frame_ms: float = 10.0, margin_db: float = 15.9
) -> float:
    """Active speech level of a signal in dBFS, ``-inf`` for digital silence (P.56-style).

    The level ``jsqa_sb.data.jnd_mixing.mix_gains`` sets, from one signal's frame powers.
    """
    powers = frame_powers(x, sample_rate, frame_ms)
    if powers.size == 0:
        return rms_db(x)
    return level_from_frame_powers(powers, margin_db)


def mix_at_snrs(
    speech: np.ndarray,
    noise: np.ndarray,
    snrs_db: np.ndarray,
    sample_rate: int = 16000,
    target_level_db: float = -26.0,
    peak_limit: float = 0.99,
) -> np.ndarray:
    """The ``(K, T)`` float32 mixtures of one excerpt at K SNRs, made on the CPU.

    ``jsqa_sb.data.jnd_mixing.mix_gains`` applied; the views of ``jsqa_sb.data.jnd_data`` equal
    these to float32 rounding.
    """
    gains = mix_gains(speech, noise, snrs_db, sample_rate, target_level_db, peak_limit)
    return apply_gains(speech, noise, gains)


def jnd_pair_masks(snrs, groups, jnd_db: float = 3.0, neg_margin_db=None):
    """Masks of ``JNDPairRule(jnd_db, neg_margin_db, "within_group")``; ``groups``: any key."""
    return JNDPairRule(jnd_db, neg_margin_db, "within_group").masks(snrs, groups)


def pair_keys(scheme: str, groups, noises=None, environments=None):
    """The (N,) comparability key of each view under ``scheme``."""
    return JNDPairRule(pairs=scheme).keys(groups, noises, environments)


def sample_group_snrs(rng, num_views, snr_min=-5.0, snr_max=30.0, jnd_db=3.0, neg_margin_db=6.0):
    """Draw the K SNRs of one view group with the pair rule of these steps."""
    return JNDPairRule(jnd_db, neg_margin_db).sample_snrs(rng, num_views, snr_min, snr_max)
