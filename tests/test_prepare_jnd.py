import json
import logging
import os
import re
import shutil

import numpy as np
import pytest
import soundfile as sf

from jsqa_sb.data.minicorpus import build_chime3, build_librispeech
from jsqa_sb.data.prepare_jnd import prepare_jnd
from jsqa_sb.data.prepare_utils import DataPreparationError


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    build_librispeech(root / "libri")
    build_chime3(root / "chime")
    return root


@pytest.fixture
def copies(corpora, tmp_path):
    """Writable copies of the corpora, for tests that damage them."""
    shutil.copytree(corpora / "libri", tmp_path / "libri")
    shutil.copytree(corpora / "chime", tmp_path / "chime")
    return tmp_path / "libri", tmp_path / "chime"


def _load(path):
    with open(path) as f:
        return json.load(f)


def _fill(text, libri, chime):
    return text.format(librispeech_folder=libri, chime3_folder=chime)


def test_manifests_match_corpus(corpora, tmp_path):
    libri, chime = corpora / "libri", corpora / "chime"
    out = prepare_jnd(libri, chime, tmp_path / "m")
    train, valid = _load(out["train"]), _load(out["valid"])
    train_files = sorted((libri / "LibriSpeech" / "train-clean-100").rglob("*.flac"))
    valid_files = sorted((libri / "LibriSpeech" / "dev-clean").rglob("*.flac"))
    assert sorted(train) == [f.stem for f in train_files]
    assert sorted(valid) == [f.stem for f in valid_files]
    for uid, entry in train.items():
        assert entry["wav"].startswith("{librispeech_folder}/LibriSpeech/train-clean-100/")
        path = _fill(entry["wav"], libri, chime)
        assert entry["duration"] == pytest.approx(sf.info(path).duration, abs=1e-4)
        assert entry["sample_rate"] == 16000
        spk, chapter, _ = uid.split("-")
        assert (entry["spk_id"], entry["chapter"]) == (spk, chapter)
    report = _load(out["report"])
    assert report["skipped"] == []
    assert report["counts"]["train_utterances"] == len(train_files)


def test_noise_split_by_session(corpora, tmp_path):
    out = prepare_jnd(corpora / "libri", corpora / "chime", tmp_path / "m")
    noise_train, noise_valid = _load(out["noise_train"]), _load(out["noise_valid"])
    all_files = sorted((corpora / "chime").rglob("BGD_*.CH1.wav"))
    assert len(noise_train) + len(noise_valid) == len(all_files) == 8
    train_sessions = {e["session"] for e in noise_train.values()}
    valid_sessions = {e["session"] for e in noise_valid.values()}
    assert not train_sessions & valid_sessions
    # Two sessions per environment: one held out, one kept, in every environment.
    for part in (noise_train, noise_valid):
        assert sorted(e["env"] for e in part.values()) == ["BUS", "CAF", "PED", "STR"]
    for entry in noise_train.values():
        assert entry["wav"].startswith("{chime3_folder}/CHiME3/data/audio/16kHz/backgrounds/")
        assert entry["duration"] == pytest.approx(8.0)


def test_explicit_validation_sessions(corpora, tmp_path):
    chosen = sorted(
        {"_".join(p.name.split("_")[1:3]) for p in (corpora / "chime").rglob("BGD_*_BUS.CH1.wav")}
    )[:1]
    out = prepare_jnd(
        corpora / "libri", corpora / "chime", tmp_path / "m", valid_noise_sessions=chosen
    )
    assert [e["session"] for e in _load(out["noise_valid"]).values()] == chosen
    with pytest.raises(DataPreparationError, match="999999_999"):
        prepare_jnd(
            corpora / "libri",
            corpora / "chime",
            tmp_path / "n",
            valid_noise_sessions=["999999_999"],
        )


def test_validation_groups_fixed_and_valid(corpora, tmp_path):
    a = _load(prepare_jnd(corpora / "libri", corpora / "chime", tmp_path / "a")["valid"])
    b = _load(prepare_jnd(corpora / "libri", corpora / "chime", tmp_path / "b")["valid"])
    assert a == b  # identical in every run
    noise_valid = _load(tmp_path / "a" / "noise_valid.json")
    valid_noise_paths = {e["wav"] for e in noise_valid.values()}
    for entry in a.values():
        snrs = np.array(entry["snrs"])
        assert len(snrs) == 4 and snrs.min() >= -5 and snrs.max() <= 30
        gaps = np.abs(snrs[:, None] - snrs[None, :])[np.triu_indices(4, 1)]
        assert (gaps < 3.0).any() and (gaps >= 6.0).any()
        assert entry["noise_wav"] in valid_noise_paths  # validation noise only
        assert 0 <= entry["noise_offset"] < 8 * 16000
        assert 0 <= entry["crop_start"] <= max(0, entry["duration"] * 16000 - 3 * 16000) + 1


def test_skips_when_done_and_redoes_on_change(copies, tmp_path, caplog):
    libri, chime = copies
    save = tmp_path / "m"
    out = prepare_jnd(libri, chime, save)
    mtime = os.stat(out["train"]).st_mtime_ns
    with caplog.at_level(logging.INFO):
        prepare_jnd(libri, chime, save)
    assert "up to date" in caplog.text
    assert os.stat(out["train"]).st_mtime_ns == mtime

    # A changed option re-prepares: the validation groups get 5 views.
    prepare_jnd(libri, chime, save, views_per_group=5)
    assert all(len(e["snrs"]) == 5 for e in _load(out["valid"]).values())

    # A new input file re-prepares and appears in the manifest.
    src = next((libri / "LibriSpeech" / "train-clean-100").rglob("*.flac"))
    new = src.with_name(src.stem[:-4] + "9999.flac")
    shutil.copy(src, new)
    prepare_jnd(libri, chime, save, views_per_group=5)
    assert new.stem in _load(out["train"])


@pytest.mark.parametrize("record", ["[]", "null", '"done"', "[" * 100_000])
def test_a_damaged_record_is_redone_not_a_crash(record, copies, tmp_path, caplog):
    libri, chime = copies
    save = tmp_path / "m"
    out = prepare_jnd(libri, chime, save)
    (save / "prepare_jnd.record.json").write_text(record)
    with caplog.at_level(logging.INFO):
        assert prepare_jnd(libri, chime, save) == out
    assert "up to date" not in caplog.text
    assert isinstance(_load(save / "prepare_jnd.record.json"), dict)


def test_wrong_layouts_say_what_was_expected(corpora, tmp_path):
    with pytest.raises(DataPreparationError) as err:
        prepare_jnd(tmp_path / "nowhere", corpora / "chime", tmp_path / "m")
    assert "LibriSpeech/<subset>" in str(err.value) and "does not exist" in str(err.value)
    with pytest.raises(DataPreparationError) as err:
        prepare_jnd(corpora / "chime", corpora / "chime", tmp_path / "m")
    assert "not a LibriSpeech folder" in str(err.value) and "CHiME3/" in str(err.value)
    with pytest.raises(DataPreparationError) as err:
        prepare_jnd(corpora / "libri", corpora / "libri", tmp_path / "m")
    assert "not a CHiME-3 folder" in str(err.value) and "LibriSpeech/" in str(err.value)
    with pytest.raises(DataPreparationError, match="train-other-500"):
        prepare_jnd(
            corpora / "libri", corpora / "chime", tmp_path / "m", train_subsets=["train-other-500"]
        )


def test_bad_files_are_reported_not_lost(copies, tmp_path, caplog):
    libri, chime = copies
    train_dir = libri / "LibriSpeech" / "train-clean-100"
    good = sorted(train_dir.rglob("*.flac"))
    folder = good[0].parent
    spk, chapter = folder.parent.name, folder.name
    corrupt = folder / f"{spk}-{chapter}-0900.flac"
    corrupt.write_bytes(b"fLaC" + os.urandom(200))
    short = folder / f"{spk}-{chapter}-0901.flac"
    sf.write(short, np.full(4000, 0.1, dtype=np.float32), 16000)
    empty = folder / f"{spk}-{chapter}-0902.flac"
    empty.write_bytes(b"")
    silent_clean = folder / f"{spk}-{chapter}-0903.flac"
    sf.write(silent_clean, np.zeros(32000, dtype=np.float32), 16000)
    backgrounds = chime / "CHiME3" / "data" / "audio" / "16kHz" / "backgrounds"
    silent_noise = backgrounds / "BGD_990101_001_BUS.CH1.wav"
    sf.write(silent_noise, np.zeros(32000, dtype=np.float32), 16000)
    short_noise = backgrounds / "BGD_990101_002_CAF.CH1.wav"
    sf.write(short_noise, np.full(800, 0.1, dtype=np.float32), 16000)
    empty_noise = backgrounds / "BGD_990101_003_PED.CH1.wav"
    sf.write(empty_noise, np.zeros(0, dtype=np.float32), 16000)

    with caplog.at_level(logging.WARNING):
        out = prepare_jnd(libri, chime, tmp_path / "m", check_silence=True)
    reasons = {os.path.basename(s["file"]): s["reason"] for s in _load(out["report"])["skipped"]}
    assert "cannot" in reasons[corrupt.name]
    assert "too short" in reasons[short.name]
    assert "empty" in reasons[empty.name]
    assert "silence" in reasons[silent_clean.name]
    assert "silence" in reasons[silent_noise.name]
    assert "too short" in reasons[short_noise.name]
    assert "empty" in reasons[empty_noise.name]
    assert corrupt.name in caplog.text
    train = _load(out["train"])
    assert sorted(train) == sorted(p.stem for p in good)  # the rest is all there
    noises = {**_load(out["noise_train"]), **_load(out["noise_valid"])}
    assert len(noises) == 8

    # Without check_silence the silent clean file is kept (headers only) ...
    out = prepare_jnd(libri, chime, tmp_path / "n")
    assert silent_clean.stem in _load(out["train"])
    # ... and strict mode refuses the lot, naming the files.
    with pytest.raises(DataPreparationError) as err:
        prepare_jnd(libri, chime, tmp_path / "s", strict=True)
    assert corrupt.name in str(err.value) and "strict" in str(err.value)
    assert not (tmp_path / "s" / "jnd_train.json").exists()  # nothing half-done left behind


def test_no_usable_noise_is_an_error(copies, tmp_path):
    libri, chime = copies
    for path in chime.rglob("BGD_*.wav"):
        sf.write(path, np.zeros(32000, dtype=np.float32), 16000)
    with pytest.raises(DataPreparationError, match="no usable training noises"):
        prepare_jnd(libri, chime, tmp_path / "m")


@pytest.mark.parametrize(
    "option, value, named",
    [
        ("snr_min", float("nan"), "snr_min must be a finite number"),
        ("snr_max", float("inf"), "snr_max must be a finite number"),
        ("segment_seconds", -1.0, "segment_seconds must be positive"),
        ("segment_seconds", float("nan"), "segment_seconds must be a finite number"),
        ("jnd_db", 0.0, "jnd_db must be positive"),
        ("views_per_group", 2, "views_per_group must be at least 3"),
        ("neg_margin_db", 2.0, "neg_margin_db (2.0) must be >= jnd_db"),
    ],
)
def test_invalid_mixing_settings_are_refused_before_any_manifest(
    corpora, tmp_path, option, value, named
):
    with pytest.raises(DataPreparationError, match=re.escape(named)):
        prepare_jnd(corpora / "libri", corpora / "chime", tmp_path / "m", **{option: value})
    assert not list((tmp_path / "m").glob("*.json"))


def test_cli_refuses_nan_snr_in_one_line(corpora, tmp_path, capsys):
    from jsqa_sb.cli import main

    argv = ["prepare-jnd", "--librispeech_folder", str(corpora / "libri")]
    argv += ["--chime3_folder", str(corpora / "chime"), "--save_folder", str(tmp_path / "m")]
    assert main([*argv, "--snr_min", "nan"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["jsqa: error: snr_min must be a finite number of dB, got nan"]


def test_truncated_manifest_is_redone(corpora, tmp_path, caplog):
    out = prepare_jnd(corpora / "libri", corpora / "chime", tmp_path / "m")
    full = open(out["train"]).read()
    with open(out["train"], "w") as f:
        f.write(full[:100])
    with caplog.at_level(logging.INFO):
        prepare_jnd(corpora / "libri", corpora / "chime", tmp_path / "m")
    assert not any("up to date" in r.getMessage() for r in caplog.records)
    assert open(out["train"]).read() == full


def test_unquoted_noise_sessions_say_to_quote_them(corpora, tmp_path):
    with pytest.raises(DataPreparationError, match="quote them"):
        prepare_jnd(
            corpora / "libri", corpora / "chime", tmp_path / "m", valid_noise_sessions=[150204020]
        )
