"""Reading and resampling: what every stage (training, evaluation, scoring) hears."""

import numpy as np
import pytest
import soundfile as sf

from jsqa_sb.audio import read_audio, resample


def _level_db(x: np.ndarray) -> float:
    """RMS level relative to a full-scale sine."""
    return 20 * np.log10(np.sqrt(np.mean(x**2)) / np.sqrt(0.5) + 1e-30)


def _tone(freq: float, sr: int, seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("orig_sr", [48000, 44100, 32000, 24000])
def test_tone_above_the_new_nyquist_does_not_alias(orig_sr):
    """A 9 kHz tone cannot exist at 16 kHz: what comes back is below -60 dB."""
    out = resample(_tone(9000, orig_sr), orig_sr, 16000)
    assert _level_db(out[1000:-1000]) - _level_db(_tone(9000, orig_sr)) < -60


@pytest.mark.parametrize("freq", [300, 1000, 4000, 6000, 7000])
def test_pass_band_is_kept(freq):
    x = _tone(freq, 48000)
    out = resample(x, 48000, 16000)
    assert abs(_level_db(out[1000:-1000]) - _level_db(x)) < 1.0


def test_files_at_48k_are_read_through_the_same_resampler(tmp_path):
    path = tmp_path / "tone.wav"
    sf.write(path, np.stack([_tone(9000, 48000)] * 2, axis=1), 48000, subtype="PCM_16")
    audio, sr = read_audio(path, target_sr=16000)
    assert sr == 16000 and audio.shape == (32000,)
    assert _level_db(audio[1000:-1000]) < -60 - 6  # the tone was at -6 dB re full scale


def test_a_fifo_is_refused_without_blocking(tmp_path):
    import os
    import threading

    from jsqa_sb.audio import AudioReadError, audio_info

    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    errors = []

    def read_both():
        for reader in (audio_info, read_audio):
            try:
                reader(fifo)
            except AudioReadError as err:
                errors.append(str(err))

    thread = threading.Thread(target=read_both, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "reading a FIFO blocked"
    assert len(errors) == 2 and all("not a regular file" in e for e in errors)
