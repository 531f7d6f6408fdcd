"""The extra degradations of pretraining views: what each family does to the audio, and
the settings, draws and batches that use them."""

import doctest
import math

import numpy as np
import pytest
import torch
import torchaudio.functional as AF

import jsqa_sb.data.degradations
from jsqa_sb.data.degradations import FAMILIES, DegradationSpec, Degrader, degrade, mu_law_quantise
from jsqa_sb.data.pairs import JNDPairRule, JNDSettingsError

SR = 16000


def _tone(seconds=0.5, rows=1, noise_db=-40.0, seed=0):
    """(rows, T) harmonic complex (200 Hz, up to 3.8 kHz, 1/k) plus white noise, peak 0.5."""
    t = torch.arange(int(seconds * SR), dtype=torch.float64) / SR
    x = sum(torch.sin(2 * math.pi * 200 * k * t + k) / k for k in range(1, 20))
    x = x / x.abs().max()
    gen = torch.Generator().manual_seed(seed)
    x = x + 10 ** (noise_db / 20) * torch.randn(t.shape, generator=gen, dtype=torch.float64)
    return (0.5 * x / x.abs().max()).float().repeat(rows, 1)


def _snr_db(clean, degraded):
    """Per-row SNR (dB) of ``degraded`` against ``clean``."""
    err = (degraded - clean).double().square().sum(dim=1)
    return 10 * torch.log10(clean.double().square().sum(dim=1) / err.clamp_min(1e-30))


def test_doctests():
    result = doctest.testmod(jsqa_sb.data.degradations, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 4 and result.failed == 0


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_and_device_are_kept(family, dtype):
    wavs = _tone(0.25, rows=3).to(dtype)
    low, high = FAMILIES[family].default_range
    out = degrade(wavs, family, torch.tensor([low, (low + high) / 2, high]), SR)
    assert out.shape == wavs.shape and out.dtype == dtype and out.device == wavs.device
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("family", ["band_limit", "clipping", "packet_loss"])
def test_severity_zero_leaves_the_audio_unchanged(family):
    wavs = _tone(0.25, rows=2)
    out = degrade(wavs, family, torch.zeros(2), SR, torch.Generator().manual_seed(0))
    assert torch.allclose(out, wavs, atol=1e-6)


def test_mu_law_at_zero_is_g711_like_transparent_in_band():
    wavs = _tone(0.25, noise_db=-80.0)  # all its energy below 4 kHz
    assert _snr_db(wavs, degrade(wavs, "mu_law", [0.0], SR)).item() > 25.0


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_more_severity_distorts_more(family):
    low, high = FAMILIES[family].default_range
    severities = torch.linspace(low, high, 5)
    wavs = _tone(1.0, rows=5)
    if family == "reverb":  # broadband: a few harmonics sample a random room response
        wavs = 0.1 * torch.randn(5, SR, generator=torch.Generator().manual_seed(0))
    out = degrade(wavs, family, severities, SR, torch.Generator().manual_seed(1))
    snrs = _snr_db(wavs, out)
    assert (snrs[1:] < snrs[:-1] - 0.2).all(), snrs.tolist()


@pytest.mark.parametrize("severity", [1.0, 2.0, 3.5])
def test_band_limit_removes_the_energy_above_the_cutoff(severity):
    wavs = _tone(0.5, noise_db=-10.0)  # energy up to 8 kHz
    out = degrade(wavs, "band_limit", [severity], SR)
    cutoff = 8000 * 2**-severity
    freqs = torch.fft.rfftfreq(wavs.shape[1], 1 / SR)
    before, after = torch.fft.rfft(wavs).abs() ** 2, torch.fft.rfft(out).abs() ** 2
    above = freqs > cutoff + 5
    assert after[:, above].sum() < 1e-8 * before[:, above].sum()
    below = freqs < cutoff - 5
    assert torch.allclose(after[:, below], before[:, below], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("severity", [3.0, 12.0])
def test_clipping_caps_at_the_threshold_below_each_peak(severity):
    wavs = _tone(0.25, rows=2) * torch.tensor([[1.0], [0.1]])
    out = degrade(wavs, "clipping", [severity, severity], SR)
    threshold = wavs.abs().amax(dim=1) * 10 ** (-severity / 20)
    assert torch.allclose(out.abs().amax(dim=1), threshold)
    under = wavs.abs() < threshold[:, None]
    assert torch.equal(out[under], wavs[under]) and (~under).any()


def _zero_packets(out, packet=320):
    return (out.reshape(out.shape[0], -1, packet) == 0).all(dim=2)


@pytest.mark.parametrize("rate, burst", [(10.0, 1), (30.0, 1), (20.0, 3)])
def test_packet_loss_zeroes_the_requested_fraction_of_packets(rate, burst):
    wavs = _tone(1.2, rows=4)  # 60 packets of 20 ms
    gen = torch.Generator().manual_seed(2)
    out = degrade(wavs, "packet_loss", torch.full((4,), rate), SR, gen, burst_packets=burst)
    zero = _zero_packets(out)
    assert zero.sum(dim=1).tolist() == [round(rate / 100 * 60 / burst) * burst] * 4
    kept = ~zero.repeat_interleave(320, dim=1)
    assert torch.equal(out[kept], wavs[kept])  # no concealment, nothing else changed
    runs = zero.reshape(4, -1, burst)
    assert (runs.all(dim=2) | ~runs.any(dim=2)).all()  # lost in whole bursts
    assert not torch.equal(zero[0], zero[1])  # each row draws its own losses


def test_packet_loss_is_reproducible_and_nested_with_one_seed():
    wavs = _tone(1.0, rows=2)

    def zeros(rates, seed):
        out = degrade(wavs, "packet_loss", rates, SR, torch.Generator().manual_seed(seed))
        return _zero_packets(out)

    assert torch.equal(zeros([10.0, 10.0], 3), zeros([10.0, 10.0], 3))
    assert not torch.equal(zeros([10.0, 10.0], 3), zeros([10.0, 10.0], 4))
    low, high = zeros([10.0, 10.0], 5), zeros([30.0, 30.0], 5)
    assert (high | ~low).all() and high.sum() > low.sum()


@pytest.mark.parametrize("levels", [256, 64, 16, 4])
def test_mu_law_matches_torchaudio_for_an_equal_number_of_levels(levels):
    x = torch.linspace(-1, 1, 2001).repeat(2, 1) * torch.tensor([[1.0], [0.05]])
    ours = mu_law_quantise(x, torch.tensor([levels, levels]))
    theirs = AF.mu_law_decoding(AF.mu_law_encoding(x, levels), levels)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_mu_law_severity_is_bits_removed_from_8_at_8_khz():
    wavs = _tone(0.25, rows=2)
    out = degrade(wavs, "mu_law", [0.0, 5.0], SR)
    narrow = AF.resample(wavs, SR, 8000)
    peak = narrow.abs().amax(dim=1, keepdim=True)  # quantised at full scale
    narrow = mu_law_quantise(narrow / peak, torch.tensor([256, 8])) * peak
    assert torch.allclose(out, AF.resample(narrow, 8000, SR)[:, : wavs.shape[1]], atol=1e-6)


def test_mu_law_gives_each_row_its_own_levels():
    x = torch.linspace(-1, 1, 20001, dtype=torch.float64).repeat(2, 1)
    both = mu_law_quantise(x, torch.tensor([256, 8]))
    assert both[0].unique().numel() == 256 and both[1].unique().numel() == 8


def test_reverb_decays_60_db_in_rt60_and_keeps_the_level():
    impulse = torch.zeros(2, SR, dtype=torch.float64)
    impulse[:, 0] = 1.0
    severities = torch.tensor([1.0, 2.0])  # RT60 0.2 s and 0.4 s
    rir = degrade(impulse, "reverb", severities, SR, torch.Generator().manual_seed(0))
    edc = rir.flip(1).square().cumsum(1).flip(1)
    edc_db = 10 * torch.log10(edc / edc[:, :1])
    for row, rt60 in enumerate([0.2, 0.4]):
        t5, t35 = [int((edc_db[row] > -db).sum()) for db in (5, 35)]
        assert (t35 - t5) / SR * 2 == pytest.approx(rt60, rel=0.15)  # T30
    # The direct-to-reverberant ratio: drr_db (0 dB) at RT60 0.5 s, 3 dB less at 1 s.
    half, one = math.log2(5), math.log2(10)
    rir = degrade(impulse, "reverb", torch.tensor([half, one]), SR, drr_db=0.0)
    drr = 10 * torch.log10(rir[:, 0] ** 2 / rir[:, 1:].square().sum(dim=1))
    assert drr.tolist() == pytest.approx([0.0, -3.01], abs=0.01)
    rir = degrade(impulse, "reverb", torch.tensor([half, half]), SR, drr_db=6.0)
    assert 10 * torch.log10(rir[0, 0] ** 2 / rir[0, 1:].square().sum()) == pytest.approx(6.0)
    noise = torch.randn(2, SR, generator=torch.Generator().manual_seed(1))
    out = degrade(noise, "reverb", severities, SR, torch.Generator().manual_seed(2))
    ratio_db = 10 * torch.log10(out[:, SR // 2 :].var(dim=1) / noise.var(dim=1))
    assert ratio_db.abs().max() < 1.5


def test_reverb_is_the_convolution_with_its_room_response():
    severities = torch.tensor([0.5, 2.0])  # RT60 0.14 s and 0.4 s: at most 6400 taps
    impulse = torch.zeros(2, 8000, dtype=torch.float64)
    impulse[:, 0] = 1.0
    rir = degrade(impulse, "reverb", severities, SR, torch.Generator().manual_seed(4))
    wavs = torch.randn(2, 3000, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    out = degrade(wavs, "reverb", severities, SR, torch.Generator().manual_seed(4))
    assert torch.allclose(out, AF.fftconvolve(wavs, rir)[:, :3000], atol=1e-9)


@pytest.mark.parametrize("family", ["packet_loss", "reverb"])
def test_random_families_are_reproducible_with_a_generator(family):
    wavs = _tone(0.25, rows=2)
    runs = [degrade(wavs, family, [3.0, 3.0], SR, torch.Generator().manual_seed(7)) for _ in "ab"]
    assert torch.equal(*runs)


def test_severities_outside_the_valid_range_are_refused():
    with pytest.raises(ValueError, match=r"clipping severities must lie in \[0, 40\]"):
        degrade(_tone(0.1), "clipping", [41.0])


BAD_SPECS = [
    ({"family": "wobble"}, r"unknown degradation family 'wobble' \(known: band_limit, clipping"),
    ({"family": "clipping", "severity_min": float("nan")}, "severity_min must be a finite"),
    ({"family": "clipping", "severity_max": "20"}, "severity_max must be a finite"),
    ({"family": "clipping", "severity_min": 20, "severity_max": 0}, r"\[severity_min, severity"),
    ({"family": "clipping", "severity_max": 41}, r"within the valid range \[0, 40\] dB"),
    ({"family": "mu_law", "severity_min": -1}, r"within the valid range \[0, 6\] bits"),
    ({"family": "clipping", "jnd": 0.0}, "jnd must be positive"),
    ({"family": "clipping", "jnd": float("inf")}, "jnd must be a finite number of dB"),
    ({"family": "clipping", "jnd": 2.0, "margin": 1.0}, r"jnd \(2.0\) must not exceed margin"),
    ({"family": "clipping", "severity_max": 9.9, "jnd": 2.0}, "too narrow.*2 \\* margin \\+ jnd"),
    ({"family": "clipping", "settings": {"drr_db": 1}}, "clipping has no setting 'drr_db'"),
    ({"family": "packet_loss", "settings": {"burst_packets": 1.5}}, "burst_packets must be an"),
    ({"family": "packet_loss", "settings": {"packet_ms": 0}}, "packet_ms must be positive"),
    ({"family": "reverb", "settings": {"drr_db": None}}, "reverb setting drr_db must be"),
]


@pytest.mark.parametrize("fields, message", BAD_SPECS)
def test_each_bad_setting_is_named(fields, message):
    with pytest.raises(JNDSettingsError, match=message):
        DegradationSpec(**fields)
    with pytest.raises(JNDSettingsError, match=message):  # as the YAML list gives it
        Degrader([{"family": "band_limit"}, fields])


@pytest.mark.parametrize(
    "specs, p_none, message",
    [
        (["clipping"], 0.0, "degradation 0 must be a mapping"),
        ([{"family": "clipping", "jnd_db": 2}], 0.0, "degradation 0: .*'jnd_db'"),
        ([{"family": "clipping"}], 1.5, r"p_none must be a probability in \[0, 1\]"),
        ([{"family": "clipping"}], float("nan"), "p_none must be a finite"),
    ],
)
def test_bad_degrader_settings_are_named(specs, p_none, message):
    with pytest.raises(JNDSettingsError, match=message):
        Degrader(specs, p_none=p_none)


@pytest.mark.parametrize("num_views", [2, 3.0, True])
def test_a_group_needs_three_views(num_views):
    with pytest.raises(JNDSettingsError, match="num_views must be"):
        DegradationSpec("clipping").sample(np.random.default_rng(0), num_views)
    with pytest.raises(JNDSettingsError, match="num_views must be"):
        Degrader([], p_none=1.0).draw(np.random.default_rng(0), num_views)


def test_defaults_are_valid_and_the_margin_is_twice_the_jnd():
    for name, info in FAMILIES.items():
        spec = DegradationSpec(name)
        assert (spec.severity_min, spec.severity_max) == info.default_range
        assert spec.margin == 2 * spec.jnd == 2 * info.jnd
        assert info.valid[0] <= info.default_range[0] < info.default_range[1] <= info.valid[1]


def test_labels_follow_the_pair_rule_on_the_severity_axis():
    spec = DegradationSpec("clipping", 0.0, 20.0, jnd=2.0, margin=5.0)
    diffs = np.array([0.0, 1.99, 2.0, 4.99, 5.0, 9.0])
    alike, different = spec.label(diffs)
    assert alike.tolist() == [True, True, False, False, False, False]
    assert different.tolist() == [False, False, False, False, True, True]
    alike_t, _ = spec.label(torch.tensor(diffs))
    assert torch.is_tensor(alike_t)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_sample_gives_an_alike_and_a_different_pair_over_many_seeds(family):
    spec = DegradationSpec(family)
    for seed in range(200):
        sev = spec.sample(np.random.default_rng(seed), 4)
        assert sev.shape == (4,)
        assert ((sev >= spec.severity_min) & (sev <= spec.severity_max)).all()
        alike, different = spec.label(np.abs(sev[:, None] - sev[None, :]))
        assert alike[np.triu_indices(4, 1)].any() and different.any(), (seed, sev)


def test_sample_is_the_pair_rule_s_draw():
    spec = DegradationSpec("clipping", 0.0, 20.0, jnd=2.0)
    rule = JNDPairRule(jnd_db=2.0, neg_margin_db=4.0, pairs="within_group")
    ours = spec.sample(np.random.default_rng(3), 5)
    assert np.array_equal(ours, rule.sample_snrs(np.random.default_rng(3), 5, 0.0, 20.0))


def test_draw_picks_families_uniformly_or_none():
    degrader = Degrader([{"family": "clipping"}, {"family": "reverb"}], p_none=0.25)
    rng = np.random.default_rng(0)
    draws = [degrader.draw(rng, 4) for _ in range(2000)]
    ids = np.array([family_id for family_id, _ in draws])
    counts = np.bincount(ids + 1, minlength=3) / ids.size
    assert counts == pytest.approx([0.25, 0.375, 0.375], abs=0.04)
    for family_id, sev in draws:
        if family_id == -1:
            assert np.array_equal(sev, np.zeros(4))
        else:
            spec = degrader.specs[family_id]
            assert ((sev >= spec.severity_min) & (sev <= spec.severity_max)).all()
    assert Degrader([{"family": "clipping"}], p_none=1.0).draw(rng, 3)[0] == -1


def test_apply_degrades_each_view_by_its_own_family():
    degrader = Degrader([{"family": "clipping"}, {"family": "band_limit"}])
    wavs = _tone(0.25, rows=4, noise_db=-10.0)
    ids, sev = torch.tensor([1, -1, 0, 1]), torch.tensor([2.0, 0.0, 6.0, 1.0])
    out, bad = degrader.apply(wavs, ids, sev)
    assert torch.equal(out[1], wavs[1])
    assert torch.allclose(out[2], degrade(wavs[2:3], "clipping", [6.0])[0])
    assert torch.allclose(out[[0, 3]], degrade(wavs[[0, 3]], "band_limit", [2.0, 1.0]))
    assert not bad.any() and out.shape == wavs.shape


def test_apply_uses_each_spec_s_settings():
    degrader = Degrader([{"family": "packet_loss", "settings": {"burst_packets": 4}}])
    out, _ = degrader.apply(_tone(1.28, rows=2), torch.zeros(2, dtype=torch.long), [25.0, 25.0])
    zero = _zero_packets(out)
    assert zero.sum().item() == 2 * 16
    assert (zero.reshape(2, -1, 4).all(dim=2) | ~zero.reshape(2, -1, 4).any(dim=2)).all()


def test_apply_flags_all_zero_and_non_finite_views():
    degrader = Degrader([{"family": "band_limit"}, {"family": "clipping"}])
    wavs = _tone(0.25, rows=4)
    wavs[1] = 0.0
    wavs[2, 100] = float("nan")
    _, bad = degrader.apply(wavs, torch.tensor([0, 1, 0, -1]), torch.tensor([1.0, 3.0, 1.0, 0]))
    assert bad.tolist() == [False, True, True, False]
    wavs[3, 5] = float("inf")  # not degraded, still flagged
    assert degrader.apply(wavs, torch.full((4,), -1), torch.zeros(4))[1].tolist()[3]


def test_apply_refuses_unknown_family_ids():
    degrader = Degrader([{"family": "clipping"}])
    with pytest.raises(ValueError, match=r"family_ids must lie in \[-1, 0\]"):
        degrader.apply(_tone(0.1, rows=2), torch.tensor([0, 1]), torch.zeros(2))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_no_default_severity_silences_a_quiet_view(family):
    # The quietest views of the recipe (level_range_db [-40, -20]): peak about -28 dBFS.
    quiet = _tone(rows=1) * 10 ** (-22 / 20)
    severities = torch.linspace(*FAMILIES[family].default_range, 49)
    out = degrade(quiet.repeat(49, 1), family, severities, SR, torch.Generator().manual_seed(0))
    assert (out != 0).any(dim=1).all() and torch.isfinite(out).all()
