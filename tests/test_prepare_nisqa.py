"""Tests of the NISQA MOS-manifest preparation (``jsqa_sb.data.prepare_nisqa``)."""

import csv
import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jsqa_sb.data.minicorpus import build_nisqa
from jsqa_sb.data.prepare_nisqa import prepare_nisqa
from jsqa_sb.data.prepare_utils import DataPreparationError

SMALL = {"NISQA_TRAIN_SIM": 6, "NISQA_VAL_SIM": 3, "NISQA_TEST_SIM": 3}
FIELDS = {"wav", "mos", "noi", "col", "dis", "loud", "con", "db", "duration", "sample_rate"}
DIMENSIONS = ("noi", "col", "dis", "loud")
OLD_NS = 1_000_000_000 * 10**9  # an mtime (2001) that no fresh write produces


# ----------------------------------------------------------------------------- helpers
def make_corpus(tmp_path, databases=None, **kwargs):
    """Build a tiny NISQA corpus; return the folder that contains ``NISQA_Corpus/``."""
    folder = tmp_path / "nisqa"
    build_nisqa(folder, databases=databases or SMALL, seed=0, **kwargs)
    return folder


def corpus_csv(folder):
    return folder / "NISQA_Corpus" / "NISQA_corpus_file.csv"


def db_csv(folder, db):
    return folder / "NISQA_Corpus" / db / f"{db}_file.csv"


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_rows(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def deg_path(folder, row):
    return folder / "NISQA_Corpus" / row["filepath_deg"]


def load(save, name):
    return json.loads((save / name).read_text())


def outputs(save):
    return sorted(p for p in save.iterdir() if p.suffix == ".json")


def age(paths):
    """Give files an old mtime, so that a rewrite is visible whatever the clock resolution."""
    for p in paths:
        os.utime(p, ns=(OLD_NS, OLD_NS))


def messages(caplog, level=logging.WARNING):
    return [r.getMessage() for r in caplog.records if r.levelno >= level]


# ----------------------------------------------------------------------------- manifests
def test_manifests_have_exactly_the_documented_fields(tmp_path):
    folder = make_corpus(tmp_path, high_rate_fraction=0.5)
    save = tmp_path / "out"
    prepare_nisqa(folder, save, num_workers=2)

    rows = read_rows(corpus_csv(folder))
    rates = set()
    for db in SMALL:
        manifest = load(save, f"{db}.json")
        db_rows = {r["file"]: r for r in rows if r["db"] == db}
        assert len(manifest) == len(db_rows) == SMALL[db]
        assert set(manifest) == set(db_rows)
        for key, entry in manifest.items():
            row = db_rows[key]
            assert set(entry) == FIELDS
            assert entry["wav"].startswith("{nisqa_folder}/")
            wav = Path(entry["wav"].replace("{nisqa_folder}", str(folder)))
            assert wav.is_file() and wav.samefile(deg_path(folder, row))
            assert entry["mos"] == pytest.approx(float(row["mos"]))
            for dim in DIMENSIONS:
                assert isinstance(entry[dim], float)
                assert entry[dim] == pytest.approx(float(row[dim]))
            assert entry["con"] == row["con"]
            assert entry["db"] == db
            info = sf.info(wav)
            assert entry["duration"] == pytest.approx(info.duration, abs=1e-4)
            assert entry["sample_rate"] == info.samplerate
            assert isinstance(entry["sample_rate"], int)
            rates.add(entry["sample_rate"])
    assert rates == {16000, 48000}, "mixed sample rates must be recorded per file"

    report = load(save, "prepare_nisqa_report.json")
    assert report["skipped"] == []
    assert {db: report["counts"][db] for db in SMALL} == SMALL
    assert report["counts"]["sample_rates"] == [16000, 48000]


def test_dimensions_are_null_when_the_corpus_has_none(tmp_path):
    folder = make_corpus(tmp_path, with_dimensions=False)
    save = tmp_path / "out"
    prepare_nisqa(folder, save, num_workers=2)
    for db in SMALL:
        manifest = load(save, f"{db}.json")
        assert len(manifest) == SMALL[db]
        for entry in manifest.values():
            assert set(entry) == FIELDS
            assert all(entry[dim] is None for dim in DIMENSIONS)
            assert isinstance(entry["mos"], float)
    assert "null" in (save / "NISQA_TRAIN_SIM.json").read_text()


# ----------------------------------------------------------------------------- CSV sources
def test_reads_per_database_csvs_when_there_is_no_corpus_csv(tmp_path):
    folder = make_corpus(tmp_path, write_corpus_csv=False)
    assert not corpus_csv(folder).exists()
    train_rows = read_rows(db_csv(folder, "NISQA_TRAIN_SIM"))
    dropped = train_rows.pop(2)
    write_rows(db_csv(folder, "NISQA_TRAIN_SIM"), train_rows)

    save = tmp_path / "out"
    prepare_nisqa(folder, save, num_workers=2)
    for db in SMALL:
        manifest = load(save, f"{db}.json")
        assert set(manifest) == {r["file"] for r in read_rows(db_csv(folder, db))}
    assert dropped["file"] not in load(save, "NISQA_TRAIN_SIM.json")
    assert len(load(save, "NISQA_TRAIN_SIM.json")) == SMALL["NISQA_TRAIN_SIM"] - 1
    # the row's file still exists, so it is simply not listed, not skipped
    assert load(save, "prepare_nisqa_report.json")["skipped"] == []


def test_corpus_csv_is_used_when_present(tmp_path):
    folder = make_corpus(tmp_path, write_corpus_csv=True)
    rows = read_rows(corpus_csv(folder))
    only_in_per_db = rows.pop(0)  # removed from the corpus CSV only
    write_rows(corpus_csv(folder), rows)
    per_db = read_rows(db_csv(folder, "NISQA_TRAIN_SIM"))
    only_in_corpus = per_db.pop(1)  # removed from the per-database CSV only
    write_rows(db_csv(folder, "NISQA_TRAIN_SIM"), per_db)
    assert only_in_per_db["db"] == only_in_corpus["db"] == "NISQA_TRAIN_SIM"

    save = tmp_path / "out"
    prepare_nisqa(folder, save, num_workers=2)
    manifest = load(save, "NISQA_TRAIN_SIM.json")
    assert only_in_per_db["file"] not in manifest
    assert only_in_corpus["file"] in manifest
    assert len(manifest) == SMALL["NISQA_TRAIN_SIM"] - 1


# ----------------------------------------------------------------------------- splits
TWO_TESTS = {"NISQA_TRAIN_SIM": 4, "NISQA_VAL_SIM": 3, "NISQA_TEST_SIM": 3, "NISQA_TEST_FOO": 3}


def test_default_protocol_and_absent_databases(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="jsqa_sb")
    folder = make_corpus(tmp_path, TWO_TESTS)
    save = tmp_path / "out"
    out = prepare_nisqa(folder, save, num_workers=2)

    splits = load(save, "nisqa_splits.json")
    assert splits["train"] == ["NISQA_TRAIN_SIM"]
    assert splits["valid"] == ["NISQA_VAL_SIM"]
    assert sorted(splits["test"]) == ["NISQA_TEST_FOO", "NISQA_TEST_SIM"]
    assert set(splits) == {"train", "valid", "test"}

    assert out["train"] == [str(save / "NISQA_TRAIN_SIM.json")]
    assert out["valid"] == [str(save / "NISQA_VAL_SIM.json")]
    assert sorted(out["test"]) == [str(save / f"{db}.json") for db in sorted(splits["test"])]
    assert out["splits"] == str(save / "nisqa_splits.json")
    assert out["report"] == str(save / "prepare_nisqa_report.json")
    for split in ("train", "valid", "test"):
        for path in out[split]:
            assert len(json.loads(Path(path).read_text())) == TWO_TESTS[Path(path).stem]

    warnings = messages(caplog)
    for absent in ("NISQA_TRAIN_LIVE", "NISQA_VAL_LIVE"):
        assert any(absent in m for m in warnings), warnings
    assert not any("NISQA_TRAIN_SIM" in m or "NISQA_TEST_" in m for m in warnings), warnings


def test_custom_split_lists(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="jsqa_sb")
    folder = make_corpus(tmp_path, TWO_TESTS)
    save = tmp_path / "out"
    out = prepare_nisqa(
        folder,
        save,
        train_dbs=["NISQA_TRAIN_SIM", "NISQA_VAL_SIM"],
        valid_dbs=["NISQA_TEST_FOO"],
        test_dbs=["NISQA_TEST_S*"],
        num_workers=2,
    )
    expected = {
        "train": ["NISQA_TRAIN_SIM", "NISQA_VAL_SIM"],
        "valid": ["NISQA_TEST_FOO"],
        "test": ["NISQA_TEST_SIM"],
    }
    assert load(save, "nisqa_splits.json") == expected
    for split, dbs in expected.items():
        assert out[split] == [str(save / f"{db}.json") for db in dbs]
    assert messages(caplog) == []  # every listed database was found


# ----------------------------------------------------------------------------- skip if done
def test_second_call_is_skipped(tmp_path, caplog):
    folder = make_corpus(tmp_path)
    save = tmp_path / "out"
    first = prepare_nisqa(folder, save, num_workers=2)
    contents = {p: p.read_bytes() for p in outputs(save)}
    age(contents)

    caplog.clear()
    caplog.set_level(logging.INFO, logger="jsqa_sb")
    second = prepare_nisqa(folder, save, num_workers=2)
    assert second == first
    for path, content in contents.items():
        assert path.stat().st_mtime_ns == OLD_NS, f"{path.name} was rewritten"
        assert path.read_bytes() == content
    assert any("up to date" in m for m in messages(caplog, logging.INFO))


def _prepared_and_aged(tmp_path, caplog):
    folder = make_corpus(tmp_path, TWO_TESTS)
    save = tmp_path / "out"
    prepare_nisqa(folder, save, num_workers=2)
    age(outputs(save))
    caplog.clear()
    caplog.set_level(logging.INFO, logger="jsqa_sb")
    return folder, save


def _assert_redone(save, caplog):
    assert not any("up to date" in m for m in messages(caplog, logging.INFO))
    for db in TWO_TESTS:
        assert (save / f"{db}.json").stat().st_mtime_ns != OLD_NS, f"{db}.json not rewritten"


def test_changed_option_triggers_new_preparation(tmp_path, caplog):
    folder, save = _prepared_and_aged(tmp_path, caplog)
    assert sorted(load(save, "nisqa_splits.json")["test"]) == ["NISQA_TEST_FOO", "NISQA_TEST_SIM"]
    out = prepare_nisqa(folder, save, test_dbs=["NISQA_TEST_FOO"], num_workers=2)
    _assert_redone(save, caplog)
    assert load(save, "nisqa_splits.json")["test"] == ["NISQA_TEST_FOO"]
    assert out["test"] == [str(save / "NISQA_TEST_FOO.json")]


def test_touched_wav_triggers_new_preparation(tmp_path, caplog):
    folder, save = _prepared_and_aged(tmp_path, caplog)
    wav = sorted((folder / "NISQA_Corpus" / "NISQA_TEST_SIM" / "deg").glob("*.wav"))[0]
    stat = wav.stat()
    os.utime(wav, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    prepare_nisqa(folder, save, num_workers=2)
    _assert_redone(save, caplog)


def test_replaced_wav_updates_its_entry(tmp_path, caplog):
    folder, save = _prepared_and_aged(tmp_path, caplog)
    row = read_rows(corpus_csv(folder))[0]
    before = load(save, f"{row['db']}.json")[row["file"]]
    noise = np.random.default_rng(0).uniform(-0.1, 0.1, 8000)  # 1 s at 8 kHz
    sf.write(deg_path(folder, row), noise, 8000, subtype="PCM_16")

    prepare_nisqa(folder, save, num_workers=2)
    _assert_redone(save, caplog)
    after = load(save, f"{row['db']}.json")[row["file"]]
    assert before["duration"] != pytest.approx(1.0)
    assert after["duration"] == pytest.approx(1.0)
    assert after["sample_rate"] == 8000


def test_deleted_wav_is_reported_in_new_preparation(tmp_path, caplog):
    folder, save = _prepared_and_aged(tmp_path, caplog)
    row = read_rows(corpus_csv(folder))[1]
    assert row["file"] in load(save, f"{row['db']}.json")
    deg_path(folder, row).unlink()

    prepare_nisqa(folder, save, num_workers=2)
    _assert_redone(save, caplog)
    manifest = load(save, f"{row['db']}.json")
    assert row["file"] not in manifest
    assert len(manifest) == TWO_TESTS[row["db"]] - 1
    skipped = load(save, "prepare_nisqa_report.json")["skipped"]
    assert [Path(s["file"]) for s in skipped] == [deg_path(folder, row)]


def test_deleted_manifest_triggers_new_preparation(tmp_path, caplog):
    folder, save = _prepared_and_aged(tmp_path, caplog)
    (save / "NISQA_VAL_SIM.json").unlink()
    prepare_nisqa(folder, save, num_workers=2)
    _assert_redone(save, caplog)
    assert len(load(save, "NISQA_VAL_SIM.json")) == TWO_TESTS["NISQA_VAL_SIM"]


# ----------------------------------------------------------------------------- bad input
def test_nonexistent_folder(tmp_path):
    missing = tmp_path / "no_such_folder"
    with pytest.raises(DataPreparationError) as err:
        prepare_nisqa(missing, tmp_path / "out")
    msg = str(err.value)
    assert str(missing) in msg
    assert "NISQA_Corpus/<DB>/deg" in msg  # the expected layout
    assert "does not exist" in msg
    assert not (tmp_path / "out").exists()


def test_wrong_layout_names_expected_and_found(tmp_path):
    folder = tmp_path / "downloads"
    (folder / "NISQA_TRAIN_SIM" / "deg").mkdir(parents=True)
    (folder / "readme.txt").write_text("hello")
    with pytest.raises(DataPreparationError) as err:
        prepare_nisqa(folder, tmp_path / "out")
    msg = str(err.value)
    assert str(folder) in msg
    assert "NISQA_Corpus/<DB>/deg" in msg
    assert "NISQA_TRAIN_SIM/" in msg and "readme.txt" in msg  # what was found


def test_corpus_without_any_csv(tmp_path):
    folder = make_corpus(tmp_path, write_corpus_csv=False)
    for db in SMALL:
        db_csv(folder, db).unlink()
    with pytest.raises(DataPreparationError) as err:
        prepare_nisqa(folder, tmp_path / "out")
    msg = str(err.value)
    assert "NISQA_corpus_file.csv" in msg and "<DB>/<DB>_file.csv" in msg
    assert all(f"{db}/" in msg for db in SMALL)  # what was found instead


def test_csv_missing_required_columns(tmp_path):
    folder = make_corpus(tmp_path)
    path = corpus_csv(folder)
    rows = [
        {k: v for k, v in r.items() if k not in ("mos", "filepath_deg")} for r in read_rows(path)
    ]
    write_rows(path, rows)
    with pytest.raises(DataPreparationError) as err:
        prepare_nisqa(folder, tmp_path / "out")
    msg = str(err.value)
    assert str(path) in msg
    head = msg.replace(str(path), "").split("(required")[0]  # the part naming what is missing
    named = set(re.findall(r"\b(db|con|filepath_deg|mos)\b", head))
    assert named == {"filepath_deg", "mos"}, msg


def test_missing_files_and_empty_mos_are_skipped_and_reported(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="jsqa_sb")
    folder = make_corpus(tmp_path)
    rows = read_rows(corpus_csv(folder))
    gone, no_mos = rows[0], rows[7]
    assert (gone["db"], no_mos["db"]) == ("NISQA_TRAIN_SIM", "NISQA_VAL_SIM")
    deg_path(folder, gone).unlink()
    no_mos["mos"] = ""
    write_rows(corpus_csv(folder), rows)

    save = tmp_path / "out"
    prepare_nisqa(folder, save, num_workers=2)
    train, valid = load(save, "NISQA_TRAIN_SIM.json"), load(save, "NISQA_VAL_SIM.json")
    assert gone["file"] not in train and len(train) == SMALL["NISQA_TRAIN_SIM"] - 1
    assert no_mos["file"] not in valid and len(valid) == SMALL["NISQA_VAL_SIM"] - 1
    assert len(load(save, "NISQA_TEST_SIM.json")) == SMALL["NISQA_TEST_SIM"]

    report = load(save, "prepare_nisqa_report.json")
    reasons = {Path(s["file"]): s["reason"] for s in report["skipped"]}
    assert set(reasons) == {deg_path(folder, gone), deg_path(folder, no_mos)}
    assert "not exist" in reasons[deg_path(folder, gone)]
    assert "MOS" in reasons[deg_path(folder, no_mos)]
    assert report["counts"]["skipped"] == 2
    warnings = messages(caplog)
    for row in (gone, no_mos):
        assert any(str(deg_path(folder, row)) in m for m in warnings), warnings


def test_unreadable_and_empty_wavs_are_skipped_and_reported(tmp_path):
    folder = make_corpus(tmp_path)
    rows = [r for r in read_rows(corpus_csv(folder)) if r["db"] == "NISQA_TRAIN_SIM"]
    garbage, no_frames = deg_path(folder, rows[2]), deg_path(folder, rows[3])
    garbage.write_bytes(b"RIFF\x00\x00\x00\x00this is not a wav file at all")
    sf.write(no_frames, np.zeros(0, dtype=np.int16), 16000, subtype="PCM_16")

    save = tmp_path / "out"
    prepare_nisqa(folder, save, num_workers=2)
    manifest = load(save, "NISQA_TRAIN_SIM.json")
    assert set(manifest) == {r["file"] for r in rows} - {rows[2]["file"], rows[3]["file"]}
    reasons = {
        Path(s["file"]): s["reason"] for s in load(save, "prepare_nisqa_report.json")["skipped"]
    }
    assert set(reasons) == {garbage, no_frames}
    assert "cannot read" in reasons[garbage]
    assert "empty" in reasons[no_frames]


def _break_missing(folder, rows):
    deg_path(folder, rows[0]).unlink()


def _break_empty_mos(folder, rows):
    rows[0]["mos"] = ""
    write_rows(corpus_csv(folder), rows)


def _break_corrupt(folder, rows):
    deg_path(folder, rows[0]).write_bytes(b"not audio")


@pytest.mark.parametrize("damage", [_break_missing, _break_empty_mos, _break_corrupt])
def test_strict_makes_skips_fatal(tmp_path, damage):
    folder = make_corpus(tmp_path)
    rows = read_rows(corpus_csv(folder))
    damage(folder, rows)
    save = tmp_path / "out"
    with pytest.raises(DataPreparationError) as err:
        prepare_nisqa(folder, save, strict=True, num_workers=2)
    assert str(deg_path(folder, rows[0])) in str(err.value)
    # a failed strict run is not remembered as done: running it again fails again
    with pytest.raises(DataPreparationError):
        prepare_nisqa(folder, save, strict=True, num_workers=2)
    # without strict the same input is prepared, the damaged row left out
    prepare_nisqa(folder, save, num_workers=2)
    assert rows[0]["file"] not in load(save, "NISQA_TRAIN_SIM.json")
    assert len(load(save, "prepare_nisqa_report.json")["skipped"]) == 1


# ----------------------------------------------------------------------------- known bugs
def test_duplicate_file_id_within_a_database_is_an_error_naming_both_rows(tmp_path):
    folder = make_corpus(tmp_path)
    rows = read_rows(corpus_csv(folder))
    assert rows[0]["db"] == rows[1]["db"]
    rows[1]["file"] = rows[0]["file"]  # two different degraded files, same name in `file`
    write_rows(corpus_csv(folder), rows)
    save = tmp_path / "out"
    with pytest.raises(DataPreparationError, match="line 2 and .*line 3"):
        prepare_nisqa(folder, save, num_workers=2)
    assert not (save / f"{rows[0]['db']}.json").exists()


def test_databases_that_number_files_alike_keep_every_row(tmp_path):
    """NISQA numbers ``file`` per database: the merged training set keeps both."""
    from jsqa_sb.data.mos_data import make_mos_dataset

    folder = make_corpus(tmp_path, {"NISQA_TRAIN_SIM": 4, "NISQA_TRAIN_LIVE": 3})
    rows = read_rows(corpus_csv(folder))
    counters = {}
    for row in rows:  # every database numbers its files from 1
        counters[row["db"]] = counters.get(row["db"], 0) + 1
        row["file"] = str(counters[row["db"]])
    write_rows(corpus_csv(folder), rows)
    save = tmp_path / "out"
    prepare_nisqa(folder, save, train_dbs=["NISQA_TRAIN_*"], valid_dbs=[], num_workers=2)
    assert sorted(load(save, "NISQA_TRAIN_LIVE.json")) == ["1", "2", "3"]
    manifests = [save / "NISQA_TRAIN_SIM.json", save / "NISQA_TRAIN_LIVE.json"]
    data = make_mos_dataset(manifests, {"nisqa_folder": str(folder)})
    with data.output_keys_as(["id", "file", "db", "targets"]):
        items = list(data)
    assert len(items) == 7
    assert {(i["db"], i["file"]) for i in items} == {(r["db"], r["file"]) for r in rows}
    expected = {(r["db"], r["file"]): float(r["mos"]) for r in rows}
    for item in items:
        assert float(item["targets"][0]) == pytest.approx(expected[item["db"], item["file"]])


@pytest.mark.parametrize(
    "label, value, reason",
    [
        ("mos", "inf", "not finite"),
        ("mos", "1e400", "not finite"),
        ("mos", "-inf", "not finite"),
        ("mos", "7.5", "outside 1..5"),
        ("mos", "0.2", "outside 1..5"),
        ("mos", "nan", "empty MOS"),
        ("noi", "inf", "not finite"),
        ("col", "5.5", "outside 1..5"),
    ],
)
def test_labels_outside_the_scale_or_not_finite_are_skipped_rows(tmp_path, label, value, reason):
    folder = make_corpus(tmp_path)
    rows = read_rows(corpus_csv(folder))
    rows[0][label] = value
    write_rows(corpus_csv(folder), rows)
    save = tmp_path / "out"
    prepare_nisqa(folder, save, num_workers=2)
    skipped = load(save, "prepare_nisqa_report.json")["skipped"]
    assert [Path(s["file"]) for s in skipped] == [deg_path(folder, rows[0])]
    assert reason in skipped[0]["reason"]
    assert label in skipped[0]["reason"] or value == "nan"
    assert rows[0]["file"] not in load(save, f"{rows[0]['db']}.json")


@pytest.mark.parametrize("bad", ["absolute", "parent"])
def test_filepath_outside_the_corpus_is_a_skipped_row(tmp_path, bad):
    folder = make_corpus(tmp_path)
    rows = read_rows(corpus_csv(folder))
    real = deg_path(folder, rows[0])
    if bad == "absolute":
        rows[0]["filepath_deg"] = str(real)  # the file exists, but outside the layout
    else:
        outside = tmp_path / "outside.wav"
        outside.write_bytes(real.read_bytes())
        rows[0]["filepath_deg"] = "../../outside.wav"
    write_rows(corpus_csv(folder), rows)
    save = tmp_path / "out"
    prepare_nisqa(folder, save, num_workers=2)
    skipped = load(save, "prepare_nisqa_report.json")["skipped"]
    assert len(skipped) == 1 and "filepath_deg must" in skipped[0]["reason"]
    wavs = [e["wav"] for db in SMALL for e in load(save, f"{db}.json").values()]
    assert not any(str(tmp_path) in w or ".." in w for w in wavs)


def test_header_only_csv_is_a_clear_error(tmp_path):
    folder = make_corpus(tmp_path)
    header = corpus_csv(folder).read_text().splitlines()[0]
    corpus_csv(folder).write_text(header + "\n")
    save = tmp_path / "out"
    with pytest.raises(DataPreparationError, match="header but no rows"):
        prepare_nisqa(folder, save, num_workers=2)
    assert not list(save.glob("NISQA_*.json"))


def test_truncated_manifest_is_redone_although_the_record_says_done(tmp_path, caplog):
    folder = make_corpus(tmp_path)
    save = tmp_path / "out"
    prepare_nisqa(folder, save, num_workers=2)
    manifest = save / "NISQA_TRAIN_SIM.json"
    full = manifest.read_text()
    manifest.write_text(full[: len(full) // 2])
    caplog.clear()
    with caplog.at_level(logging.INFO):
        prepare_nisqa(folder, save, num_workers=2)
    assert "up to date" not in " ".join(messages(caplog, logging.INFO))
    assert manifest.read_text() == full


def test_rows_with_empty_db_are_reported_not_crashing(tmp_path):
    folder = make_corpus(tmp_path)
    rows = read_rows(corpus_csv(folder))
    rows[0]["db"] = ""
    rows[1]["db"], rows[1]["mos"] = "", ""
    write_rows(corpus_csv(folder), rows)
    save = tmp_path / "out"
    prepare_nisqa(folder, save, num_workers=2)
    assert not (save / "nan.json").exists()
    skipped = {Path(s["file"]) for s in load(save, "prepare_nisqa_report.json")["skipped"]}
    assert {deg_path(folder, rows[0]), deg_path(folder, rows[1])} <= skipped


def test_non_numeric_mos_is_reported_with_its_file(tmp_path):
    folder = make_corpus(tmp_path)
    rows = read_rows(corpus_csv(folder))
    rows[0]["mos"] = "abc"
    write_rows(corpus_csv(folder), rows)
    save = tmp_path / "out"
    try:
        prepare_nisqa(folder, save, num_workers=2)
    except DataPreparationError as err:  # a clear error is fine too
        assert str(corpus_csv(folder)) in str(err) or rows[0]["filepath_deg"] in str(err)
    else:
        skipped = {Path(s["file"]) for s in load(save, "prepare_nisqa_report.json")["skipped"]}
        assert deg_path(folder, rows[0]) in skipped


def test_condition_table_is_kept_for_the_reports(tmp_path):
    folder = make_corpus(tmp_path)
    rows = read_rows(corpus_csv(folder))
    con_csv = folder / "NISQA_Corpus" / "NISQA_corpus_con.csv"
    cons = sorted({(r["db"], r["con"]) for r in rows})
    with open(con_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["db", "con", "con_description", "mos", "noi", "col", "dis", "loud"])
        for i, (db, con) in enumerate(cons):
            writer.writerow([db, con, "x", 1 + (i % 4), "", 2.5, 3, "inf" if i == 0 else 4])
    save = tmp_path / "out"
    prepare_nisqa(folder, save, num_workers=2)
    table = load(save, "conditions.json")
    db, con = cons[1]
    assert table[db][con] == {"mos": 2.0, "noi": None, "col": 2.5, "dis": 3.0, "loud": 4.0}
    assert cons[0][1] not in table.get(cons[0][0], {})  # a non-finite label: row ignored
    assert sum(len(v) for v in table.values()) == len(cons) - 1
    con_csv.unlink()  # the table is gone: so is conditions.json, after a new preparation
    prepare_nisqa(folder, save, num_workers=2)
    assert not (save / "conditions.json").exists()
