"""MOS prediction metrics per test set, as NISQA and its peers report them.

Per file (:func:`pcc`, :func:`srcc`, :func:`rmse`), per condition (:func:`pcc_con`,
:func:`rmse_con` on the condition means), and RMSE after a first-order or monotonic
third-order mapping fitted per test set (:func:`rmse_mapped`, ITU-T P.1401 style);
:func:`evaluate_predictions` gives them all. NaN or infinite predictions are a
``ValueError``, never a silently bad metric.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional, Union

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.stats import pearsonr, spearmanr

#: Scores or labels: numpy arrays, pandas Series, sequences (torch tensors work too).
ArrayLike = Union[np.ndarray, pd.Series, Sequence[Any]]

#: Polynomial orders of the mappings (P.1401: first and third).
MAPPING_ORDERS = (1, 3)

#: Points of [min(pred), max(pred)] where the third-order fit must be increasing.
_MONOTONIC_GRID_POINTS = 101
#: Rounds of adding the lowest-derivative point to that grid.
_MAX_REFINEMENTS = 10
#: Relative derivative deficit below which the third-order fit counts as increasing.
_REFINE_TOL = 1e-10


def _to_array(x: ArrayLike, name: str, numeric: bool = True) -> np.ndarray:
    """``x`` (array, list, Series or torch tensor) as 1-D, float64 if ``numeric``.

    (N, 1) and (1, N) are flattened.
    """
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch
        x = x.detach().cpu()
        x = (x.double() if numeric else x).numpy()
    arr = np.asarray(x, dtype=np.float64 if numeric else None)
    if arr.ndim > 1 and arr.size == max(arr.shape):
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _check_finite(arr: np.ndarray, name: str) -> None:
    """Raise a ValueError that counts the NaN and infinite values of ``arr``."""
    counts = ((int(np.isnan(arr).sum()), "NaN"), (int(np.isinf(arr).sum()), "infinite"))
    parts = [f"{n} {kind} values" for n, kind in counts if n]
    if parts:
        raise ValueError(f"{name} contain {' and '.join(parts)} (out of {arr.size})")


def _check_pair(
    y_true: ArrayLike, y_pred: ArrayLike, min_items: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Both as arrays; ValueError if not finite, of different lengths or too short."""
    t = _to_array(y_true, "y_true")
    p = _to_array(y_pred, "y_pred")
    if t.size != p.size:
        raise ValueError(f"y_true and y_pred must have the same length, got {t.size} and {p.size}")
    _check_finite(p, "predictions")
    _check_finite(t, "true scores")
    if t.size < min_items:
        raise ValueError(f"{what} needs at least {min_items} items, got {t.size}")
    return t, p


def _correlation(correlation: Callable, y_true: ArrayLike, y_pred: ArrayLike, what: str) -> float:
    t, p = _check_pair(y_true, y_pred, 3, what)
    if np.ptp(t) == 0.0 or np.ptp(p) == 0.0:
        return float("nan")
    return float(correlation(t, p)[0])


def pcc(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Pearson correlation of (N,) true and predicted scores, N >= 3.

    NaN, without a warning, when either input is constant. ``ValueError`` for NaN or
    infinite values, different lengths or too few items (as every metric here).

    Example
    -------
    >>> round(pcc([1.0, 2.0, 3.0, 4.0], [1.1, 1.9, 3.2, 3.9]), 4)
    0.9934
    """
    return _correlation(pearsonr, y_true, y_pred, "pcc")


def srcc(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Spearman rank correlation (ties get average ranks), N >= 3; NaN if constant.

    Example
    -------
    >>> round(srcc([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0]), 6)
    0.8
    """
    return _correlation(spearmanr, y_true, y_pred, "srcc")


def rmse(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Root-mean-square error, no mapping, N >= 2.

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
    """Mean true and mean predicted score of each condition (any hashable labels).

    The conditions are in the order they first appear in ``conditions``.

    Example
    -------
    >>> t, p = per_condition([1.0, 2.0, 4.0, 5.0], [1.5, 1.5, 4.0, 4.0], ["a", "a", "b", "b"])
    >>> t.tolist(), p.tolist()
    ([1.5, 4.5], [1.5, 4.0])
    """
    t, p = _check_pair(y_true, y_pred, 1, "per_condition")
    con = pd.Series(_to_array(conditions, "conditions", numeric=False))
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
    """Pearson correlation of the condition means (at least 3 conditions).

    Example
    -------
    >>> con = ["a", "a", "b", "b", "c", "c"]
    >>> round(pcc_con([1, 2, 3, 4, 5, 6], [1, 1, 4, 4, 5, 5], con), 4)
    0.9608
    """
    return pcc(*per_condition(y_true, y_pred, conditions))


def rmse_con(y_true: ArrayLike, y_pred: ArrayLike, conditions: ArrayLike) -> float:
    """RMSE of the condition means (at least 2 conditions), no mapping.

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
    """Where over z in [-1, 1] a cubic's derivative (a quadratic) is lowest, and its value."""
    _, b, c, d = (float(v) for v in coefs_z)
    points = [-1.0, 1.0]
    if d != 0.0 and -1.0 < -c / (3.0 * d) < 1.0:
        points.append(-c / (3.0 * d))
    values = [b + 2.0 * c * z + 3.0 * d * z * z for z in points]
    i = int(np.argmin(values))
    return points[i], values[i]


def _fit_monotonic_cubic_z(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares cubic ``(a, b, c, d)`` in ``z`` (spanning [-1, 1]), increasing there.

    The unconstrained fit when it is increasing; otherwise SLSQP from the linear fit with
    the derivative >= 0 at a grid, adding the point where it is lowest (exact: a
    quadratic) while it dips below zero, then lifting the slope by any tiny deficit left.
    Anticorrelated predictions give a flat cubic; never worse than the start.
    """
    design = np.vander(z, 4, increasing=True)  # (N, 4): 1, z, z^2, z^3

    def sse(c: np.ndarray) -> float:
        return float(np.sum((design @ c - y) ** 2))

    # When the unconstrained fit is increasing, the constraint is inactive.
    free = np.linalg.lstsq(design, y, rcond=None)[0]
    if _lowest_derivative(free)[1] >= 0.0:
        return free

    # Start from the linear fit (feasible when its slope is not negative).
    slope = np.linalg.lstsq(design[:, :2], y, rcond=None)[0]
    start = np.array([slope[0], slope[1], 0.0, 0.0])
    if slope[1] < 0.0:
        start = np.array([float(np.mean(y)), 0.0, 0.0, 0.0])

    gram, rhs = design.T @ design / y.size, design.T @ y / y.size
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
        # Between the grid points the derivative may dip below zero: add that point.
        where, lowest = _lowest_derivative(coefs)
        if not np.all(np.isfinite(coefs)) or lowest >= -_REFINE_TOL * max(
            1.0, float(np.abs(coefs[1:]).max())
        ):
            break
        grid = np.append(grid, where)
    # Lift the slope by what is left of a deficit within the solver's tolerance.
    coefs = coefs - np.array([0.0, min(0.0, _lowest_derivative(coefs)[1]), 0.0, 0.0])
    if not np.all(np.isfinite(coefs)) or sse(coefs) > sse(start):
        coefs = start  # never worse than the (feasible) start
    return coefs


def _fit_mapping_scaled(
    y_true: np.ndarray, y_pred: np.ndarray, order: int
) -> tuple[np.ndarray, float, float]:
    """Coefficients in ``z = (y_pred - center) / scale``, ``center``, ``scale``.

    Constant predictions: the constant map to the mean.
    """
    lo, hi = float(np.min(y_pred)), float(np.max(y_pred))
    if hi == lo:
        return np.array([float(np.mean(y_true))] + [0.0] * order), lo, 1.0
    center, scale = 0.5 * (lo + hi), 0.5 * (hi - lo)
    z = (y_pred - center) / scale
    if order == 1:
        coefs = np.linalg.lstsq(np.vander(z, 2, increasing=True), y_true, rcond=None)[0]
    else:
        coefs = _fit_monotonic_cubic_z(z, y_true)
    return coefs, center, scale


def _mapped_errors(y_true: ArrayLike, y_pred: ArrayLike, order: int, min_items: int):
    t, p = _check_pair(y_true, y_pred, min_items, f"order-{order} mapped RMSE")
    coefs_z, center, scale = _fit_mapping_scaled(t, p, order)
    mapped = np.polynomial.polynomial.polyval((p - center) / scale, coefs_z)
    return mapped - t


def rmse_mapped(y_true: ArrayLike, y_pred: ArrayLike, order: int = 1) -> float:
    """RMSE after mapping the predictions onto the true scores (ITU-T P.1401 style).

    The mapping is fitted on these very scores, N >= ``order + 1``: a least-squares
    line (``order=1``) or a least-squares cubic increasing over [min(y_pred),
    max(y_pred)] (``order=3``). Plain ``sqrt(mean(err^2))``: neither P.1401's
    degrees-of-freedom correction nor its epsilon-insensitive ``rmse*``.

    Example
    -------
    >>> round(rmse_mapped([1.0, 2.0, 3.0, 4.0], [3.0, 5.0, 7.0, 9.0]), 9)
    0.0
    """
    order = _check_order(order)
    err = _mapped_errors(y_true, y_pred, order, order + 1)
    return float(np.sqrt(np.mean(err**2)))


def evaluate_predictions(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    conditions: Optional[ArrayLike] = None,
    condition_true: Optional[Mapping] = None,
) -> dict[str, Union[float, int]]:
    """All metrics of one test set (N >= 4 files), per file and per condition.

    Gives ``pcc``, ``srcc``, ``rmse``, ``rmse_map1``, ``rmse_map3`` and ``n_files``;
    with ``conditions`` (the ``con`` label of each file) also ``pcc_con``, ``rmse_con``,
    ``rmse_con_map1``, ``rmse_con_map3`` (mapped on the condition means) and
    ``n_conditions``, as Python floats and ints. A per-condition metric is NaN with
    too few conditions (3 for ``pcc_con``, 2 for ``rmse_con`` and ``rmse_con_map1``, 4
    for ``rmse_con_map3``), a correlation NaN when an input is constant.

    ``condition_true`` maps each condition (compared as a string) to its true score,
    as NISQA's ``NISQA_corpus_con.csv`` does and NISQA's own evaluation uses; every
    condition must be in it. Without it, the mean of the files.

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
            con = _to_array(conditions, "conditions", numeric=False)
            labels = [str(c) for c in pd.unique(con)]  # per_condition's order
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
