"""The benchmarks run and print the JSON line they promise (tiny settings: not timings)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
        "--degradations",
        "clipping",
    )
    assert result["bare_read_mix_x_realtime"] > 0 and result["repeats"] == 2
    runs = {"workers_0", "workers_1", "workers_0_degraded", "workers_1_degraded"}
    assert set(result["pipeline"]) == runs
    assert result["pipeline"]["workers_1_degraded"]["degraded_to_plain"] > 0
    for run in result["pipeline"].values():
        low, high = run["per_worker_range"]
        assert 0 < low <= run["x_realtime_per_worker"] <= high
        assert run["ratio_to_bare"] > 0 and run["x_realtime_per_worker_cpu_second"] > 0
        assert 0 < run["main_process_cpu_share"] and isinstance(run["meets_target"], bool)


def test_bench_train_compares_the_step_with_the_loader():
    result = _run(
        "bench_train.py", "--steps", "2", "--loader_batches", "2", "--workers", "1",
        "--degradations", "batch_size=2",
    )  # fmt: skip
    assert result["batch_size_groups"] == 2
    assert result["degradations"] == ["band_limit", "clipping", "packet_loss", "mu_law"]
    assert result["step_views_per_s"] > 0 and result["loader_views_per_s"] > 0
    ratio = result["loader_views_per_s"] / result["step_views_per_s"]
    assert abs(result["loader_to_step_ratio"] - ratio) < 0.01 * ratio + 0.01


def test_bench_inference_measures_idle_and_loaded_alternately(model_folder):
    result = _run(
        "bench_inference.py",
        "--model",
        str(model_folder),
        "--files",
        "2",
        "--skip_hour",
        "--no_peers",
        "--background-load",
        "1",
        "--compare_threads",
        "1",
        "--repeats",
        "2",
    )
    assert result["background_load"] == 1 and result["batch_rtf"] > 0
    run = result["load_comparison"]["threads_1"]
    assert len(run["idle_rtf_runs"]) == len(run["loaded_rtf_runs"]) == 2
    assert run["loaded_over_idle"] == pytest.approx(
        run["loaded_rtf_median"] / run["idle_rtf_median"]
    )


def test_bench_invariance_reports_each_change(model_folder, tmp_path):
    import numpy as np
    import pandas as pd
    import soundfile as sf

    db = tmp_path / "NISQA_TEST_X"
    (db / "deg").mkdir(parents=True)
    (db / "ref").mkdir()
    speech = sf.read(ROOT / "jsqa_sb" / "samples" / "librivox_2.flac", dtype="float32")[0]
    rows = []
    for i, condition in enumerate(["clean", "noise=x@5dB; packetloss=10%"]):
        noisy = speech + 0.01 * i * np.random.default_rng(i).standard_normal(speech.size)
        sf.write(db / "deg" / f"c{i}.wav", noisy.astype(np.float32), 16000, subtype="PCM_16")
        sf.write(db / "ref" / f"r{i}.wav", speech, 16000, subtype="PCM_16")
        rows.append(
            {
                "con": i,
                "con_description": condition,
                "filename_deg": f"c{i}.wav",
                "filename_ref": f"r{i}.wav",
            }
        )
    pd.DataFrame(rows).to_csv(db / "NISQA_TEST_X_file.csv", index=False)
    result = _run(
        "bench_invariance.py",
        "--model",
        str(model_folder),
        "--data",
        str(db),
        "--burst_files",
        "1",
        "--no_dnsmos",
    )
    changes = result["changes"]
    assert result["files"] == 2 and result["local_degradation_files"] == 1
    assert set(changes) == {
        "wav16",
        "flac",
        "wav_float",
        "ogg",
        "stored_48k",
        "stereo",
        "silence",
        "halves_swapped",
        "burst_moved",
    }
    assert changes["wav16"]["jsqa"]["max_abs"] == 0.0  # the same 16-bit samples
    assert changes["halves_swapped"]["jsqa"]["files"] == 1
    assert changes["burst_moved"]["jsqa"]["files"] == 2  # packet loss and clipping
    assert all(0 <= c["jsqa"]["mean_abs"] <= c["jsqa"]["max_abs"] for c in changes.values())
