"""The JND data pipeline: manifest entries -> groups of K noisy views of one excerpt.

Training groups are mixed on the fly: per epoch and per utterance, a seeded generator
picks the clean crop, the background, its offset and the K SNRs, so a rerun of the
same epoch gives the same mixtures and a new epoch new ones. Validation groups take
their crop, noise, offset and SNRs from the manifest and are the same in every run.

Use it with SpeechBrain's ``DynamicItemDataset`` and a ``DataLoader`` whose
``collate_fn`` is :func:`jnd_collate`::

    views = JNDViewMaker(noise_manifest=..., segment_seconds=3.0, views_per_group=4)
    train = make_jnd_dataset("jnd_train.json", replacements, views, fixed=False)
    loader = DataLoader(train, batch_size=8, collate_fn=jnd_collate)
    views.set_epoch(epoch)  # before iterating each epoch (not with persistent workers)

A file that cannot be read or mixed (corrupt, digital silence) yields NaN views and
a warning naming it; the training loop detects NaN batches and skips them.

Authors
 * JSQA contributors 2026
"""

from __future__ import annotations

import logging
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from speechbrain.dataio.dataio import load_data_json
from speechbrain.dataio.dataset import DynamicItemDataset

from jsqa_sb.audio import AudioReadError, audio_info, read_audio, resample
from jsqa_sb.jnd_mixing import SilentSignalError, mix_at_snrs, sample_group_snrs

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]


#: The settings of a JNDViewMaker that a recipe's hparams hold under the same names.
MIXING_KEYS = (
    "sample_rate",
    "segment_seconds",
    "views_per_group",
    "snr_min",
    "snr_max",
    "jnd_db",
    "neg_margin_db",
    "target_level_db",
)


def mixing_options(hparams: dict) -> dict:
    """Pick the :class:`JNDViewMaker` settings (``MIXING_KEYS``) out of recipe hparams."""
    return {key: hparams[key] for key in MIXING_KEYS}


class JNDViewMaker:
    """Makes the K views of a view group; the dynamic items of the JND datasets.

    Arguments
    ---------
    noise_manifest : dict or str, optional
        Training backgrounds (``noise_train.json`` entries, placeholders filled in) or
        the path of that JSON together with ``replacements``. Needed for training only.
    replacements : dict, optional
        Placeholder values (``librispeech_folder``, ``chime3_folder``) for a path.
    sample_rate : int
        Rate of the views; inputs at other rates are resampled.
    segment_seconds : float
        Length of each view (shorter utterances give shorter groups).
    views_per_group : int
        K, at least 3.
    snr_min, snr_max, jnd_db, neg_margin_db : float
        SNR range, JND and negative margin (``None``: ``2 * jnd_db``), dB.
    target_level_db : float
        Active level of every view, dBFS.
    peak_limit : float
        No view sample exceeds this in absolute value.
    seed : int
        Base seed of the on-the-fly mixing.
    """

    def __init__(
        self,
        noise_manifest: Union[dict, PathLike, None] = None,
        replacements: Optional[dict] = None,
        sample_rate: int = 16000,
        segment_seconds: float = 3.0,
        views_per_group: int = 4,
        snr_min: float = -5.0,
        snr_max: float = 30.0,
        jnd_db: float = 3.0,
        neg_margin_db: Optional[float] = None,
        target_level_db: float = -26.0,
        peak_limit: float = 0.99,
        seed: int = 1234,
    ):
        if isinstance(noise_manifest, (str, Path)):
            noise_manifest = load_data_json(str(noise_manifest), replacements or {})
        self.noises = sorted((noise_manifest or {}).values(), key=lambda e: e["wav"])
        durations = np.array([e["duration"] for e in self.noises], dtype=np.float64)
        self.noise_weights = durations / durations.sum() if self.noises else None
        self.sample_rate = sample_rate
        self.segment = int(round(segment_seconds * sample_rate))
        self.views_per_group = views_per_group
        self.snr_args = dict(
            snr_min=snr_min,
            snr_max=snr_max,
            jnd_db=jnd_db,
            neg_margin_db=2 * jnd_db if neg_margin_db is None else neg_margin_db,
        )
        sample_group_snrs(np.random.default_rng(0), views_per_group, **self.snr_args)  # validate
        self.target_level_db = target_level_db
        self.peak_limit = peak_limit
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose mixtures the training items produce."""
        self.epoch = int(epoch)

    def train_views(self, uid: str, wav: str, duration: float, sample_rate: int):
        """Training dynamic item: a fresh random group for this epoch and utterance."""
        if not self.noises:
            raise ValueError("JNDViewMaker needs a noise_manifest to make training views")
        rng = np.random.default_rng([self.seed, self.epoch, zlib.crc32(uid.encode())])
        crop = min(self.segment * sample_rate // self.sample_rate, _frames(duration, sample_rate))
        crop_start = int(rng.integers(0, _frames(duration, sample_rate) - crop + 1))
        noise = self.noises[rng.choice(len(self.noises), p=self.noise_weights)]
        noise_frames = _frames(noise["duration"], noise["sample_rate"])
        noise_offset = int(rng.integers(0, noise_frames))
        snrs = sample_group_snrs(rng, self.views_per_group, **self.snr_args)
        return self._mix(
            wav,
            crop_start,
            crop,
            noise["wav"],
            noise_offset,
            noise_frames,
            noise["sample_rate"],
            snrs,
        )

    def valid_views(self, wav, duration, sample_rate, crop_start, noise_wav, noise_offset, snrs):
        """Validation dynamic item: the group fixed in the manifest."""
        crop = min(self.segment * sample_rate // self.sample_rate, _frames(duration, sample_rate))
        try:
            noise_info = audio_info(noise_wav)
        except AudioReadError as err:
            return self._failed(str(err), len(snrs))
        return self._mix(
            wav,
            crop_start,
            crop,
            noise_wav,
            noise_offset,
            noise_info.frames,
            noise_info.sample_rate,
            np.asarray(snrs, dtype=np.float64),
        )

    def _mix(self, wav, crop_start, crop, noise_wav, noise_offset, noise_frames, noise_sr, snrs):
        try:
            speech, _ = read_audio(wav, crop_start, crop, target_sr=self.sample_rate)
            noise = _read_looped(
                noise_wav, noise_offset, noise_frames, noise_sr, speech.size, self.sample_rate
            )
            views = mix_at_snrs(
                speech, noise, snrs, self.sample_rate, self.target_level_db, self.peak_limit
            )
        except (AudioReadError, SilentSignalError) as err:
            return self._failed(f"{wav} (noise {noise_wav}): {err}", len(snrs))
        return torch.from_numpy(views), torch.as_tensor(snrs, dtype=torch.float32)

    def _failed(self, message: str, k: int):
        logger.warning("JND views replaced by NaN, the batch will be skipped: %s", message)
        return torch.full((k, self.segment), math.nan), torch.full((k,), math.nan)


def _frames(seconds: float, sample_rate: int) -> int:
    return max(1, int(round(seconds * sample_rate)))


def _read_looped(
    path: str, offset: int, total: int, sample_rate: int, length: int, target_sr: int
) -> np.ndarray:
    """Read ``length`` samples (at ``target_sr``) from ``offset``, looping at the end.

    ``total`` and ``sample_rate`` are the file's frame count and rate.
    """
    need = int(math.ceil(length * sample_rate / target_sr)) + 1
    pieces, pos, got = [], offset % total, 0
    while got < need:
        take = min(need - got, total - pos)
        piece, _ = read_audio(path, pos, take)
        if piece.size == 0:
            raise AudioReadError(f"{path}: no audio at frame {pos}")
        pieces.append(piece)
        got += piece.size
        pos = 0
    noise = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
    if sample_rate != target_sr:
        noise = resample(noise, sample_rate, target_sr)
    return noise[:length]


def make_jnd_dataset(
    manifest: PathLike, replacements: dict, view_maker: JNDViewMaker, fixed: bool
) -> DynamicItemDataset:
    """Build the training (``fixed=False``) or validation (``fixed=True``) JND dataset.

    Each item provides ``id``, ``views`` (K, T) and ``snrs`` (K,).
    """
    dataset = DynamicItemDataset.from_json(str(manifest), replacements=replacements)
    if fixed:
        takes = [
            "wav",
            "duration",
            "sample_rate",
            "crop_start",
            "noise_wav",
            "noise_offset",
            "snrs",
        ]
        dataset.add_dynamic_item(
            view_maker.valid_views, takes=takes, provides=["views", "mix_snrs"]
        )
    else:
        takes = ["id", "wav", "duration", "sample_rate"]
        dataset.add_dynamic_item(
            view_maker.train_views, takes=takes, provides=["views", "mix_snrs"]
        )
    dataset.set_output_keys(["id", "views", "mix_snrs"])
    return dataset


@dataclass
class JNDBatch:
    """A batch of B view groups, flattened to N = B * K views.

    Attributes
    ----------
    ids : list of str
        The B utterance ids.
    wavs : torch.Tensor
        (N, T) views, zero-padded on the right.
    wav_lens : torch.Tensor
        (N,) relative lengths, SpeechBrain's convention.
    snrs : torch.Tensor
        (N,) SNR of each view in dB.
    groups : torch.Tensor
        (N,) index of each view's group within the batch.
    """

    ids: list
    wavs: torch.Tensor
    wav_lens: torch.Tensor
    snrs: torch.Tensor
    groups: torch.Tensor

    def to(self, device, non_blocking: bool = False) -> JNDBatch:
        """Move the tensors to ``device``."""
        return JNDBatch(
            self.ids,
            *(
                t.to(device, non_blocking=non_blocking)
                for t in (self.wavs, self.wav_lens, self.snrs, self.groups)
            ),
        )

    def pin_memory(self) -> JNDBatch:
        """Pin the tensors (called by ``DataLoader(pin_memory=True)``)."""
        return JNDBatch(
            self.ids, *(t.pin_memory() for t in (self.wavs, self.wav_lens, self.snrs, self.groups))
        )

    def has_nonfinite(self) -> list:
        """Ids of the groups whose views contain NaN or Inf."""
        bad = ~torch.isfinite(self.wavs).all(dim=1)
        return sorted({self.ids[g] for g in self.groups[bad].tolist()})


def jnd_collate(items: list) -> JNDBatch:
    """Collate dataset items (dicts with ``id``, ``views``, ``mix_snrs``) into a JNDBatch.

    Example
    -------
    >>> items = [{"id": "a", "views": torch.ones(3, 5), "mix_snrs": torch.zeros(3)},
    ...          {"id": "b", "views": torch.ones(3, 4), "mix_snrs": torch.zeros(3)}]
    >>> batch = jnd_collate(items)
    >>> tuple(batch.wavs.shape), batch.groups.tolist()
    ((6, 5), [0, 0, 0, 1, 1, 1])
    >>> [round(x, 2) for x in batch.wav_lens.tolist()]
    [1.0, 1.0, 1.0, 0.8, 0.8, 0.8]
    """
    max_len = max(item["views"].shape[1] for item in items)
    total = sum(item["views"].shape[0] for item in items)
    if torch.utils.data.get_worker_info() is None:
        wavs = torch.empty(total, max_len)
    else:
        # In a loader worker, allocate the batch in shared memory directly, as torch's
        # default_collate does, instead of copying it there when it is sent.
        storage = torch.empty(0)._typed_storage()._new_shared(total * max_len)
        wavs = torch.empty(0).new(storage).view(total, max_len)
    lens, snrs, groups, row = [], [], [], 0
    for g, item in enumerate(items):
        k, length = item["views"].shape
        wavs[row : row + k, :length] = item["views"]
        wavs[row : row + k, length:] = 0.0  # each page is written once: no zero-fill pass
        lens += [length / max_len] * k
        snrs.append(item["mix_snrs"])
        groups += [g] * k
        row += k
    return JNDBatch(
        ids=[item["id"] for item in items],
        wavs=wavs,
        wav_lens=torch.tensor(lens, dtype=torch.float32),
        snrs=torch.cat(snrs),
        groups=torch.tensor(groups, dtype=torch.long),
    )
