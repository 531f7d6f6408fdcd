"""The benchmarks run and print the JSON line they promise (tiny settings: not timings)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(script, *args):
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_bench_data_reports_each_worker_setting_against_the_bound():
    result = _run(
        "bench_data.py",
        "--items",
        "24",
        "--seconds",
        "0.2",
        "--repeats",
        "2",
        "--workers",
        "0",
        "1",
    )
    assert result["bare_read_mix_x_realtime"] > 0 and result["repeats"] == 2
    assert set(result["pipeline"]) == {"workers_0", "workers_1"}
    for run in result["pipeline"].values():
        low, high = run["per_worker_range"]
        assert 0 < low <= run["x_realtime_per_worker"] <= high
        assert run["ratio_to_bare"] > 0 and run["x_realtime_per_worker_cpu_second"] > 0
        assert 0 < run["main_process_cpu_share"] and isinstance(run["meets_target"], bool)


def test_bench_train_compares_the_step_with_the_loader():
    result = _run(
        "bench_train.py", "--steps", "2", "--loader_batches", "2", "--workers", "1", "batch_size=2"
    )
    assert result["batch_size_groups"] == 2
    assert result["step_views_per_s"] > 0 and result["loader_views_per_s"] > 0
    ratio = result["loader_views_per_s"] / result["step_views_per_s"]
    assert abs(result["loader_to_step_ratio"] - ratio) < 0.01 * ratio + 0.01
