"""What :class:`jsqa_sb.JSQA` scores: checked batches and the windows of a recording.

Windows are ``(start, frames)`` at the file's own rate: equal windows of at most
``window_seconds`` for a file's score, or sliding ones for a timeline; their scores
come back as :class:`WindowScores`.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

from jsqa_sb.errors import JSQAError


class BatchInputError(JSQAError, ValueError):
    """Waveforms or relative lengths given to a batch method are not valid."""


class WindowScores(NamedTuple):
    """The scores (``{name: score}``) of one window, from ``start`` to ``end`` seconds."""

    start: float
    end: float
    scores: dict[str, float]


class FileScores(NamedTuple):
    """A recording's scores: the duration-weighted mean of its windows' (in time order)."""

    scores: dict[str, float]
    windows: list[WindowScores]


def equal_windows(frames: int, sample_rate: int, window_seconds: float) -> list[tuple[int, int]]:
    """``ceil(duration / window_seconds)`` equal windows covering the recording.

    Example
    -------
    >>> equal_windows(25, 1, 10.0)
    [(0, 8), (8, 9), (17, 8)]
    """
    total = int(frames)
    n = max(1, math.ceil(total / (window_seconds * sample_rate)))
    bounds = [round(i * total / n) for i in range(n + 1)]
    return [(bounds[i], bounds[i + 1] - bounds[i]) for i in range(n)]


def sliding_windows(
    frames: int, rate: int, window_seconds: float, hop_seconds: float
) -> list[tuple[int, int]]:
    """Windows of ``window_seconds`` every ``hop_seconds``, the last ending at the end.

    Example
    -------
    >>> sliding_windows(10, 1, 4.0, 3.0)
    [(0, 4), (3, 4), (6, 4)]
    >>> sliding_windows(11, 1, 4.0, 3.0)
    [(0, 4), (3, 4), (6, 4), (7, 4)]
    """
    total = int(frames)
    length = max(1, round(window_seconds * rate))
    hop = max(1, round(hop_seconds * rate))
    if total <= length:
        return [(0, total)]
    starts = list(range(0, total - length + 1, hop))
    if starts[-1] + length < total:
        starts.append(total - length)
    return [(start, length) for start in starts]


def check_batch(
    wavs: torch.Tensor, wav_lens: Optional[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a batch: (B, T) finite waveforms and B relative lengths in (0, 1]."""
    if not isinstance(wavs, torch.Tensor):
        raise BatchInputError(f"wavs must be a torch.Tensor, not {type(wavs).__name__}")
    if wavs.dim() == 1:
        wavs = wavs.unsqueeze(0)
    if wavs.dim() != 2 or wavs.numel() == 0:
        raise BatchInputError(
            f"wavs must be a non-empty (batch, time) or (time,) tensor; got shape "
            f"{tuple(wavs.shape)} (average the channels of multi-channel audio)"
        )
    bad_rows = (~torch.isfinite(wavs)).any(dim=1).nonzero().flatten().tolist()
    if bad_rows:
        raise BatchInputError(f"wavs hold NaN or infinite samples (rows {bad_rows[:10]})")
    if wav_lens is None:
        return wavs, torch.ones(wavs.shape[0])
    lens = torch.as_tensor(wav_lens).detach().float().cpu().reshape(-1)
    if lens.numel() != wavs.shape[0]:
        raise BatchInputError(
            f"wav_lens has {lens.numel()} value(s) for a batch of {wavs.shape[0]} waveform(s)"
        )
    invalid = [v for v in lens.tolist() if not 0.0 < v <= 1.0]  # NaN fails this too
    if invalid:
        raise BatchInputError(
            f"wav_lens must be relative lengths in (0, 1], the fraction of the padded "
            f"length each waveform fills (not sample counts); got {invalid[:5]}"
        )
    return wavs, lens
