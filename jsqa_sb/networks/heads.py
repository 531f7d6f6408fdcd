"""The heads on a JSQA embedding: contrastive projection and MOS."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from jsqa_sb.common import NISQA_DIMENSIONS

#: The outputs of :class:`MOSHead` by default: overall MOS and the NISQA dimensions.
NISQA_OUTPUTS = NISQA_DIMENSIONS


class ProjectionHead(nn.Module):
    """Contrastive projection head: Linear -> ReLU -> Linear -> L2 normalisation.

    Used during contrastive pretraining only, then dropped.

    Example
    -------
    >>> head = ProjectionHead(128)
    >>> z = head(torch.randn(4, 128))
    >>> z.shape, bool(torch.allclose(z.norm(dim=1), torch.ones(4)))
    (torch.Size([4, 64]), True)
    """

    def __init__(self, input_size: int = 128, hidden_size: int = 128, output_size: int = 64):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(input_size, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, output_size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project (B, input_size) embeddings to unit-norm (B, output_size) vectors."""
        return F.normalize(self.mlp(x).float(), dim=-1)


class MOSHead(nn.Module):
    """MOS head: an MLP on the pooled embedding, ``1 + 4 * sigmoid(mlp(x))`` in float32.

    ``outputs``: the names of the outputs (default MOS and the NISQA dimensions) or
    their number; ``dropout`` follows the hidden layer.

    Example
    -------
    >>> head = MOSHead(128)
    >>> scores = head(torch.randn(4, 128))
    >>> scores.shape, head.output_names
    (torch.Size([4, 5]), ('mos', 'noi', 'col', 'dis', 'loud'))
    """

    def __init__(
        self,
        input_size: int = 128,
        hidden_size: int = 64,
        dropout: float = 0.1,
        outputs: Union[Sequence[str], int] = NISQA_OUTPUTS,
    ):
        super().__init__()
        if isinstance(outputs, int):
            names = ("mos",) if outputs == 1 else tuple(f"out{i}" for i in range(outputs))
        else:
            names = tuple(str(name) for name in outputs)
        if not names:
            raise ValueError("MOSHead needs at least one output")
        self.output_names = names
        self.mlp = nn.Sequential(
            nn.Linear(input_size, hidden_size),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, len(names)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (B, input_size) embeddings to (B, n_outputs) scores in [1, 5]."""
        return 1.0 + 4.0 * torch.sigmoid(self.mlp(x).float())
