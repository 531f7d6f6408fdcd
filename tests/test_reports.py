import doctest
import json
import math
import re

import numpy as np
import pandas as pd
import pytest

import jsqa_sb.evaluation.reports
from jsqa_sb.evaluation.mos_metrics import evaluate_predictions
from jsqa_sb.evaluation.reports import (
    ReportError,
    compare_runs,
    load_results,
    write_test_reports,
)


def test_doctests():
    assert doctest.testmod(jsqa_sb.evaluation.reports).failed == 0


def _frame(n=40, seed=0, dims=("mos", "noi"), n_con=8, noise=0.4):
    rng = np.random.default_rng(seed)
    data = {
        "file": [f"deg/c{i % n_con:02d}_{i:03d}.wav" for i in range(n)],
        "con": [f"c{i % n_con:02d}" for i in range(n)],
    }
    for dim in dims:
        true = rng.uniform(1.0, 5.0, n)
        data[f"true_{dim}"] = true
        data[f"pred_{dim}"] = true + rng.normal(0.0, noise, n)
    return pd.DataFrame(data)


def _nan_to_none(metrics):
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


@pytest.fixture
def two_dbs():
    return {"NISQA_TEST_SIM": _frame(seed=1), "NISQA_TEST_FOR": _frame(n=30, seed=2, n_con=3)}


def test_files_written(tmp_path, two_dbs):
    write_test_reports(tmp_path, two_dbs)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "predictions_NISQA_TEST_FOR.csv",
        "predictions_NISQA_TEST_SIM.csv",
        "report.md",
        "results.json",
        "scatter_NISQA_TEST_FOR.png",
        "scatter_NISQA_TEST_SIM.png",
    ]


def test_creates_nested_output_folder(tmp_path, two_dbs):
    out = tmp_path / "a" / "b"
    write_test_reports(out, two_dbs)
    assert (out / "results.json").is_file()


def test_results_json_matches_evaluate_predictions(tmp_path, two_dbs):
    results = write_test_reports(tmp_path, two_dbs, config={"lr": 1e-4}, checkpoint="ckpt/1")
    text = (tmp_path / "results.json").read_text()
    on_disk = json.loads(text)  # strict: no NaN tokens below
    assert "NaN" not in text
    assert on_disk == results
    assert set(on_disk) == {"databases", "config", "checkpoint", "test_sets"}
    assert on_disk["test_sets"] == ["NISQA_TEST_FOR", "NISQA_TEST_SIM"]
    assert on_disk["config"] == {"lr": 1e-4}
    assert on_disk["checkpoint"] == "ckpt/1"
    for db, frame in two_dbs.items():
        assert set(on_disk["databases"][db]) == {"mos", "noi"}
        for dim in ("mos", "noi"):
            expected = evaluate_predictions(
                frame[f"true_{dim}"], frame[f"pred_{dim}"], frame["con"]
            )
            got = on_disk["databases"][db][dim]
            assert set(got) == set(expected)
            for key, value in _nan_to_none(expected).items():
                if value is None:
                    assert got[key] is None
                else:
                    assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-12)
    # NISQA_TEST_FOR has 3 conditions: rmse_con_map3 needs 4 -> NaN -> null
    assert on_disk["databases"]["NISQA_TEST_FOR"]["mos"]["rmse_con_map3"] is None
    assert on_disk["databases"]["NISQA_TEST_FOR"]["mos"]["n_conditions"] == 3


def test_config_with_numpy_and_nan_is_json_safe(tmp_path):
    config = {"lr": np.float32(0.5), "epochs": np.int64(3), "w": float("nan"), "t": (1, 2)}
    results = write_test_reports(tmp_path, {"DB": _frame(dims=("mos",))}, config=config)
    assert results["config"] == {"lr": 0.5, "epochs": 3, "w": None, "t": [1, 2]}
    assert load_results(tmp_path)["config"] == results["config"]


def test_csv_round_trip(tmp_path, two_dbs):
    write_test_reports(tmp_path, two_dbs)
    for db, frame in two_dbs.items():
        back = pd.read_csv(tmp_path / f"predictions_{db}.csv", float_precision="round_trip")
        expected_cols = ["file", "con", "true_mos", "pred_mos", "true_noi", "pred_noi"]
        assert list(back.columns) == expected_cols
        pd.testing.assert_frame_equal(back, frame[expected_cols].reset_index(drop=True))


def test_csv_drops_extra_columns_and_orders_dims(tmp_path):
    frame = _frame(dims=("noi", "mos"))
    frame["extra"] = 1
    write_test_reports(tmp_path, {"DB": frame})
    back = pd.read_csv(tmp_path / "predictions_DB.csv")
    assert list(back.columns) == ["file", "con", "true_mos", "pred_mos", "true_noi", "pred_noi"]


def test_report_md(tmp_path, two_dbs):
    results = write_test_reports(tmp_path, two_dbs, checkpoint="ckpt/best")
    report = (tmp_path / "report.md").read_text()
    for db in two_dbs:
        assert f"## {db}" in report
        pcc = results["databases"][db]["mos"]["pcc"]
        assert f"{pcc:.3f}" in report
    for header in ("PCC", "SRCC", "RMSE map1", "RMSE map3", "PCC con", "RMSE con", "conditions"):
        assert header in report
    assert "ckpt/best" in report
    # the FOR table's undefined rmse_con_map3 is not shown; its row has 10 cells
    rows = [line for line in report.splitlines() if line.startswith("| mos")]
    assert len(rows) == 2 and all(row.count("|") == 11 for row in rows)
    assert "nan" not in report.lower()


def test_png_valid(tmp_path, two_dbs):
    write_test_reports(tmp_path, two_dbs)
    for db in two_dbs:
        data = (tmp_path / f"scatter_{db}.png").read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        assert len(data) > 5000


def test_unlabelled_dimension_skipped(tmp_path):
    frame = _frame(dims=("mos", "noi", "col"))
    frame["true_noi"] = np.nan  # corpus without noisiness labels
    frame = frame.drop(columns="true_col")  # no label column at all
    results = write_test_reports(tmp_path, {"NISQA_VAL_LIVE": frame})
    assert set(results["databases"]["NISQA_VAL_LIVE"]) == {"mos"}
    report = (tmp_path / "report.md").read_text()
    assert "| noi" not in report
    assert "no labels" in report and "noi" in report and "col" in report
    # the predictions are still written
    back = pd.read_csv(tmp_path / "predictions_NISQA_VAL_LIVE.csv")
    assert "pred_noi" in back.columns and back["true_noi"].isna().all()


def test_partially_labelled_dimension_uses_labelled_files(tmp_path):
    frame = _frame(n=40, dims=("mos",))
    frame.loc[:4, "true_mos"] = np.nan
    results = write_test_reports(tmp_path, {"DB": frame})
    labelled = frame.iloc[5:]
    expected = evaluate_predictions(labelled["true_mos"], labelled["pred_mos"], labelled["con"])
    assert results["databases"]["DB"]["mos"]["n_files"] == 35
    assert results["databases"]["DB"]["mos"]["pcc"] == pytest.approx(expected["pcc"])


def test_without_con_column_no_condition_metrics(tmp_path):
    frame = _frame(dims=("mos",)).drop(columns="con")
    results = write_test_reports(tmp_path, {"DB": frame})
    assert "pcc_con" not in results["databases"]["DB"]["mos"]
    assert "n/a" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("dim", ["mos", "noi"])
def test_nan_prediction_raises_naming_db_and_dim(tmp_path, dim):
    frames = {"NISQA_TEST_SIM": _frame(seed=1), "NISQA_TEST_P501": _frame(seed=3)}
    frames["NISQA_TEST_P501"].loc[7, f"pred_{dim}"] = np.nan
    with pytest.raises(ValueError, match=rf"NISQA_TEST_P501.*'{dim}'"):
        write_test_reports(tmp_path / "out", frames)
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_nan_prediction_of_unlabelled_dimension_still_raises(tmp_path):
    frame = _frame()
    frame["true_noi"] = np.nan
    frame.loc[0, "pred_noi"] = np.nan
    with pytest.raises(ValueError, match="DB.*'noi'"):
        write_test_reports(tmp_path, {"DB": frame})


def test_evaluate_error_gets_context(tmp_path):
    frame = _frame(n=3, dims=("mos",))  # evaluate_predictions needs 4 files
    with pytest.raises(ReportError, match="TINY.*'mos'.*at least 4"):
        write_test_reports(tmp_path, {"TINY": frame})


@pytest.mark.parametrize(
    "predictions, match",
    [
        ({}, "empty"),
        ({"../x": _frame()}, "file name"),
        ({"DB": _frame().drop(columns="pred_mos")}, "pred_mos"),
        ({"DB": _frame().drop(columns="file")}, "'file'"),
    ],
)
def test_bad_input(tmp_path, predictions, match):
    with pytest.raises(ReportError, match=match):
        write_test_reports(tmp_path, predictions)


# --- load_results / compare_runs -------------------------------------------------------


def test_load_results_missing(tmp_path):
    run = tmp_path / "run_without_test"
    run.mkdir()
    with pytest.raises(ReportError, match="no results.json in .*run_without_test.*test stage"):
        load_results(run)
    assert issubclass(ReportError, ValueError)


@pytest.mark.parametrize("text", ["{not json", "[" * 100_000, '{"a": ' * 100_000])
def test_load_results_invalid_json(tmp_path, text):
    (tmp_path / "results.json").write_text(text)
    with pytest.raises(ReportError, match="cannot read"):
        load_results(tmp_path)


def test_load_results_accepts_file_path(tmp_path, two_dbs):
    results = write_test_reports(tmp_path, two_dbs)
    assert load_results(tmp_path / "results.json") == results


def _write_results(folder, databases, checkpoint=None):
    folder.mkdir(parents=True)
    results = {
        "databases": databases,
        "config": None,
        "checkpoint": checkpoint,
        "test_sets": sorted(databases),
    }
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def _metrics(pcc, rmse, **extra):
    out = {
        "pcc": pcc,
        "srcc": pcc - 0.01,
        "rmse": rmse,
        "rmse_map1": rmse - 0.05,
        "rmse_map3": rmse - 0.1,
        "n_files": 100,
        "pcc_con": pcc + 0.02,
        "rmse_con": rmse - 0.2,
        "rmse_con_map1": None,
        "rmse_con_map3": None,
        "n_conditions": 10,
    }
    out.update(extra)
    return out


def _row(text, db_dim, metric):
    block = text.split(db_dim, 1)[1]
    for line in block.splitlines():
        if line.split() and " ".join(line.split()[: len(metric.split())]) == metric:
            return line.split()[len(metric.split()) :]
    raise AssertionError(f"no row {metric} under {db_dim}")


def test_compare_runs_values_and_diff(tmp_path):
    run_a = _write_results(
        tmp_path / "run_a",
        {
            "NISQA_TEST_SIM": {"mos": _metrics(0.8, 0.6)},
            "NISQA_TEST_FOR": {"mos": _metrics(0.7, 0.5)},
        },
        checkpoint="a.ckpt",
    )
    run_b = _write_results(
        tmp_path / "run_b",
        {
            "NISQA_TEST_SIM": {"mos": _metrics(0.85, 0.55, pcc_con=None)},
            "NISQA_TEST_FOR": {"mos": _metrics(0.65, 0.52)},
        },
    )
    text = compare_runs(run_a, run_b)
    assert str(run_a) in text and str(run_b) in text and "a.ckpt" in text
    assert text.index("NISQA_TEST_FOR / mos") < text.index("NISQA_TEST_SIM / mos")
    assert _row(text, "NISQA_TEST_SIM / mos", "PCC") == ["0.8000", "0.8500", "+0.0500", "B"]
    assert _row(text, "NISQA_TEST_SIM / mos", "RMSE") == ["0.6000", "0.5500", "-0.0500", "B"]
    assert _row(text, "NISQA_TEST_SIM / mos", "RMSE map3") == ["0.5000", "0.4500", "-0.0500", "B"]
    assert _row(text, "NISQA_TEST_SIM / mos", "PCC con") == ["0.8200", "n/a", "n/a"]
    assert _row(text, "NISQA_TEST_FOR / mos", "PCC") == ["0.7000", "0.6500", "-0.0500", "A"]
    assert _row(text, "NISQA_TEST_FOR / mos", "RMSE con") == ["0.3000", "0.3200", "+0.0200", "A"]
    assert "RMSE map1" not in text  # not one of the compared metrics


def test_compare_runs_of_real_reports(tmp_path):
    frame_a = _frame(seed=4, noise=0.3)
    frame_b = frame_a.copy()
    frame_b["pred_mos"] = frame_b["true_mos"] + 0.1
    res_a = write_test_reports(tmp_path / "a", {"DB": frame_a})
    res_b = write_test_reports(tmp_path / "b", {"DB": frame_b})
    text = compare_runs(tmp_path / "a", tmp_path / "b", dims=None)
    a, b = res_a["databases"]["DB"]["mos"]["srcc"], res_b["databases"]["DB"]["mos"]["srcc"]
    assert _row(text, "DB / mos", "SRCC")[:3] == [f"{a:.4f}", f"{b:.4f}", f"{b - a:+.4f}"]
    assert "DB / noi" in text  # dims=None: every evaluated dimension
    assert "DB / noi" not in compare_runs(tmp_path / "a", tmp_path / "b")


def test_compare_runs_dimension_missing_in_one_run(tmp_path):
    run_a = _write_results(tmp_path / "a", {"DB": {"mos": _metrics(0.8, 0.6)}})
    run_b = _write_results(
        tmp_path / "b", {"DB": {"mos": _metrics(0.8, 0.6), "noi": _metrics(0.7, 0.7)}}
    )
    text = compare_runs(run_a, run_b, dims="noi")
    assert "DB / noi" in text and "not evaluated in run A" in text
    tie = ["0.8000", "0.8000", "+0.0000", "="]
    assert _row(compare_runs(run_a, run_b), "DB / mos", "PCC") == tie


def test_compare_runs_refuses_different_test_sets(tmp_path):
    run_a = _write_results(
        tmp_path / "a", {"NISQA_TEST_SIM": {"mos": _metrics(0.8, 0.6)}, "NISQA_TEST_FOR": {}}
    )
    run_b = _write_results(
        tmp_path / "b", {"NISQA_TEST_SIM": {"mos": _metrics(0.8, 0.6)}, "NISQA_TEST_P501": {}}
    )
    with pytest.raises(ReportError, match="different test sets") as info:
        compare_runs(run_a, run_b)
    message = str(info.value)
    for name in ("NISQA_TEST_SIM", "NISQA_TEST_FOR", "NISQA_TEST_P501", str(run_a), str(run_b)):
        assert name in message


def test_compare_runs_missing_results(tmp_path):
    run_a = _write_results(tmp_path / "a", {"DB": {"mos": _metrics(0.8, 0.6)}})
    with pytest.raises(ReportError, match=r"no results\.json in .*never_tested"):
        compare_runs(run_a, tmp_path / "never_tested")


def test_empty_condition_gives_per_file_metrics_and_a_note(tmp_path):
    frame = _frame(n=24)
    frame.loc[3, "con"] = None
    frame.loc[5, "con"] = ""
    results = write_test_reports(tmp_path, {"NISQA_TEST_SIM": frame})
    mos = results["databases"]["NISQA_TEST_SIM"]["mos"]
    expected = evaluate_predictions(frame["true_mos"], frame["pred_mos"])
    assert mos["pcc"] == pytest.approx(expected["pcc"])
    assert "pcc_con" not in mos and "n_conditions" not in mos
    assert "2 of 24 files have no condition" in results["notes"]["NISQA_TEST_SIM"][0]
    assert "2 of 24 files have no condition" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "results.json").read_text())["notes"] == results["notes"]


def test_condition_table_gives_the_per_condition_true_scores(tmp_path):
    """As NISQA's evaluation: condition MOS from NISQA_corpus_con.csv, not file means."""
    frame = _frame(n=32, n_con=8)
    truth = {f"c{i:02d}": {"mos": 1.0 + 0.5 * i, "noi": None} for i in range(8)}
    results = write_test_reports(
        tmp_path, {"NISQA_TEST_SIM": frame}, condition_truth={"NISQA_TEST_SIM": truth}
    )
    mos = results["databases"]["NISQA_TEST_SIM"]["mos"]
    pred_means = frame.groupby("con", sort=False)["pred_mos"].mean()
    table = np.array([truth[c]["mos"] for c in pred_means.index])
    assert mos["pcc_con"] == pytest.approx(np.corrcoef(table, pred_means.to_numpy())[0, 1])
    assert mos["rmse_con"] == pytest.approx(np.sqrt(np.mean((table - pred_means) ** 2)))
    plain = evaluate_predictions(frame["true_mos"], frame["pred_mos"], frame["con"])
    assert mos["pcc_con"] != pytest.approx(plain["pcc_con"])
    # noi has no condition scores in the table: the files' means, as before
    noi = results["databases"]["NISQA_TEST_SIM"]["noi"]
    assert noi["pcc_con"] == pytest.approx(
        evaluate_predictions(frame["true_noi"], frame["pred_noi"], frame["con"])["pcc_con"]
    )


@pytest.mark.parametrize(
    "databases, named",
    [
        ({"NISQA_TEST_SIM": {"mos": {"pcc": "abc"}}}, "NISQA_TEST_SIM/mos/pcc is not a number"),
        ({"NISQA_TEST_SIM": {"mos": [0.9]}}, "NISQA_TEST_SIM/mos is not a mapping"),
        ({"NISQA_TEST_SIM": "x"}, "NISQA_TEST_SIM is not a mapping of dimensions"),
    ],
)
def test_a_results_file_with_non_numbers_is_a_clear_error(tmp_path, databases, named):
    (tmp_path / "results.json").write_text(json.dumps({"databases": databases}))
    with pytest.raises(ReportError, match=re.escape(named)):
        compare_runs(tmp_path, tmp_path)
