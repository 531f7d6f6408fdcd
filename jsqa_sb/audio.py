"""Audio reading and resampling shared by data preparation, mixing and inference.

Reading goes through SpeechBrain's soundfile-based ``audio_io`` (torchaudio 2.9+
no longer reads files without torchcodec); resampling uses torchaudio.
"""

from __future__ import annotations

import functools
import os
import stat

import numpy as np
import soundfile as sf
import torch
import torchaudio

# Bound once: attribute access through SpeechBrain's lazy module costs ~0.2 ms per call.
from speechbrain.dataio.audio_io import AudioInfo
from speechbrain.dataio.audio_io import info as _sb_info

from jsqa_sb.common import PathLike
from jsqa_sb.errors import JSQAError

#: Audio file extensions the preparers and the scorer look for.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif")


class AudioReadError(JSQAError, RuntimeError):
    """An audio file could not be read; the message names the file."""


def audio_info(path: PathLike) -> AudioInfo:
    """Read an audio file's header (no decoding); :class:`AudioReadError` if it cannot.

    Headers are remembered (the last 4096) by path, inode, size and modification time:
    the scorer reads each file's header once, for batching and for windowing.
    """
    st = _check_regular(path)
    if st.st_size == 0:
        raise AudioReadError(f"{path}: empty file (0 bytes)")
    return _header(str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _header(path: str, *file_version: int) -> AudioInfo:
    """The header of ``path``, read once per version of the file (errors are not kept)."""
    try:
        return _sb_info(path)
    except Exception as err:  # soundfile raises several unrelated types
        raise AudioReadError(f"{path}: cannot read audio header ({_reason(err)})") from err


def read_audio(
    path: PathLike, start: int = 0, frames: int = -1, target_sr: int | None = None
) -> tuple[np.ndarray, int]:
    """Read (part of) an audio file as mono float32 (channels averaged) and its rate.

    ``start`` and ``frames`` count at the file's own rate (-1: to the end); with
    ``target_sr``, the audio is resampled to it. :class:`AudioReadError` if the file
    cannot be decoded.
    """
    _check_regular(path)
    try:
        # soundfile directly (what SpeechBrain's audio_io wraps): mono comes back 1-D, with
        # no tensor round trip; this is the data loader's hot path.
        audio, sr = sf.read(str(path), start=start, frames=frames, dtype="float32")
    except Exception as err:
        raise AudioReadError(f"{path}: cannot decode audio ({_reason(err)})") from err
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if target_sr is not None:
        audio, sr = resample(audio, sr, target_sr), target_sr
    return np.ascontiguousarray(audio, dtype=np.float32), sr


#: The one resampler of training, evaluation and inference: torchaudio's windowed sinc
#: with a Kaiser window. From 48 kHz to 16 kHz the pass band is flat within 0.6 dB up to
#: 7 kHz and the stop band is below -60 dB from 8.5 kHz (-120 dB at 9 kHz); torchaudio's
#: default kernel leaves a 9 kHz tone aliased to 7 kHz at -17 dB.
RESAMPLING = {
    "lowpass_filter_width": 24,
    "rolloff": 0.94,
    "resampling_method": "sinc_interp_kaiser",
    "beta": 12.0,
}


def resample(audio: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Resample a 1-D signal with the anti-aliased kernel of :data:`RESAMPLING`.

    Example
    -------
    >>> resample(np.zeros(48000, dtype=np.float32), 48000, 16000).shape
    (16000,)
    """
    if orig_sr == new_sr:
        return audio
    with torch.no_grad():
        return _resampler(orig_sr, new_sr)(torch.from_numpy(audio)).numpy()


@functools.lru_cache(maxsize=16)
def _resampler(orig_sr: int, new_sr: int) -> torchaudio.transforms.Resample:
    """The resampling kernel of a rate pair, built once."""
    return torchaudio.transforms.Resample(orig_sr, new_sr, **RESAMPLING)


def _check_regular(path: PathLike) -> os.stat_result:
    """Refuse what is not a regular file before opening it: opening a FIFO would block."""
    try:
        st = os.stat(path)
    except OSError as err:
        raise AudioReadError(f"{path}: {err.strerror or err}") from err
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a named pipe, device or socket"
        raise AudioReadError(f"{path}: not a regular file ({kind})")
    return st


def _reason(err: Exception) -> str:
    """Shortest useful description of an I/O error (drops audio_io's path prefix)."""
    text = str(err).strip() or type(err).__name__
    if ": " in text and text.startswith(("Failed to", "Error opening")):
        text = text.rsplit(": ", 1)[1]
    return text
