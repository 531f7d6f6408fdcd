"""A checkpointer whose checkpoints appear only once they are complete.

SpeechBrain's :class:`~speechbrain.utils.checkpoints.Checkpointer` writes ``CKPT.yaml``
before the parameter files, so a run killed in between leaves a checkpoint it cannot
resume from. This subclass writes into ``partial-CKPT+...`` and renames the folder to
its ``CKPT+...`` name once every file is written.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

from speechbrain.utils import checkpoints
from speechbrain.utils.distributed import ddp_barrier

#: Prefix of a checkpoint folder being written (not a checkpoint for SpeechBrain).
PARTIAL_PREFIX = "partial-"


class Checkpointer(checkpoints.Checkpointer):
    """SpeechBrain's Checkpointer, with an atomic rename at the end of every save.

    Example
    -------
    >>> import tempfile, torch
    >>> folder = tempfile.mkdtemp()
    >>> ckpt = Checkpointer(folder, {"layer": torch.nn.Linear(2, 2)}).save_checkpoint()
    >>> ckpt.path.name.startswith("CKPT+"), sorted(p.name for p in ckpt.path.iterdir())
    (True, ['CKPT.yaml', 'layer.ckpt'])
    """

    def save_checkpoint(self, *args, **kwargs) -> Optional[checkpoints.Checkpoint]:
        """Save as SpeechBrain does, in a ``partial-`` folder, then publish it by renaming.

        Returns the checkpoint at its final path (``None`` on processes but the main one).
        """
        partial = super().save_checkpoint(*args, **kwargs)
        ddp_barrier()  # every process has written its files
        saved = None
        if partial is not None:
            final = partial.path.with_name(partial.path.name[len(PARTIAL_PREFIX) :])
            os.replace(partial.path, final)
            files = {name: final / Path(path).name for name, path in partial.paramfiles.items()}
            saved = checkpoints.Checkpoint(final, partial.meta, files)
        # Every process then lists the same checkpoints: SpeechBrain's clean-up deletes
        # (one broadcast per deletion) what each process finds, and a process that
        # listed before the rename stalled the others forever under DDP.
        ddp_barrier()
        return saved

    def find_checkpoints(self, importance_key=None, max_key=None, min_key=None, **kwargs):
        """SpeechBrain's search, with a NaN (or missing number) in ``meta`` ranked worst.

        SpeechBrain sorts on the raw value, where one NaN makes the "best" one arbitrary.
        """
        key = max_key or min_key
        if importance_key is None and key is not None:
            sign = 1.0 if max_key else -1.0

            def importance_key(ckpt):
                value = ckpt.meta.get(key)
                if not isinstance(value, (int, float)) or math.isnan(value):
                    return -math.inf
                return sign * value

            # Only checkpoints whose meta has the key, as SpeechBrain's max_key/min_key search.
            predicate = kwargs.get("ckpt_predicate") or (lambda ckpt: True)
            kwargs["ckpt_predicate"] = lambda ckpt: key in ckpt.meta and predicate(ckpt)
            max_key = min_key = None
        return super().find_checkpoints(
            importance_key=importance_key, max_key=max_key, min_key=min_key, **kwargs
        )

    def _new_checkpoint_dirpath(self) -> Path:
        return _partial(super()._new_checkpoint_dirpath())

    def _custom_checkpoint_dirpath(self, name) -> Path:
        return _partial(super()._custom_checkpoint_dirpath(name))


def _partial(path: Path) -> Path:
    return Path(path).with_name(PARTIAL_PREFIX + Path(path).name)
