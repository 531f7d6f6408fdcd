import numpy as np
import pytest
import soundfile as sf
from reference import active_level_db, mix_at_snrs, sample_group_snrs

from jsqa_sb.data.jnd_mixing import SilentSignalError, rms_db
from jsqa_sb.data.minicorpus import synth_noise

SR = 16000


@pytest.fixture(scope="module")
def speech():
    from importlib.resources import files

    audio, sr = sf.read(str(files("jsqa_sb") / "samples" / "librivox_1.flac"), dtype="float32")
    assert sr == SR
    return audio[: 3 * SR]


def test_levels_of_known_signals():
    t = np.arange(SR) / SR
    tone = 0.5 * np.sin(2 * np.pi * 1000 * t)
    assert rms_db(tone) == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=1e-3)
    # Pauses do not lower the active level, but they do lower the RMS.
    paused = np.concatenate([tone, np.zeros(3 * SR), tone])
    assert active_level_db(paused) == pytest.approx(rms_db(tone), abs=0.01)
    assert rms_db(paused) < rms_db(tone) - 3
    assert rms_db(np.zeros(100)) == float("-inf")
    assert active_level_db(np.zeros(1000)) == float("-inf")


def _measured_snr(mixture, speech, noise):
    """Recover mixture = a * speech + b * noise by least squares, return the SNR in dB."""
    (a, b), *_ = np.linalg.lstsq(np.stack([speech, noise], 1), mixture, rcond=None)
    return active_level_db(a * speech) - rms_db(b * noise)


def test_requested_snr_is_obtained(speech):
    rng = np.random.default_rng(0)
    snrs = np.array([-5.0, -1.3, 0.0, 7.7, 15.0, 30.0])
    for env in ("BUS", "CAF", "PED", "STR"):
        noise = synth_noise(env, speech.size, rng).astype(np.float32)
        views = mix_at_snrs(speech, noise, snrs, SR)
        assert views.shape == (len(snrs), speech.size) and views.dtype == np.float32
        for view, snr in zip(views, snrs):
            assert _measured_snr(view.astype(np.float64), speech, noise) == pytest.approx(
                snr, abs=0.1
            )


def test_snr_matches_plain_energy_ratio_for_stationary_signals():
    # Without pauses the active level is the RMS: an independent check of the SNR.
    rng = np.random.default_rng(1)
    s = rng.standard_normal(SR).astype(np.float32) * 0.1
    n = rng.standard_normal(SR).astype(np.float32) * 0.05
    for snr in (-5.0, 3.0, 20.0):
        mix = mix_at_snrs(s, n, np.array([snr]), SR, target_level_db=-30)[0].astype(np.float64)
        (a, b), *_ = np.linalg.lstsq(np.stack([s, n], 1), mix, rcond=None)
        energy_ratio = 10 * np.log10(np.sum((a * s) ** 2) / np.sum((b * n) ** 2))
        assert energy_ratio == pytest.approx(snr, abs=0.1)


def test_views_are_levelled_and_never_clip(speech):
    rng = np.random.default_rng(2)
    noise = synth_noise("CAF", speech.size, rng).astype(np.float32)
    views = mix_at_snrs(speech, noise, np.array([-5.0, 10.0, 30.0]), SR, target_level_db=-26)
    for view in views:
        assert active_level_db(view) == pytest.approx(-26.0, abs=0.05)
        assert np.abs(view).max() <= 0.99
    # A target so loud that it would clip: limited to the peak instead.
    loud = mix_at_snrs(speech, noise, np.array([10.0]), SR, target_level_db=-1)[0]
    assert np.abs(loud).max() == pytest.approx(0.99, abs=1e-4)
    assert active_level_db(loud) < -1


def test_silence_is_refused(speech):
    with pytest.raises(SilentSignalError, match="speech"):
        mix_at_snrs(np.zeros_like(speech), speech, np.array([0.0]), SR)
    with pytest.raises(SilentSignalError, match="noise"):
        mix_at_snrs(speech, np.zeros_like(speech), np.array([0.0]), SR)
    with pytest.raises(ValueError, match="shape"):
        mix_at_snrs(speech, speech[:-1], np.array([0.0]), SR)


@pytest.mark.parametrize("k", [3, 4, 8])
def test_every_group_has_a_positive_and_a_negative_pair(k):
    rng = np.random.default_rng(k)
    for _ in range(2000):
        snrs = sample_group_snrs(rng, k, -5, 30, jnd_db=3, neg_margin_db=6)
        assert snrs.shape == (k,)
        assert snrs.min() >= -5 and snrs.max() <= 30
        gaps = np.abs(snrs[:, None] - snrs[None, :])[np.triu_indices(k, 1)]
        assert (gaps < 3).any() and (gaps >= 6).any()


def test_group_snrs_cover_the_range():
    rng = np.random.default_rng(0)
    snrs = np.concatenate([sample_group_snrs(rng, 4) for _ in range(3000)])
    counts, _ = np.histogram(snrs, bins=7, range=(-5, 30))
    assert counts.min() > 0.5 * counts.mean()  # no part of the range starved


def test_group_snr_arguments_are_checked():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="at least 3"):
        sample_group_snrs(rng, 2)
    with pytest.raises(ValueError, match="too narrow"):
        sample_group_snrs(rng, 4, snr_min=0, snr_max=10)
    with pytest.raises(ValueError, match="neg_margin_db"):
        sample_group_snrs(rng, 4, jnd_db=3, neg_margin_db=2)
