"""One more degradation of pretraining views, besides the noise: a family and a severity.

Each family of :data:`FAMILIES` has a severity on a documented scale, larger = worse and
0 = least degraded, a valid range (hard limits) and defaults: a range to draw from, a
JND step and a margin (``2 * jnd``). A :class:`DegradationSpec` (one YAML entry) labels
and draws severities with the SNR pair rule (:class:`jsqa_sb.data.pairs.JNDPairRule`) on the
severity axis; a :class:`Degrader` applies them to a batch of views, batched and on the
views' device (after :func:`jsqa_sb.data.jnd_batch.mix_views`, on the GPU too).

=========== ================================================== ======= ======== =====
family      severity (larger = worse)                          valid   default  jnd
=========== ================================================== ======= ======== =====
band_limit  octaves of the brick-wall cut-off below 8 kHz      0 - 5   0 - 3    0.5
clipping    clipping threshold in dB below the view's peak      0 - 40  0 - 24   4
packet_loss percent of 20 ms packets zeroed (no concealment)   0 - 50  0 - 25   4
mu_law      bits removed from 8-bit mu-law at 8 kHz (G.711: 0) 0 - 6   0 - 6    1
reverb      log2(RT60 / 0.1 s) of a synthetic room response    0 - 5   0 - 3    0.07
=========== ================================================== ======= ======== =====

The JND of reverb is the 5 % of RT60 of ISO 3382-1; band_limit's is a choice; the others
are calibrated by ``recipes/JSQA/calibrate_jnd_steps.py``. Each default range is wider
than ``5 * jnd``, as a group's alike and different pairs need.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
import torchaudio.functional as AF

from jsqa_sb.data.pairs import (
    Diffs,
    JNDPairRule,
    JNDSettingsError,
    check_group_size,
    finite_number,
)


def band_limit(wavs: torch.Tensor, severities: torch.Tensor, sample_rate: int, generator=None):
    """Brick-wall low-pass at ``8000 * 2 ** -severity`` Hz, one cut-off per row (rfft mask)."""
    cutoff = 8000.0 * torch.exp2(-severities)
    freqs = torch.fft.rfftfreq(wavs.shape[-1], 1.0 / sample_rate, device=wavs.device)
    spectrum = torch.fft.rfft(wavs, dim=-1) * (freqs[None, :] <= cutoff[:, None])
    return torch.fft.irfft(spectrum, n=wavs.shape[-1], dim=-1)


def clipping(wavs: torch.Tensor, severities: torch.Tensor, sample_rate: int, generator=None):
    """Hard clipping at ``severity`` dB below each row's peak (0: unchanged)."""
    peak = wavs.abs().amax(dim=-1, keepdim=True)
    threshold = peak * 10.0 ** (-severities[:, None] / 20.0)
    return torch.clamp(wavs, -threshold, threshold)


def packet_loss(
    wavs: torch.Tensor,
    severities: torch.Tensor,
    sample_rate: int,
    generator: Optional[torch.Generator] = None,
    burst_packets: int = 1,
    packet_ms: float = 20.0,
):
    """Zero ``severity`` percent of the packets (rounded), in bursts; no concealment.

    The row is cut into slots of ``burst_packets`` packets of ``packet_ms``; the slots
    with the lowest random scores are lost. With one generator state, a higher rate
    loses a superset of the packets a lower one loses.
    """
    rows, length = wavs.shape
    slot = max(1, round(sample_rate * packet_ms / 1000.0)) * int(burst_packets)
    slots = -(-length // slot)
    lost = torch.round(severities / 100.0 * slots)
    scores = torch.rand(rows, slots, generator=generator, device=wavs.device)
    ranks = scores.argsort(dim=1).argsort(dim=1)
    keep = (ranks >= lost[:, None]).repeat_interleave(slot, dim=1)[:, :length]
    return wavs * keep


def mu_law_quantise(wavs: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """μ-law encode and decode each row with its own number of ``levels`` (mu = levels - 1).

    torchaudio's ``mu_law_encoding`` and ``mu_law_decoding`` formulas, with a per-row
    level count; the input is clamped to [-1, 1].

    Example
    -------
    >>> x = torch.tensor([[0.0, 0.3, -1.0]])
    >>> mu_law_quantise(x, torch.tensor([3])).tolist()
    [[0.0, 0.0, -1.0]]
    """
    mu = (levels.to(wavs.dtype) - 1.0)[:, None]
    x = wavs.clamp(-1.0, 1.0)
    companded = torch.sign(x) * torch.log1p(mu * x.abs()) / torch.log1p(mu)
    codes = torch.floor((companded + 1.0) / 2.0 * mu + 0.5)
    y = codes / mu * 2.0 - 1.0
    return torch.sign(y) * (torch.exp(y.abs() * torch.log1p(mu)) - 1.0) / mu


def mu_law(wavs: torch.Tensor, severities: torch.Tensor, sample_rate: int, generator=None):
    """8 kHz μ-law with ``round(2 ** (8 - severity))`` levels, resampled back (G.711-like at 0).

    Each view is quantised at full scale (its peak at the top level), so the severity,
    not the view's level, sets the quantisation noise: coarse levels never silence it.
    """
    levels = torch.round(torch.exp2(8.0 - severities))
    narrow = AF.resample(wavs, sample_rate, 8000)
    peak = narrow.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12)
    back = AF.resample(mu_law_quantise(narrow / peak, levels) * peak, 8000, sample_rate)
    return back[..., : wavs.shape[-1]]  # the round trip is never shorter


def reverb(
    wavs: torch.Tensor,
    severities: torch.Tensor,
    sample_rate: int,
    generator: Optional[torch.Generator] = None,
    drr_db: float = 0.0,
):
    """Convolution with a synthetic RIR of RT60 ``0.1 * 2 ** severity`` s.

    The RIR is a direct path and a tail of Gaussian noise decaying by 60 dB in RT60,
    whose energy gives a direct-to-reverberant ratio of ``drr_db`` at RT60 = 0.5 s, 3 dB
    less per doubling of RT60 (a diffuse field's energy grows with RT60); it is scaled
    to unit energy, so the level stays about the same. The output is cut to the input's
    length (causal, aligned on the direct path).
    """
    rows, length = wavs.shape
    rt60 = 0.1 * torch.exp2(severities.to(torch.float64))
    taps = max(2, math.ceil(float(rt60.max()) * sample_rate))
    t = torch.arange(taps, device=wavs.device, dtype=torch.float64) / sample_rate
    noise = torch.randn(rows, taps, generator=generator, device=wavs.device, dtype=torch.float64)
    tail = noise * torch.exp(-3.0 * math.log(10.0) * t[None, :] / rt60[:, None])
    tail[:, 0] = 0.0
    drr = drr_db - 10.0 * torch.log10(rt60 / 0.5)
    tail *= torch.sqrt(10.0 ** (-drr / 10.0) / tail.square().sum(dim=1))[:, None]
    tail[:, 0] = 1.0
    rir = (tail / tail.norm(dim=1, keepdim=True)).to(wavs.dtype)
    # AF.fftconvolve's, with a power-of-two FFT: 5 times faster than at T + taps - 1.
    n = 1 << (length + taps - 2).bit_length()
    wet = torch.fft.irfft(torch.fft.rfft(wavs, n) * torch.fft.rfft(rir, n), n)
    return wet[:, :length]


@dataclass(frozen=True)
class Family:
    """A degradation family: its function, severity scale, valid range and defaults."""

    function: Callable[..., torch.Tensor]
    unit: str
    scale: str
    valid: tuple[float, float]  # hard limits
    default_range: tuple[float, float]  # drawn from unless the YAML says otherwise
    jnd: float
    settings: Mapping[str, float] = field(default_factory=dict)


_PACKETS = {"burst_packets": 1, "packet_ms": 20.0}  # settings: packet_loss's arguments
_ROOM = {"drr_db": 0.0}

#: Family name -> its description: function, unit, scale, valid and default ranges, jnd.
FAMILIES = {
    "band_limit": Family(band_limit, "octaves", "log2(8000 Hz / cut-off)", (0, 5), (0, 3), 0.5),
    "clipping": Family(clipping, "dB", "threshold below the peak", (0, 40), (0, 24), 4.0),
    "packet_loss": Family(packet_loss, "%", "packets lost", (0, 50), (0, 25), 4.0, _PACKETS),
    "mu_law": Family(mu_law, "bits", "bits removed from 8", (0, 6), (0, 6), 1.0),
    "reverb": Family(reverb, "octaves", "log2(RT60 / 0.1 s)", (0, 5), (0, 3), 0.07, _ROOM),
}


def family_info(name: str) -> Family:
    """The :class:`Family` called ``name``; JNDSettingsError listing the known ones."""
    if not isinstance(name, str) or name not in FAMILIES:
        known = ", ".join(FAMILIES)
        raise JNDSettingsError(f"unknown degradation family {name!r} (known: {known})")
    return FAMILIES[name]


def check_settings(name: str, settings: Optional[Mapping[str, Any]]) -> dict:
    """The family's settings with ``settings`` over them; JNDSettingsError naming a bad one."""
    defaults = family_info(name).settings
    merged = dict(defaults)
    for key, value in (settings or {}).items():
        if key not in defaults:
            known = ", ".join(defaults) or "none"
            raise JNDSettingsError(f"{name} has no setting {key!r} (known: {known})")
        merged[key] = finite_number(f"{name} setting {key}", value, "units")
    if merged.get("packet_ms", 1.0) <= 0:
        raise JNDSettingsError(f"{name}: packet_ms must be positive, got {merged['packet_ms']}")
    burst = merged.get("burst_packets", 1)
    if burst < 1 or not float(burst).is_integer():
        raise JNDSettingsError(f"{name}: burst_packets must be an integer >= 1, got {burst}")
    return merged


def degrade(
    wavs: torch.Tensor,
    family: str,
    severities: Union[torch.Tensor, Sequence[float]],
    sample_rate: int = 16000,
    generator: Optional[torch.Generator] = None,
    **settings: float,
) -> torch.Tensor:
    """The (N, T) views ``wavs`` degraded by ``family`` at their (N,) ``severities``.

    On the device and in the dtype of ``wavs``; ``generator`` (on that device) makes
    the random families (packet loss, reverb) reproducible; ``settings`` override the
    family's (:data:`FAMILIES`). ValueError for a severity outside the valid range.

    Example
    -------
    >>> wavs = torch.tensor([[0.5, -1.0, 0.25, 1.0]])
    >>> degrade(wavs, "clipping", [6.0206]).tolist()
    [[0.5, -0.5, 0.25, 0.5]]
    """
    info, merged = family_info(family), check_settings(family, settings)
    if wavs.dim() != 2 or not wavs.is_floating_point():
        raise ValueError(f"wavs must be (N, T) floats, got {wavs.dtype} {tuple(wavs.shape)}")
    severities = torch.as_tensor(severities, dtype=wavs.dtype, device=wavs.device)
    if severities.shape != wavs.shape[:1]:
        raise ValueError(f"severities must be (N,), got {tuple(severities.shape)}")
    if wavs.shape[0] == 0:
        return wavs.clone()
    low, high = info.valid
    if not bool(((severities >= low) & (severities <= high)).all()):
        raise ValueError(f"{family} severities must lie in [{low}, {high}] {info.unit}")
    return info.function(wavs, severities, sample_rate, generator, **merged)


@dataclass(frozen=True)
class DegradationSpec:
    """One degradation of the YAML list: a family, its severity range, JND and margin.

    Unset values take the family's defaults (:data:`FAMILIES`); ``margin`` defaults to
    ``2 * jnd``. Severities less than ``jnd`` apart are alike, at least ``margin``
    apart different, as SNRs are for :class:`jsqa_sb.data.pairs.JNDPairRule`.

    Example
    -------
    >>> spec = DegradationSpec("clipping", 0.0, 20.0, jnd=2.0)
    >>> spec.margin
    4.0
    >>> [m.tolist() for m in spec.label(np.array([1.0, 3.0, 4.0]))]
    [[True, False, False], [False, False, True]]
    """

    family: str
    severity_min: Optional[float] = None
    severity_max: Optional[float] = None
    jnd: Optional[float] = None
    margin: Optional[float] = None
    settings: Optional[Mapping[str, float]] = None

    def __post_init__(self):
        info = family_info(self.family)
        unit, (valid_lo, valid_hi) = info.unit, info.valid
        lo = info.default_range[0] if self.severity_min is None else self.severity_min
        hi = info.default_range[1] if self.severity_max is None else self.severity_max
        lo, hi = finite_number("severity_min", lo, unit), finite_number("severity_max", hi, unit)
        if not valid_lo <= lo < hi <= valid_hi:
            raise JNDSettingsError(
                f"{self.family}: [severity_min, severity_max] = [{lo}, {hi}] {unit} must be "
                f"increasing and within the valid range [{valid_lo}, {valid_hi}] {unit}"
            )
        jnd = finite_number("jnd", info.jnd if self.jnd is None else self.jnd, unit)
        if jnd <= 0:
            raise JNDSettingsError(f"{self.family}: jnd must be positive, got {jnd}")
        margin = finite_number("margin", 2.0 * jnd if self.margin is None else self.margin, unit)
        if jnd > margin:
            raise JNDSettingsError(f"{self.family}: jnd ({jnd}) must not exceed margin ({margin})")
        try:  # the same width condition as the SNR range's
            JNDPairRule(jnd, margin).check_views(3, lo, hi)
        except JNDSettingsError:
            raise JNDSettingsError(
                f"{self.family}: [severity_min, severity_max] = [{lo}, {hi}] {unit} is too "
                f"narrow: it must be wider than 2 * margin + jnd = {2 * margin + jnd} {unit} "
                "for a group to hold an alike and a different pair"
            ) from None
        settings = check_settings(self.family, self.settings)
        values = dict(severity_min=lo, severity_max=hi, jnd=jnd, margin=margin, settings=settings)
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @property
    def rule(self) -> JNDPairRule:
        """The pair rule on the severity axis (its ``jnd_db`` is this spec's ``jnd``)."""
        return JNDPairRule(jnd_db=self.jnd, neg_margin_db=self.margin, pairs="within_group")

    def label(self, diffs: Diffs) -> tuple[Diffs, Diffs]:
        """Alike (``< jnd``) and different (``>= margin``) masks of |severity differences|."""
        return self.rule.label(diffs)

    def sample(self, rng: np.random.Generator, num_views: int) -> np.ndarray:
        """K severities in the range with at least one alike and one different pair."""
        check_group_size("num_views", num_views)
        return self.rule.sample_snrs(rng, num_views, self.severity_min, self.severity_max)


class Degrader:
    """Applies the degradations of a YAML list to batches of views.

    ``specs``: :class:`DegradationSpec` objects or dicts of their fields; ``p_none``:
    the probability that a view group gets no extra degradation (see :meth:`draw`).

    Example
    -------
    >>> degrader = Degrader([{"family": "clipping"}, {"family": "band_limit"}])
    >>> wavs = torch.tensor([[0.5, -1.0], [0.0, 0.0]])
    >>> out, bad = degrader.apply(wavs, torch.tensor([0, -1]), torch.tensor([6.0206, 0.0]))
    >>> out.tolist(), bad.tolist()
    ([[0.5, -0.5], [0.0, 0.0]], [False, True])
    """

    def __init__(self, specs: Sequence, p_none: float = 0.0, sample_rate: int = 16000):
        self.specs = tuple(_spec(i, spec) for i, spec in enumerate(specs))
        self.p_none = finite_number("p_none", p_none, "probability")
        if not 0.0 <= self.p_none <= 1.0:
            raise JNDSettingsError(f"p_none must be a probability in [0, 1], got {p_none}")
        self.sample_rate = sample_rate

    def draw(self, rng: np.random.Generator, num_views: int) -> tuple[int, np.ndarray]:
        """The family id (-1: none, with probability ``p_none``) and K severities of a group."""
        check_group_size("num_views", num_views)
        if not self.specs or rng.random() < self.p_none:
            return -1, np.zeros(num_views)
        family_id = int(rng.integers(len(self.specs)))
        return family_id, self.specs[family_id].sample(rng, num_views)

    def apply(
        self,
        wavs: torch.Tensor,
        family_ids: torch.Tensor,
        severities: torch.Tensor,
        generator: Optional[torch.Generator] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Degraded (N, T) views and the (N,) mask of bad ones (non-finite or all zero).

        ``family_ids`` (N,) index :attr:`specs`, -1 for no extra degradation.
        """
        family_ids = torch.as_tensor(family_ids, device=wavs.device)
        severities = torch.as_tensor(severities, dtype=wavs.dtype, device=wavs.device)
        if family_ids.shape != wavs.shape[:1]:
            raise ValueError(f"family_ids must be (N,), got {tuple(family_ids.shape)}")
        if bool(((family_ids < -1) | (family_ids >= len(self.specs))).any()):
            raise ValueError(f"family_ids must lie in [-1, {len(self.specs) - 1}]")
        out = wavs.clone()
        for i, spec in enumerate(self.specs):
            rows = torch.nonzero(family_ids == i).flatten()
            if rows.numel():
                args = (spec.family, severities[rows], self.sample_rate, generator)
                out[rows] = degrade(wavs[rows], *args, **spec.settings)
        peak = out.abs().amax(dim=1)  # NaN or inf if any sample is; 0 if all are
        return out, ~torch.isfinite(peak) | (peak == 0)


def _spec(index: int, spec: Union[DegradationSpec, Mapping]) -> DegradationSpec:
    """A list entry as a spec; JNDSettingsError naming the entry if it is not one."""
    if isinstance(spec, DegradationSpec):
        return spec
    if not isinstance(spec, Mapping):
        raise JNDSettingsError(f"degradation {index} must be a mapping, got {spec!r}")
    try:
        return DegradationSpec(**spec)
    except TypeError as err:
        raise JNDSettingsError(f"degradation {index}: {err}") from None
