"""The JND pair rule: which two noisy views are alike, which differ, which are ignored.

Views whose SNRs differ by less than ``jnd_db`` are *alike* (positives when the pairing
scheme calls them comparable: :data:`PAIR_SCHEMES`); by at least ``neg_margin_db``,
*different*, whatever their content; in between, ignored. Views that also carry a
degradation family (``degradations``: the families' JND steps, by family id) are alike
when they share the family and every severity is within its JND, and different when
any severity differs by at least its margin; views of two families are different when
their SNRs are, and ignored otherwise. One :class:`JNDPairRule`
from the YAML serves the loss, the view makers, the preparation and the metrics, so
they cannot disagree on a pair (the recipe README explains the choices).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any, Optional, TypeVar

import numpy as np
import torch

from jsqa_sb.errors import JSQAError

#: SNR differences: a numpy array or a torch tensor.
Diffs = TypeVar("Diffs", np.ndarray, torch.Tensor)

#: Which alike pairs are positives: views of one group (same utterance and noise
#: excerpt), of one noise recording, of one noise environment, or any two views.
PAIR_SCHEMES = ("within_group", "same_noise", "same_environment", "snr_only")


class JNDSettingsError(JSQAError, ValueError):
    """A JND setting that cannot make valid view groups or pairs; the message names it."""


def finite_number(name: str, value: Any, unit: str = "dB") -> float:
    """``value`` as a float; JNDSettingsError naming ``name`` unless finite.

    Example
    -------
    >>> finite_number("snr_min", 3)
    3.0
    """
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise JNDSettingsError(f"{name} must be a finite number of {unit}, got {value}")
    return float(value)


def check_group_size(name: str, value: Any) -> None:
    """JNDSettingsError naming ``name`` unless ``value`` is an integer >= 3 (views of a group)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise JNDSettingsError(f"{name} must be an integer, got {value!r}")
    if value < 3:
        raise JNDSettingsError(f"{name} must be at least 3, got {value}")


@dataclass(frozen=True)
class JNDPairRule:
    """The one definition of alike, different and comparable pairs of views.

    ``neg_margin_db`` (``None``: ``2 * jnd_db``) is at least ``jnd_db``, so that no pair
    is both alike and different; ``pairs`` is one of :data:`PAIR_SCHEMES`. Settings that
    are not valid raise :class:`JNDSettingsError` naming them.

    Example
    -------
    >>> rule = JNDPairRule(jnd_db=3.0)
    >>> rule.neg_margin_db
    6.0
    >>> alike, different = rule.label(np.array([0.0, 2.9, 3.0, 6.0]))
    >>> alike.tolist(), different.tolist()
    ([True, True, False, False], [False, False, False, True])
    """

    jnd_db: float = 3.0
    neg_margin_db: Optional[float] = None
    pairs: str = "same_noise"
    degradations: Any = ()

    def __post_init__(self):
        jnd_db = finite_number("jnd_db", self.jnd_db)
        margin = 2.0 * jnd_db if self.neg_margin_db is None else self.neg_margin_db
        margin = finite_number("neg_margin_db", margin)
        if jnd_db <= 0:
            raise JNDSettingsError(f"jnd_db must be positive, got {jnd_db}")
        if margin < jnd_db:
            raise JNDSettingsError(f"neg_margin_db ({margin}) must be >= jnd_db ({jnd_db})")
        if self.pairs not in PAIR_SCHEMES:
            known = ", ".join(PAIR_SCHEMES)
            raise JNDSettingsError(f"unknown pairs scheme {self.pairs!r} (known: {known})")
        object.__setattr__(self, "jnd_db", jnd_db)
        object.__setattr__(self, "neg_margin_db", margin)
        # A Degrader or its specs: anything with the ``jnd`` and ``margin`` of each family id.
        specs = tuple(getattr(self.degradations, "specs", self.degradations))
        steps = [(finite_number("jnd", s.jnd, "units"), s.margin) for s in specs]
        if any(not 0 < jnd <= margin for jnd, margin in steps):
            raise JNDSettingsError(f"every degradation needs 0 < jnd <= margin, got {steps}")
        object.__setattr__(self, "degradations", specs)
        # Index -1 (no degradation): severities always alike, never different.
        object.__setattr__(self, "_steps", np.array([*steps, (math.inf, math.inf)]).T)

    def label(self, diff_db: Diffs) -> tuple[Diffs, Diffs]:
        """Alike (``< jnd_db``) and different (``>= neg_margin_db``) masks of |SNR differences|."""
        return diff_db < self.jnd_db, diff_db >= self.neg_margin_db

    def label_pairs(
        self,
        snrs: tuple[Diffs, Diffs],
        families: Optional[tuple[Diffs, Diffs]] = None,
        severities: Optional[tuple[Diffs, Diffs]] = None,
    ) -> tuple[Diffs, Diffs]:
        """Alike and different masks of pairs of views, from each side's SNR, family, severity.

        Family ids index :attr:`degradations` (-1: none); without ``families``, or a rule
        without degradations, the SNRs alone decide (:meth:`label`).

        Example
        -------
        >>> from types import SimpleNamespace
        >>> rule = JNDPairRule(degradations=[SimpleNamespace(jnd=1.0, margin=2.0)])
        >>> snr, fam, sev = np.array([10.0, 10, 30]), np.array([0, 0, -1]), np.array([0.0, 2.5, 0])
        >>> i, j = np.array([0, 0, 1]), np.array([1, 2, 2])  # pairs (0, 1), (0, 2), (1, 2)
        >>> sides = [(x[i], x[j]) for x in (snr, fam, sev)]
        >>> alike, different = rule.label_pairs(*sides)
        >>> alike.tolist(), different.tolist()  # severities 2.5 apart; other family 20 dB away
        ([False, False, False], [True, True, True])
        """
        alike, different = self.label(abs(snrs[0] - snrs[1]))
        if families is None or not self.degradations:  # every view has noise only
            return alike, different
        same = families[0] == families[1]
        steps = self._steps
        if isinstance(severities[0], torch.Tensor):
            steps = torch.as_tensor(steps, dtype=severities[0].dtype, device=severities[0].device)
        jnd, margin = steps[0][families[0]], steps[1][families[0]]  # same family: same steps
        diff = abs(severities[0] - severities[1])
        return alike & same & (diff < jnd), different | (same & (diff >= margin))

    def keys(
        self,
        groups: torch.Tensor,
        noises: Optional[torch.Tensor] = None,
        environments: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """The (N,) comparability key of each view: only equal keys make positives.

        ``noises`` and ``environments`` (ids of each view's noise recording and
        environment) are needed by the ``same_noise`` and ``same_environment`` schemes.

        Example
        -------
        >>> groups, noises = torch.tensor([0, 0, 1, 1]), torch.tensor([7, 7, 7, 7])
        >>> JNDPairRule(pairs="same_noise").keys(groups, noises).tolist()
        [7, 7, 7, 7]
        >>> JNDPairRule(pairs="snr_only").keys(groups).tolist()
        [0, 0, 0, 0]
        """
        if self.pairs == "within_group":
            return groups
        if self.pairs == "snr_only":
            return torch.zeros_like(groups)
        keys = noises if self.pairs == "same_noise" else environments
        if keys is None:
            raise ValueError(f"the {self.pairs!r} pairs need the noise condition of every view")
        return keys

    def masks(
        self,
        snrs: torch.Tensor,
        groups: torch.Tensor,
        noises: Optional[torch.Tensor] = None,
        environments: Optional[torch.Tensor] = None,
        families: Optional[torch.Tensor] = None,
        severities: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, N) positive (alike and comparable) and negative (different) pair masks.

        Symmetric, with a false diagonal; pairs in neither mask are ignored. The ids are
        those of :meth:`keys`; ``families`` and ``severities``: see :meth:`label_pairs`.

        Example
        -------
        >>> rule = JNDPairRule(pairs="within_group")
        >>> pos, neg = rule.masks(torch.tensor([0.0, 1.0, 10.0]), torch.tensor([0, 0, 0]))
        >>> pos.int().tolist(), neg.int().tolist()
        ([[0, 1, 0], [1, 0, 0], [0, 0, 0]], [[0, 0, 1], [0, 0, 1], [1, 1, 0]])
        """
        snrs = torch.as_tensor(snrs)
        keys = torch.as_tensor(self.keys(groups, noises, environments), device=snrs.device)
        if snrs.dim() != 1 or keys.shape != snrs.shape:
            raise ValueError(
                f"snrs and groups must both be 1-D of the same length, got shapes "
                f"{tuple(snrs.shape)} and {tuple(keys.shape)}"
            )
        snrs = snrs.to(torch.float64)  # exact differences for SNRs on a grid (e.g. 0 and 3 dB)
        columns = [snrs]
        if families is not None:
            columns.append(torch.as_tensor(families, device=snrs.device).long())
            columns.append(torch.as_tensor(severities, device=snrs.device).to(torch.float64))
        alike, different = self.label_pairs(*[(x[:, None], x[None, :]) for x in columns])
        not_self = ~torch.eye(snrs.numel(), dtype=torch.bool, device=snrs.device)
        return alike & (keys[:, None] == keys[None, :]) & not_self, different & not_self

    def check_views(self, views_per_group: int, snr_min: float, snr_max: float) -> None:
        """Refuse view groups that cannot hold an alike and a different pair (naming why).

        Example
        -------
        >>> JNDPairRule().check_views(4, snr_min=0.0, snr_max=10.0)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        jsqa_sb.data.pairs.JNDSettingsError: the SNR range ... is too narrow: it must be wider ...
        """
        snr_min, snr_max = finite_number("snr_min", snr_min), finite_number("snr_max", snr_max)
        check_group_size("views_per_group", views_per_group)
        width = 2 * self.neg_margin_db + self.jnd_db
        if snr_max - snr_min <= width:
            raise JNDSettingsError(
                f"the SNR range [snr_min, snr_max] = [{snr_min}, {snr_max}] dB is too narrow: "
                f"it must be wider than 2 * neg_margin_db + jnd_db = {width} dB so that every "
                "anchor has a negative partner"
            )

    def sample_snrs(
        self, rng: np.random.Generator, num_views: int, snr_min: float, snr_max: float
    ) -> np.ndarray:
        """Draw the K SNRs of one view group: at least one alike and one different pair.

        The anchor is uniform in ``[snr_min, snr_max]``; its partner lies less than
        ``jnd_db`` away; one view is uniform in the part of the range at least
        ``neg_margin_db`` from both; any further views are uniform in the range. The
        order is shuffled.

        Example
        -------
        >>> rule = JNDPairRule()
        >>> snrs = rule.sample_snrs(np.random.default_rng(0), 4, -5.0, 30.0)
        >>> alike, different = rule.label(np.abs(snrs[:, None] - snrs[None, :]))
        >>> bool(alike[np.triu_indices(4, 1)].any() and different.any())
        True
        """
        self.check_views(num_views, snr_min, snr_max)
        # Keep the anchor where the partner fits on one side and a negative on the other.
        anchor = rng.uniform(snr_min, snr_max)
        step = rng.uniform(0.0, self.jnd_db) * 0.999
        partner = anchor + step if anchor + step <= snr_max else anchor - step
        lo, hi = min(anchor, partner), max(anchor, partner)
        below = max(0.0, (lo - self.neg_margin_db) - snr_min)
        above = max(0.0, snr_max - (hi + self.neg_margin_db))
        u = rng.uniform(0.0, below + above)
        negative = snr_min + u if u < below else hi + self.neg_margin_db + (u - below)
        rest = rng.uniform(snr_min, snr_max, size=num_views - 3)
        return rng.permutation(np.concatenate([[anchor, partner, negative], rest]))
