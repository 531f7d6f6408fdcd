import json
import logging
import pickle
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
from reference import active_level_db, mix_at_snrs
from torch.utils.data import DataLoader

from jsqa_sb.audio import read_audio, resample
from jsqa_sb.data.jnd_data import JNDViewMaker, jnd_collate, make_jnd_dataset
from jsqa_sb.data.jnd_mixing import JNDSettingsError
from jsqa_sb.data.minicorpus import build_chime3, build_librispeech
from jsqa_sb.data.prepare_jnd import prepare_jnd

SR = 16000


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("jnd")
    build_librispeech(root / "libri")
    build_chime3(root / "chime")
    out = prepare_jnd(root / "libri", root / "chime", root / "manifests", segment_seconds=1.5)
    folders = {"librispeech_folder": str(root / "libri"), "chime3_folder": str(root / "chime")}
    return root, out, folders


def _maker(out, folders, **kwargs):
    kwargs.setdefault("segment_seconds", 1.5)
    return JNDViewMaker(out["noise_train"], folders, **kwargs)


def _with_views(dataset):
    dataset.set_output_keys(["id", "views", "excerpts", "mix_gains", "mix_snrs"])
    return dataset


def test_training_items_are_groups_of_levelled_views(prepared):
    _, out, folders = prepared
    dataset = make_jnd_dataset(out["train"], folders, _maker(out, folders), fixed=False)
    _with_views(dataset)
    for i in range(len(dataset)):
        item = dataset[i]
        views, snrs = item["views"], item["mix_snrs"]
        assert views.shape == (4, int(1.5 * SR))  # all mini utterances are longer than 1.5 s
        assert snrs.shape == (4,) and torch.isfinite(views).all()
        assert views.abs().max() <= 0.99
        for view in views.numpy():
            assert active_level_db(view) == pytest.approx(-26.0, abs=0.05)
        gaps = (snrs[:, None] - snrs[None, :]).abs()[np.triu_indices(4, 1)]
        assert (gaps < 3).any() and (gaps >= 6).any()
        assert snrs.min() >= -5 and snrs.max() <= 30
        # Same excerpt, same noise, different SNRs: the views differ, but not in length.
        assert not torch.allclose(views[0], views[1])


def test_validation_items_are_the_manifest_mixtures(prepared):
    _, out, folders = prepared
    maker = _maker(out, folders)
    dataset = _with_views(make_jnd_dataset(out["valid"], folders, maker, fixed=True))
    manifest = json.loads(open(out["valid"]).read())
    for i in range(len(dataset)):
        item = dataset[i]
        entry = manifest[item["id"]]
        start, seg = entry["crop_start"], int(1.5 * SR)
        speech, _ = read_audio(entry["wav"].format(**folders), start, seg)
        noise_path = entry["noise_wav"].format(**folders)
        noise_all, _ = read_audio(noise_path)
        idx = (entry["noise_offset"] + np.arange(seg)) % noise_all.size
        expected = mix_at_snrs(speech, noise_all[idx], np.array(entry["snrs"]), SR)
        np.testing.assert_allclose(item["views"].numpy(), expected, atol=1e-6)
        assert item["mix_snrs"].tolist() == pytest.approx(entry["snrs"])
        # No randomness left in validation: every epoch and seed gives the same.
        maker.set_epoch(7)
        assert torch.equal(dataset[i]["views"], item["views"])
        maker.set_epoch(0)


def test_mixing_is_reproducible_per_epoch_and_new_per_epoch(prepared):
    _, out, folders = prepared
    a = make_jnd_dataset(out["train"], folders, maker_a := _maker(out, folders), fixed=False)
    b = make_jnd_dataset(out["train"], folders, maker_b := _maker(out, folders), fixed=False)
    _with_views(a), _with_views(b)
    c = make_jnd_dataset(out["train"], folders, _maker(out, folders, seed=99), fixed=False)
    maker_a.set_epoch(3)
    maker_b.set_epoch(3)
    first = a[0]
    assert torch.equal(first["views"], b[0]["views"])  # rerun of the same epoch
    assert torch.equal(first["mix_snrs"], b[0]["mix_snrs"])
    assert not torch.equal(first["mix_snrs"], c[0]["mix_snrs"])  # another seed
    maker_b.set_epoch(4)
    assert not torch.equal(first["mix_snrs"], b[0]["mix_snrs"])  # a new epoch


def test_dataloader_with_workers_is_deterministic_and_follows_the_epoch(prepared):
    _, out, folders = prepared
    maker = _maker(out, folders)
    dataset = make_jnd_dataset(out["train"], folders, maker, fixed=False)

    def epoch_batches(epoch, workers):
        maker.set_epoch(epoch)
        loader = DataLoader(dataset, batch_size=3, collate_fn=jnd_collate, num_workers=workers)
        return list(loader)

    serial, parallel = epoch_batches(1, 0), epoch_batches(1, 2)
    assert len(serial) == len(parallel) == -(-len(dataset) // 3)
    for x, y in zip(serial, parallel):
        assert x.ids == y.ids and torch.equal(x.wavs, y.wavs) and torch.equal(x.snrs, y.snrs)
    batch = serial[0]
    assert batch.wavs.shape == (12, int(1.5 * SR))
    assert batch.groups.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert torch.equal(batch.wav_lens, torch.ones(12))
    assert batch.has_nonfinite() == []
    next_epoch = epoch_batches(2, 2)
    assert not torch.equal(next_epoch[0].snrs, parallel[0].snrs)


def _first_entry(out, folders):
    """The first training manifest entry and its audio."""
    manifest = json.loads(open(out["train"]).read())
    _, entry = sorted(manifest.items())[0]
    return entry, read_audio(entry["wav"].format(**folders))[0]


def _short_copy(entry, audio, tmp_path):
    """The entry's first second as an utterance of its own (shorter than a segment)."""
    short = tmp_path / "short.flac"
    sf.write(short, audio[:SR], SR)
    return {**entry, "wav": str(short), "duration": 1.0}


def _training_set(tmp_path, out, folders, entries):
    """A training dataset of the given manifest entries."""
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(entries))
    return make_jnd_dataset(path, folders, _maker(out, folders), fixed=False)


def test_short_utterances_and_other_sample_rates(prepared, tmp_path):
    _, out, folders = prepared
    entry, audio = _first_entry(out, folders)
    hi_rate = tmp_path / "hi.wav"
    sf.write(hi_rate, resample(audio, SR, 48000), 48000, subtype="FLOAT")
    small = {
        "hi": {**entry, "wav": str(hi_rate), "sample_rate": 48000},
        "short": _short_copy(entry, audio, tmp_path),
    }
    dataset = _training_set(tmp_path, out, folders, small)
    batch = jnd_collate([dataset[0], dataset[1]])
    assert batch.wavs.shape == (8, int(1.5 * SR))  # 48 kHz input resampled to 16 kHz
    assert batch.wav_lens.tolist() == pytest.approx([1.0] * 4 + [1.0 / 1.5] * 4, abs=1e-6)
    assert (batch.wavs[4:, SR:] == 0).all()  # padding after the short group


def test_batch_views_are_the_items_mixed_on_the_cpu(prepared, tmp_path):
    # The batch carries excerpts and gains; the views it makes must be the mixtures
    # mix_at_snrs makes from the same excerpts, padded groups included.
    _, out, folders = prepared
    entry, audio = _first_entry(out, folders)
    short = _short_copy(entry, audio, tmp_path)
    dataset = _training_set(tmp_path, out, folders, {"long": entry, "short": short})
    items = [dataset[0], dataset[1]]
    batch = jnd_collate(items).to("cpu")
    assert batch.num_views == 8 and batch.wavs.shape == (8, int(1.5 * SR))
    for g, item in enumerate(items):
        speech, noise = item["excerpts"].numpy()
        expected = mix_at_snrs(speech, noise, item["mix_snrs"].numpy().astype(float), SR)
        views = batch.wavs[4 * g : 4 * g + 4]
        np.testing.assert_allclose(views[:, : speech.size].numpy(), expected, atol=1e-6)
        assert (views[:, speech.size :] == 0).all()
        for view in expected:
            assert active_level_db(view) == pytest.approx(-26.0, abs=0.05)


def test_a_sent_batch_carries_no_views_and_makes_the_same_ones(prepared):
    _, out, folders = prepared
    dataset = make_jnd_dataset(out["train"], folders, _maker(out, folders), fixed=False)
    batch = jnd_collate([dataset[i] for i in range(3)])
    size = len(pickle.dumps(batch))
    views = batch.wavs  # made, and kept by this batch only
    # Two excerpts per group of K = 4 views: half the bytes of the views.
    assert len(pickle.dumps(batch)) == size < 0.55 * views.numel() * views.element_size()
    received = pickle.loads(pickle.dumps(batch))
    assert received.ids == batch.ids and torch.equal(received.wavs, views)
    assert torch.equal(received.groups, batch.groups) and torch.equal(received.snrs, batch.snrs)
    assert torch.equal(received.noises, batch.noises)
    assert torch.equal(received.to("cpu").environments, batch.environments)


def test_batches_carry_the_noise_condition_of_every_view(prepared):
    """What the content-blind pairing schemes compare: recording and environment."""
    _, out, folders = prepared
    noises = json.loads(open(out["noise_train"]).read())
    for fixed, manifest, maker in (
        (False, out["train"], _maker(out, folders)),
        (True, out["valid"], JNDViewMaker(segment_seconds=1.5)),
    ):
        dataset = make_jnd_dataset(manifest, folders, maker, fixed=fixed)
        dataset.set_output_keys(["id", "excerpts", "mix_gains", "mix_snrs", "noise_condition"])
        batch = jnd_collate([dataset[i] for i in range(len(dataset))])
        k = batch.views_per_group
        assert batch.noises.shape == batch.environments.shape == batch.snrs.shape
        for g in range(len(batch.ids)):  # one condition per group, the same for its views
            assert len(set(batch.noises[g * k : (g + 1) * k].tolist())) == 1
        if not fixed:  # more groups than recordings: shared recordings are recognised
            assert len(set(batch.noises.tolist())) <= len(noises) < len(batch.ids)
        # environments group recordings: never more environments than recordings
        assert len(set(batch.environments.tolist())) <= len(set(batch.noises.tolist()))


def test_groups_of_different_sizes_are_refused(prepared):
    _, out, folders = prepared
    items = [
        make_jnd_dataset(out["train"], folders, _maker(out, folders, views_per_group=k), False)[0]
        for k in (3, 4)
    ]
    with pytest.raises(ValueError, match="same number of views"):
        jnd_collate(items)


def test_unreadable_file_gives_nan_views_named_in_the_log(prepared, tmp_path, caplog):
    _, out, folders = prepared
    entry, _ = _first_entry(out, folders)
    broken = tmp_path / "broken.flac"
    broken.write_bytes(b"fLaC" + bytes(300))
    good = tmp_path / "good.flac"
    shutil.copy(entry["wav"].format(**folders), good)
    entries = {"ok": {**entry, "wav": str(good)}, "bad": {**entry, "wav": str(broken)}}
    dataset = _training_set(tmp_path, out, folders, entries)
    with caplog.at_level(logging.WARNING):
        batch = jnd_collate([dataset[0], dataset[1]])
    assert str(broken) in caplog.text
    assert batch.has_nonfinite() == ["bad"]


def test_training_views_need_noise(prepared):
    _, out, folders = prepared
    dataset = make_jnd_dataset(out["train"], folders, JNDViewMaker(), fixed=False)
    with pytest.raises(ValueError, match="noise_manifest"):
        dataset[0]


def test_a_batch_without_noise_conditions_is_refused_by_noise_matching_pairs():
    """No silent stand-in: the condition stays unknown through a worker and the loss says so."""
    from jsqa_sb.networks.losses import JNDContrastiveLoss

    items = [
        {"id": u, "excerpts": torch.ones(2, 8), "mix_gains": torch.ones(3, 2), "mix_snrs": s}
        for u, s in (("a", torch.tensor([0.0, 1.0, 20.0])), ("b", torch.tensor([0.5, 9.0, 30.0])))
    ]
    batch = pickle.loads(pickle.dumps(jnd_collate(items)))
    assert batch.conditions is None and batch.noises is None
    assert batch.to("cpu").environments is None
    z = torch.randn(batch.num_views, 4)
    with pytest.raises(ValueError, match="need the noise condition"):
        JNDContrastiveLoss(pairs="same_noise")(z, batch.snrs, batch.groups, noises=batch.noises)
    JNDContrastiveLoss(pairs="within_group")(z, batch.snrs, batch.groups, noises=batch.noises)


def test_level_range_gives_each_training_view_its_own_level(prepared):
    _, out, folders = prepared
    fixed = _with_views(make_jnd_dataset(out["train"], folders, _maker(out, folders), fixed=False))
    ranged = _maker(out, folders, level_range_db=[-40, -20])
    ranged = _with_views(make_jnd_dataset(out["train"], folders, ranged, fixed=False))
    levels = []
    for i in range(len(ranged)):
        item = ranged[i]
        assert torch.equal(item["mix_snrs"], fixed[i]["mix_snrs"])  # same SNRs either way
        for view in item["views"].numpy():
            levels.append(active_level_db(view))
        # The SNR is kept: only the overall gain differs from the levelled view's.
        ratio = item["mix_gains"][:, 1] / item["mix_gains"][:, 0]
        expected = fixed[i]["mix_gains"][:, 1] / fixed[i]["mix_gains"][:, 0]
        assert torch.allclose(ratio, expected, rtol=1e-4)
    levels = np.array(levels)
    assert levels.min() >= -40.05 and levels.max() <= -19.95
    assert levels.max() - levels.min() > 8  # spread over the range, not one level


@pytest.mark.parametrize("bad", [[-20, -40], [-30, 3], [-30], ["a", -20], [float("nan"), -20]])
def test_a_bad_level_range_is_refused_naming_the_setting(prepared, bad):
    _, out, folders = prepared
    with pytest.raises(JNDSettingsError, match="level_range_db"):
        _maker(out, folders, level_range_db=bad)
