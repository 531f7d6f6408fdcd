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
    for batch in loader:
        batch = batch.to(device)
        batch.wavs, batch.wav_lens, batch.snrs, batch.groups  # (B*K, T) views, ...

An item carries the group's clean excerpt and noise excerpt (``excerpts``, 2 x T) and
the speech and noise gain of each view (``mix_gains``, K x 2), not the K views: the
views are made from them when ``batch.wavs`` is first read, on the batch's device.
A loader worker so sends 2 signals per group instead of K (half the bytes for K = 4)
through shared memory, whose fresh pages cost a worker process more than anything
besides reading and mixing, and the host-to-GPU copy shrinks by as much. The views
equal mixing on the CPU (``tests/reference.py``) to float32 rounding;
``views`` is also a dynamic item, for per-item use.

A file that cannot be read or mixed (corrupt, digital silence) yields NaN views and
a warning naming it; the training loop detects NaN batches and skips them.

Authors
 * JSQA contributors 2026
"""

from __future__ import annotations

import logging
import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from speechbrain.dataio.dataio import load_data_json
from speechbrain.dataio.dataset import DynamicItemDataset

from jsqa_sb.audio import AudioReadError, audio_info, read_audio, resample
from jsqa_sb.jnd_mixing import SilentSignalError, check_jnd_settings, check_level_range, mix_gains
from jsqa_sb.pairs import JNDPairRule

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]


class JNDViewMaker:
    """Makes the K views of a view group; the dynamic items of the JND datasets.

    Arguments
    ---------
    noise_manifest : dict or str, optional
        Training backgrounds (``noise_train.json`` entries, placeholders filled in) or
        the path of that JSON together with ``replacements``, read when the training
        dataset is made (:func:`make_jnd_dataset`). Needed for training only.
    replacements : dict, optional
        Placeholder values (``librispeech_folder``, ``chime3_folder``) for a path.
    sample_rate : int
        Rate of the views; inputs at other rates are resampled.
    segment_seconds : float
        Length of each view (shorter utterances give shorter groups).
    views_per_group : int
        K, at least 3.
    snr_min, snr_max : float
        SNR range, dB.
    target_level_db : float
        Active level of every view, dBFS (of every validation view, with
        ``level_range_db``).
    level_range_db : (float, float), optional
        ``[low, high]`` dBFS: each training view gets its own active level, uniform in
        this range (NISQA clips reach the model at their own level, not levelled).
        ``None``: every view at ``target_level_db``.
    peak_limit : float
        No view sample exceeds this in absolute value.
    seed : int
        Base seed of the on-the-fly mixing.
    pair_rule : jsqa_sb.pairs.JNDPairRule, optional
        Draws the SNRs of each group (default: ``JNDPairRule()``).
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
        target_level_db: float = -26.0,
        level_range_db: Optional[Sequence[float]] = None,
        peak_limit: float = 0.99,
        seed: int = 1234,
        pair_rule: Optional[JNDPairRule] = None,
    ):
        self.noise_manifest, self.replacements = noise_manifest, replacements
        self._noises = None
        self.sample_rate = sample_rate
        self.segment = int(round(segment_seconds * sample_rate))
        self.views_per_group = views_per_group
        self.snr_range = (snr_min, snr_max)
        self.pair_rule = JNDPairRule() if pair_rule is None else pair_rule
        check_jnd_settings(segment_seconds, views_per_group, snr_min, snr_max, self.pair_rule)
        self.target_level_db = target_level_db
        self.level_range_db = check_level_range(level_range_db)
        self.peak_limit = peak_limit
        self.seed = seed
        self.epoch = 0

    def noises(self) -> tuple[list, Optional[np.ndarray]]:
        """The training backgrounds sorted by path, and their sampling weights.

        The noise manifest is read at the first call (by :func:`make_jnd_dataset`, in
        the main process, after the data preparation that writes it).
        """
        if self._noises is None:
            manifest = self.noise_manifest
            if isinstance(manifest, (str, Path)):
                manifest = load_data_json(str(manifest), self.replacements or {})
            noises = sorted((manifest or {}).values(), key=lambda e: e["wav"])
            durations = np.array([e["duration"] for e in noises], dtype=np.float64)
            self._noises = noises, durations / durations.sum() if noises else None
        return self._noises

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose mixtures the training items produce."""
        self.epoch = int(epoch)

    def train_views(self, uid: str, wav: str, duration: float, sample_rate: int):
        """Training dynamic item: a fresh random group for this epoch and utterance."""
        noises, weights = self.noises()
        if not noises:
            raise ValueError("JNDViewMaker needs a noise_manifest to make training views")
        rng = np.random.default_rng([self.seed, self.epoch, zlib.crc32(uid.encode())])
        crop = min(self.segment * sample_rate // self.sample_rate, _frames(duration, sample_rate))
        crop_start = int(rng.integers(0, _frames(duration, sample_rate) - crop + 1))
        noise = noises[rng.choice(len(noises), p=weights)]
        noise_frames = _frames(noise["duration"], noise["sample_rate"])
        noise_offset = int(rng.integers(0, noise_frames))
        snrs = self.pair_rule.sample_snrs(rng, self.views_per_group, *self.snr_range)
        levels = self.target_level_db
        if self.level_range_db is not None:  # drawn after the SNRs: the same SNRs either way
            levels = rng.uniform(*self.level_range_db, size=len(snrs))
        return self._mix(
            wav,
            crop_start,
            crop,
            noise["wav"],
            noise_offset,
            noise_frames,
            noise["sample_rate"],
            snrs,
            levels,
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
            self.target_level_db,
        )

    def _mix(
        self, wav, crop_start, crop, noise_wav, noise_offset, noise_frames, noise_sr, snrs, levels
    ):
        """(2, T) speech and noise excerpts, (K, 2) gains of the views, (K,) SNRs."""
        try:
            speech, _ = read_audio(wav, crop_start, crop, target_sr=self.sample_rate)
            noise = _read_looped(
                noise_wav, noise_offset, noise_frames, noise_sr, speech.size, self.sample_rate
            )
            gains = mix_gains(speech, noise, snrs, self.sample_rate, levels, self.peak_limit)
        except (AudioReadError, SilentSignalError) as err:
            return self._failed(f"{wav} (noise {noise_wav}): {err}", len(snrs))
        excerpts = torch.from_numpy(np.stack([speech, noise]))
        gains, snrs = torch.from_numpy(gains), torch.from_numpy(snrs.astype(np.float32))
        return excerpts, gains, snrs, torch.tensor(noise_condition(noise_wav))

    def _failed(self, message: str, k: int):
        logger.warning("JND views replaced by NaN, the batch will be skipped: %s", message)
        nan = math.nan
        return (
            torch.full((2, self.segment), nan),
            torch.full((k, 2), nan),
            torch.full((k,), nan),
            torch.tensor([-1, -1]),
        )


_ENVIRONMENT = re.compile(r"_([A-Za-z]+)\.CH\d+\.[A-Za-z0-9]+$")


def noise_condition(noise_wav: str) -> tuple[int, int]:
    """Ids of a view group's noise condition: (noise recording, environment).

    The recording id is a checksum of the file name; the environment is the ``<ENV>``
    of a CHiME-3 name ``BGD_<date>_<n>_<ENV>.CH<k>.wav`` (BUS, CAF, PED, STR), or the
    recording itself for other names. Ids are non-negative.

    Example
    -------
    >>> a = noise_condition("{chime3_folder}/x/BGD_150204_010_CAF.CH1.wav")
    >>> b = noise_condition("/d/BGD_150211_030_CAF.CH1.wav")
    >>> a[0] != b[0], a[1] == b[1]
    (True, True)
    """
    name = Path(noise_wav).name
    match = _ENVIRONMENT.search(name)
    recording = zlib.crc32(name.encode()) & 0x7FFFFFFF
    environment = zlib.crc32(match.group(1).encode()) & 0x7FFFFFFF if match else recording
    return recording, environment


def mix_views(excerpts: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """Views from excerpts and gains: ``gains[..., k, 0] * speech + gains[..., k, 1] * noise``.

    Arguments
    ---------
    excerpts : torch.Tensor
        ``(2, T)`` speech and noise excerpt, or ``(B, 2, T)`` for B groups.
    gains : torch.Tensor
        ``(K, 2)`` speech and noise gain of each view, or ``(B, K, 2)``.

    Returns
    -------
    torch.Tensor
        ``(K, T)`` views, or ``(B, K, T)``: the mixtures
        :func:`jsqa_sb.jnd_mixing.apply_gains` computes, to float32 rounding.

    Example
    -------
    >>> mix_views(torch.tensor([[1.0, 1.0], [2.0, 2.0]]), torch.tensor([[1.0, 0.5], [0.0, 1.0]]))
    tensor([[2., 2.],
            [2., 2.]])
    """
    gains = gains.to(excerpts.dtype)
    views = gains[..., 0:1] * excerpts[..., 0:1, :]
    return views.addcmul_(gains[..., 1:2], excerpts[..., 1:2, :])  # no second (K, T) buffer


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


#: What the view maker's dynamic items provide per group.
PROVIDES = ["excerpts", "mix_gains", "mix_snrs", "noise_condition"]


def make_jnd_dataset(
    manifest: PathLike,
    replacements: dict,
    view_maker: JNDViewMaker,
    fixed: bool,
    select_n: Optional[int] = None,
) -> DynamicItemDataset:
    """Build the training (``fixed=False``) or validation (``fixed=True``) JND dataset.

    With ``select_n``, only its first ``select_n`` groups (the linear probe's fixed slice).

    Each item provides ``id``, ``excerpts`` (2, T: speech and noise), ``mix_gains``
    (K, 2), ``mix_snrs`` (K,) and ``noise_condition`` (2,: :func:`noise_condition`),
    what :func:`jnd_collate` takes; the dynamic item
    ``views`` (K, T) is there on request (``dataset.set_output_keys``).
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
        dataset.add_dynamic_item(view_maker.valid_views, takes=takes, provides=PROVIDES)
    else:
        view_maker.noises()  # read the noise manifest once, here, not in every loader worker
        takes = ["id", "wav", "duration", "sample_rate"]
        dataset.add_dynamic_item(view_maker.train_views, takes=takes, provides=PROVIDES)
    dataset.add_dynamic_item(mix_views, takes=["excerpts", "mix_gains"], provides="views")
    dataset.set_output_keys(["id", *PROVIDES])
    return dataset if select_n is None else dataset.filtered_sorted(select_n=select_n)


def jnd_datasets(
    manifest_folder: PathLike,
    replacements: dict,
    train_view_maker: JNDViewMaker,
    valid_view_maker: JNDViewMaker,
) -> dict:
    """The recipe's datasets on the prepared manifests: ``{"train": ..., "valid": ...}``.

    Training groups are mixed on the fly by ``train_view_maker`` (new mixtures every
    epoch, reproducible); validation groups are fixed in their manifest.
    """
    folder = Path(manifest_folder)
    return {
        "train": make_jnd_dataset(folder / "jnd_train.json", replacements, train_view_maker, False),
        "valid": make_jnd_dataset(folder / "jnd_valid.json", replacements, valid_view_maker, True),
    }


@dataclass(eq=False)
class JNDBatch:
    """A batch of B view groups of K views each, N = B * K views in all.

    It holds what the views are made of; :attr:`wavs` makes them, on the batch's
    device, the first time it is read.

    Attributes
    ----------
    ids : list of str
        The B utterance ids.
    excerpts : torch.Tensor
        (B, 2, T) speech and noise excerpt of each group, zero-padded on the right.
    gains : torch.Tensor
        (B, K, 2) speech and noise gain of each view.
    lens : torch.Tensor
        (B,) relative length of each group, SpeechBrain's convention.
    snrs : torch.Tensor
        (N,) SNR of each view in dB.
    conditions : torch.Tensor
        (B, 2) noise condition of each group: recording and environment ids
        (:func:`noise_condition`); -1 where unknown.
    """

    ids: list
    excerpts: torch.Tensor
    gains: torch.Tensor
    lens: torch.Tensor
    snrs: torch.Tensor
    conditions: Optional[torch.Tensor] = None
    _views: Optional[torch.Tensor] = field(default=None, init=False, repr=False)

    @property
    def views_per_group(self) -> int:
        """K."""
        return self.gains.shape[1]

    @property
    def num_views(self) -> int:
        """N = B * K, without making the views."""
        return self.gains.shape[0] * self.gains.shape[1]

    @property
    def wavs(self) -> torch.Tensor:
        """(N, T) views, group by group (made once, on the batch's device)."""
        if self._views is None:
            self._views = mix_views(self.excerpts, self.gains).flatten(0, 1)
        return self._views

    @property
    def wav_lens(self) -> torch.Tensor:
        """(N,) relative length of each view."""
        return self.lens.repeat_interleave(self.views_per_group)

    @property
    def groups(self) -> torch.Tensor:
        """(N,) index of each view's group within the batch."""
        batch = torch.arange(len(self.ids), device=self.gains.device)
        return batch.repeat_interleave(self.views_per_group)

    @property
    def noises(self) -> Optional[torch.Tensor]:
        """(N,) id of each view's noise recording; None if the items did not say."""
        return self._per_view(0)

    @property
    def environments(self) -> Optional[torch.Tensor]:
        """(N,) id of each view's noise environment; None if the items did not say."""
        return self._per_view(1)

    def _per_view(self, column: int) -> Optional[torch.Tensor]:
        if self.conditions is None:  # the loss's noise-matching pairs then refuse to run
            return None
        return self.conditions[:, column].repeat_interleave(self.views_per_group)

    def _tensors(self) -> tuple:
        return self.excerpts, self.gains, self.lens, self.snrs, self.conditions

    def to(self, device, non_blocking: bool = False) -> JNDBatch:
        """Move the tensors to ``device`` (views already made are not: the copy makes its own)."""
        return JNDBatch(
            self.ids,
            *(_map(t, lambda t: t.to(device, non_blocking=non_blocking)) for t in self._tensors()),
        )

    def pin_memory(self) -> JNDBatch:
        """Pin the tensors (called by ``DataLoader(pin_memory=True)``)."""
        return JNDBatch(self.ids, *(_map(t, torch.Tensor.pin_memory) for t in self._tensors()))

    def has_nonfinite(self) -> list:
        """Ids of the groups whose views would contain NaN or Inf (views not made)."""
        ok = torch.isfinite(self.excerpts).flatten(1).all(dim=1)
        ok &= torch.isfinite(self.gains).flatten(1).all(dim=1)
        return sorted({self.ids[g] for g in torch.nonzero(~ok).flatten().tolist()})

    def __reduce__(self):
        # Sent by a loader worker, every tensor travels in a shared-memory segment of its
        # own, with a file-descriptor handshake each: the small ones go by value instead.
        # Views made before pickling are not sent.
        small = (_map(t, _to_numpy) for t in self._tensors()[1:])
        return _rebuild_batch, (self.ids, self.excerpts, *small)


def _rebuild_batch(ids, excerpts, gains, lens, snrs, conditions) -> JNDBatch:
    small = (_map(t, torch.as_tensor) for t in (gains, lens, snrs, conditions))
    return JNDBatch(ids, excerpts, *small)


def _map(tensor, function):
    """``function(tensor)``, or None for a missing one (a batch without noise conditions)."""
    return None if tensor is None else function(tensor)


def _to_numpy(tensor: torch.Tensor):
    return tensor.numpy() if tensor.device.type == "cpu" else tensor


def jnd_collate(items: list) -> JNDBatch:
    """Collate dataset items (``id``, ``excerpts``, ``mix_gains``, ``mix_snrs``) into a batch.

    Example
    -------
    >>> items = [
    ...     {"id": "a", "excerpts": torch.ones(2, 5), "mix_gains": torch.ones(3, 2),
    ...      "mix_snrs": torch.zeros(3)},
    ...     {"id": "b", "excerpts": torch.ones(2, 4), "mix_gains": torch.ones(3, 2),
    ...      "mix_snrs": torch.zeros(3)},
    ... ]
    >>> batch = jnd_collate(items)
    >>> tuple(batch.wavs.shape), batch.groups.tolist()
    ((6, 5), [0, 0, 0, 1, 1, 1])
    >>> batch.wavs[3:].tolist()[0], [round(x, 2) for x in batch.wav_lens.tolist()]
    ([2.0, 2.0, 2.0, 2.0, 0.0], [1.0, 1.0, 1.0, 0.8, 0.8, 0.8])
    """
    sizes = {item["mix_gains"].shape[0] for item in items}
    if len(sizes) != 1:
        raise ValueError(f"the groups of a batch must have the same number of views, got {sizes}")
    max_len = max(item["excerpts"].shape[1] for item in items)
    shape = (len(items), 2, max_len)
    if torch.utils.data.get_worker_info() is None:
        excerpts = torch.empty(shape)
    else:
        # In a loader worker, allocate the batch in shared memory directly, as torch's
        # default_collate does, instead of copying it there when it is sent.
        storage = torch.empty(0)._typed_storage()._new_shared(math.prod(shape))
        excerpts = torch.empty(0).new(storage).view(shape)
    for g, item in enumerate(items):
        length = item["excerpts"].shape[1]
        excerpts[g, :, :length] = item["excerpts"]
        excerpts[g, :, length:] = 0.0  # each page is written once: no zero-fill pass
    return JNDBatch(
        ids=[item["id"] for item in items],
        excerpts=excerpts,
        gains=torch.stack([item["mix_gains"] for item in items]),
        lens=torch.tensor([item["excerpts"].shape[1] / max_len for item in items]),
        snrs=torch.cat([item["mix_snrs"] for item in items]),
        conditions=torch.stack([item["noise_condition"] for item in items])
        if all("noise_condition" in item for item in items)
        else None,
    )
