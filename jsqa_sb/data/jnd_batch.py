"""Batches of JND view groups: what a loader worker sends, and the views made from it.

An item carries a group's speech and noise excerpts (2 x T) and the gains of its K views
(K x 2), not the K views: a worker so sends 2 signals per group instead of K through
shared memory, and the views are made on the batch's device when ``batch.wavs`` is read
(then degraded there, by :meth:`JNDBatch.degrade`, when the views carry a degradation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch


def mix_views(excerpts: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """``(K, T)`` views ``gains[k, 0] * speech + gains[k, 1] * noise`` of ``(2, T)`` excerpts.

    With ``(K, 2)`` gains; ``(B, K, T)`` of ``(B, 2, T)`` and ``(B, K, 2)`` for B groups.
    :func:`jsqa_sb.data.jnd_mixing.apply_gains` to float32 rounding.

    Example
    -------
    >>> mix_views(torch.tensor([[1.0, 1.0], [2.0, 2.0]]), torch.tensor([[1.0, 0.5], [0.0, 1.0]]))
    tensor([[2., 2.],
            [2., 2.]])
    """
    gains = gains.to(excerpts.dtype)
    views = gains[..., 0:1] * excerpts[..., 0:1, :]
    return views.addcmul_(gains[..., 1:2], excerpts[..., 1:2, :])  # no second (K, T) buffer


@dataclass(eq=False)
class JNDBatch:
    """A batch of B view groups of K views each, N = B * K views in all.

    It holds what the views are made of; :attr:`wavs` makes them, on the batch's
    device, the first time it is read. ``excerpts``: (B, 2, T) speech and noise,
    zero-padded; ``gains``: (B, K, 2); ``lens``: (B,) relative lengths; ``snrs``: (N,)
    dB; ``conditions``: (B, 2) noise recording and environment ids
    (:func:`jsqa_sb.data.jnd_data.noise_condition`), -1 where unknown; ``degradations``:
    (N, 2) family id (-1: none) and severity of each view's extra degradation.
    """

    ids: list
    excerpts: torch.Tensor
    gains: torch.Tensor
    lens: torch.Tensor
    snrs: torch.Tensor
    conditions: Optional[torch.Tensor] = None
    degradations: Optional[torch.Tensor] = None
    _views: Optional[torch.Tensor] = field(default=None, init=False, repr=False)
    _bad_views: Optional[torch.Tensor] = field(default=None, init=False, repr=False)

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

    @property
    def families(self) -> Optional[torch.Tensor]:
        """(N,) family id of each view's degradation (-1: none); None if the items did not say."""
        return _map(self.degradations, lambda d: d[:, 0].long())

    @property
    def severities(self) -> Optional[torch.Tensor]:
        """(N,) severity of each view's degradation, on its family's scale."""
        return _map(self.degradations, lambda d: d[:, 1])

    def degrade(self, degrader) -> JNDBatch:
        """Make the views and apply ``degrader`` (a ``Degrader``) to them, on their device."""
        if degrader is not None and self.degradations is not None:
            self._views, self._bad_views = degrader.apply(self.wavs, self.families, self.severities)
        return self

    def _per_view(self, column: int) -> Optional[torch.Tensor]:
        # None without conditions: the loss's noise-matching pairs then refuse to run.
        return _map(self.conditions, lambda c: c[:, column].repeat_interleave(self.views_per_group))

    def _tensors(self) -> tuple:
        return self.excerpts, self.gains, self.lens, self.snrs, self.conditions, self.degradations

    def to(self, device, non_blocking: bool = False) -> JNDBatch:
        """The batch on ``device``: itself if it is there, else a copy that makes its own views."""
        moved = [
            _map(t, lambda t: t.to(device, non_blocking=non_blocking)) for t in self._tensors()
        ]
        return self if moved[0] is self.excerpts else JNDBatch(self.ids, *moved)

    def pin_memory(self) -> JNDBatch:
        """Pin the tensors (called by ``DataLoader(pin_memory=True)``)."""
        return JNDBatch(self.ids, *(_map(t, torch.Tensor.pin_memory) for t in self._tensors()))

    def has_nonfinite(self) -> list:
        """Ids of the groups with non-finite inputs, or views :meth:`degrade` left bad.

        Bad views are non-finite or all zero (the degrader's verdict).
        """
        ok = torch.isfinite(self.excerpts).flatten(1).all(dim=1)
        ok &= torch.isfinite(self.gains).flatten(1).all(dim=1)
        if self._bad_views is not None:  # the degrader's verdict, on the batch's device
            ok &= ~self._bad_views.view(len(self.ids), self.views_per_group).any(dim=1)
        return sorted({self.ids[g] for g in torch.nonzero(~ok).flatten().tolist()})

    def __reduce__(self):
        # Sent by a loader worker, every tensor travels in a shared-memory segment of its
        # own, with a file-descriptor handshake each: the small ones go by value instead.
        # Views made before pickling are not sent.
        small = (_map(t, _to_numpy) for t in self._tensors()[1:])
        return _rebuild_batch, (self.ids, self.excerpts, *small)


def _rebuild_batch(ids, excerpts, *small) -> JNDBatch:
    return JNDBatch(ids, excerpts, *(_map(t, torch.as_tensor) for t in small))


def _map(tensor, function):
    """``function(tensor)``, None for None (a batch without noise conditions)."""
    return None if tensor is None else function(tensor)


def _to_numpy(tensor: torch.Tensor):
    return tensor.numpy() if tensor.device.type == "cpu" else tensor


def jnd_collate(items: list) -> JNDBatch:
    """Collate dataset items (``id``, ``excerpts``, ``mix_gains``, ``mix_snrs``).

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
        conditions=_stack(items, "noise_condition"),
        degradations=_stack(items, "degradation", torch.cat),
    )


def _stack(items: list, key: str, join=torch.stack) -> Optional[torch.Tensor]:
    """The items' ``key`` entries joined, or None unless every item has one."""
    return join([item[key] for item in items]) if all(key in item for item in items) else None
