"""The log-mel front end of :class:`jsqa_sb.networks.JSQAEncoder`, NISQA style."""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn as nn
import torchaudio


def relative_to_samples(wav_lens: Optional[torch.Tensor], batch: int, num_samples: int):
    """SpeechBrain relative lengths (``None``: all full) -> int64 lengths in [0, T].

    Example
    -------
    >>> relative_to_samples(torch.tensor([1.0, 0.5]), 2, 16000)
    tensor([16000,  8000])
    """
    if wav_lens is None:
        return torch.full((batch,), num_samples, dtype=torch.long)
    lens = torch.round(wav_lens.detach().double() * num_samples).long()
    return lens.clamp(0, num_samples)


class LogMelFrontEnd(nn.Module):
    """Log-mel spectrogram in dB, NISQA style, with no centring and no normalisation.

    Frame ``i`` covers samples ``[i * hop, i * hop + n_fft)``; :meth:`valid_frames`
    counts the frames whose whole window lies inside the true clip. The values are
    ``20 * log10(max(mel, amin))`` of the magnitude mel spectrogram (Slaney scale and
    filter normalisation, as librosa and NISQA), in float32 even under autocast.
    ``n_fft`` (``None``: the window length) is at least the window length; ``f_max``
    ``None`` means ``sample_rate / 2``.

    Example
    -------
    >>> frontend = LogMelFrontEnd()
    >>> feats = frontend(torch.randn(2, 16000))
    >>> feats.shape
    torch.Size([2, 99, 48])
    >>> frontend.valid_frames(torch.tensor([1.0, 0.5]), 16000)
    tensor([99, 49])
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 48,
        win_ms: float = 20.0,
        hop_ms: float = 10.0,
        n_fft: Optional[int] = None,
        f_min: float = 0.0,
        f_max: Optional[float] = None,
        amin: float = 1e-4,
    ):
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.n_mels = int(n_mels)
        self.win_length = int(round(sample_rate * win_ms / 1000.0))
        self.hop_length = int(round(sample_rate * hop_ms / 1000.0))
        self.n_fft = int(n_fft) if n_fft is not None else self.win_length
        if self.hop_length < 1 or self.win_length < 1:
            raise ValueError(f"win_ms={win_ms} and hop_ms={hop_ms} must give >= 1 sample")
        if self.n_fft < self.win_length:
            raise ValueError(f"n_fft={self.n_fft} is shorter than the window ({self.win_length})")
        self.amin = float(amin)
        self.melspec = torchaudio.transforms.MelSpectrogram(
            sample_rate=self.sample_rate,
            n_fft=self.n_fft,
            win_length=self.win_length,
            hop_length=self.hop_length,
            f_min=f_min,
            f_max=f_max,
            n_mels=self.n_mels,
            power=1.0,
            center=False,
            norm="slaney",
            mel_scale="slaney",
        )

    def num_frames(self, num_samples: Union[int, torch.Tensor]):
        """The number of whole frames in ``num_samples`` samples (0 if too short)."""
        n = (num_samples - self.n_fft) // self.hop_length + 1
        return n.clamp(min=0) if isinstance(n, torch.Tensor) else max(0, int(n))

    def valid_frames(self, wav_lens: Optional[torch.Tensor], num_samples: int, batch: int = 1):
        """Frames per clip (int64, (B,)) that contain no padding of the (B, T) batch."""
        if wav_lens is not None:
            batch = wav_lens.shape[0]
        return self.num_frames(relative_to_samples(wav_lens, batch, num_samples))

    def forward(self, wavs: torch.Tensor) -> torch.Tensor:
        """Waveforms (B, T), T at least ``n_fft`` -> float32 dB features (B, frames, n_mels)."""
        if wavs.shape[-1] < self.n_fft:
            raise ValueError(
                f"input of {wavs.shape[-1]} samples is shorter than one frame ({self.n_fft})"
            )
        with torch.autocast(device_type=wavs.device.type, enabled=False):
            mel = self.melspec(wavs.float())  # (B, n_mels, n_frames)
            feats = 20.0 * torch.log10(mel.clamp(min=self.amin))
        return feats.transpose(-1, -2)
