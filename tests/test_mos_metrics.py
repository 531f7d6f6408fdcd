import doctest
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from reference import apply_mapping, fit_mapping, rmse_mapped_dof
from scipy.optimize import least_squares
from scipy.stats import pearsonr, spearmanr

import jsqa_sb.evaluation.mos_metrics
from jsqa_sb.evaluation.mos_metrics import (
    evaluate_predictions,
    pcc,
    pcc_con,
    per_condition,
    rmse,
    rmse_con,
    rmse_mapped,
    srcc,
)

FILE_KEYS = {"pcc", "srcc", "rmse", "rmse_map1", "rmse_map3", "n_files"}
CON_KEYS = {"pcc_con", "rmse_con", "rmse_con_map1", "rmse_con_map3", "n_conditions"}


def test_doctests():
    assert doctest.testmod(jsqa_sb.evaluation.mos_metrics).failed == 0


def _random_scores(n=200, seed=0):
    rng = np.random.default_rng(seed)
    true = rng.uniform(1.0, 5.0, n)
    pred = true + rng.normal(0.0, 0.6, n)
    return true, pred


def _polyfit_rmse(true, pred, deg):
    fitted = np.polyval(np.polyfit(pred, true, deg), pred)
    return float(np.sqrt(np.mean((fitted - true) ** 2)))


def _derivative(coefs, x):
    return np.polynomial.polynomial.polyval(x, np.polynomial.polynomial.polyder(coefs))


# --- per-file metrics -----------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pcc_srcc_match_scipy(seed):
    true, pred = _random_scores(seed=seed)
    assert pcc(true, pred) == pytest.approx(pearsonr(true, pred)[0], abs=1e-12)
    assert srcc(true, pred) == pytest.approx(spearmanr(true, pred)[0], abs=1e-12)


def test_srcc_with_ties_matches_scipy():
    true = np.array([1.0, 2.0, 2.0, 3.0, 4.0, 4.0, 5.0])
    pred = np.array([1.0, 1.0, 2.5, 3.0, 3.0, 4.5, 5.0])
    assert srcc(true, pred) == pytest.approx(spearmanr(true, pred)[0], abs=1e-12)


def test_rmse_hand_computed():
    # errors 0.5, 0, 0, -1 -> mean squared error (0.25 + 1) / 4 = 0.3125
    assert rmse([1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 3.0, 3.0]) == pytest.approx(math.sqrt(0.3125))


def test_perfect_prediction():
    true, _ = _random_scores()
    assert pcc(true, true) == pytest.approx(1.0)
    assert srcc(true, true) == pytest.approx(1.0)
    assert rmse(true, true) == 0.0
    assert rmse_mapped(true, true, order=1) == pytest.approx(0.0, abs=1e-9)
    assert rmse_mapped(true, true, order=3) == pytest.approx(0.0, abs=1e-9)


def test_metrics_return_python_floats():
    true, pred = _random_scores(n=20)
    for fn in (pcc, srcc, rmse, rmse_mapped, rmse_mapped_dof):
        assert type(fn(true, pred)) is float


def test_accepts_lists_series_column_vectors_and_tensors():
    true, pred = _random_scores(n=30)
    expected = pcc(true, pred)
    assert pcc(list(true), list(pred)) == pytest.approx(expected)
    assert pcc(pd.Series(true), pd.Series(pred)) == pytest.approx(expected)
    assert pcc(true[:, None], pred[:, None]) == pytest.approx(expected)
    torch = pytest.importorskip("torch")
    assert pcc(torch.tensor(true), torch.tensor(pred, dtype=torch.float32)) == pytest.approx(
        expected, abs=1e-6
    )
    with pytest.raises(ValueError, match="one-dimensional"):
        pcc(np.ones((3, 2)), np.ones((3, 2)))


def test_constant_input_gives_nan_correlation_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(pcc([1.0, 2.0, 3.0], [2.0, 2.0, 2.0]))
        assert math.isnan(srcc([3.0, 3.0, 3.0], [1.0, 2.0, 3.0]))
        # The mappings of constant predictions are the constant mean of the truth.
        true = [1.0, 2.0, 3.0, 6.0]
        for order in (1, 3):
            assert rmse_mapped(true, [2.0] * 4, order=order) == pytest.approx(np.std(true))
            coefs = fit_mapping(true, [2.0] * 4, order=order)
            assert coefs.tolist() == [3.0] + [0.0] * order


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [pcc, srcc, rmse, rmse_mapped, rmse_mapped_dof])
def test_nan_predictions_raise_with_count(fn):
    true, pred = _random_scores(n=10)
    pred[[2, 5, 7]] = np.nan
    with pytest.raises(ValueError, match=r"predictions contain 3 NaN values"):
        fn(true, pred)


def test_infinite_predictions_and_nan_targets_raise():
    true, pred = _random_scores(n=10)
    pred[0] = np.inf
    pred[1] = -np.inf
    pred[2] = np.nan
    with pytest.raises(ValueError, match=r"1 NaN values and 2 infinite values"):
        rmse(true, pred)
    true[4] = np.nan
    with pytest.raises(ValueError, match=r"true scores contain 1 NaN values"):
        rmse(true, np.ones(10))


def test_nan_predictions_raise_in_evaluate_and_per_condition():
    true, pred = _random_scores(n=10)
    pred[0] = np.nan
    with pytest.raises(ValueError, match="predictions contain 1 NaN values"):
        evaluate_predictions(true, pred, conditions=np.arange(10) % 3)
    with pytest.raises(ValueError, match="predictions contain 1 NaN values"):
        per_condition(true, pred, np.arange(10) % 3)


@pytest.mark.parametrize("fn", [pcc, srcc, rmse, rmse_mapped, evaluate_predictions])
def test_length_mismatch_raises(fn):
    with pytest.raises(ValueError, match="same length"):
        fn([1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0])


def test_too_few_items_raise():
    with pytest.raises(ValueError, match="at least 3"):
        pcc([1.0, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="at least 3"):
        srcc([1.0, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="at least 2"):
        rmse([1.0], [1.0])
    with pytest.raises(ValueError, match="at least 2"):
        rmse_mapped([1.0], [1.0], order=1)
    with pytest.raises(ValueError, match="at least 4"):
        rmse_mapped([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], order=3)
    with pytest.raises(ValueError, match="at least 3"):
        rmse_mapped_dof([1.0, 2.0], [1.0, 2.0], order=1)
    with pytest.raises(ValueError, match="at least 4"):
        evaluate_predictions([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])


def test_unsupported_order_raises():
    with pytest.raises(ValueError, match="order must be one of"):
        rmse_mapped([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], order=2)


def test_condition_label_errors():
    with pytest.raises(ValueError, match="one label per file"):
        per_condition([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], ["a", "b"])
    with pytest.raises(ValueError, match="1 missing labels"):
        per_condition([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], ["a", None, "b"])


# --- per condition --------------------------------------------------------------------

# Three conditions, interleaved, with 2-3 files each:
#   A: true 1, 2     pred 1.5, 2.5    -> means 1.5, 2.0
#   B: true 3, 4, 5  pred 3, 3.5, 4   -> means 4.0, 3.5
#   C: true 2, 3     pred 2, 2        -> means 2.5, 2.0
CON = ["A", "B", "C", "A", "B", "C", "B"]
CON_TRUE = [1.0, 3.0, 2.0, 2.0, 4.0, 3.0, 5.0]
CON_PRED = [1.5, 3.0, 2.0, 2.5, 3.5, 2.0, 4.0]


def test_per_condition_means_hand_built():
    true_means, pred_means = per_condition(CON_TRUE, CON_PRED, CON)
    np.testing.assert_allclose(true_means, [1.5, 4.0, 2.5])
    np.testing.assert_allclose(pred_means, [2.0, 3.5, 2.0])


def test_per_condition_metrics_hand_computed():
    # Errors of the means: 0.5, -0.5, -0.5 -> RMSE 0.5.
    assert rmse_con(CON_TRUE, CON_PRED, CON) == pytest.approx(0.5)
    # Deviations from the means (8/3 and 2.5): true (-7/6, 4/3, -1/6), pred (-1/2, 1, -1/2):
    # Sxy = 2, Sxx = 19/6, Syy = 3/2 -> r = 2 / sqrt(19/6 * 3/2) = 2 / sqrt(4.75).
    assert pcc_con(CON_TRUE, CON_PRED, CON) == pytest.approx(2.0 / math.sqrt(4.75))


def test_per_condition_integer_labels_and_series():
    con_int = pd.Series([{"A": 7, "B": 3, "C": 5}[c] for c in CON])
    true_means, pred_means = per_condition(CON_TRUE, CON_PRED, con_int)
    np.testing.assert_allclose(true_means, [1.5, 4.0, 2.5])  # order of first appearance
    np.testing.assert_allclose(pred_means, [2.0, 3.5, 2.0])


# --- first-order mapping --------------------------------------------------------------


def test_first_order_mapping_removes_linear_bias():
    rng = np.random.default_rng(3)
    true = rng.uniform(1.0, 5.0, 300)
    noise = 0.05
    pred = 2.0 * true + 1.0 + rng.normal(0.0, noise, true.size)
    raw = rmse(true, pred)
    mapped = rmse_mapped(true, pred, order=1)
    assert raw > 3.0
    # Mapping pred back onto true scales the noise by 1/2.
    assert mapped == pytest.approx(noise / 2.0, rel=0.2)
    assert mapped < raw / 50.0
    assert mapped == pytest.approx(_polyfit_rmse(true, pred, 1), rel=1e-9)
    np.testing.assert_allclose(fit_mapping(true, pred, order=1), np.polyfit(pred, true, 1)[::-1])


def test_first_order_dof_correction():
    true, pred = _random_scores(n=25, seed=4)
    sse = np.sum((np.polyval(np.polyfit(pred, true, 1), pred) - true) ** 2)
    assert rmse_mapped_dof(true, pred, order=1) == pytest.approx(math.sqrt(sse / (25 - 2)))
    assert rmse_mapped_dof(true, pred, order=3) == pytest.approx(
        rmse_mapped(true, pred, order=3) * math.sqrt(25 / (25 - 4))
    )


# --- third-order monotonic mapping ----------------------------------------------------


def test_third_order_on_monotone_cubic_is_exact():
    rng = np.random.default_rng(5)
    pred = rng.uniform(1.0, 5.0, 200)
    true = 3.0 + 0.5 * (pred - 3.0) + 0.1 * (pred - 3.0) ** 3  # derivative >= 0.5
    map3 = rmse_mapped(true, pred, order=3)
    map1 = rmse_mapped(true, pred, order=1)
    assert map3 <= map1 + 1e-9
    assert map3 < 1e-8
    assert map1 > 0.05
    coefs = fit_mapping(true, pred, order=3)
    grid = np.linspace(pred.min(), pred.max(), 1001)
    assert np.all(_derivative(coefs, grid) >= -1e-8)
    np.testing.assert_allclose(apply_mapping(coefs, pred), true, atol=1e-8)


def _non_monotone_data(seed=6, n=200, noise=0.02):
    """Truth rises overall but falls near both ends: y = 3 + 2z - 3z^3 on z in [-1, 1]."""
    rng = np.random.default_rng(seed)
    pred = rng.uniform(1.0, 5.0, n)
    z = (pred - 3.0) / 2.0
    true = 3.0 + 2.0 * z - 3.0 * z**3 + rng.normal(0.0, noise, n)
    return true, pred


def _sse(coefs, true, pred):
    return float(np.sum((apply_mapping(coefs, pred) - true) ** 2))


def test_third_order_constrained_when_unconstrained_is_not_monotone():
    true, pred = _non_monotone_data()
    grid = np.linspace(pred.min(), pred.max(), 2001)
    free = np.polyfit(pred, true, 3)[::-1]
    assert _derivative(free, grid).min() < -0.5  # the construction works

    coefs = fit_mapping(true, pred, order=3)
    assert np.all(_derivative(coefs, grid) >= -1e-8)
    map3 = rmse_mapped(true, pred, order=3)
    assert map3 == pytest.approx(math.sqrt(_sse(coefs, true, pred) / true.size), rel=1e-6)
    assert map3 >= _polyfit_rmse(true, pred, 3) - 1e-12
    assert map3 <= rmse_mapped(true, pred, order=1) + 1e-9


@pytest.mark.parametrize("seed", [7, 11, 12])
def test_third_order_constrained_fit_is_the_optimum(seed):
    """Compare with an independent global search over all increasing cubics.

    On [-1, 1] a cubic a + b z + c z^2 + d z^3 is increasing iff its derivative is a
    nonnegative quadratic there, i.e. (u + v z)^2 + r^2 + w^2 (1 - z^2); fit (a, u, v, r, w)
    by unconstrained nonlinear least squares from many starts.
    """
    true, pred = _non_monotone_data(seed=seed, n=60 * (seed - 5))
    lo, hi = pred.min(), pred.max()
    z = (2.0 * pred - lo - hi) / (hi - lo)  # the range of the predictions onto [-1, 1]

    def cubic(params):
        a, u, v, r, w = params
        return np.array([a, u * u + r * r + w * w, u * v, (v * v - w * w) / 3.0])

    def residuals(params):
        return np.polynomial.polynomial.polyval(z, cubic(params)) - true

    rng = np.random.default_rng(0)
    best = min(
        float(
            np.sum(
                least_squares(residuals, rng.normal(0.0, 1.5, 5), xtol=1e-15, ftol=1e-15).fun ** 2
            )
        )
        for _ in range(12)
    )
    ours = _sse(fit_mapping(true, pred, order=3), true, pred)
    assert ours == pytest.approx(best, rel=1e-7)


def test_third_order_anticorrelated_predictions_flatten():
    true, pred = _random_scores(n=50, seed=8)
    pred = -pred
    coefs = fit_mapping(true, pred, order=3)
    grid = np.linspace(pred.min(), pred.max(), 1001)
    assert np.all(_derivative(coefs, grid) >= -1e-8)
    map3 = rmse_mapped(true, pred, order=3)
    assert math.isfinite(map3)
    assert map3 <= np.std(true) + 1e-9  # never worse than the constant map


# --- evaluate_predictions -------------------------------------------------------------


def test_evaluate_predictions_without_conditions():
    true, pred = _random_scores(n=40)
    out = evaluate_predictions(true, pred)
    assert set(out) == FILE_KEYS
    assert out["n_files"] == 40
    assert out["pcc"] == pytest.approx(pcc(true, pred))
    assert out["rmse_map3"] <= out["rmse_map1"] + 1e-9 <= out["rmse"] + 1e-9
    json.loads(json.dumps(out))
    for key, value in out.items():
        assert type(value) is (int if key.startswith("n_") else float)


def test_evaluate_predictions_with_conditions():
    rng = np.random.default_rng(9)
    conditions = np.repeat([f"c{i:02d}" for i in range(12)], 4)
    true = np.repeat(rng.uniform(1.0, 5.0, 12), 4) + rng.normal(0.0, 0.3, 48)
    pred = 0.8 * true + 0.5 + rng.normal(0.0, 0.3, 48)
    out = evaluate_predictions(true, pred, conditions=conditions)
    assert set(out) == FILE_KEYS | CON_KEYS
    assert out["n_files"] == 48 and out["n_conditions"] == 12
    assert out["pcc_con"] == pytest.approx(pcc_con(true, pred, conditions))
    assert out["rmse_con"] == pytest.approx(rmse_con(true, pred, conditions))
    t_con, p_con = per_condition(true, pred, conditions)
    assert out["rmse_con_map1"] == pytest.approx(rmse_mapped(t_con, p_con, order=1))
    assert out["rmse_con_map3"] == pytest.approx(rmse_mapped(t_con, p_con, order=3))
    assert out["pcc_con"] > out["pcc"]  # averaging removes per-file noise
    json.loads(json.dumps(out))
    for key, value in out.items():
        assert type(value) is (int if key.startswith("n_") else float)


def test_evaluate_predictions_few_conditions_gives_nan():
    true, pred = _random_scores(n=12)
    out = evaluate_predictions(true, pred, conditions=np.arange(12) % 3)
    assert out["n_conditions"] == 3
    assert math.isfinite(out["pcc_con"]) and math.isfinite(out["rmse_con_map1"])
    assert math.isnan(out["rmse_con_map3"])
    out = evaluate_predictions(true, pred, conditions=np.zeros(12))
    assert out["n_conditions"] == 1
    assert all(math.isnan(out[k]) for k in CON_KEYS - {"n_conditions"})
    json.dumps(out)  # NaN is written as NaN
