"""The JND data pipeline: manifest entries -> groups of K noisy views of one excerpt.

Training groups are mixed on the fly from a generator seeded by (seed, epoch,
utterance): a rerun of an epoch gives the same mixtures, a new epoch new ones.
Validation groups are fixed in the manifest. Batches: :mod:`jsqa_sb.data.jnd_batch`::

    views = JNDViewMaker(noise_manifest=..., segment_seconds=3.0, views_per_group=4)
    train = make_jnd_dataset("jnd_train.json", replacements, views, fixed=False)
    loader = DataLoader(train, batch_size=8, collate_fn=jnd_collate)
    views.set_epoch(epoch)  # before iterating each epoch (not with persistent workers)

A file that cannot be read or mixed yields NaN views and a warning naming it; the
training loop skips NaN batches.
"""

from __future__ import annotations

import logging
import math
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from speechbrain.dataio.dataio import load_data_json
from speechbrain.dataio.dataset import DynamicItemDataset

from jsqa_sb.audio import AudioReadError, audio_info, read_audio, resample
from jsqa_sb.common import PathLike
from jsqa_sb.data.jnd_batch import JNDBatch, jnd_collate, mix_views  # noqa: F401
from jsqa_sb.data.jnd_mixing import (
    SilentSignalError,
    check_jnd_settings,
    check_level_range,
    mix_gains,
)
from jsqa_sb.data.pairs import JNDPairRule, JNDSettingsError, finite_number

logger = logging.getLogger(__name__)


class JNDViewMaker:
    """Makes the K views of a view group; the dynamic items of the JND datasets.

    Arguments
    ---------
    noise_manifest : dict or str, optional
        Training backgrounds (``noise_train.json`` entries) or the path of that JSON,
        its placeholders filled from ``replacements``; read by :func:`make_jnd_dataset`.
        Needed for training only.
    segment_seconds : float
        Length of each view (shorter utterances give shorter groups).
    target_level_db : float
        Active level of every view, dBFS (of every validation view, with
        ``level_range_db``).
    level_range_db : (float, float), optional
        ``[low, high]`` dBFS: each training view gets its own active level, uniform in
        this range (NISQA clips reach the model at their own level, not levelled).
    pair_rule : jsqa_sb.data.pairs.JNDPairRule, optional
        Draws the SNRs of each group (default: ``JNDPairRule()``).
    degrader : jsqa_sb.data.degradations.Degrader, optional
        Draws each group's extra degradation family and its K severities; a degraded
        group's views share one SNR, uniform in ``degraded_snr_range`` (dB), so that its
        pairs differ in the degradation only.
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
        degrader=None,
        degraded_snr_range: Sequence[float] = (10.0, 30.0),
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
        self.degrader = degrader
        if degrader is not None and tuple(degrader.specs) != self.pair_rule.degradations:
            raise JNDSettingsError(
                "the pair rule must label the degradations the view maker draws: give it the "
                "same degrader (pair_rule: degradations: !ref <degrader>)"
            )
        low, high = (finite_number("degraded_snr_range", v) for v in degraded_snr_range)
        if low > high:
            raise JNDSettingsError(f"degraded_snr_range must be [low, high] dB, got {low, high}")
        self.degraded_snr_range = (low, high)

    def noises(self) -> tuple[list, Optional[np.ndarray]]:
        """The training backgrounds sorted by path, and their sampling weights (read once)."""
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
        noise_source = (noise["wav"], noise_offset, noise_frames, noise["sample_rate"])
        return self._mix(wav, crop_start, crop, noise_source, *self._degrade(rng, snrs), levels)

    def valid_views(
        self, uid, wav, duration, sample_rate, crop_start, noise_wav, noise_offset, snrs
    ):
        """Validation dynamic item: the group fixed in the manifest (degraded by its id)."""
        crop = min(self.segment * sample_rate // self.sample_rate, _frames(duration, sample_rate))
        try:
            noise_info = audio_info(noise_wav)
        except AudioReadError as err:
            return self._failed(str(err), len(snrs))
        noise_source = (noise_wav, noise_offset, noise_info.frames, noise_info.sample_rate)
        snrs = np.asarray(snrs, dtype=np.float64)
        rng = np.random.default_rng([self.seed, zlib.crc32(uid.encode())])
        degraded = self._degrade(rng, snrs)
        return self._mix(wav, crop_start, crop, noise_source, *degraded, self.target_level_db)

    def _degrade(self, rng: np.random.Generator, snrs: np.ndarray):
        """The group's SNRs and (K, 2) family id and severity of each view's degradation."""
        family, severities = -1, np.zeros(len(snrs))
        if self.degrader is not None:
            family, severities = self.degrader.draw(rng, len(snrs))
            if family >= 0:
                snrs = np.full(len(snrs), rng.uniform(*self.degraded_snr_range))
        return snrs, np.stack([np.full(len(snrs), family), severities], axis=1)

    def _mix(self, wav, crop_start, crop, noise_source, snrs, degradation, levels):
        """(2, T) speech and noise excerpts, (K, 2) gains of the views, (K,) SNRs, ...

        ... the noise condition and the views' (K, 2) degradations. ``noise_source``:
        the noise file, offset, frames and sample rate.
        """
        noise_wav = noise_source[0]
        try:
            speech, _ = read_audio(wav, crop_start, crop, target_sr=self.sample_rate)
            noise = _read_looped(*noise_source, speech.size, self.sample_rate)
            gains = mix_gains(speech, noise, snrs, self.sample_rate, levels, self.peak_limit)
        except (AudioReadError, SilentSignalError) as err:
            return self._failed(f"{wav} (noise {noise_wav}): {err}", len(snrs))
        excerpts = torch.from_numpy(np.stack([speech, noise]))
        gains, snrs = torch.from_numpy(gains), torch.from_numpy(snrs.astype(np.float32))
        condition = torch.tensor(noise_condition(noise_wav))
        return excerpts, gains, snrs, condition, torch.from_numpy(degradation.astype(np.float32))

    def _failed(self, message: str, k: int):
        logger.warning("JND views replaced by NaN, the batch will be skipped: %s", message)
        nans = (torch.full(shape, math.nan) for shape in ((2, self.segment), (k, 2), (k,)))
        return (*nans, torch.tensor([-1, -1]), torch.tensor([[-1.0, 0.0]] * k))


_ENVIRONMENT = re.compile(r"_([A-Za-z]+)\.CH\d+\.[A-Za-z0-9]+$")


def noise_condition(noise_wav: str) -> tuple[int, int]:
    """Non-negative ids of a group's noise condition: (noise recording, environment).

    Checksums of the file name and of the ``<ENV>`` of a CHiME-3 name
    ``BGD_<date>_<n>_<ENV>.CH<k>.wav`` (the recording's for other names).

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


def _frames(seconds: float, sample_rate: int) -> int:
    return max(1, int(round(seconds * sample_rate)))


def _read_looped(
    path: str, offset: int, total: int, sample_rate: int, length: int, target_sr: int
) -> np.ndarray:
    """``length`` samples at ``target_sr`` from ``offset`` of a ``total``-frame file, looped."""
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
    return resample(noise, sample_rate, target_sr)[:length]


#: What the view maker's dynamic items provide per group.
PROVIDES = ["excerpts", "mix_gains", "mix_snrs", "noise_condition", "degradation"]


def make_jnd_dataset(
    manifest: PathLike,
    replacements: dict,
    view_maker: JNDViewMaker,
    fixed: bool,
    select_n: Optional[int] = None,
) -> DynamicItemDataset:
    """The training (``fixed=False``) or validation (``fixed=True``) JND dataset.

    Items provide ``id`` and :data:`PROVIDES`, what :func:`jnd_collate` takes; ``views``
    (K, T) on request (``set_output_keys``). ``select_n``: the first groups only.
    """
    dataset = DynamicItemDataset.from_json(str(manifest), replacements=replacements)
    if fixed:
        takes = "id wav duration sample_rate crop_start noise_wav noise_offset snrs".split()
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
    """The recipe's datasets on the prepared manifests: ``{"train": ..., "valid": ...}``."""
    folder = Path(manifest_folder)
    return {
        "train": make_jnd_dataset(folder / "jnd_train.json", replacements, train_view_maker, False),
        "valid": make_jnd_dataset(folder / "jnd_valid.json", replacements, valid_view_maker, True),
    }
