"""JSQA networks: log-mel front end, quality encoder, projection head and MOS head.

The YAML files name the classes here (``!new:jsqa_sb.networks.X``); this module also
holds the one checkpoint loader, :func:`load_checkpoint`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Union

import torch
import torch.nn as nn

from jsqa_sb.errors import JSQAError
from jsqa_sb.networks.encoder import (  # noqa: F401
    OLD_ATTENTION_KEYS,
    AttentionPooling,
    FeatureLobeEncoder,
    JSQAEncoder,
    SegmentCNN,
    upgrade_state_dict,
)
from jsqa_sb.networks.frontend import LogMelFrontEnd, relative_to_samples  # noqa: F401
from jsqa_sb.networks.heads import NISQA_OUTPUTS, MOSHead, ProjectionHead  # noqa: F401


class CheckpointMismatchError(JSQAError, ValueError):
    """A checkpoint that does not fit a module; the message names file and parameters."""


def load_checkpoint(
    module: nn.Module,
    path: Union[str, os.PathLike],
    error: type[Exception] = CheckpointMismatchError,
    what: str = "model",
    load: bool = True,
) -> None:
    """Check that ``path`` holds a state dict that fits ``module``, then load it strictly.

    The file is read with ``torch.load(weights_only=True)`` (no pickled code). ``what``
    names ``module`` in the messages; ``load=False`` only checks. Raises ``error``, with a
    one-line message naming ``path``, if it is missing or a folder, not a mapping of
    tensors, or if parameters are missing, unexpected or of another shape (at most 12
    named).
    """
    if not os.path.isfile(path):
        found = "is not a file: it is a folder" if os.path.isdir(path) else "not found"
        raise error(f"checkpoint {path} {found}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises anything for a file it cannot read
        lines = str(err).strip().splitlines()
        raise error(
            f"refusing to load {path}: not a checkpoint of plain tensors (torch.load with "
            f"weights_only=True), or a truncated one: {type(err).__name__}: "
            f"{lines[0] if lines else ''}"
        ) from err
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        held = f"a {type(state).__name__}"
        if isinstance(state, Mapping):
            odd = [f"{k}: {type(v).__name__}" for k, v in state.items() if not torch.is_tensor(v)]
            held = f"non-tensor values ({', '.join(odd[:3])}{', ...' if len(odd) > 3 else ''})"
        raise error(f"{path} is not a checkpoint of parameters: it holds {held}")
    upgrade_state_dict(module, state)
    expected = module.state_dict()
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if len(problems) > 12:
        problems = problems[:12] + [f"... ({len(problems)} in all)"]
    if problems:
        raise error(f"{path} does not fit the {what}: {'; '.join(problems)}")
    if load:
        module.load_state_dict(state, strict=True)


def check_encoder_checkpoint(path: Union[str, os.PathLike], encoder: nn.Module) -> None:
    """Check that ``path`` fits ``encoder`` before any training (``--pretrained_encoder``)."""
    load_checkpoint(encoder, path, what="encoder of this YAML", load=False)
