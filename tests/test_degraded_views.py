"""Views with a degradation beyond noise: drawn by the view maker, made and skipped by the Brain."""

import logging

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from jsqa_sb.data import degradations
from jsqa_sb.data.degradations import Degrader
from jsqa_sb.data.jnd_data import JNDViewMaker, jnd_collate, make_jnd_dataset
from jsqa_sb.data.minicorpus import build_chime3, build_librispeech
from jsqa_sb.data.pairs import JNDPairRule, JNDSettingsError
from jsqa_sb.data.prepare_jnd import prepare_jnd
from jsqa_sb.networks.losses import JNDContrastiveLoss

FAMILIES = [{"family": "clipping"}, {"family": "band_limit"}]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("deg")
    build_librispeech(root / "libri")
    build_chime3(root / "chime")
    out = prepare_jnd(root / "libri", root / "chime", root / "manifests", segment_seconds=1.0)
    folders = {"librispeech_folder": str(root / "libri"), "chime3_folder": str(root / "chime")}
    return out, folders


def _maker(out, folders, degrader, **kwargs):
    rule = JNDPairRule(degradations=degrader)
    noise = kwargs.pop("noise", out["noise_train"])
    return JNDViewMaker(noise, folders, segment_seconds=1.0, pair_rule=rule, degrader=degrader,
                        **kwargs)  # fmt: skip


def _batches(out, folders, maker, fixed=False, n=4):
    manifest = out["valid"] if fixed else out["train"]
    dataset = make_jnd_dataset(manifest, folders, maker, fixed=fixed)
    return list(DataLoader(dataset, batch_size=n, collate_fn=jnd_collate))


def test_a_degraded_group_shares_one_snr_and_varies_its_severity(prepared):
    out, folders = prepared
    maker = _maker(out, folders, Degrader(FAMILIES, p_none=0.3), degraded_snr_range=(12, 20))
    rows = torch.cat([b.degradations for b in _batches(out, folders, maker)])
    snrs = torch.cat([b.snrs for b in _batches(out, folders, maker)]).view(-1, 4)
    groups = rows.view(-1, 4, 2)
    degraded = groups[:, 0, 0] >= 0
    assert degraded.any() and (~degraded).any()  # p_none = 0.3: both kinds
    assert (groups[..., 0] == groups[:, :1, 0]).all()  # one family per group
    for snr, group in zip(snrs[degraded], groups[degraded]):
        assert (snr == snr[0]).all() and 12 <= snr[0] <= 20
        spec = maker.degrader.specs[int(group[0, 0])]
        diffs = (group[:, 1, None] - group[None, :, 1]).abs().numpy()
        alike, different = spec.label(diffs[np.triu_indices(4, 1)])
        assert alike.any() and different.any()
    assert (groups[~degraded][..., 1] == 0).all()
    assert snrs[~degraded].std(dim=1).min() > 0  # noise-only groups vary the SNR


def test_validation_degradations_are_fixed_and_the_views_degraded(prepared, tmp_path):
    out, folders = prepared
    maker = _maker(out, folders, Degrader(FAMILIES, p_none=0.0), noise=None)
    first, again = (_batches(out, folders, maker, fixed=True)[0] for _ in range(2))
    assert torch.equal(first.degradations, again.degradations)
    # ... and the same wherever the corpus lies (drawn from the group, not the file path)
    moved = {name: tmp_path / name for name in folders}
    for name, link in moved.items():
        link.symlink_to(folders[name])
    elsewhere = _batches(out, {k: str(v) for k, v in moved.items()}, maker, fixed=True)[0]
    assert torch.equal(first.degradations, elsewhere.degradations)
    assert (first.families >= 0).all()
    plain = first.wavs.clone()
    degraded = first.degrade(maker.degrader).wavs
    assert degraded.shape == plain.shape and not torch.equal(degraded, plain)


def test_a_rule_that_does_not_know_the_degradations_is_refused(prepared):
    out, folders = prepared
    with pytest.raises(JNDSettingsError, match="same degrader"):
        JNDViewMaker(out["noise_train"], folders, degrader=Degrader(FAMILIES))


def _silencing_clipping(degrade):
    """``degrade`` with clipping gone wrong: it returns silence."""

    def broken(wavs, family, *args, **kwargs):
        out = degrade(wavs, family, *args, **kwargs)
        return out * 0.0 if family == "clipping" else out

    return broken


def test_a_batch_whose_degraded_views_are_silent_is_skipped_and_counted(
    prepared, caplog, monkeypatch, tiny_jnd_brain
):
    out, folders = prepared
    monkeypatch.setattr(degradations, "degrade", _silencing_clipping(degradations.degrade))
    degrader = Degrader(FAMILIES, p_none=0.0)
    maker = _maker(out, folders, degrader)
    brain = tiny_jnd_brain(
        loss=JNDContrastiveLoss(pair_rule=maker.pair_rule),
        train_view_maker=maker,
        degrader=degrader,
    )
    batches = _batches(out, folders, maker, n=1)
    silent = [b for b in batches if (b.families == 0).any()]
    clean = [b for b in batches if (b.families != 0).all()]
    assert silent and clean
    with caplog.at_level(logging.WARNING):
        brain.on_fit_start()
        losses = [brain.fit_batch(b) for b in silent + clean]
    assert brain.skipped_batches == len(silent)
    assert all(torch.isnan(loss) for loss in losses[: len(silent)])
    assert all(torch.isfinite(loss) for loss in losses[len(silent) :])
    assert "Skipping a batch" in caplog.text
