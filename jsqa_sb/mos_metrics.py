"""MOS prediction metrics per test set, as NISQA and its peers report them.

* :func:`pcc`, :func:`srcc`, :func:`rmse`: per-file Pearson and Spearman correlation
  and root-mean-square error between true and predicted MOS.
* :func:`per_condition`, :func:`pcc_con`, :func:`rmse_con`: the same on the MOS
  averaged per condition (the ``con`` column of the NISQA corpus tables).
* :func:`rmse_mapped`, :func:`rmse_mapped_dof`: RMSE after mapping the predictions
  onto the true values by a first-order (linear) or a monotonic third-order
  polynomial fitted per test set, in the spirit of ITU-T P.1401 (:func:`fit_mapping`,
  :func:`apply_mapping` give the mapping itself).
* :func:`evaluate_predictions`: all of the above for one test set, as a JSON-ready dict.

Predictions that contain NaN or infinite values are an error (``ValueError``), never a
silently bad metric: a model that emits NaN must be noticed.

Authors
 * JSQA contributors 2026
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.stats import pearsonr, spearmanr

#: Scores or labels: numpy arrays, pandas Series, sequences (torch tensors work too).
ArrayLike = Union[np.ndarray, pd.Series, Sequence[Any]]

#: Polynomial orders of the mappings of :func:`fit_mapping` (P.1401: first and third).
MAPPING_ORDERS = (1, 3)

#: Number of points of [min(pred), max(pred)] where the third-order fit must be increasing.
_MONOTONIC_GRID_POINTS = 101

#: Rounds of adding the lowest-derivative point to that grid (see :func:`fit_mapping`).
_MAX_REFINEMENTS = 10

#: Relative derivative deficit below which the third-order fit counts as increasing.
_REFINE_TOL = 1e-10


def _to_array(x: ArrayLike, name: str) -> np.ndarray:
    """Return ``x`` (array, list, Series or torch tensor) as a 1-D float64 array."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch
        x = x.detach().cpu().double().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim > 1 and arr.size == max(arr.shape):  # (N, 1) or (1, N)
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _to_labels(x: ArrayLike) -> pd.Series:
    """Return condition labels (array, list, Series or torch tensor) as a Series."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if isinstance(x, pd.Series):
        x = x.to_numpy()
    arr = np.asarray(x)
    if arr.ndim > 1 and arr.size == max(arr.shape):
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise ValueError(f"conditions must be one-dimensional, got shape {arr.shape}")
    return pd.Series(arr)


def _check_finite(arr: np.ndarray, name: str) -> None:
    """Raise a ValueError that counts the NaN and infinite values of ``arr``."""
    n_nan = int(np.isnan(arr).sum())
    n_inf = int(np.isinf(arr).sum())
    if n_nan or n_inf:
        parts = []
        if n_nan:
            parts.append(f"{n_nan} NaN values")
        if n_inf:
            parts.append(f"{n_inf} infinite values")
        raise ValueError(f"{name} contain {' and '.join(parts)} (out of {arr.size})")


def _check_pair(
    y_true: ArrayLike, y_pred: ArrayLike, min_items: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert a pair of true and predicted scores.

    Raises ``ValueError`` for non-finite values, different lengths, or fewer than
    ``min_items`` items (``what`` names the metric in the message).
    """
    t = _to_array(y_true, "y_true")
    p = _to_array(y_pred, "y_pred")
    if t.size != p.size:
        raise ValueError(f"y_true and y_pred must have the same length, got {t.size} and {p.size}")
    _check_finite(p, "predictions")
    _check_finite(t, "true scores")
    if t.size < min_items:
        raise ValueError(f"{what} needs at least {min_items} items, got {t.size}")
    return t, p


def _is_constant(x: np.ndarray) -> bool:
    return bool(np.ptp(x) == 0.0)


def pcc(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Pearson correlation coefficient between true and predicted scores.

    Arguments
    ---------
    y_true : array_like
        (N,) true scores (MOS), N >= 3.
    y_pred : array_like
        (N,) predicted scores.

    Returns
    -------
    float
        Pearson's r (:func:`scipy.stats.pearsonr`); NaN, without a warning, when
        either input is constant (the correlation is undefined).

    Raises
    ------
    ValueError
        For NaN or infinite values, different lengths, or fewer than 3 items.

    Example
    -------
    >>> round(pcc([1.0, 2.0, 3.0, 4.0], [1.1, 1.9, 3.2, 3.9]), 4)
    0.9934
    """
    t, p = _check_pair(y_true, y_pred, 3, "pcc")
    if _is_constant(t) or _is_constant(p):
        return float("nan")
    return float(pearsonr(t, p)[0])


def srcc(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Spearman rank correlation coefficient between true and predicted scores.

    Arguments
    ---------
    y_true : array_like
        (N,) true scores (MOS), N >= 3.
    y_pred : array_like
        (N,) predicted scores.

    Returns
    -------
    float
        Spearman's rho (:func:`scipy.stats.spearmanr`, ties get average ranks); NaN,
        without a warning, when either input is constant.

    Raises
    ------
    ValueError
        For NaN or infinite values, different lengths, or fewer than 3 items.

    Example
    -------
    >>> round(srcc([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0]), 6)
    0.8
    """
    t, p = _check_pair(y_true, y_pred, 3, "srcc")
    if _is_constant(t) or _is_constant(p):
        return float("nan")
    return float(spearmanr(t, p)[0])


def rmse(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Root-mean-square error between true and predicted scores (no mapping).

    Arguments
    ---------
    y_true : array_like
        (N,) true scores (MOS), N >= 2.
    y_pred : array_like
        (N,) predicted scores.

    Returns
    -------
    float
        ``sqrt(mean((y_pred - y_true) ** 2))``.

    Raises
    ------
    ValueError
        For NaN or infinite values, different lengths, or fewer than 2 items.

    Example
    -------
    >>> rmse([1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 3.0, 3.0])
    0.5590169943749475
    """
    t, p = _check_pair(y_true, y_pred, 2, "rmse")
    return float(np.sqrt(np.mean((p - t) ** 2)))


def per_condition(
    y_true: ArrayLike, y_pred: ArrayLike, conditions: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """Mean true and mean predicted score of each condition.

    Arguments
    ---------
    y_true : array_like
        (N,) true per-file scores.
    y_pred : array_like
        (N,) predicted per-file scores.
    conditions : array_like
        (N,) condition label of each file (the ``con`` column; any hashable labels,
        strings or integers).

    Returns
    -------
    true_means : numpy.ndarray
        (C,) mean true score of each condition.
    pred_means : numpy.ndarray
        (C,) mean predicted score of each condition, in the same order: the order in
        which the conditions first appear in ``conditions``.

    Raises
    ------
    ValueError
        For NaN or infinite scores, missing condition labels, or different lengths.

    Example
    -------
    >>> t, p = per_condition([1.0, 2.0, 4.0, 5.0], [1.5, 1.5, 4.0, 4.0], ["a", "a", "b", "b"])
    >>> t.tolist(), p.tolist()
    ([1.5, 4.5], [1.5, 4.0])
    """
    t, p = _check_pair(y_true, y_pred, 1, "per_condition")
    con = _to_labels(conditions)
    if con.size != t.size:
        raise ValueError(
            f"conditions must have one label per file, got {con.size} labels for {t.size} files"
        )
    n_missing = int(con.isna().sum())
    if n_missing:
        raise ValueError(f"conditions contain {n_missing} missing labels (out of {con.size})")
    frame = pd.DataFrame({"true": t, "pred": p, "con": con.to_numpy()})
    means = frame.groupby("con", sort=False)[["true", "pred"]].mean()
    return means["true"].to_numpy(dtype=np.float64), means["pred"].to_numpy(dtype=np.float64)


def pcc_con(y_true: ArrayLike, y_pred: ArrayLike, conditions: ArrayLike) -> float:
    """Pearson correlation of the per-condition mean scores (:func:`per_condition`).

    Arguments
    ---------
    y_true : array_like
        (N,) true per-file scores.
    y_pred : array_like
        (N,) predicted per-file scores.
    conditions : array_like
        (N,) condition label of each file; at least 3 conditions.

    Returns
    -------
    float
        Pearson's r between the condition means; NaN when either is constant.

    Example
    -------
    >>> con = ["a", "a", "b", "b", "c", "c"]
    >>> round(pcc_con([1, 2, 3, 4, 5, 6], [1, 1, 4, 4, 5, 5], con), 4)
    0.9608
    """
    return pcc(*per_condition(y_true, y_pred, conditions))


def rmse_con(y_true: ArrayLike, y_pred: ArrayLike, conditions: ArrayLike) -> float:
    """RMSE between the per-condition mean scores (:func:`per_condition`).

    Arguments
    ---------
    y_true : array_like
        (N,) true per-file scores.
    y_pred : array_like
        (N,) predicted per-file scores.
    conditions : array_like
        (N,) condition label of each file; at least 2 conditions.

    Returns
    -------
    float
        RMSE between the condition means, no mapping.

    Example
    -------
    >>> rmse_con([1.0, 3.0, 5.0, 5.0], [2.0, 2.0, 4.0, 4.0], [0, 0, 1, 1])
    0.7071067811865476
    """
    return rmse(*per_condition(y_true, y_pred, conditions))


def _check_order(order: int) -> int:
    if order not in MAPPING_ORDERS:
        raise ValueError(f"order must be one of {MAPPING_ORDERS}, got {order!r}")
    return int(order)


def _lowest_derivative(coefs_z: np.ndarray) -> tuple[float, float]:
    """Where over z in [-1, 1] the derivative of a cubic in z is lowest, and its value.

    The derivative ``b + 2 c z + 3 d z^2`` is a quadratic: its minimum over the interval
    lies at an end or at its vertex, so this is exact.
    """
    _, b, c, d = (float(v) for v in coefs_z)
    points = [-1.0, 1.0]
    if d != 0.0 and -1.0 < -c / (3.0 * d) < 1.0:
        points.append(-c / (3.0 * d))
    values = [b + 2.0 * c * z + 3.0 * d * z * z for z in points]
    i = int(np.argmin(values))
    return points[i], values[i]


def _min_derivative(coefs_z: np.ndarray) -> float:
    """Exact minimum over z in [-1, 1] of the derivative of a cubic in z."""
    return _lowest_derivative(coefs_z)[1]


def _fit_monotonic_cubic_z(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares cubic in ``z`` (spanning [-1, 1]) increasing over [-1, 1].

    Returns coefficients ``(a, b, c, d)`` of ``a + b z + c z^2 + d z^3``.
    """
    design = np.vander(z, 4, increasing=True)  # (N, 4): 1, z, z^2, z^3

    def sse(c: np.ndarray) -> float:
        return float(np.sum((design @ c - y) ** 2))

    # Unconstrained least squares: when it is already increasing over the range, the
    # constraint is inactive and it is the constrained optimum too.
    free = np.linalg.lstsq(design, y, rcond=None)[0]
    if _min_derivative(free) >= 0.0:
        return free

    # Start from the linear fit (feasible when its slope is not negative).
    slope = np.linalg.lstsq(design[:, :2], y, rcond=None)[0]
    start = np.array([slope[0], slope[1], 0.0, 0.0])
    if slope[1] < 0.0:
        start = np.array([float(np.mean(y)), 0.0, 0.0, 0.0])

    n = y.size
    gram = design.T @ design / n
    rhs = design.T @ y / n
    coefs = start
    grid = np.linspace(-1.0, 1.0, _MONOTONIC_GRID_POINTS)
    for _ in range(_MAX_REFINEMENTS + 1):
        # Derivative b + 2 c z + 3 d z^2 at each grid point: linear in the coefficients.
        deriv = np.stack([np.zeros_like(grid), np.ones_like(grid), 2.0 * grid, 3.0 * grid**2], 1)
        result = minimize(
            lambda c: 0.5 * float(c @ gram @ c) - float(rhs @ c),
            coefs,
            jac=lambda c: gram @ c - rhs,
            method="SLSQP",
            constraints=[
                {"type": "ineq", "fun": lambda c, m=deriv: m @ c, "jac": lambda c, m=deriv: m}
            ],
            options={"ftol": 1e-15, "maxiter": 1000},
        )
        coefs = np.asarray(result.x, dtype=np.float64)
        # Between the grid points the derivative may dip below zero: add the point where
        # it is lowest to the grid and solve again (a few rounds make the fit exact).
        where, lowest = _lowest_derivative(coefs)
        if not np.all(np.isfinite(coefs)) or lowest >= -_REFINE_TOL * max(
            1.0, float(np.abs(coefs[1:]).max())
        ):
            break
        grid = np.append(grid, where)
    # Within the solver's tolerance the derivative may still be marginally negative
    # somewhere: lift the slope by that deficit, so that the mapping is increasing over
    # the whole range.
    deficit = _min_derivative(coefs)
    if deficit < 0.0:
        coefs = coefs.copy()
        coefs[1] -= deficit
    if not np.all(np.isfinite(coefs)) or sse(coefs) > sse(start):
        coefs = start  # never worse than the (feasible) start
    return coefs


def _fit_mapping_scaled(
    y_true: np.ndarray, y_pred: np.ndarray, order: int
) -> tuple[np.ndarray, float, float]:
    """Fit the mapping on scaled predictions ``z = (y_pred - center) / scale``.

    Returns the coefficients in ``z`` (increasing powers, ``order + 1`` of them),
    ``center`` and ``scale``. Constant predictions: the constant map to the mean.
    """
    lo, hi = float(np.min(y_pred)), float(np.max(y_pred))
    if hi == lo:
        coefs = np.zeros(order + 1)
        coefs[0] = float(np.mean(y_true))
        return coefs, lo, 1.0
    center, scale = 0.5 * (lo + hi), 0.5 * (hi - lo)
    z = (y_pred - center) / scale
    if order == 1:
        coefs = np.linalg.lstsq(np.vander(z, 2, increasing=True), y_true, rcond=None)[0]
    else:
        coefs = _fit_monotonic_cubic_z(z, y_true)
    return coefs, center, scale


def fit_mapping(y_true: ArrayLike, y_pred: ArrayLike, order: int = 1) -> np.ndarray:
    """Fit the polynomial that maps predictions onto true scores (P.1401 style).

    ``order=1``: least-squares line ``a + b x``. ``order=3``: least-squares cubic
    ``a + b x + c x^2 + d x^3`` constrained to be monotonically increasing over
    ``[min(y_pred), max(y_pred)]`` (ITU-T P.1401): its derivative
    ``b + 2 c x + 3 d x^2`` must be >= 0 at a grid of points spanning that range.
    When the unconstrained least-squares cubic already satisfies this, it is the
    answer; otherwise the constrained problem is solved with
    :func:`scipy.optimize.minimize` (SLSQP) started from the linear fit, on
    predictions scaled to [-1, 1] for conditioning, with 101 grid points; the point
    where the fitted derivative is lowest (exact: it is a quadratic) is then added to
    the grid and the fit repeated while the derivative dips below zero (at most 10
    rounds), and the slope is finally lifted by any remaining tiny deficit, so that the
    cubic is increasing over the whole range, not only at the grid points, and the fit
    is the constrained least-squares optimum to solver precision. If the predictions
    are anticorrelated with the true scores the increasing cubic flattens (the linear
    map has no sign constraint). Constant predictions give the constant map to the
    mean true score.

    Arguments
    ---------
    y_true : array_like
        (N,) true scores; N >= ``order + 1``.
    y_pred : array_like
        (N,) predicted scores.
    order : int
        1 or 3.

    Returns
    -------
    numpy.ndarray
        (order + 1,) coefficients in increasing powers of the prediction,
        ``[a, b]`` or ``[a, b, c, d]`` (see :func:`apply_mapping`).

    Raises
    ------
    ValueError
        For an unsupported order, NaN or infinite values, different lengths, or
        fewer than ``order + 1`` items.

    Example
    -------
    >>> np.round(fit_mapping([1.0, 2.0, 3.0], [3.0, 5.0, 7.0]), 6).tolist()
    [-0.5, 0.5]
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
    """Apply a mapping of :func:`fit_mapping` to predictions.

    Arguments
    ---------
    coefficients : array_like
        Polynomial coefficients in increasing powers.
    y_pred : array_like
        (N,) predicted scores.

    Returns
    -------
    numpy.ndarray
        (N,) mapped predictions.

    Example
    -------
    >>> apply_mapping([-0.5, 0.5], [3.0, 5.0]).tolist()
    [1.0, 2.0]
    """
    coefs = _to_array(coefficients, "coefficients")
    return np.polynomial.polynomial.polyval(_to_array(y_pred, "y_pred"), coefs)


def _mapped_errors(y_true: ArrayLike, y_pred: ArrayLike, order: int, min_items: int):
    order = _check_order(order)
    t, p = _check_pair(y_true, y_pred, min_items, f"order-{order} mapped RMSE")
    coefs_z, center, scale = _fit_mapping_scaled(t, p, order)
    mapped = np.polynomial.polynomial.polyval((p - center) / scale, coefs_z)
    return mapped - t


def rmse_mapped(y_true: ArrayLike, y_pred: ArrayLike, order: int = 1) -> float:
    """RMSE after mapping the predictions onto the true scores (ITU-T P.1401 style).

    The mapping (:func:`fit_mapping`) is fitted on this very set of scores (per test
    set): first-order (least-squares line) or monotonic third-order. This is the
    plain RMSE after the mapping, ``sqrt(mean(err^2))``: neither P.1401's
    degrees-of-freedom correction (see :func:`rmse_mapped_dof`) nor its
    epsilon-insensitive ``rmse*`` is applied.

    Arguments
    ---------
    y_true : array_like
        (N,) true scores; N >= ``order + 1`` (with exactly ``order + 1`` items the
        fit is typically exact and the RMSE 0).
    y_pred : array_like
        (N,) predicted scores.
    order : int
        1 or 3.

    Returns
    -------
    float
        RMSE of the mapped predictions.

    Example
    -------
    >>> round(rmse_mapped([1.0, 2.0, 3.0, 4.0], [3.0, 5.0, 7.0, 9.0]), 9)
    0.0
    """
    order = _check_order(order)
    err = _mapped_errors(y_true, y_pred, order, order + 1)
    return float(np.sqrt(np.mean(err**2)))


def rmse_mapped_dof(y_true: ArrayLike, y_pred: ArrayLike, order: int = 1) -> float:
    """Mapped RMSE corrected for the degrees of freedom of the mapping (P.1401).

    ``sqrt(sum(err^2) / (N - d))`` with ``d = order + 1`` the number of mapping
    coefficients; otherwise as :func:`rmse_mapped`.

    Arguments
    ---------
    y_true : array_like
        (N,) true scores; N >= ``order + 2``.
    y_pred : array_like
        (N,) predicted scores.
    order : int
        1 or 3.

    Returns
    -------
    float
        Degrees-of-freedom-corrected RMSE of the mapped predictions.

    Example
    -------
    >>> round(rmse_mapped_dof([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0]), 6)
    0.948683
    """
    order = _check_order(order)
    err = _mapped_errors(y_true, y_pred, order, order + 2)
    return float(np.sqrt(np.sum(err**2) / (err.size - (order + 1))))


def evaluate_predictions(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    conditions: Optional[ArrayLike] = None,
    condition_true: Optional[Mapping] = None,
) -> dict[str, Union[float, int]]:
    """All metrics of one test set, per file and (with conditions) per condition.

    Arguments
    ---------
    y_true : array_like
        (N,) true per-file scores; N >= 4 (the third-order mapping needs 4).
    y_pred : array_like
        (N,) predicted per-file scores.
    conditions : array_like, optional
        (N,) condition label of each file (the ``con`` column).
    condition_true : mapping, optional
        The true score of each condition (label, compared as a string, to score),
        as NISQA's ``NISQA_corpus_con.csv`` gives it: NISQA's own evaluation takes the
        per-condition "true" MOS from there, not from the mean of the files. Every
        condition of ``conditions`` must be in it. Without it, the mean of the files.

    Returns
    -------
    dict
        ``pcc``, ``srcc``, ``rmse``, ``rmse_map1``, ``rmse_map3`` (per file) and
        ``n_files``; with ``conditions`` also ``pcc_con``, ``rmse_con``,
        ``rmse_con_map1``, ``rmse_con_map3`` (mappings fitted on the condition means)
        and ``n_conditions``. Metrics are Python floats, counts Python ints. A
        per-condition metric is NaN when the test set has too few conditions for it
        (fewer than 3 for ``pcc_con``, 2 for ``rmse_con`` and ``rmse_con_map1``, 4 for
        ``rmse_con_map3``), and a correlation is NaN when an input is constant;
        :func:`json.dumps` writes NaN as ``NaN`` (not strict JSON).

    Raises
    ------
    ValueError
        For NaN or infinite values, different lengths, or fewer than 4 files.

    Example
    -------
    >>> m = evaluate_predictions([1, 2, 3, 4, 5, 6], [1.2, 1.9, 3.1, 3.8, 5.2, 5.9],
    ...                          conditions=[0, 0, 1, 1, 2, 2])
    >>> round(m["pcc"], 3), m["n_files"], m["n_conditions"], round(m["rmse_con"], 3)
    (0.996, 6, 3, 0.05)
    """
    t, p = _check_pair(y_true, y_pred, 4, "evaluate_predictions")
    out: dict[str, Union[float, int]] = {
        "pcc": pcc(t, p),
        "srcc": srcc(t, p),
        "rmse": rmse(t, p),
        "rmse_map1": rmse_mapped(t, p, order=1),
        "rmse_map3": rmse_mapped(t, p, order=3),
        "n_files": int(t.size),
    }
    if conditions is not None:
        t_con, p_con = per_condition(t, p, conditions)
        if condition_true is not None:
            table = {str(k): float(v) for k, v in condition_true.items()}
            labels = [str(c) for c in pd.unique(_to_labels(conditions))]  # per_condition's order
            missing = [c for c in labels if c not in table]
            if missing:
                raise ValueError(
                    f"{len(missing)} condition(s) have no true score in the condition table "
                    f"(e.g. {missing[0]!r})"
                )
            t_con = np.array([table[c] for c in labels])
            _check_finite(t_con, "condition scores")
        n_con = int(t_con.size)
        nan = float("nan")
        out["pcc_con"] = pcc(t_con, p_con) if n_con >= 3 else nan
        out["rmse_con"] = rmse(t_con, p_con) if n_con >= 2 else nan
        out["rmse_con_map1"] = rmse_mapped(t_con, p_con, order=1) if n_con >= 2 else nan
        out["rmse_con_map3"] = rmse_mapped(t_con, p_con, order=3) if n_con >= 4 else nan
        out["n_conditions"] = n_con
    return out
