"""Tests of the ``jsqa`` command line (``jsqa_sb.cli``) and its installed console script."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jsqa_sb.cli import main
from jsqa_sb.data.minicorpus import build_all, build_nisqa

SUBCOMMANDS = ("prepare-jnd", "prepare-nisqa", "build-minicorpus")
BACKGROUNDS = Path("CHiME3", "data", "audio", "16kHz", "backgrounds")


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """The default miniature corpora (read-only in these tests)."""
    return build_all(tmp_path_factory.mktemp("mini"), seed=0)


def jsqa_script():
    """The ``jsqa`` console script of the interpreter running the tests."""
    script = Path(sys.executable).with_name("jsqa")
    if not script.is_file():
        script = shutil.which("jsqa")
    assert script, "the jsqa console script is not installed next to the Python in use"
    return str(script)


def error_lines(stderr):
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines, [line for line in lines if line.startswith("jsqa: error: ")]


# ----------------------------------------------------------------------------- prepare-jnd
def test_prepare_jnd(corpora, tmp_path, capsys):
    save = tmp_path / "jnd"
    status = main(
        [
            "prepare-jnd",
            "--librispeech_folder",
            str(corpora["librispeech_folder"]),
            "--chime3_folder",
            str(corpora["chime3_folder"]),
            "--save_folder",
            str(save),
            "--num_workers",
            "2",
        ]
    )
    captured = capsys.readouterr()
    assert status == 0, captured.err
    summary = json.loads(captured.out)  # stdout holds the JSON summary and nothing else

    libri = corpora["librispeech_folder"] / "LibriSpeech"
    n_train = len(list((libri / "train-clean-100").rglob("*.flac")))
    n_valid = len(list((libri / "dev-clean").rglob("*.flac")))
    n_noise = len(list((corpora["chime3_folder"] / BACKGROUNDS).glob("BGD_*.CH1.wav")))
    assert (n_train, n_valid, n_noise) == (12, 3, 8)
    counts = summary["counts"]
    assert counts["train_utterances"] == n_train
    assert counts["valid_utterances"] == n_valid
    assert counts["train_noises"] + counts["valid_noises"] == n_noise
    assert counts["train_noises"] > 0 and counts["valid_noises"] > 0
    assert counts["skipped"] == 0

    expected = {
        "train": "jnd_train.json",
        "valid": "jnd_valid.json",
        "noise_train": "noise_train.json",
        "noise_valid": "noise_valid.json",
        "report": "prepare_jnd_report.json",
    }
    assert summary["outputs"] == {k: str(save / name) for k, name in expected.items()}
    for key, count in (
        ("train", n_train),
        ("valid", n_valid),
        ("noise_train", counts["train_noises"]),
        ("noise_valid", counts["valid_noises"]),
    ):
        assert len(json.loads((save / expected[key]).read_text())) == count


# ----------------------------------------------------------------------------- prepare-nisqa
def test_prepare_nisqa(corpora, tmp_path, capsys):
    save = tmp_path / "nisqa"
    status = main(
        [
            "prepare-nisqa",
            "--nisqa_folder",
            str(corpora["nisqa_folder"]),
            "--save_folder",
            str(save),
            "--num_workers",
            "2",
        ]
    )
    captured = capsys.readouterr()
    assert status == 0, captured.err
    summary = json.loads(captured.out)

    corpus = corpora["nisqa_folder"] / "NISQA_Corpus"
    dbs = sorted(p.parent.name for p in corpus.glob("*/deg"))
    wavs = {db: len(list((corpus / db / "deg").glob("*.wav"))) for db in dbs}
    with open(corpus / "NISQA_corpus_file.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert wavs == {db: sum(r["db"] == db for r in csv_rows) for db in dbs}
    assert wavs == {"NISQA_TEST_SIM": 12, "NISQA_TRAIN_SIM": 40, "NISQA_VAL_SIM": 12}

    counts = summary["counts"]
    assert {db: counts[db] for db in dbs} == wavs
    assert counts["skipped"] == 0
    assert counts["sample_rates"] == [16000, 48000]
    for db, n in wavs.items():
        assert len(json.loads((save / f"{db}.json").read_text())) == n

    outputs = summary["outputs"]
    assert outputs["train"] == [str(save / "NISQA_TRAIN_SIM.json")]
    assert outputs["valid"] == [str(save / "NISQA_VAL_SIM.json")]
    assert outputs["test"] == [str(save / "NISQA_TEST_SIM.json")]
    assert outputs["splits"] == str(save / "nisqa_splits.json")
    assert json.loads((save / "nisqa_splits.json").read_text())["test"] == ["NISQA_TEST_SIM"]


def test_prepare_nisqa_split_options_and_skips(tmp_path, capsys):
    folder = tmp_path / "nisqa"
    corpus = build_nisqa(folder, databases={"NISQA_TRAIN_SIM": 4, "NISQA_TEST_SIM": 3})
    broken = sorted((corpus / "NISQA_TRAIN_SIM" / "deg").glob("*.wav"))[0]
    broken.write_bytes(b"not audio")
    save = tmp_path / "out"
    args = ["prepare-nisqa", "--nisqa_folder", str(folder), "--save_folder", str(save)]

    status = main([*args, "--valid_dbs", "NISQA_TEST_SIM", "--test_dbs", "NISQA_TEST_*"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["counts"]["NISQA_TRAIN_SIM"] == 3 and summary["counts"]["skipped"] == 1
    assert summary["outputs"]["valid"] == [str(save / "NISQA_TEST_SIM.json")]
    assert "1 file(s) left out" in captured.err  # the user is told, even without logging

    status = main([*args, "--strict"])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.err.startswith("jsqa: error: ")
    assert str(broken) in captured.err
    assert "Traceback" not in captured.err


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("missing", ["nisqa", "librispeech", "chime3"])
def test_nonexistent_folder_is_a_one_line_error(tmp_path, capsys, corpora, missing):
    nowhere = tmp_path / f"no_{missing}_here"
    if missing == "nisqa":
        argv = ["prepare-nisqa", "--nisqa_folder", str(nowhere)]
    else:
        folders = {
            "librispeech": str(corpora["librispeech_folder"]),
            "chime3": str(corpora["chime3_folder"]),
        }
        folders[missing] = str(nowhere)
        argv = ["prepare-jnd"] + [f"--{k}_folder={v}" for k, v in folders.items()]
    status = main([*argv, "--save_folder", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert status == 2
    lines, errors = error_lines(captured.err)
    assert len(lines) == 1 and errors == lines, captured.err
    assert str(nowhere) in errors[0]
    assert "Traceback" not in captured.err
    assert captured.out == ""
    assert not (tmp_path / "out").exists()


def test_missing_required_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare-nisqa", "--save_folder", "x"])
    assert exit_info.value.code == 2
    assert "--nisqa_folder" in capsys.readouterr().err


def test_save_folder_that_is_a_file_is_a_one_line_error(corpora, tmp_path, capsys):
    a_file = tmp_path / "manifests"
    a_file.write_text("not a folder")
    argv = ["prepare-nisqa", "--nisqa_folder", str(corpora["nisqa_folder"])]
    status = main([*argv, "--save_folder", str(a_file)])
    assert status == 2
    assert str(a_file) in capsys.readouterr().err


# ----------------------------------------------------------------------------- build-minicorpus
def test_build_minicorpus(tmp_path, capsys):
    out = tmp_path / "mini"
    assert main(["build-minicorpus", "--out", str(out)]) == 0
    folders = json.loads(capsys.readouterr().out)
    assert folders == {
        "librispeech_folder": str(out / "librispeech"),
        "chime3_folder": str(out / "chime3"),
        "nisqa_folder": str(out / "nisqa"),
    }
    libri = out / "librispeech" / "LibriSpeech"
    assert len(list((libri / "train-clean-100").rglob("*.flac"))) == 12
    assert len(list((libri / "dev-clean").rglob("*.flac"))) == 3
    assert (libri / "SPEAKERS.TXT").is_file()
    assert len(list((out / "chime3" / BACKGROUNDS).glob("BGD_*.CH1.wav"))) == 8
    corpus = out / "nisqa" / "NISQA_Corpus"
    assert (corpus / "NISQA_corpus_file.csv").is_file()
    assert len(list(corpus.glob("*/deg/*.wav"))) == 64


def test_build_minicorpus_refuses_a_foreign_folder(tmp_path, capsys):
    foreign = tmp_path / "mini" / "librispeech" / "LibriSpeech"
    foreign.mkdir(parents=True)
    (foreign / "precious.txt").write_text("keep me")
    status = main(["build-minicorpus", "--out", str(tmp_path / "mini")])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.err.startswith("jsqa: error: ") and str(foreign) in captured.err
    assert (foreign / "precious.txt").read_text() == "keep me"


# ----------------------------------------------------------------------------- console script
def run_script(*args):
    """Run the installed ``jsqa`` (each start imports torch: a few seconds)."""
    cmd = [jsqa_script(), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_console_script_lists_subcommands():
    result = run_script("--help")
    assert result.returncode == 0, result.stderr
    for command in SUBCOMMANDS:
        assert command in result.stdout


def test_console_script_bad_folder_exits_2_without_traceback(tmp_path):
    nowhere = tmp_path / "not_nisqa"
    out = tmp_path / "out"
    result = run_script("prepare-nisqa", "--nisqa_folder", str(nowhere), "--save_folder", str(out))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines, errors = error_lines(result.stderr)
    assert len(errors) == 1 and str(nowhere) in errors[0], result.stderr
    assert result.stdout == ""


# ----------------------------------------------------------------------------- compare
def _fake_run(folder, db, offset):
    import numpy as np
    import pandas as pd

    from jsqa_sb.evaluation.reports import write_test_reports

    true = np.linspace(1.2, 4.8, 12)
    frame = pd.DataFrame(
        {
            "file": [f"f{i}" for i in range(12)],
            "con": [i // 3 for i in range(12)],
            "true_mos": true,
            "pred_mos": true + offset * np.sin(np.arange(12)),
        }
    )
    write_test_reports(folder, {db: frame})


def test_compare_prints_both_runs_and_refuses_other_test_sets(tmp_path, capsys):
    _fake_run(tmp_path / "a", "NISQA_TEST_SIM", 0.1)
    _fake_run(tmp_path / "b", "NISQA_TEST_SIM", 0.5)
    _fake_run(tmp_path / "c", "NISQA_TEST_FOO", 0.5)
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "NISQA_TEST_SIM" in out and str(tmp_path / "a") in out and "PCC" in out.upper()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jsqa: error:") and "NISQA_TEST_FOO" in err
