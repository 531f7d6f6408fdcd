"""Tests of the miniature LibriSpeech / CHiME-3 / NISQA builders."""

import csv
import json
import re

import numpy as np
import pytest
import soundfile as sf
from scipy.stats import spearmanr

from jsqa_sb.data import minicorpus
from jsqa_sb.data.minicorpus import build_all, build_chime3, build_librispeech, build_nisqa

NISQA_HEADER = (
    "db,con,file,con_description,filename_deg,filename_ref,source,lang,votes,mos,noi,col,dis,"
    "loud,noi_std,col_std,dis_std,loud_std,mos_std,filepath_deg,filepath_ref"
)
DIMENSION_COLUMNS = ("noi", "col", "dis", "loud", "noi_std", "col_std", "dis_std", "loud_std")
SNR_RE = re.compile(r"noise=(BUS|CAF|PED|STR)@(-?\d+(?:\.\d+)?)dB")


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    return build_all(tmp_path_factory.mktemp("mini"), seed=0)


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_build_all_returns_parent_folders(corpora):
    assert sorted(corpora) == ["chime3_folder", "librispeech_folder", "nisqa_folder"]
    assert (corpora["librispeech_folder"] / "LibriSpeech" / "SPEAKERS.TXT").is_file()
    assert (corpora["chime3_folder"] / "CHiME3" / "data" / "audio" / "16kHz").is_dir()
    assert (corpora["nisqa_folder"] / "NISQA_Corpus" / "NISQA_corpus_file.csv").is_file()


def test_librispeech_layout_and_transcripts(corpora):
    root = corpora["librispeech_folder"] / "LibriSpeech"
    spk_by_subset = {}
    for subset, (n_spk, n_chap, n_utt) in minicorpus.DEFAULT_SUBSETS.items():
        speakers = sorted(p for p in (root / subset).iterdir())
        assert len(speakers) == n_spk and all(p.name.isdigit() for p in speakers)
        spk_by_subset[subset] = {p.name for p in speakers}
        for spk in speakers:
            chapters = sorted(spk.iterdir())
            assert len(chapters) == n_chap
            for chap in chapters:
                flacs = sorted(chap.glob("*.flac"))
                assert [f.name for f in flacs] == [
                    f"{spk.name}-{chap.name}-{u:04d}.flac" for u in range(n_utt)
                ]
                trans = (chap / f"{spk.name}-{chap.name}.trans.txt").read_text().splitlines()
                ids = [line.split(" ", 1)[0] for line in trans]
                assert ids == [f.stem for f in flacs]
                for line in trans:
                    words = line.split(" ", 1)[1]
                    assert re.fullmatch(r"[A-Z']+( [A-Z']+)*", words)
                for f in flacs:
                    info = sf.info(f)
                    assert (info.samplerate, info.channels) == (16000, 1)
                    assert (info.format, info.subtype) == ("FLAC", "PCM_16")
                    assert 1.5 <= info.duration <= 4.0
    subsets = list(spk_by_subset.values())
    assert not subsets[0] & subsets[1], "speaker ids must be distinct across subsets"
    speakers_txt = (root / "SPEAKERS.TXT").read_text().splitlines()
    chapters_txt = (root / "CHAPTERS.TXT").read_text().splitlines()
    assert speakers_txt[0].startswith(";") and chapters_txt[0].startswith(";")
    listed = {
        line.split("|")[0].strip(): line.split("|")[2].strip()
        for line in speakers_txt
        if not line.startswith(";")
    }
    assert listed == {s: sub for sub, spks in spk_by_subset.items() for s in spks}
    chapter_dirs = {p.name for p in root.glob("*/*/*") if p.is_dir()}
    assert {line.split("|")[0].strip() for line in chapters_txt if not line.startswith(";")} == (
        chapter_dirs
    )


def test_chime3_backgrounds(corpora):
    folder = corpora["chime3_folder"] / "CHiME3" / "data" / "audio" / "16kHz" / "backgrounds"
    wavs = sorted(folder.glob("*.wav"))
    assert len(wavs) == 8
    sessions, envs, stats = set(), [], {}
    for wav in wavs:
        m = re.fullmatch(r"BGD_(\d{6})_(\d{3})_(BUS|CAF|PED|STR)\.CH1\.wav", wav.name)
        assert m, wav.name
        sessions.add(m.group(1, 2))
        envs.append(m.group(3))
        info = sf.info(wav)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        x, _ = sf.read(wav)
        assert len(x) == 8 * 16000
        assert np.max(np.abs(x)) < 1.0
        assert abs(20 * np.log10(np.sqrt(np.mean(x**2))) - (-32.0)) < 2.0
        power = np.abs(np.fft.rfft(x)) ** 2
        centroid = np.sum(power * np.fft.rfftfreq(len(x), 1 / 16000)) / np.sum(power)
        stats.setdefault(m.group(3), []).append(centroid)
    assert len(sessions) == 8, "every recording is its own session"
    assert sorted(envs) == sorted(["BUS", "CAF", "PED", "STR"] * 2)
    # BUS is a low-frequency rumble: lower spectral centroid than every other environment.
    assert max(stats["BUS"]) < min(min(v) for k, v in stats.items() if k != "BUS")


def test_nisqa_layout_columns_and_rates(corpora):
    root = corpora["nisqa_folder"] / "NISQA_Corpus"
    header = (root / "NISQA_corpus_file.csv").read_text().splitlines()[0]
    assert header == NISQA_HEADER
    rows = read_rows(root / "NISQA_corpus_file.csv")
    per_db = []
    for db, n in minicorpus.DEFAULT_DATABASES.items():
        assert (root / db / f"{db}_file.csv").read_text().splitlines()[0] == NISQA_HEADER
        db_rows = read_rows(root / db / f"{db}_file.csv")
        assert len(db_rows) == n and all(r["db"] == db for r in db_rows)
        per_db += db_rows
        rates = []
        for r in db_rows:
            assert r["filepath_deg"] == f"{db}/deg/{r['filename_deg']}"
            assert r["filepath_ref"] == f"{db}/ref/{r['filename_ref']}"
            assert re.fullmatch(r"c\d{5}_.+\.wav", r["filename_deg"])
            assert r["lang"] == "en"
            deg, ref = sf.info(root / r["filepath_deg"]), sf.info(root / r["filepath_ref"])
            assert deg.channels == 1 and deg.subtype == "PCM_16"
            assert ref.samplerate == 16000
            assert 2.0 <= deg.duration <= 4.0
            rates.append(deg.samplerate)
        assert set(rates) == {16000, 48000}
        assert rates.count(48000) == round(0.2 * n)
    assert rows == per_db


def test_nisqa_conditions(corpora):
    root = corpora["nisqa_folder"] / "NISQA_Corpus"
    for db in ("NISQA_TRAIN_SIM", "NISQA_VAL_SIM"):
        rows = read_rows(root / db / f"{db}_file.csv")
        assert len({r["con"] for r in rows}) == len(rows), "one condition per file"
    groups = {}
    for r in read_rows(root / "NISQA_TEST_SIM" / "NISQA_TEST_SIM_file.csv"):
        groups.setdefault(r["con"], []).append(r)
    for group in groups.values():
        assert len(group) == 3
        assert len({r["con_description"] for r in group}) == 1
        assert len({r["filename_ref"] for r in group}) == 3
        assert len({r["filename_ref"].split("_")[0] for r in group}) == 3, "different sources"


def test_nisqa_labels_follow_degradations(corpora):
    rows = read_rows(corpora["nisqa_folder"] / "NISQA_Corpus" / "NISQA_corpus_file.csv")
    for r in rows:
        for k in ("mos", "noi", "col", "dis", "loud"):
            assert 1.0 <= float(r[k]) <= 5.0
    mos = np.array([float(r["mos"]) for r in rows])
    desc = [r["con_description"] for r in rows]
    snr = np.array([float(m.group(2)) if (m := SNR_RE.search(d)) else np.nan for d in desc])
    noisy = ~np.isnan(snr)
    assert noisy.sum() >= 20
    assert spearmanr(snr[noisy], mos[noisy]).statistic > 0.5
    clean = np.array([d == "clean" for d in desc])
    assert clean.any() and 4.2 < mos[clean].mean() < 4.9
    assert mos[clean].mean() > mos[noisy & (snr < 5)].mean() + 1.0

    # Low-pass lowers colouration, clipping lowers discontinuity, attenuation lowers loudness.
    for dim, flag in (("col", "lowpass="), ("dis", "clip="), ("loud", "level=")):
        scores = {True: [], False: []}
        for r, d in zip(rows, desc):
            scores[flag in d].append(float(r[dim]))
        assert scores[True] and np.mean(scores[True]) < np.mean(scores[False]) - 0.5, dim


def test_nisqa_options(tmp_path):
    dbs = {"NISQA_TRAIN_SIM": 6, "NISQA_TEST_SIM": 6}
    root = build_nisqa(
        tmp_path, dbs, with_dimensions=False, write_corpus_csv=False, high_rate_fraction=0.0
    )
    assert root == tmp_path / "NISQA_Corpus"
    assert not (root / "NISQA_corpus_file.csv").exists()
    rows = read_rows(root / "NISQA_TRAIN_SIM" / "NISQA_TRAIN_SIM_file.csv")
    for r in rows:
        assert all(r[k] == "" for k in (*DIMENSION_COLUMNS, "votes", "mos_std"))
        assert 1.0 <= float(r["mos"]) <= 5.0
        assert sf.info(root / r["filepath_deg"]).samplerate == 16000


def test_written_audio_is_never_clipped(corpora):
    for folder in corpora.values():
        for path in list(folder.rglob("*.wav")) + list(folder.rglob("*.flac")):
            x, _ = sf.read(path, dtype="int16")
            assert np.max(np.abs(x.astype(np.int32))) < 32767, path


def _small_build(root, seed):
    build_librispeech(root, {"dev-clean": (1, 1, 2)}, seed=seed)
    build_chime3(root, n_sessions_per_env=1, seconds=1.0, seed=seed)
    build_nisqa(root, {"NISQA_TEST_SIM": 3}, seed=seed, high_rate_fraction=0.34)


def test_determinism(tmp_path):
    _small_build(tmp_path / "a", 0)
    _small_build(tmp_path / "b", 0)
    _small_build(tmp_path / "c", 1)
    a, b, c = (files(tmp_path / k) for k in "abc")
    assert a == b, "same seed gives byte-identical files"
    audio = [k for k in a if k.suffix in (".wav", ".flac") and "/ref/" not in k.as_posix()]
    assert len(audio) >= 9
    # A different seed changes the audio (file names may change too: chapter ids are seeded).
    assert all(a[k] != c.get(k) for k in audio)


def test_skip_when_done_and_rebuild_when_args_change(tmp_path):
    out = build_chime3(tmp_path, n_sessions_per_env=1, seconds=1.0)
    mtimes = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    assert build_chime3(tmp_path, n_sessions_per_env=1, seconds=1.0) == out
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes
    build_chime3(tmp_path, n_sessions_per_env=1, seconds=2.0)
    assert sorted(out.iterdir()) == sorted(mtimes)
    assert all(sf.info(p).duration == 2.0 for p in out.iterdir())
    build_chime3(tmp_path, n_sessions_per_env=2, seconds=2.0)
    assert len(list(out.iterdir())) == 8

    ls = build_librispeech(tmp_path, {"dev-clean": (1, 1, 2)})
    build_librispeech(tmp_path, {"test-clean": (1, 1, 1)})
    assert not (ls / "dev-clean").exists(), "stale subsets are removed on rebuild"
    assert len(list((ls / "test-clean").rglob("*.flac"))) == 1


@pytest.mark.parametrize("marker", ["[]", "null", "not json", "[" * 100_000])
def test_a_damaged_build_marker_means_rebuild(marker, tmp_path):
    out = build_chime3(tmp_path, n_sessions_per_env=1, seconds=1.0)
    (done,) = tmp_path.rglob(".minicorpus_done")
    done.write_text(marker)
    assert build_chime3(tmp_path, n_sessions_per_env=1, seconds=1.0) == out
    assert len(list(out.glob("*.wav"))) == 4 and json.loads(done.read_text())["complete"]


def test_refuses_to_overwrite_foreign_folder(tmp_path):
    (tmp_path / "LibriSpeech").mkdir()
    (tmp_path / "LibriSpeech" / "README.TXT").write_text("a real corpus")
    with pytest.raises(FileExistsError):
        build_librispeech(tmp_path)


def test_unknown_environment():
    with pytest.raises(ValueError, match="unknown environment"):
        minicorpus.synth_noise("ZOO", 100, np.random.default_rng(0))
