"""The ``JSQA`` inference interface on real recordings as they come."""

import math
import shutil
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from jsqa_sb import JSQA
from jsqa_sb.serving.inference import RecordingError, RecordingTooShortError
from jsqa_sb.serving.yaml_security import UntrustedCodeError


@pytest.fixture(scope="module")
def model(model_folder, tmp_path_factory):
    return JSQA.from_hparams(source=str(model_folder), savedir=tmp_path_factory.mktemp("sd"))


@pytest.fixture
def wav16(speech, tmp_path):
    audio, sr = speech
    path = tmp_path / "speech.wav"
    sf.write(path, audio, sr, subtype="PCM_16")
    return path


def test_score_file_returns_the_trained_outputs(model, wav16):
    scores = model.score_file(wav16)
    assert list(scores) == ["mos"]  # the fixture run has test labels for MOS only
    assert 1.0 <= scores["mos"] <= 5.0


def test_score_batch_matches_score_file_and_ignores_padding(model, speech, wav16):
    audio, _ = speech
    wav = torch.from_numpy(sf.read(wav16, dtype="float32")[0])
    batch = torch.zeros(2, wav.numel())
    batch[0] = wav
    batch[1, : wav.numel() // 2] = wav[: wav.numel() // 2]
    scores = model.score_batch(batch, torch.tensor([1.0, 0.5]))
    assert scores.shape == (2, 1)
    assert scores[0, 0].item() == pytest.approx(model.score_file(wav16)["mos"], abs=1e-5)
    alone = model.score_batch(batch[1:, : wav.numel() // 2])
    assert scores[1, 0].item() == pytest.approx(alone[0, 0].item(), abs=1e-5)


@pytest.mark.parametrize(
    "fmt,subtype,tol",
    [
        ("WAV", "PCM_24", 1e-3),
        ("WAV", "FLOAT", 1e-3),
        ("FLAC", "PCM_16", 1e-3),
        ("WAV", "PCM_U8", 0.5),  # 8-bit: audibly worse, must still be scored
        ("OGG", "VORBIS", 0.5),  # lossy
    ],
)
def test_formats_and_bit_depths(model, speech, wav16, tmp_path, fmt, subtype, tol):
    audio, sr = speech
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, audio, sr, format=fmt, subtype=subtype)
    ref = model.score_file(wav16)["mos"]
    assert model.score_file(path)["mos"] == pytest.approx(ref, abs=tol)


def test_any_rate_and_stereo_are_converted(model, speech, wav16, tmp_path):
    audio, sr = speech
    hi = torchaudio.functional.resample(torch.from_numpy(audio), sr, 44100).numpy()
    path = tmp_path / "stereo44k.wav"
    sf.write(path, np.stack([hi, hi], axis=1), 44100, subtype="FLOAT")
    wav = model.load_audio(path)
    assert wav.dim() == 1 and abs(wav.numel() - audio.size) <= 2
    assert model.score_file(path)["mos"] == pytest.approx(model.score_file(wav16)["mos"], abs=0.05)


def test_long_file_is_scored_by_equal_windows_in_bounded_reads(model, speech, tmp_path):
    audio, sr = speech
    long = np.concatenate([audio * g for g in (1.0, 0.3, 1.0, 0.5, 1.0, 0.2, 1.0, 1.0)])  # 24 s
    path = tmp_path / "long.wav"
    sf.write(path, long, sr)
    reads = []
    real_read = sf.read

    def recording_read(*args, **kwargs):
        reads.append(kwargs.get("frames", -1))
        return real_read(*args, **kwargs)

    sf.read = recording_read
    try:
        score = model.score_file(path)["mos"]
    finally:
        sf.read = real_read
    n = math.ceil(24 / model.window_seconds)  # 3 windows of 8 s
    assert reads == [long.size // n] * n  # never the whole file at once
    windows = torch.from_numpy(long).reshape(n, -1)
    expected = model.score_batch(windows).mean().item()  # equal windows: plain mean
    assert score == pytest.approx(expected, abs=1e-5)


def test_too_short_file_names_the_minimum(model, speech, tmp_path):
    path = tmp_path / "short.wav"
    sf.write(path, speech[0][:1000], 16000)
    with pytest.raises(RecordingTooShortError, match=r"minimum of 0\.160 s"):
        model.score_file(path)


def test_digital_silence_is_scored_with_a_warning(model, tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(16000, dtype=np.float32), 16000)
    with pytest.warns(UserWarning, match="digital silence"):
        scores = model.score_file(path)
    assert 1.0 <= scores["mos"] <= 5.0


def test_score_files_reports_a_bad_file_and_scores_the_rest(model, wav16, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000WAVEnot really audio")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    results = model.score_files([wav16, bad, empty, wav16])
    assert isinstance(results[1], RecordingError) and "bad.wav" in str(results[1])
    assert isinstance(results[2], RecordingError) and "0 bytes" in str(results[2])
    assert results[0] == results[3] and 1 <= results[0]["mos"] <= 5


def test_distance_is_zero_for_the_same_recording_and_grows_with_noise(model, speech, tmp_path):
    audio, sr = speech
    clean = tmp_path / "clean.wav"
    sf.write(clean, audio, sr)
    rng = np.random.default_rng(0)
    noisy = audio + 0.3 * rng.standard_normal(audio.size).astype(np.float32)
    noisy_path = tmp_path / "noisy.wav"
    sf.write(noisy_path, noisy / np.abs(noisy).max(), sr)
    assert model.distance(clean, clean) == pytest.approx(0.0, abs=1e-6)
    d = model.distance(clean, noisy_path)
    assert d > 1e-3
    assert model.distance(noisy_path, clean) == pytest.approx(d, abs=1e-6)
    assert model.distance(torch.from_numpy(audio), clean) == pytest.approx(0.0, abs=1e-3)


def test_encoder_only_model_encodes_but_does_not_score(pretrain_run, tmp_path, wav16):
    from jsqa_sb.serving.hub_export import export_model

    folder = export_model(pretrain_run, tmp_path / "enc")
    model = JSQA.from_hparams(source=str(folder), savedir=tmp_path / "sd")
    assert model.encode_batch(torch.randn(3, 16000)).shape == (3, 16)
    assert model.encode_file(wav16).shape == (16,)
    with pytest.raises(RuntimeError, match="no MOS head"):
        model.score_file(wav16)


def _copy(folder, tmp_path):
    dest = tmp_path / "model"
    shutil.copytree(folder, dest)
    return dest


def test_untrusted_yaml_is_refused_unless_trusted(model_folder, tmp_path):
    folder = _copy(model_folder, tmp_path)
    yaml = folder / "hyperparams.yaml"
    yaml.write_text(yaml.read_text() + "\nwhere: !apply:os.getcwd []\n")
    with pytest.raises(UntrustedCodeError, match=r"!apply:os\.getcwd"):
        JSQA.from_hparams(source=str(folder), savedir=tmp_path / "sd")
    model = JSQA.from_hparams(source=str(folder), savedir=tmp_path / "sd2", trust_remote_code=True)
    assert model.hparams.where  # the YAML ran: only because the user trusted it


class Payload:
    """Anything pickled that is not a tensor."""


def test_checkpoints_load_with_weights_only(model_folder, tmp_path):
    folder = _copy(model_folder, tmp_path)
    state = torch.load(folder / "head.ckpt", weights_only=True)
    state["payload"] = Payload()
    torch.save(state, folder / "head.ckpt")
    with pytest.raises(RuntimeError, match=r"refusing to load .*head\.ckpt.*weights_only=True"):
        JSQA.from_hparams(source=str(folder), savedir=tmp_path / "sd")


def test_local_folder_loads_without_network(model_folder, tmp_path, monkeypatch, wav16):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no silent fallback either
        model = JSQA.from_hparams(source=str(model_folder), savedir=tmp_path / "sd")
    assert 1 <= model.score_file(wav16)["mos"] <= 5


# --- NaN and infinite audio, invalid batches (issue 11, items 17 and 18) ----------------


def _non_finite(kind, audio):
    audio = audio.copy()
    if kind == "partial_nan":
        audio[1000:1100] = np.nan
    elif kind == "all_nan":
        audio[:] = np.nan
    else:
        audio[5000] = np.inf
    return audio


@pytest.mark.parametrize("kind", ["partial_nan", "all_nan", "one_inf"])
def test_nan_or_inf_audio_is_an_error_not_a_score(model, speech, tmp_path, kind):
    from jsqa_sb.errors import JSQAError
    from jsqa_sb.serving.inference import NonFiniteAudioError

    audio, sr = speech
    path = tmp_path / f"{kind}.wav"
    sf.write(path, _non_finite(kind, audio), sr, subtype="FLOAT")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(NonFiniteAudioError, match=r"NaN or infinite samples") as err:
            model.score_file(path)
    assert str(path) in str(err.value)
    assert isinstance(err.value, RecordingError) and isinstance(err.value, JSQAError)
    assert not [w for w in caught if "digital silence" in str(w.message)]


def test_nan_in_a_late_window_of_a_long_file_is_an_error(model, speech, tmp_path):
    from jsqa_sb.serving.inference import NonFiniteAudioError

    audio, sr = speech
    long = np.tile(audio, 8)  # 24 s: three windows
    long[-100] = np.nan
    path = tmp_path / "long.wav"
    sf.write(path, long, sr, subtype="FLOAT")
    with pytest.raises(NonFiniteAudioError):
        model.score_file(path)


def test_score_files_reports_non_finite_audio_and_scores_the_rest(model, speech, wav16, tmp_path):
    from jsqa_sb.serving.inference import NonFiniteAudioError

    audio, sr = speech
    bad = tmp_path / "nan.wav"
    sf.write(bad, _non_finite("partial_nan", audio), sr, subtype="FLOAT")
    results = model.score_files([wav16, bad])
    assert isinstance(results[1], NonFiniteAudioError)
    assert results[0]["mos"] == pytest.approx(model.score_file(wav16)["mos"], abs=1e-5)


@pytest.mark.parametrize(
    "lens",
    [[1.0, 1.5], [1.0, 0.0], [1.0, -0.5], [1.0, float("nan")], [1.0, float("inf")], [16000, 8000]],
)
def test_score_batch_refuses_invalid_relative_lengths(model, lens):
    from jsqa_sb.errors import JSQAError
    from jsqa_sb.serving.inference import BatchInputError

    with pytest.raises(BatchInputError, match=r"relative lengths in \(0, 1\]") as err:
        model.score_batch(torch.randn(2, 16000) * 0.1, torch.tensor(lens))
    assert isinstance(err.value, ValueError) and isinstance(err.value, JSQAError)


def test_score_batch_refuses_wrong_shapes_and_non_finite_waveforms(model):
    from jsqa_sb.serving.inference import BatchInputError

    wavs = torch.randn(2, 16000) * 0.1
    with pytest.raises(BatchInputError, match="2 waveform"):
        model.score_batch(wavs, torch.tensor([1.0, 0.5, 0.5]))
    with pytest.raises(BatchInputError, match="shape"):
        model.score_batch(wavs.reshape(2, 8000, 2))
    wavs[1, 10] = float("nan")
    with pytest.raises(BatchInputError, match=r"NaN or infinite samples \(rows \[1\]\)"):
        model.score_batch(wavs)
    assert model.score_batch(wavs[:1], torch.tensor([0.5])).shape == (1, 1)
