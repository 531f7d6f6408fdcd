"""``calibrate_jnd_steps.py``: a JND step per degradation family, as a CSV table."""

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "JSQA"


def test_the_calibration_prints_a_step_per_family(mini_corpora):
    libri, chime = mini_corpora["librispeech_folder"], mini_corpora["chime3_folder"]
    cmd = [sys.executable, "calibrate_jnd_steps.py", f"--librispeech_folder={libri}",
           f"--chime3_folder={chime}", "--measures", "lsd", "--num_utterances", "3",
           "--grid_points", "5", "--bootstrap", "10", "--families", "clipping", "mu_law",
           "--workers", "1"]  # fmt: skip
    result = subprocess.run(cmd, cwd=RECIPE, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["family"] for r in rows] == ["clipping", "mu_law"]
    for row in rows:
        assert row["measure"] == "lsd" and float(row["target_delta"]) > 0
        assert float(row["step_p05"]) <= float(row["step"]) <= float(row["step_p95"])
        assert 0 < float(row["step"]) < 20


def test_the_calibration_needs_the_corpora():
    cmd = [sys.executable, "calibrate_jnd_steps.py"]
    result = subprocess.run(cmd, cwd=RECIPE, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--librispeech_folder" in result.stderr


@pytest.fixture(scope="module")
def mini_corpora(tmp_path_factory):
    from jsqa_sb.data.minicorpus import build_chime3, build_librispeech

    root = tmp_path_factory.mktemp("calibration")
    build_librispeech(root / "libri")
    build_chime3(root / "chime")
    return {"librispeech_folder": root / "libri", "chime3_folder": root / "chime"}
