"""The JSQA quality encoder, NISQA's CNN-SA-AP design scaled to a few 100k parameters.

Mittag, Naderi, Chehadi and Möller, "NISQA: A Deep CNN-Self-Attention Model for
Multidimensional Speech Quality Prediction with Crowdsourced Datasets", Interspeech
2021. Also :class:`FeatureLobeEncoder`, which gives any SpeechBrain feature lobe the
same ``encoder(wavs, wav_lens) -> (B, D)`` contract.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from speechbrain.lobes.models.transformer.Transformer import PositionalEncoding
from torch.nn.utils.fusion import fuse_conv_bn_eval

from jsqa_sb.networks.frontend import LogMelFrontEnd, relative_to_samples


class SegmentCNN(nn.Module):
    """The per-segment 2-D CNN: one (n_mels x seg_frames) patch -> one vector.

    Blocks of conv 3x3 (no bias) -> BatchNorm -> ReLU, each followed by 2x2 max pooling
    but the last, by adaptive average pooling to ``pool_out``; then dropout and a linear
    layer to ``output_size``. ``channels``: output channels of the blocks (an int ``c``
    means ``(c, c, 2 * c)``). In eval mode patches are independent, so any chunking gives
    the same result. The maps are channels-last (faster on CPU with so few channels).

    Example
    -------
    >>> cnn = SegmentCNN(n_mels=48, seg_frames=15)
    >>> cnn(torch.randn(10, 1, 48, 15)).shape
    torch.Size([10, 64])
    """

    def __init__(
        self,
        n_mels: int = 48,
        seg_frames: int = 15,
        channels: Union[Sequence[int], int] = (16, 16, 32),
        pool_out: Sequence[int] = (6, 3),
        output_size: int = 64,
        dropout: float = 0.0,
    ):
        super().__init__()
        if isinstance(channels, int):
            channels = (channels, channels, 2 * channels)
        channels = [int(c) for c in channels]
        if not channels:
            raise ValueError("SegmentCNN needs at least one conv block")
        if 2 ** (len(channels) - 1) > min(n_mels, seg_frames):
            raise ValueError(f"patch {n_mels}x{seg_frames} is too small for {len(channels)} blocks")
        in_channels = [1] + channels[:-1]
        self.convs = nn.ModuleList(
            nn.Conv2d(i, o, kernel_size=3, padding=1, bias=False)
            for i, o in zip(in_channels, channels)
        )
        self.norms = nn.ModuleList(nn.BatchNorm2d(o) for o in channels)
        self.pools = nn.ModuleList(nn.MaxPool2d(2) for _ in channels[:-1])
        self.pools.append(nn.AdaptiveAvgPool2d(tuple(int(p) for p in pool_out)))
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(channels[-1] * int(pool_out[0]) * int(pool_out[1]), output_size)
        # ``Module.to`` and ``load_state_dict`` keep this layout.
        self.convs.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map patches (S, 1, n_mels, seg_frames) to vectors (S, output_size)."""
        x = x.contiguous(memory_format=torch.channels_last)
        for conv, norm, pool in zip(self.convs, self.norms, self.pools):
            x = pool(F.relu(norm(conv(x)), inplace=True))
        return self.linear(self.dropout(x.flatten(1)))


class AttentionPooling(nn.Module):
    """Attention pooling: a linear score per position, softmax over valid positions.

    Example
    -------
    >>> pool = AttentionPooling(64)
    >>> mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    >>> pool(torch.randn(2, 5, 64), mask).shape
    torch.Size([2, 64])
    """

    def __init__(self, input_size: int = 64):
        super().__init__()
        # No bias: the softmax is invariant to it.
        self.score = nn.Linear(input_size, 1, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pool (B, L, D) with a boolean (B, L) validity mask into (B, D)."""
        scores = self.score(x).squeeze(-1).float().masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=1).to(x.dtype)
        x = x.masked_fill(~mask.unsqueeze(-1), 0.0)
        return torch.bmm(weights.unsqueeze(1), x).squeeze(1)


class JSQAEncoder(nn.Module):
    """The default JSQA quality encoder, NISQA CNN-SA-AP style (Mittag et al. 2021).

    ``wavs (B, T), wav_lens (B,) -> (B, emb_dim)``: log-mel (:class:`LogMelFrontEnd`) ->
    patches of ``seg_frames`` frames every ``seg_hop`` frames -> :class:`SegmentCNN` on
    every valid patch -> ``att_layers`` pre-norm ``torch.nn.TransformerEncoderLayer``
    with sinusoidal positions (``pos_encoding``) and a key padding mask -> masked
    :class:`AttentionPooling` -> linear.

    A patch is valid when all its frames lie inside the clip. Only valid patches go
    through the CNN, and the attention and the pooling are masked, so in eval mode a
    clip's embedding depends neither on the padding nor on the other clips of the batch.
    A clip shorter than :attr:`min_samples` (0.16 s by default) raises ``ValueError``.

    Arguments
    ---------
    att_ffn : int, optional
        Hidden size of the attention feed-forward part (``None``: ``8 * d_model``).
    cnn_chunk : int
        Patches per CNN call in eval mode (training runs them all at once).
    feature_offset_db, feature_scale_db : float
        Fixed standardisation of the log-mel dB values, ``(x - offset) / scale``.

    Example
    -------
    >>> encoder = JSQAEncoder()
    >>> wavs = torch.randn(2, 16000)
    >>> encoder(wavs, torch.tensor([1.0, 0.6])).shape
    torch.Size([2, 128])
    >>> encoder.min_samples, encoder.embedding_dim
    (2560, 128)
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 48,
        win_ms: float = 20.0,
        hop_ms: float = 10.0,
        n_fft: Optional[int] = None,
        seg_frames: int = 15,
        seg_hop: int = 4,
        cnn_channels: Union[Sequence[int], int] = (16, 16, 32),
        cnn_pool_out: Sequence[int] = (6, 3),
        d_model: int = 64,
        att_layers: int = 2,
        att_heads: int = 4,
        att_ffn: Optional[int] = None,
        dropout: float = 0.1,
        pos_encoding: bool = True,
        emb_dim: int = 128,
        cnn_chunk: int = 256,
        feature_offset_db: float = -50.0,
        feature_scale_db: float = 15.0,
    ):
        super().__init__()
        if seg_frames < 1 or seg_hop < 1:
            raise ValueError("seg_frames and seg_hop must be positive")
        if cnn_chunk < 1:
            raise ValueError("cnn_chunk must be positive")
        self.frontend = LogMelFrontEnd(sample_rate, n_mels, win_ms, hop_ms, n_fft)
        self.sample_rate = int(sample_rate)
        self.seg_frames = int(seg_frames)
        self.seg_hop = int(seg_hop)
        self.cnn_chunk = int(cnn_chunk)
        self.feature_offset_db = float(feature_offset_db)
        self.feature_scale_db = float(feature_scale_db)
        self.pos_encoding = bool(pos_encoding)
        self.d_model = int(d_model)
        self.embedding_dim = int(emb_dim)
        if att_layers and d_model % att_heads:
            raise ValueError(f"d_model={d_model} is not divisible by att_heads={att_heads}")
        self.cnn = SegmentCNN(n_mels, seg_frames, cnn_channels, cnn_pool_out, d_model, dropout)
        if self.pos_encoding:
            self.positions = PositionalEncoding(d_model)
            # Computed, not learnt: kept out of checkpoints.
            self.positions.register_buffer("pe", self.positions.pe, persistent=False)
        ffn = att_ffn or 8 * d_model
        self.attention = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d_model, att_heads, ffn, dropout, batch_first=True, norm_first=True
            )
            for _ in range(att_layers)
        )
        self.norm = nn.LayerNorm(d_model) if att_layers > 0 else nn.Identity()
        self.pooling = AttentionPooling(d_model)
        self.output = nn.Linear(d_model, emb_dim)
        # Checkpoints written before the layers above were torch's load too.
        self.register_load_state_dict_pre_hook(upgrade_state_dict)

    def for_inference(self) -> JSQAEncoder:
        """A faster copy in eval mode, each BatchNorm folded into its convolution.

        The copy cannot be trained or saved as an encoder checkpoint.
        """
        fused = copy.deepcopy(self).eval()
        cnn = fused.cnn
        for i, (conv, norm) in enumerate(zip(cnn.convs, cnn.norms)):
            cnn.convs[i] = fuse_conv_bn_eval(conv, norm).to(memory_format=torch.channels_last)
            cnn.norms[i] = nn.Identity()
        return fused

    @property
    def min_samples(self) -> int:
        """The shortest clip the encoder accepts, in samples (one whole patch)."""
        return self.frontend.n_fft + (self.seg_frames - 1) * self.frontend.hop_length

    @property
    def min_seconds(self) -> float:
        """The shortest clip the encoder accepts, in seconds."""
        return self.min_samples / self.sample_rate

    def valid_segments(self, wav_lens: Optional[torch.Tensor], num_samples: int, batch: int = 1):
        """Patches per clip (int64, (B,)) that contain no padding of the (B, T) batch."""
        frames = self.frontend.valid_frames(wav_lens, num_samples, batch)
        n = torch.div(frames - self.seg_frames, self.seg_hop, rounding_mode="floor") + 1
        return n.clamp(min=0)

    def forward(self, wavs: torch.Tensor, wav_lens: Optional[torch.Tensor] = None):
        """Embed (B, T) waveforms with relative lengths (B,) (``None``: all full) -> (B, D).

        ``ValueError`` if a clip is shorter than :attr:`min_samples`.
        """
        if wavs.dim() != 2:
            raise ValueError(f"expected waveforms of shape (batch, time), got {tuple(wavs.shape)}")
        batch, num_samples = wavs.shape
        if wav_lens is not None and wav_lens.shape != (batch,):
            raise ValueError(
                f"wav_lens of shape {tuple(wav_lens.shape)} does not match a batch of {batch}"
            )
        lens = relative_to_samples(None if wav_lens is None else wav_lens.cpu(), batch, num_samples)
        short = (lens < self.min_samples).nonzero().flatten().tolist()
        if short:
            i = short[0]
            raise ValueError(
                f"{len(short)} clip(s) shorter than the minimum of {self.min_seconds:.3f} s "
                f"({self.min_samples} samples at {self.sample_rate} Hz) that JSQAEncoder "
                f"needs; e.g. clip {i} has {int(lens[i])} samples "
                f"({int(lens[i]) / self.sample_rate:.3f} s)"
            )
        feats = (self.frontend(wavs) - self.feature_offset_db) / self.feature_scale_db  # (B, F, M)
        # (B, n_seg, M, seg_frames): a strided view, no copy.
        patches = feats.unfold(1, self.seg_frames, self.seg_hop)
        n_seg = patches.shape[1]
        n_valid = self.valid_segments(wav_lens, num_samples, batch).to(wavs.device)
        mask = torch.arange(n_seg, device=wavs.device) < n_valid.unsqueeze(1)  # (B, n_seg)
        b_idx, s_idx = mask.nonzero(as_tuple=True)

        chunk = b_idx.numel() if self.training else self.cnn_chunk
        outs = [
            self.cnn(patches[b_idx[i : i + chunk], s_idx[i : i + chunk]].unsqueeze(1))
            for i in range(0, b_idx.numel(), chunk)
        ]
        seg_vecs = torch.cat(outs) if len(outs) > 1 else outs[0]
        x = seg_vecs.new_zeros(batch, n_seg, self.d_model)
        x[b_idx, s_idx] = seg_vecs

        if self.pos_encoding:
            table = self.positions
            if n_seg > table.max_len:  # longer than ~100 s: a table for this call
                table = PositionalEncoding(self.d_model, n_seg).to(x.device)
            x = x + table(x).to(x.dtype)
        for layer in self.attention:
            x = layer(x, src_key_padding_mask=~mask)
        x = self.norm(x)
        return self.output(self.pooling(x, mask))


class FeatureLobeEncoder(nn.Module):
    """Any SpeechBrain feature extractor + embedding lobe as a JSQA encoder.

    ``features``: waveforms -> (B, frames, F) (e.g. ``Fbank``); ``model(feats,
    wav_lens)`` -> (B, D) or (B, 1, D) (e.g. ECAPA-TDNN); ``normalize(feats, wav_lens)``,
    optional (e.g. ``InputNormalization``); ``embedding_dim``, for the heads that follow.

    Example
    -------
    >>> from speechbrain.lobes.features import Fbank
    >>> from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
    >>> ecapa = ECAPA_TDNN(40, channels=[32, 32, 32, 32, 96], lin_neurons=16)
    >>> encoder = FeatureLobeEncoder(Fbank(n_mels=40), ecapa, embedding_dim=16)
    >>> encoder(torch.randn(2, 16000), torch.tensor([1.0, 0.7])).shape
    torch.Size([2, 16])
    """

    def __init__(
        self,
        features: nn.Module,
        model: nn.Module,
        normalize: Optional[nn.Module] = None,
        embedding_dim: Optional[int] = None,
    ):
        super().__init__()
        self.features = features
        self.model = model
        self.normalize = normalize
        self.embedding_dim = embedding_dim

    def forward(self, wavs: torch.Tensor, wav_lens: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Embed a batch of waveforms, ``(B, T)`` with relative lengths ``(B,)``."""
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0], device=wavs.device)
        feats = self.features(wavs)
        if self.normalize is not None:
            feats = self.normalize(feats, wav_lens)
        emb = self.model(feats, wav_lens)
        return emb.reshape(emb.shape[0], -1)


#: Old -> new names of an attention layer's parameters (before torch's layer was used).
OLD_ATTENTION_KEYS = {
    "qkv.weight": "self_attn.in_proj_weight",
    "qkv.bias": "self_attn.in_proj_bias",
    "out.": "self_attn.out_proj.",
    "ffn.0.": "linear1.",
    "ffn.3.": "linear2.",
}


def upgrade_state_dict(module: nn.Module, state: dict, prefix: str = "", *_) -> None:
    """Rename, in place, the keys older versions wrote (:data:`OLD_ATTENTION_KEYS`).

    The keys of each :class:`JSQAEncoder` in ``module`` (under ``prefix``) are renamed;
    also every ``JSQAEncoder``'s ``load_state_dict`` pre-hook (hence the signature).
    """
    old = "|".join(map(re.escape, OLD_ATTENTION_KEYS))
    for name, sub in module.named_modules(prefix=prefix[:-1]):
        if isinstance(sub, JSQAEncoder):
            at = re.escape(f"{name}." if name else "")
            pattern = re.compile(rf"({at}attention\.\d+\.)({old})")
            for key in list(state):
                if match := pattern.match(key):
                    new = match[1] + OLD_ATTENTION_KEYS[match[2]] + key[match.end() :]
                    state[new] = state.pop(key)
