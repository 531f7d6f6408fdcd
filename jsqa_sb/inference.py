"""Scoring real recordings: the ``JSQA`` inference interface.

``JSQA`` follows SpeechBrain's inference classes
(:class:`speechbrain.inference.interfaces.Pretrained`): load a model folder or a hub
id with :meth:`JSQA.from_hparams`, then

* :meth:`JSQA.score_file` a recording -> ``{"mos": 3.71, ...}`` (with ``windows=True``,
  also the scores of the windows it is the mean of);
* :meth:`JSQA.score_timeline` a recording -> scores over time (sliding windows);
* :meth:`JSQA.score_batch` waveforms -> a tensor of scores;
* :meth:`JSQA.encode_batch` waveforms -> quality embeddings;
* :meth:`JSQA.distance` two recordings -> their quality distance.

Recordings come as they are: any sample rate (resampled to the model's), any number of
channels (averaged to mono), WAV of any sample format, FLAC, OGG. A recording longer
than ``window_seconds`` (10 s by default, the length of NISQA's training clips) is cut
into ``ceil(duration / window_seconds)`` windows of equal length, read from disk one
small batch at a time (memory stays bounded whatever the file's length), and its scores
(or embedding) are the duration-weighted mean of the windows'. A recording shorter
than the encoder's minimum raises :class:`RecordingTooShortError` naming the minimum;
digital silence is scored, with a warning.

This module and :mod:`jsqa_sb.audio` need only SpeechBrain and what it installs (torch,
torchaudio, soundfile, hyperpyyaml): ``jsqa export`` ships them inside a model folder's
``custom_interface.py``.

Authors
 * JSQA contributors 2026
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
from speechbrain.dataio.audio_io import AudioInfo
from speechbrain.inference.interfaces import Pretrained
from speechbrain.utils.data_utils import batch_pad_right

from jsqa_sb.audio import AudioReadError, audio_info, read_audio
from jsqa_sb.errors import JSQAError

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


class RecordingError(JSQAError, RuntimeError):
    """A recording could not be scored; the message names the file and why."""


class RecordingTooShortError(RecordingError):
    """A recording is shorter than the model's minimum length."""


class ModelError(JSQAError, RuntimeError):
    """A model that cannot be loaded, or cannot do what is asked; the message says why.

    Raised for a model folder or hub id that cannot be fetched, a ``hyperparams.yaml``
    that is empty, not YAML or not a JSQA model's, a checkpoint that is missing,
    truncated, not plain tensors or does not fit the network, and for scoring with an
    encoder-only model.
    """


class NonFiniteAudioError(RecordingError):
    """A recording holds NaN or infinite samples: no score would mean anything."""


class BatchInputError(JSQAError, ValueError):
    """Waveforms or relative lengths given to a batch method are not valid."""


class WindowScores(NamedTuple):
    """The scores of one window of a recording.

    Arguments
    ---------
    start, end : float
        Where the window starts and ends in the recording, in seconds.
    scores : dict
        ``{name: score}`` for every name in :attr:`JSQA.output_names`.
    """

    start: float
    end: float
    scores: dict[str, float]


class FileScores(NamedTuple):
    """A recording's scores and the windows they are the duration-weighted mean of.

    Arguments
    ---------
    scores : dict
        ``{name: score}``: what :meth:`JSQA.score_file` returns without ``windows``.
    windows : list of WindowScores
        The windows the recording was scored by, in time order.
    """

    scores: dict[str, float]
    windows: list[WindowScores]


class JSQA(Pretrained):
    """Non-intrusive speech quality (MOS) prediction with a JSQA model.

    The model folder's ``hyperparams.yaml`` defines ``encoder`` (waveforms ->
    embeddings), optionally ``head`` (embeddings -> scores in [1, 5], one per name in
    ``head_outputs``), ``outputs`` (the names this model reports: the dimensions it was
    trained on), ``sample_rate``, and the windowing of long files (``window_seconds``,
    ``window_batch``). An encoder-only model (exported from a pretraining run) has no
    head: it can :meth:`encode_batch` and compute :meth:`distance`, not score.

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
        # A model's YAML is untrusted: its plain numbers must be sane too (a 1e-9 s window
        # would cut a file into billions of windows).
        self.sample_rate = _setting(self.hparams, "sample_rate", 16000, int, 4000, 192000)
        self.window_seconds = _setting(self.hparams, "window_seconds", 10.0, float, 0.5, 600.0)
        self.window_batch = _setting(self.hparams, "window_batch", 8, int, 1, 256)
        head = getattr(self.mods, "head", None)
        self.head_outputs: tuple[str, ...] = ()
        if head is not None:
            self.head_outputs = tuple(
                getattr(self.hparams, "head_outputs", None) or head.output_names
            )
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
        """Load a model from a local folder or a hub id, like SpeechBrain's interfaces.

        Before anything in ``hyperparams.yaml`` is instantiated, the file is checked
        (see :mod:`jsqa_sb.yaml_security`): without ``trust_remote_code`` it may only
        create the objects ``jsqa export`` writes (the encoder, the head, the
        Pretrainer) and plain data, and it must be small enough to check in bounded
        time. Checkpoints are loaded with ``torch.load(weights_only=True)``: plain
        tensors only, no pickled code. A save folder holds one model: it records the
        source it was filled from, and is refilled when another source is loaded
        into it.

        Arguments
        ---------
        source : str or os.PathLike
            A local model folder (no network needed) or a Hugging Face hub id
            ``owner/name``; anything else that is not an existing folder is refused at
            once ("no such folder"), without a hub look-up.
        hparams_file : str
            The hyperparameters file in ``source``.
        savedir : str or os.PathLike, optional
            Where the model's files are collected (default: the files are used where
            they are, in ``source`` or the hub cache).
        trust_remote_code : bool
            Load a YAML that creates other objects or runs code too. Only for sources
            you trust.
        overrides : dict, optional
            HyperPyYAML overrides.
        **kwargs
            Passed to the class (e.g. ``run_opts={"device": "cuda"}``).

        Returns
        -------
        JSQA

        Raises
        ------
        jsqa_sb.yaml_security.UntrustedCodeError
            If the YAML creates or runs anything ``jsqa export`` does not write
            (:class:`~jsqa_sb.yaml_security.UnsafeModelError`, whatever the trust: if
            it is too large to check, or a loadable would be saved outside ``savedir``).
        jsqa_sb.yaml_security.ModelSourceError
            If ``source`` is neither an existing folder nor a hub id.
        RecordingError
            Never; see :meth:`score_file`.
        """
        from hyperpyyaml import load_hyperpyyaml
        from speechbrain.utils.fetching import FetchConfig, fetch

        from jsqa_sb.models import load_checkpoint
        from jsqa_sb.yaml_security import (
            check_hparams_size,
            check_hparams_yaml,
            check_loadable_names,
            model_source,
            prepare_save_folder,
            record_save_folder,
        )

        source = model_source(source)  # a mistyped folder fails here, not on the hub
        # Files of another model in savedir are fetched afresh, never reused.
        fetch_config = FetchConfig(overwrite=prepare_save_folder(savedir, source, hparams_file))
        with _fetch_errors(source, hparams_file):
            hparams_path = fetch(
                filename=hparams_file, source=source, savedir=savedir, fetch_config=fetch_config
            )
        # Check and load the same text (no window for the file to change in between).
        check_hparams_size(hparams_path)
        text = _read_hparams(hparams_path) + "\n"
        check_hparams_yaml(text, name=str(hparams_path), trust_remote_code=trust_remote_code)
        # HyperPyYAML's own errors about the file: bad references, arguments, names.
        try:
            if trust_remote_code:  # the file itself, so that !include: paths resolve
                with open(hparams_path, encoding="utf-8") as fin:
                    hparams = load_hyperpyyaml(fin, overrides or {})
            else:
                hparams = load_hyperpyyaml(text, overrides or {})
        except (ValueError, TypeError, KeyError, ImportError) as err:
            raise ModelError(f"cannot load {hparams_path}: {_one_line(err)}") from err
        _check_hparams(hparams, hparams_path, cls.HPARAMS_NEEDED, cls.MODULES_NEEDED)
        hparams["savedir"] = savedir
        pretrainer = hparams["pretrainer"]
        if savedir is not None:
            pretrainer.set_collect_in(savedir)
        check_loadable_names(pretrainer.loadables, str(hparams_path))
        with _fetch_errors(source, "checkpoints"):
            paths = pretrainer.collect_files(default_source=source, fetch_config=fetch_config)
        for name, module in pretrainer.loadables.items():
            load_checkpoint(module, paths[name], ModelError)
        collected = [hparams_file, *(f"{name}.ckpt" for name in pretrainer.loadables)]
        record_save_folder(savedir, source, hparams_file, collected)
        return cls(modules=hparams["modules"], hparams=hparams, **kwargs)

    # ------------------------------------------------------------------ audio
    def load_audio(self, path: PathLike, start: int = 0, frames: int = -1) -> torch.Tensor:
        """Read (part of) a recording as a mono waveform at the model's sample rate.

        The reading and resampling of :func:`jsqa_sb.audio.read_audio`, which the
        training and evaluation data pipelines use too.

        Arguments
        ---------
        path : str or os.PathLike
            Any format soundfile reads (WAV, FLAC, OGG, ...), any rate and channels.
        start, frames : int
            First frame and number of frames, at the file's own rate (-1: to the end).

        Returns
        -------
        torch.Tensor
            1-D float32 waveform.

        Raises
        ------
        RecordingError
            If the file cannot be read.
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

    def _windows(self, info) -> list[tuple[int, int]]:
        """(start, frames) of the equal windows a recording is scored by, at its rate."""
        total = int(info.frames)
        n = max(1, math.ceil(total / (self.window_seconds * info.sample_rate)))
        bounds = [round(i * total / n) for i in range(n + 1)]
        return [(bounds[i], bounds[i + 1] - bounds[i]) for i in range(n)]

    @staticmethod
    def _sliding_windows(info, window_seconds: float, hop_seconds: float) -> list[tuple[int, int]]:
        """(start, frames) of windows of ``window_seconds`` every ``hop_seconds``.

        The last window ends at the end of the recording (so the end is covered even
        when the hop does not divide the remainder); a recording shorter than one
        window is one window.
        """
        total, rate = int(info.frames), info.sample_rate
        length = max(1, round(window_seconds * rate))
        hop = max(1, round(hop_seconds * rate))
        if total <= length:
            return [(0, total)]
        starts = list(range(0, total - length + 1, hop))
        if starts[-1] + length < total:
            starts.append(total - length)
        return [(start, length) for start in starts]

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
        """Quality embeddings of a batch of waveforms at the model's sample rate.

        Arguments
        ---------
        wavs : torch.Tensor
            (B, T) or (T,) waveforms, zero-padded.
        wav_lens : torch.Tensor, optional
            Relative lengths (B,), SpeechBrain style: each in (0, 1], the fraction of
            the padded length a waveform fills (``None``: all full length).

        Returns
        -------
        torch.Tensor
            (B, D) embeddings.

        Raises
        ------
        BatchInputError
            If ``wavs`` is not (B, T) or (T,), holds NaN or infinite samples, or
            ``wav_lens`` is not B finite relative lengths in (0, 1].
        """
        wavs, wav_lens = _check_batch(wavs, wav_lens)
        with torch.no_grad():
            return self._encoder(wavs.float().to(self.device), wav_lens.to(self.device))

    def score_batch(
        self, wavs: torch.Tensor, wav_lens: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Scores of a batch of waveforms at the model's sample rate.

        The waveforms are scored whole (no windowing; use :meth:`score_file` for long
        recordings).

        Arguments
        ---------
        wavs : torch.Tensor
            (B, T) or (T,) waveforms, zero-padded.
        wav_lens : torch.Tensor, optional
            Relative lengths (B,), each in (0, 1] (``None``: all full length).

        Returns
        -------
        torch.Tensor
            (B, len(output_names)) scores in [1, 5], columns in :attr:`output_names`.

        Raises
        ------
        BatchInputError
            For invalid waveforms or lengths (see :meth:`encode_batch`).
        """
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
        """Window embeddings (N, D) of a recording and the windows' durations (N,).

        ``windows`` are ``(start, frames)`` at the file's rate (default: the scoring
        windows, :meth:`_windows`); they are read from disk ``window_batch`` at a time.
        """
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
            batch, lens = batch_pad_right(wavs)
            embs.append(self.encode_batch(batch, lens).cpu())
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
        """Score one recording of any length.

        Arguments
        ---------
        path : str or os.PathLike
            The recording.
        windows : bool
            Also return the scores of the windows the recording is scored by (equal
            windows of at most ``window_seconds``; one window for a shorter file).

        Returns
        -------
        dict or FileScores
            ``{name: score}`` for every name in :attr:`output_names` (e.g. ``mos``);
            with ``windows``, a :class:`FileScores` holding that dict (the same
            values) and the :class:`WindowScores` of every window, whose
            duration-weighted mean it is.

        Raises
        ------
        RecordingError
            If the file cannot be read (:class:`RecordingTooShortError`: too short;
            :class:`NonFiniteAudioError`: NaN or infinite samples).
        """
        if not windows:
            return self._score_file(path, None)
        info = self._info(path)
        spans = self._windows(info)
        scores, durations = self._window_scores(path, info, spans)
        return FileScores(self._mean(scores, durations), self._rows(spans, info, scores))

    def score_timeline(
        self, path: PathLike, window_seconds: float = 3.0, hop_seconds: float = 1.0
    ) -> list[WindowScores]:
        """Scores over time: windows of ``window_seconds`` every ``hop_seconds``.

        The windows are read from disk ``window_batch`` at a time, so memory does not
        grow with the recording's length. The last window ends where the recording
        ends; a recording shorter than ``window_seconds`` is one window.

        Arguments
        ---------
        path : str or os.PathLike
            The recording.
        window_seconds : float
            Length of each window (> 0; at least the model's minimum length).
        hop_seconds : float
            Time between the starts of consecutive windows (> 0).

        Returns
        -------
        list of WindowScores
            In time order.

        Raises
        ------
        ValueError
            If ``window_seconds`` or ``hop_seconds`` is not a positive number.
        RecordingError
            As :meth:`score_file`.
        """
        for name, value in (("window_seconds", window_seconds), ("hop_seconds", hop_seconds)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise BatchInputError(f"{name} must be a positive number of seconds, not {value!r}")
        info = self._info(path)
        spans = self._sliding_windows(info, window_seconds, hop_seconds)
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
        mean = (scores * durations.unsqueeze(1)).sum(0) / durations.sum()
        return {name: float(v) for name, v in zip(self.output_names, mean)}

    def _rows(
        self, spans: Sequence[tuple[int, int]], info: AudioInfo, scores: torch.Tensor
    ) -> list[WindowScores]:
        rate = info.sample_rate
        return [
            WindowScores(
                start / rate,
                (start + frames) / rate,
                {name: float(v) for name, v in zip(self.output_names, row)},
            )
            for (start, frames), row in zip(spans, scores)
        ]

    def _score_file(self, path: PathLike, info: Optional[AudioInfo]) -> dict[str, float]:
        return self._mean(*self._window_scores(path, info))

    def score_files(self, paths: Sequence[PathLike]) -> list[Union[dict[str, float], Exception]]:
        """Score several recordings; a bad file gives its exception, not a failure of all.

        Recordings no longer than ``window_seconds`` are scored together as one padded
        batch (give them sorted by length for speed); longer ones by :meth:`score_file`.

        Returns
        -------
        list
            One entry per path, in order: a ``{name: score}`` dict or the exception.
        """
        self._head()
        results: list = [None] * len(paths)
        short_idx, short_wavs = [], []
        for i, path in enumerate(paths):
            try:
                info = self._info(path)
                if info.frames > self.window_seconds * info.sample_rate:
                    results[i] = self._score_file(path, info)
                    continue
                wav = self.load_audio(path)
                self._check_length(path, wav.numel())
                self._check_finite(path, wav)
                self._warn_if_silent(path, float(wav.abs().max()))
                short_idx.append(i)
                short_wavs.append(wav)
            except (RecordingError, ValueError) as err:
                results[i] = err
        if short_wavs:
            batch, lens = batch_pad_right(short_wavs)
            scores = self.score_batch(batch, lens)
            for i, row in zip(short_idx, scores):
                results[i] = {name: float(v) for name, v in zip(self.output_names, row)}
        return results

    def distance(self, a: Union[PathLike, torch.Tensor], b: Union[PathLike, torch.Tensor]) -> float:
        """Quality distance between two recordings: the cosine distance of their embeddings.

        ``1 - cos(e_a, e_b)``, in [0, 2]; 0 for recordings of the same quality. The
        contrastive pretraining makes this distance grow with the perceptual difference
        (pairs closer than a JND are pulled together).

        Arguments
        ---------
        a, b : str, os.PathLike or torch.Tensor
            Paths, or 1-D waveforms at the model's sample rate.

        Returns
        -------
        float
        """
        emb = [self._embed(x) for x in (a, b)]
        return float(1.0 - F.cosine_similarity(emb[0], emb[1], dim=0))

    def _embed(self, x: Union[PathLike, torch.Tensor]) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            return self.encode_batch(x.reshape(1, -1))[0].cpu()
        return self.encode_file(x)


def _check_batch(
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


def _one_line(err: BaseException) -> str:
    """An exception's message on one line (PyTorch's and YAML's span several)."""
    return " ".join(str(err).split()) or type(err).__name__


@contextlib.contextmanager
def _fetch_errors(source: PathLike, what: str) -> Iterator[None]:
    """Turn the errors of fetching a model's ``what`` (local or hub) into ModelError."""
    try:
        yield
    except (OSError, ValueError) as err:
        if isinstance(err, JSQAError):
            raise
        text = str(source)
        where = "" if os.path.isdir(text) else " from the Hugging Face hub"
        raise ModelError(
            f"cannot fetch the {what} of the model {text}{where}: {_one_line(err)}"
        ) from err


def _read_hparams(path: PathLike) -> str:
    """The text of a model's ``hyperparams.yaml``; ModelError unless it is a YAML mapping."""
    import ruamel.yaml

    from jsqa_sb.yaml_security import read_hparams_text

    try:
        text = read_hparams_text(path)
    except UnicodeDecodeError as err:
        raise ModelError(f"{path} is not UTF-8 text: {err}") from err
    except OSError as err:  # a folder without the file, or one named like it
        raise ModelError(f"cannot read the model's {path}: {err.strerror or err}") from err
    try:
        root = ruamel.yaml.YAML().compose(text)
    except ruamel.yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or _one_line(err)
        raise ModelError(f"{path} is not valid YAML: {problem}{where}") from err
    if root is None:
        raise ModelError(f"{path} is empty: a model's hyperparams.yaml defines its network")
    if not isinstance(root, ruamel.yaml.nodes.MappingNode):
        raise ModelError(f"{path} is not a YAML mapping of names to values: not a model's YAML")
    return text


def _setting(hparams, name: str, default, kind: type, low, high):
    """A plain number of a model's YAML, checked against its sane range (ModelError)."""
    value = getattr(hparams, name, default)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and kind is int:
        ok = float(value).is_integer()
    if not ok or not math.isfinite(value) or not low <= value <= high:
        raise ModelError(
            f"the model's {name} must be a{'n integer' if kind is int else ' number'} "
            f"from {low} to {high}, got {value!r}"
        )
    return kind(value)


def _check_hparams(
    hparams: dict, path: PathLike, needed: Sequence[str], modules_needed: Sequence[str]
) -> None:
    """ModelError unless ``hparams`` has what :class:`JSQA` loads (named in the message)."""
    from speechbrain.utils.parameter_transfer import Pretrainer

    missing = [key for key in ("modules", "pretrainer", *needed) if key not in hparams]
    modules = hparams.get("modules")
    if isinstance(modules, Mapping):
        missing += [f"modules: {key}" for key in modules_needed if key not in modules]
    elif "modules" not in missing:
        missing.append("modules (a mapping)")
    if "pretrainer" in hparams and not isinstance(hparams["pretrainer"], Pretrainer):
        missing.append("pretrainer (a speechbrain Pretrainer)")
    if missing:
        raise ModelError(
            f"{path} is not a JSQA model's hyperparams.yaml: it lacks {', '.join(missing)}"
        )
