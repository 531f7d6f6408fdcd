"""Scoring real recordings: the ``JSQA`` inference interface (SpeechBrain's ``Pretrained``).

Load a model folder or hub id with :meth:`JSQA.from_hparams`, then score a file, its
quality over time or a batch of waveforms, embed, or compare two recordings. Any sample
rate is resampled and channels are averaged; a recording longer than ``window_seconds``
is scored by the duration-weighted mean of equal windows. This module needs only
SpeechBrain: ``jsqa export`` ships it inside a model folder's ``custom_interface.py``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Optional, Union

import torch
import torch.nn.functional as F
from speechbrain.dataio.audio_io import AudioInfo
from speechbrain.inference.interfaces import Pretrained
from speechbrain.utils.data_utils import batch_pad_right

from jsqa_sb.audio import AudioReadError, audio_info, read_audio
from jsqa_sb.common import PathLike
from jsqa_sb.errors import JSQAError
from jsqa_sb.serving.model_loading import ModelError, load_model_hparams, model_setting
from jsqa_sb.serving.windows import (
    BatchInputError,
    FileScores,
    WindowScores,
    check_batch,
    equal_windows,
    sliding_windows,
)


class RecordingError(JSQAError, RuntimeError):
    """A recording could not be scored; the message names the file and why."""


class RecordingTooShortError(RecordingError):
    """A recording is shorter than the model's minimum length."""


class NonFiniteAudioError(RecordingError):
    """A recording holds NaN or infinite samples: no score would mean anything."""


class JSQA(Pretrained):
    """Non-intrusive speech quality (MOS) prediction with a JSQA model.

    The model folder's ``hyperparams.yaml`` defines ``encoder``, optionally ``head``
    (scores in [1, 5], one per name in ``head_outputs``), ``outputs`` (the names this
    model reports), ``sample_rate``, ``window_seconds`` and ``window_batch``. An
    encoder-only model has no head: it can :meth:`encode_batch` and :meth:`distance`.

    Example
    -------
    >>> from jsqa_sb import JSQA                                    # doctest: +SKIP
    >>> model = JSQA.from_hparams(source="exported_model", savedir="tmp")  # doctest: +SKIP
    >>> model.score_file("speech.wav")                              # doctest: +SKIP
    {'mos': 3.71}
    """

    HPARAMS_NEEDED = ["encoder", "sample_rate"]
    MODULES_NEEDED = ["encoder"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A model's YAML is untrusted: its plain numbers must be sane too.
        self.sample_rate = model_setting(self.hparams, "sample_rate", 16000, int, 4000, 192000)
        self.window_seconds = model_setting(self.hparams, "window_seconds", 10.0, float, 0.5, 600.0)
        self.window_batch = model_setting(self.hparams, "window_batch", 8, int, 1, 256)
        head = getattr(self.mods, "head", None)
        head_outputs = getattr(self.hparams, "head_outputs", None)
        self.head_outputs: tuple[str, ...] = ()
        if head is not None:
            self.head_outputs = tuple(head_outputs or head.output_names)
        outputs = getattr(self.hparams, "outputs", None)
        self.output_names: tuple[str, ...] = tuple(outputs or self.head_outputs)
        unknown = [name for name in self.output_names if name not in self.head_outputs]
        if unknown:
            raise ModelError(f"outputs {unknown} are not among the head's {self.head_outputs}")
        self._output_index = [self.head_outputs.index(name) for name in self.output_names]
        encoder = self.mods.encoder
        self.min_samples = int(getattr(encoder, "min_samples", 1))
        # What encode_batch runs: JSQAEncoder's copy with BatchNorm folded (mods unchanged).
        fused = getattr(encoder, "for_inference", None)
        self._encoder = fused() if fused is not None else encoder

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_hparams(
        cls,
        source: PathLike,
        hparams_file: str = "hyperparams.yaml",
        savedir: Optional[PathLike] = None,
        trust_remote_code: bool = False,
        overrides: Optional[dict] = None,
        **kwargs,
    ) -> JSQA:
        """Load a model from a local folder or a hub id ``owner/name``, like SpeechBrain's.

        ``hyperparams.yaml`` is checked (:mod:`jsqa_sb.serving.yaml_security`) before
        anything in it is created: only ``trust_remote_code`` (for trusted sources) lets
        it create other objects than ``jsqa export`` writes. The files are collected in
        ``savedir`` (default: used where they are); ``kwargs`` go to the class (e.g.
        ``run_opts={"device": "cuda"}``).
        """
        hparams = load_model_hparams(
            source,
            hparams_file,
            savedir,
            trust_remote_code,
            overrides,
            cls.HPARAMS_NEEDED,
            cls.MODULES_NEEDED,
        )
        return cls(modules=hparams["modules"], hparams=hparams, **kwargs)

    # ------------------------------------------------------------------ audio
    def load_audio(self, path: PathLike, start: int = 0, frames: int = -1) -> torch.Tensor:
        """Read (part of) a recording as a 1-D float32 waveform at the model's sample rate.

        ``start`` and ``frames`` are at the file's own rate (-1: to the end).
        """
        try:
            audio, _ = read_audio(path, start, frames, target_sr=self.sample_rate)
        except AudioReadError as err:
            raise RecordingError(str(err)) from err
        return torch.from_numpy(audio)

    @staticmethod
    def _info(path: PathLike) -> AudioInfo:
        try:
            return audio_info(path)
        except AudioReadError as err:
            raise RecordingError(str(err)) from err

    def _windows(self, info: AudioInfo) -> list[tuple[int, int]]:
        return equal_windows(info.frames, info.sample_rate, self.window_seconds)

    def _check_length(self, path: PathLike, num_samples: int) -> None:
        if num_samples < self.min_samples:
            raise RecordingTooShortError(
                f"{path}: {num_samples / self.sample_rate:.3f} s is shorter than the "
                f"minimum of {self.min_samples / self.sample_rate:.3f} s this model needs"
            )

    @staticmethod
    def _check_finite(path: PathLike, wav: torch.Tensor) -> None:
        bad = int((~torch.isfinite(wav)).sum())
        if bad:
            raise NonFiniteAudioError(
                f"{path}: holds NaN or infinite samples ({bad} of {wav.numel()} at the "
                "model's sample rate); such audio cannot be scored"
            )

    @staticmethod
    def _warn_if_silent(path: PathLike, peak: float) -> None:
        if not peak > 0:
            warnings.warn(f"{path}: digital silence; its score means little", stacklevel=3)

    # ------------------------------------------------------------------ batches
    def encode_batch(
        self, wavs: torch.Tensor, wav_lens: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """(B, D) quality embeddings of (B, T) or (T,) zero-padded waveforms.

        ``wav_lens``: relative lengths (B,) in (0, 1], SpeechBrain style (``None``: all
        full length). :class:`BatchInputError` if the batch is not valid.
        """
        wavs, wav_lens = check_batch(wavs, wav_lens)
        with torch.no_grad():
            return self._encoder(wavs.float().to(self.device), wav_lens.to(self.device))

    def score_batch(
        self, wavs: torch.Tensor, wav_lens: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """(B, len(output_names)) scores in [1, 5] of whole waveforms, as :meth:`encode_batch`'s."""
        head = self._head()
        emb = self.encode_batch(wavs, wav_lens)
        with torch.no_grad():
            return head(emb)[:, self._output_index].float().cpu()

    def forward(self, wavs: torch.Tensor, wav_lens: Optional[torch.Tensor] = None):
        """Same as :meth:`score_batch`."""
        return self.score_batch(wavs, wav_lens)

    def _head(self):
        head = getattr(self.mods, "head", None)
        if head is None or not self.output_names:
            raise ModelError(
                "this model has no MOS head (an encoder-only export from a pretraining "
                "run): it can encode_batch() and distance(), not score"
            )
        return head

    # ------------------------------------------------------------------ files
    def _file_embeddings(
        self,
        path: PathLike,
        info: Optional[AudioInfo] = None,
        windows: Optional[Sequence[tuple[int, int]]] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Window embeddings (N, D) of a recording and the windows' durations (N,)."""
        info = info or self._info(path)
        windows = list(windows) if windows is not None else self._windows(info)
        new_len = [max(1, round(f * self.sample_rate / info.sample_rate)) for _, f in windows]
        self._check_length(path, min(new_len))
        embs, peak = [], 0.0
        for i in range(0, len(windows), self.window_batch):
            group = windows[i : i + self.window_batch]
            wavs = [self.load_audio(path, start, frames) for start, frames in group]
            for wav in wavs:
                self._check_finite(path, wav)
            peak = max([peak] + [float(w.abs().max()) for w in wavs])
            embs.append(self.encode_batch(*batch_pad_right(wavs)).cpu())
        self._warn_if_silent(path, peak)
        durations = torch.tensor([f / info.sample_rate for _, f in windows])
        return torch.cat(embs), durations

    def encode_file(self, path: PathLike) -> torch.Tensor:
        """Quality embedding (D,) of a recording: the duration-weighted mean of its windows'."""
        embs, durations = self._file_embeddings(path)
        return (embs * durations.unsqueeze(1)).sum(0) / durations.sum()

    def score_file(
        self, path: PathLike, windows: bool = False
    ) -> Union[dict[str, float], FileScores]:
        """Score one recording of any length: ``{name: score}`` for every output name.

        With ``windows``, a :class:`~jsqa_sb.serving.windows.FileScores` that also holds
        the scores of the windows that dict is the duration-weighted mean of.
        :class:`RecordingError` (or a subclass) if the file cannot be read or scored.
        """
        if not windows:
            return self._mean(*self._window_scores(path, None))
        info = self._info(path)
        spans = self._windows(info)
        scores, durations = self._window_scores(path, info, spans)
        return FileScores(self._mean(scores, durations), self._rows(spans, info, scores))

    def score_timeline(
        self, path: PathLike, window_seconds: float = 3.0, hop_seconds: float = 1.0
    ) -> list[WindowScores]:
        """Scores over time, in windows of ``window_seconds`` every ``hop_seconds``.

        The last window ends where the recording ends. :class:`BatchInputError` unless both
        are positive numbers, :class:`RecordingError` as :meth:`score_file`.
        """
        for name, value in (("window_seconds", window_seconds), ("hop_seconds", hop_seconds)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise BatchInputError(f"{name} must be a positive number of seconds, not {value!r}")
        info = self._info(path)
        spans = sliding_windows(info.frames, info.sample_rate, window_seconds, hop_seconds)
        scores, _ = self._window_scores(path, info, spans)
        return self._rows(spans, info, scores)

    def _window_scores(
        self,
        path: PathLike,
        info: Optional[AudioInfo],
        spans: Optional[Sequence[tuple[int, int]]] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores (N, outputs) of a recording's windows and their durations (N,)."""
        head = self._head()
        embs, durations = self._file_embeddings(path, info, spans)
        with torch.no_grad():
            scores = head(embs.to(self.device))[:, self._output_index].float().cpu()
        return scores, durations

    def _mean(self, scores: torch.Tensor, durations: torch.Tensor) -> dict[str, float]:
        """The duration-weighted mean of window scores, as ``{name: score}``."""
        return self._named((scores * durations.unsqueeze(1)).sum(0) / durations.sum())

    def _named(self, scores: torch.Tensor) -> dict[str, float]:
        return {name: float(v) for name, v in zip(self.output_names, scores)}

    def _rows(
        self, spans: Sequence[tuple[int, int]], info: AudioInfo, scores: torch.Tensor
    ) -> list[WindowScores]:
        rate = info.sample_rate
        return [
            WindowScores(start / rate, (start + frames) / rate, self._named(row))
            for (start, frames), row in zip(spans, scores)
        ]

    def score_files(self, paths: Sequence[PathLike]) -> list[Union[dict[str, float], Exception]]:
        """Score several recordings; a bad file gives its exception, not a failure of all.

        One entry per path, in order: a ``{name: score}`` dict or the exception.
        Recordings no longer than ``window_seconds`` are scored together as one padded
        batch (give them sorted by length for speed); longer ones by :meth:`score_file`.
        """
        self._head()
        results: list = [None] * len(paths)
        short: dict[int, torch.Tensor] = {}  # index: waveform, scored as one batch
        for i, path in enumerate(paths):
            try:
                info = self._info(path)
                if info.frames > self.window_seconds * info.sample_rate:
                    results[i] = self._mean(*self._window_scores(path, info))
                    continue
                wav = self.load_audio(path)
                self._check_length(path, wav.numel())
                self._check_finite(path, wav)
                self._warn_if_silent(path, float(wav.abs().max()))
                short[i] = wav
            except (RecordingError, ValueError) as err:
                results[i] = err
        if short:
            for i, row in zip(short, self.score_batch(*batch_pad_right(list(short.values())))):
                results[i] = self._named(row)
        return results

    def distance(self, a: Union[PathLike, torch.Tensor], b: Union[PathLike, torch.Tensor]) -> float:
        """Quality distance between two recordings: the cosine distance of their embeddings.

        ``1 - cos(e_a, e_b)``, in [0, 2]; 0 for recordings of the same quality. ``a``, ``b``:
        paths, or 1-D waveforms at the model's sample rate.
        """
        emb = [self._embed(x) for x in (a, b)]
        return float(1.0 - F.cosine_similarity(emb[0], emb[1], dim=0))

    def _embed(self, x: Union[PathLike, torch.Tensor]) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            return self.encode_batch(x.reshape(1, -1))[0].cpu()
        return self.encode_file(x)
