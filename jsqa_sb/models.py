"""JSQA networks: log-mel front end, quality encoder, projection head and MOS head.

The default encoder follows NISQA's CNN-SA-AP design (Mittag, Naderi, Chehadi and
Möller, "NISQA: A Deep CNN-Self-Attention Model for Multidimensional Speech Quality
Prediction with Crowdsourced Datasets", Interspeech 2021), scaled to a few hundred
thousand parameters:

1. **log-mel**: 48 mel bands, 20 ms Hann window, 10 ms hop, no centring, dB with a floor
   (:class:`LogMelFrontEnd`);
2. **framewise segmentation**: overlapping patches of ``seg_frames`` frames every
   ``seg_hop`` frames (``Tensor.unfold``, no copy);
3. **CNN**: a small 2-D CNN maps each (n_mels x seg_frames) patch to a ``d_model``
   vector (:class:`SegmentCNN`); it runs on the valid patches of the whole batch at
   once, flattened, in chunks of ``cnn_chunk`` patches at inference;
4. **SA**: pre-norm Transformer layers (``torch.nn.TransformerEncoderLayer``) over the
   sequence of patch vectors, with SpeechBrain's sinusoidal positions and a key padding
   mask;
5. **AP**: attention pooling, a masked softmax over the valid patches
   (:class:`AttentionPooling`), then a linear layer to the embedding.

Nothing a padded sample can reach enters a valid frame, patch, key or pooling weight,
so in eval mode a clip gets the same embedding alone or in a zero-padded batch. The
encoder follows the SpeechBrain lobe contract ``encoder(wavs, wav_lens) -> (B, D)``;
any lobe with that contract can replace it in the YAML files.

:class:`ProjectionHead` (L2-normalised, contrastive pretraining only) and
:class:`MOSHead` (MOS and the NISQA dimensions, in the 1..5 range) sit on the
embedding.

Authors
 * JSQA contributors 2026
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping, Sequence
from typing import Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchaudio
from speechbrain.lobes.models.transformer.Transformer import PositionalEncoding
from torch.nn.utils.fusion import fuse_conv_bn_eval

from jsqa_sb.errors import JSQAError

#: The outputs of :class:`MOSHead` by default: overall MOS and the NISQA dimensions.
NISQA_OUTPUTS = ("mos", "noi", "col", "dis", "loud")


def relative_to_samples(wav_lens: Optional[torch.Tensor], batch: int, num_samples: int):
    """Convert SpeechBrain relative lengths to lengths in samples.

    Arguments
    ---------
    wav_lens : torch.Tensor or None
        Relative lengths in (0, 1], shape (B,); ``None`` means all full length.
    batch : int
        The batch size B.
    num_samples : int
        The padded length T of the batch.

    Returns
    -------
    torch.Tensor
        ``round(wav_lens * T)`` as int64, shape (B,), clamped to [0, T].

    Example
    -------
    >>> relative_to_samples(torch.tensor([1.0, 0.5]), 2, 16000)
    tensor([16000,  8000])
    """
    if wav_lens is None:
        return torch.full((batch,), num_samples, dtype=torch.long)
    lens = torch.round(wav_lens.detach().double() * num_samples).long()
    return lens.clamp(0, num_samples)


class LogMelFrontEnd(nn.Module):
    """Log-mel spectrogram in dB, NISQA style, with no centring and no normalisation.

    Frame ``i`` covers samples ``[i * hop, i * hop + n_fft)``; :meth:`valid_frames`
    counts the frames whose whole window lies inside the true clip, so no padding
    sample reaches a valid frame. The values are ``20 * log10(max(mel, amin))`` of the
    magnitude mel spectrogram (Slaney mel scale and filter normalisation, as librosa
    and NISQA); there is no per-utterance normalisation that could see the padding.
    The computation runs in float32 even under autocast.

    Arguments
    ---------
    sample_rate : int
        Sample rate of the input waveforms.
    n_mels : int
        Number of mel bands.
    win_ms : float
        Window length in milliseconds.
    hop_ms : float
        Hop length in milliseconds.
    n_fft : int, optional
        FFT size, at least the window length (``None``: the window length).
    f_min : float
        Lowest mel filter edge in Hz.
    f_max : float, optional
        Highest mel filter edge in Hz (``None``: ``sample_rate / 2``).
    amin : float
        Floor of the magnitude before the log (1e-4: -80 dB).

    Example
    -------
    >>> frontend = LogMelFrontEnd()
    >>> feats = frontend(torch.randn(2, 16000))
    >>> feats.shape
    torch.Size([2, 99, 48])
    >>> frontend.valid_frames(torch.tensor([1.0, 0.5]), 16000)
    tensor([99, 49])
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 48,
        win_ms: float = 20.0,
        hop_ms: float = 10.0,
        n_fft: Optional[int] = None,
        f_min: float = 0.0,
        f_max: Optional[float] = None,
        amin: float = 1e-4,
    ):
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.n_mels = int(n_mels)
        self.win_length = int(round(sample_rate * win_ms / 1000.0))
        self.hop_length = int(round(sample_rate * hop_ms / 1000.0))
        self.n_fft = int(n_fft) if n_fft is not None else self.win_length
        if self.hop_length < 1 or self.win_length < 1:
            raise ValueError(f"win_ms={win_ms} and hop_ms={hop_ms} must give >= 1 sample")
        if self.n_fft < self.win_length:
            raise ValueError(f"n_fft={self.n_fft} is shorter than the window ({self.win_length})")
        self.amin = float(amin)
        self.melspec = torchaudio.transforms.MelSpectrogram(
            sample_rate=self.sample_rate,
            n_fft=self.n_fft,
            win_length=self.win_length,
            hop_length=self.hop_length,
            f_min=f_min,
            f_max=f_max,
            n_mels=self.n_mels,
            power=1.0,
            center=False,
            norm="slaney",
            mel_scale="slaney",
        )

    def num_frames(self, num_samples: Union[int, torch.Tensor]):
        """Return the number of whole frames in ``num_samples`` samples (0 if too short).

        Arguments
        ---------
        num_samples : int or torch.Tensor
            Lengths in samples.

        Returns
        -------
        int or torch.Tensor
            Frame counts, same type as the input.
        """
        if isinstance(num_samples, torch.Tensor):
            n = torch.div(num_samples - self.n_fft, self.hop_length, rounding_mode="floor") + 1
            return n.clamp(min=0)
        return max(0, (int(num_samples) - self.n_fft) // self.hop_length + 1)

    def valid_frames(self, wav_lens: Optional[torch.Tensor], num_samples: int, batch: int = 1):
        """Return the number of frames per clip that contain no padding.

        Arguments
        ---------
        wav_lens : torch.Tensor or None
            Relative lengths in (0, 1], shape (B,) (``None``: all full length).
        num_samples : int
            Padded length T of the batch.
        batch : int
            Batch size, used when ``wav_lens`` is ``None``.

        Returns
        -------
        torch.Tensor
            Valid frame counts, int64, shape (B,).
        """
        if wav_lens is not None:
            batch = wav_lens.shape[0]
        return self.num_frames(relative_to_samples(wav_lens, batch, num_samples))

    def forward(self, wavs: torch.Tensor) -> torch.Tensor:
        """Compute log-mel features.

        Arguments
        ---------
        wavs : torch.Tensor
            Waveforms, shape (B, T), with T at least one frame (``n_fft`` samples).

        Returns
        -------
        torch.Tensor
            Log-mel features in dB, float32, shape (B, n_frames, n_mels).
        """
        if wavs.shape[-1] < self.n_fft:
            raise ValueError(
                f"input of {wavs.shape[-1]} samples is shorter than one frame ({self.n_fft})"
            )
        with torch.autocast(device_type=wavs.device.type, enabled=False):
            mel = self.melspec(wavs.float())  # (B, n_mels, n_frames)
            feats = 20.0 * torch.log10(mel.clamp(min=self.amin))
        return feats.transpose(-1, -2)


class SegmentCNN(nn.Module):
    """The per-segment 2-D CNN: one (n_mels x seg_frames) patch -> one vector.

    Each block is conv 3x3 (no bias) -> BatchNorm -> ReLU; every block but the last is
    followed by 2x2 max pooling, the last by adaptive average pooling to ``pool_out``,
    then a linear layer maps the flattened map to ``output_size``. Patches are
    independent (BatchNorm in eval mode uses its running statistics), so feeding the
    valid patches only, in any chunking, gives the same result.

    The maps are kept channels-last, which oneDNN convolves and pools several times
    faster than NCHW with so few channels. For serving, :meth:`JSQAEncoder.for_inference`
    folds each BatchNorm into its convolution (same function, about 2.5x faster on CPU).

    Arguments
    ---------
    n_mels : int
        Height of a patch.
    seg_frames : int
        Width of a patch.
    channels : sequence of int, or int
        Output channels of the conv blocks; an int ``c`` means ``(c, c, 2 * c)``.
    pool_out : tuple of int
        Output (height, width) of the final adaptive pooling.
    output_size : int
        Size of the output vector.
    dropout : float
        Dropout before the final linear layer.

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

    Arguments
    ---------
    input_size : int
        Feature size.

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

    ``wavs (B, T), wav_lens (B,) -> embeddings (B, emb_dim)``. The pipeline is log-mel
    (:class:`LogMelFrontEnd`) -> overlapping patches of ``seg_frames`` frames every
    ``seg_hop`` frames -> :class:`SegmentCNN` on every valid patch of the batch ->
    ``att_layers`` pre-norm ``torch.nn.TransformerEncoderLayer`` -> masked
    :class:`AttentionPooling` -> linear to ``emb_dim``.

    A frame is valid if its whole window lies inside the clip, a patch if all its
    frames are valid; trailing frames that do not fill a whole patch are not used.
    Only valid patches go through the CNN, and the attention and the pooling are
    masked, so in eval mode a clip's embedding does not depend on the padding or on
    the other clips of the batch. In training mode, BatchNorm statistics come from the
    valid patches of the whole batch.

    Every clip needs at least :attr:`min_samples` samples
    (``n_fft + (seg_frames - 1) * hop``, 2560 samples = 0.16 s with the defaults);
    a shorter clip raises ``ValueError``.

    Arguments
    ---------
    sample_rate : int
        Sample rate of the input.
    n_mels : int
        Mel bands.
    win_ms : float
        Analysis window, ms.
    hop_ms : float
        Frame hop, ms.
    n_fft : int, optional
        FFT size (``None``: the window length).
    seg_frames : int
        Frames per patch.
    seg_hop : int
        Frames between the starts of consecutive patches.
    cnn_channels : sequence of int, or int
        Channels of the CNN blocks; an int ``c`` means ``(c, c, 2 * c)`` (16: the default).
    cnn_pool_out : tuple of int
        (height, width) of the CNN's final adaptive pooling.
    d_model : int
        Size of the patch vectors and of the attention layers.
    att_layers : int
        Number of self-attention layers (0: none).
    att_heads : int
        Attention heads.
    att_ffn : int, optional
        Hidden size of the attention layers' feed-forward part (``None``:
        ``8 * d_model``, 512 with the defaults).
    dropout : float
        Dropout in the CNN's output and in the attention layers.
    pos_encoding : bool
        Add sinusoidal positions to the patch vectors (SpeechBrain's
        ``PositionalEncoding``; ``d_model`` must be even).
    emb_dim : int
        Size of the output embedding.
    cnn_chunk : int
        Patches per CNN call at inference (eval mode); training runs all of them at
        once, so that BatchNorm sees the whole batch.
    feature_offset_db, feature_scale_db : float
        Fixed standardisation of the log-mel dB values, ``(x - offset) / scale``
        (defaults: mean and spread of -26 dBFS speech in noise). Data-independent, so
        padding cannot leak in, and it keeps an untrained network (BatchNorm running
        statistics at 0 and 1) in a sensible range.

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
        self.attention = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d_model,
                att_heads,
                att_ffn or 8 * d_model,
                dropout,
                batch_first=True,
                norm_first=True,
            )
            for _ in range(att_layers)
        )
        self.norm = nn.LayerNorm(d_model) if att_layers > 0 else nn.Identity()
        self.pooling = AttentionPooling(d_model)
        self.output = nn.Linear(d_model, emb_dim)
        # Checkpoints written before the layers above were torch's load too.
        self.register_load_state_dict_pre_hook(upgrade_state_dict)

    def for_inference(self) -> JSQAEncoder:
        """A copy in eval mode with each BatchNorm folded into its convolution.

        The same function, about 2.5x faster on CPU; :class:`jsqa_sb.inference.JSQA`
        scores with it. The copy cannot be trained or saved as an encoder checkpoint.

        Returns
        -------
        JSQAEncoder
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
        """Return the number of patches per clip that contain no padding.

        Arguments
        ---------
        wav_lens : torch.Tensor or None
            Relative lengths, shape (B,) (``None``: all full length).
        num_samples : int
            Padded length T of the batch.
        batch : int
            Batch size, used when ``wav_lens`` is ``None``.

        Returns
        -------
        torch.Tensor
            int64, shape (B,), 0 for clips shorter than :attr:`min_samples`.
        """
        frames = self.frontend.valid_frames(wav_lens, num_samples, batch)
        n = torch.div(frames - self.seg_frames, self.seg_hop, rounding_mode="floor") + 1
        return n.clamp(min=0)

    def _check_lengths(self, wavs: torch.Tensor, wav_lens: Optional[torch.Tensor]):
        if wavs.dim() != 2:
            raise ValueError(f"expected waveforms of shape (batch, time), got {tuple(wavs.shape)}")
        if wav_lens is not None and wav_lens.shape != (wavs.shape[0],):
            raise ValueError(
                f"wav_lens of shape {tuple(wav_lens.shape)} does not match a batch of "
                f"{wavs.shape[0]}"
            )
        lens = relative_to_samples(
            None if wav_lens is None else wav_lens.cpu(), wavs.shape[0], wavs.shape[1]
        )
        short = (lens < self.min_samples).nonzero().flatten().tolist()
        if short:
            i = short[0]
            raise ValueError(
                f"{len(short)} clip(s) shorter than the minimum of {self.min_seconds:.3f} s "
                f"({self.min_samples} samples at {self.sample_rate} Hz) that JSQAEncoder "
                f"needs; e.g. clip {i} has {int(lens[i])} samples "
                f"({int(lens[i]) / self.sample_rate:.3f} s)"
            )

    def forward(self, wavs: torch.Tensor, wav_lens: Optional[torch.Tensor] = None):
        """Encode a batch of waveforms.

        Arguments
        ---------
        wavs : torch.Tensor
            Waveforms at ``sample_rate``, shape (B, T), zero-padded or not.
        wav_lens : torch.Tensor, optional
            Relative lengths in (0, 1], shape (B,) (``None``: all full length).

        Returns
        -------
        torch.Tensor
            Embeddings, shape (B, emb_dim).

        Raises
        ------
        ValueError
            If a clip is shorter than :attr:`min_samples`.
        """
        self._check_lengths(wavs, wav_lens)
        batch, num_samples = wavs.shape
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


class ProjectionHead(nn.Module):
    """Contrastive projection head: Linear -> ReLU -> Linear -> L2 normalisation.

    Used during contrastive pretraining only, then dropped.

    Arguments
    ---------
    input_size : int
        Size of the encoder embedding.
    hidden_size : int
        Hidden layer size.
    output_size : int
        Size of the projected (unit-norm) vector.

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
    """MOS head: an MLP on the pooled embedding, outputs squashed into [1, 5].

    ``1 + 4 * sigmoid(mlp(x))``, computed in float32.

    Arguments
    ---------
    input_size : int
        Size of the encoder embedding.
    hidden_size : int
        Hidden layer size.
    dropout : float
        Dropout after the hidden layer.
    outputs : sequence of str or int
        Names of the outputs (default MOS and the NISQA dimensions) or their number.

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
            names = tuple(f"out{i}" for i in range(outputs))
            if outputs == 1:
                names = ("mos",)
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

    @property
    def num_outputs(self) -> int:
        """Number of outputs."""
        return len(self.output_names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (B, input_size) embeddings to (B, n_outputs) scores in [1, 5]."""
        return 1.0 + 4.0 * torch.sigmoid(self.mlp(x).float())


class FeatureLobeEncoder(nn.Module):
    """Any SpeechBrain feature extractor + embedding lobe as a JSQA encoder.

    Gives a lobe that takes features and relative lengths (e.g. ECAPA-TDNN) the
    encoder contract of :class:`JSQAEncoder`: ``(wavs, wav_lens) -> (B, D)``.

    Arguments
    ---------
    features : torch.nn.Module
        Waveforms (B, T) -> features (B, frames, F), e.g. ``speechbrain.lobes.features.Fbank``.
    model : torch.nn.Module
        ``model(features, wav_lens)`` -> (B, D) or (B, 1, D).
    normalize : torch.nn.Module, optional
        ``normalize(features, wav_lens)``, e.g. sentence-level ``InputNormalization``.
    embedding_dim : int, optional
        Size of the embedding, for the heads that follow.

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

    The one checkpoint loader: the fine-tuning check, model loading and the label
    budget's check all go through it. The file is read with
    ``torch.load(weights_only=True)`` (plain tensors, no pickled code).

    Arguments
    ---------
    module : torch.nn.Module
        The module the checkpoint is for.
    path : str or os.PathLike
        The checkpoint file.
    error : type
        The exception class raised, with a one-line message naming ``path``.
    what : str
        What ``module`` is, for the messages ("does not fit the <what>").
    load : bool
        Load the checkpoint into ``module`` (False: check only).

    Raises
    ------
    error
        If ``path`` is missing or a folder, not a checkpoint of plain tensors (pickled
        code, a truncated file, anything but a mapping of tensors), or if parameters are
        missing, unexpected or of another shape (all named, at most 12).
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
    """Check, before any training, that ``path`` holds a state dict that fits ``encoder``.

    Arguments
    ---------
    path : str or os.PathLike
        The encoder checkpoint (e.g. ``--pretrained_encoder``).
    encoder : torch.nn.Module
        The encoder the YAML builds.

    Raises
    ------
    CheckpointMismatchError
        As :func:`load_checkpoint` (which this is, without loading).
    """
    load_checkpoint(encoder, path, what="encoder of this YAML", load=False)


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

    The one place that knows the old names: :func:`load_checkpoint` calls it, and every
    :class:`JSQAEncoder` has it as its ``load_state_dict`` pre-hook (hence the
    signature), so SpeechBrain's Pretrainer and Checkpointer load old checkpoints too.

    Arguments
    ---------
    module : torch.nn.Module
        The module ``state`` is for; the keys of each ``JSQAEncoder`` in it are renamed.
    state : dict
        A state dict.
    prefix : str
        The prefix of ``module``'s keys in ``state``.
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
