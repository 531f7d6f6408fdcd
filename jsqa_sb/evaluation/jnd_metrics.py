"""Validation metrics of JND pretraining that a researcher can read.

* :func:`pair_auc`: how well embedding closeness separates the *alike* pairs of the pair
  rule (:mod:`jsqa_sb.data.pairs`) from the *different* ones (1 perfect, 0.5 chance), within
  view groups (does the encoder hear the SNR?) or across them (quality, not content?);
* :func:`linear_probe_spearman`: how linearly readable the SNR is from the embedding;
* :class:`JNDMetricTracker`: collects a validation epoch and reports both AUCs.
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch
from scipy.stats import mannwhitneyu, spearmanr

from jsqa_sb.data.pairs import JNDPairRule

ArrayLike = Union[np.ndarray, torch.Tensor, list]

#: Pairs scored (or drawn) at once.
_CHUNK = 1 << 14
#: Largest view Gram matrix made to score pairs (elements).
_GRAM_ELEMENTS = 1 << 23


def _to_numpy(x: ArrayLike, dtype=np.float64) -> np.ndarray:
    """``x`` (tensor, array or list) as a numpy array of ``dtype``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.double()
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


def jnd_pair_scores(
    embeddings: ArrayLike,
    snrs: ArrayLike,
    groups: ArrayLike,
    pair_rule: Optional[JNDPairRule] = None,
    within_group: Optional[bool] = True,
    normalize: bool = True,
    max_pairs: Optional[int] = 2_000_000,
    seed: int = 0,
    families: Optional[ArrayLike] = None,
    severities: Optional[ArrayLike] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Float64 similarity scores of the alike and of the different pairs of views.

    Unordered pairs labelled by :meth:`JNDPairRule.label_pairs` (from the SNRs, and the
    degradation ``families`` and ``severities`` when given); the score is the cosine
    similarity (``normalize``) or minus the Euclidean distance: higher is closer.
    ``groups``: (N,) group indices (same utterance and noise excerpt); ``within_group``:
    same-group pairs only (``True``), different-group pairs only (``False``), or all.
    ``max_pairs``: at most this many labelled pairs, drawn from ``seed`` when there are
    more (across groups: when N (N - 1) / 2 exceeds it), same-group pairs without
    replacement, others uniformly with replacement; ``None``: all pairs.

    Example
    -------
    >>> emb = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
    >>> sim, diff = jnd_pair_scores(emb, [0.0, 1.0, 20.0], [0, 0, 0])
    >>> len(sim), len(diff)
    (1, 2)
    """
    rule = JNDPairRule() if pair_rule is None else pair_rule
    emb = _to_numpy(embeddings)
    snr = _to_numpy(snrs).ravel()
    grp = _to_numpy(groups, dtype=np.int64).ravel()
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {emb.shape}")
    if not (emb.shape[0] == snr.size == grp.size):
        raise ValueError(
            f"embeddings, snrs and groups must have the same number of views, got "
            f"{emb.shape[0]}, {snr.size} and {grp.size}"
        )
    if normalize:
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    degradation = (
        None if families is None else (_to_numpy(families, np.int64), _to_numpy(severities))
    )
    i, j, alike = labelled_pairs(snr, grp, rule, within_group, max_pairs, seed, degradation)
    if emb.shape[0] ** 2 <= _GRAM_ELEMENTS:  # one matrix product
        dots = (emb @ emb.T)[i, j]
    else:  # (chunk, D) temporaries, not (pairs, D)
        chunks = range(0, i.size, _CHUNK)
        parts = [
            np.einsum("ij,ij->i", emb[i[k : k + _CHUNK]], emb[j[k : k + _CHUNK]]) for k in chunks
        ]
        dots = np.concatenate([np.zeros(0), *parts])
    scores = dots
    if not normalize:
        sq_norms = np.einsum("ij,ij->i", emb, emb)
        scores = -np.sqrt(np.maximum(sq_norms[i] + sq_norms[j] - 2.0 * dots, 0.0))
    return scores[alike], scores[~alike]


def labelled_pairs(
    snr: np.ndarray,
    grp: np.ndarray,
    rule: JNDPairRule,
    within_group: Optional[bool],
    max_pairs: Optional[int],
    seed: int,
    degradation: Optional[tuple[np.ndarray, np.ndarray]] = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Int64 views (i, j) of the pairs :func:`jnd_pair_scores` scores, and which are alike.

    i < j, except for sampled pairs. ``degradation``: the views' families and severities.
    """
    n, rng = snr.size, np.random.default_rng(seed)

    def label(i, j):
        return rule.label_pairs(*[(x[i], x[j]) for x in (snr, *(degradation or ()))])

    if within_group or max_pairs is None or n * (n - 1) // 2 <= max_pairs:
        i, j = _same_group_pairs(grp) if within_group else np.triu_indices(n, 1)
        if within_group is False:
            i, j = i[grp[i] != grp[j]], j[grp[i] != grp[j]]
        alike, different = label(i, j)
        keep = np.flatnonzero(alike | different)
        if max_pairs is not None and keep.size > max_pairs:
            keep = rng.choice(keep, max_pairs, replace=False)
        return i[keep], j[keep], alike[keep]
    # Too many pairs to list: draw random ones until max_pairs of them are labelled
    # (at most 50 x max_pairs draws: fewer pairs when labelled ones are that rare).
    found, total = [], 0
    for _ in range(max(1, -(-50 * max_pairs // _CHUNK))):
        i, j = rng.integers(0, n, size=(2, _CHUNK))
        alike, different = label(i, j)
        keep = (i != j) & (alike | different)
        if within_group is False:
            keep &= grp[i] != grp[j]
        found.append((i[keep], j[keep], alike[keep]))
        total += int(keep.sum())
        if total >= max_pairs:
            break
    return tuple(np.concatenate(parts)[:max_pairs] for parts in zip(*found))


def _same_group_pairs(grp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices (i, j) of all unordered same-group pairs, in O(N * group size)."""
    order = np.argsort(grp, kind="stable")
    sorted_groups = grp[order]
    first, second = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for offset in range(1, len(order)):
        same = sorted_groups[:-offset] == sorted_groups[offset:]
        if not same.any():  # groups are contiguous: no pair further apart either
            break
        first.append(order[:-offset][same])
        second.append(order[offset:][same])
    return np.concatenate(first), np.concatenate(second)


def auc_from_scores(positive: ArrayLike, negative: ArrayLike) -> float:
    """Probability that a positive score exceeds a negative one, ties counting 1/2.

    Mann-Whitney U over ``len(positive) * len(negative)``; NaN when either set is empty
    or a score is NaN.

    Example
    -------
    >>> auc_from_scores([3.0, 2.0], [1.0, 2.0])
    0.875
    """
    pos = _to_numpy(positive).ravel()
    neg = _to_numpy(negative).ravel()
    if pos.size == 0 or neg.size == 0 or np.isnan(pos).any() or np.isnan(neg).any():
        return float("nan")
    # Sorted samples make scipy's stable argsort a merge of two runs: 3x faster.
    u = mannwhitneyu(np.sort(pos), np.sort(neg), method="asymptotic").statistic
    return float(u) / (pos.size * neg.size)


def pair_auc(
    embeddings: ArrayLike,
    snrs: ArrayLike,
    groups: ArrayLike,
    jnd_db: float = 3.0,
    neg_margin_db: Optional[float] = None,
    within_group: Optional[bool] = True,
    normalize: bool = True,
    max_pairs: Optional[int] = 2_000_000,
    seed: int = 0,
    pair_rule: Optional[JNDPairRule] = None,
    families: Optional[ArrayLike] = None,
    severities: Optional[ArrayLike] = None,
) -> float:
    """AUC of embedding closeness for alike (< JND) versus different (>= margin) pairs.

    The probability that an alike pair of :func:`jnd_pair_scores` is closer than a
    different one, ties counting 1/2; ``jnd_db`` and ``neg_margin_db`` make the pair rule
    unless ``pair_rule`` is given. NaN when there are no alike or no different pairs, or
    an embedding is not finite.

    Example
    -------
    >>> snrs = np.array([0.0, 1.0, 10.0, 11.0, 20.0])
    >>> emb = np.stack([np.cos(snrs / 20), np.sin(snrs / 20)], axis=1)
    >>> pair_auc(emb, snrs, np.zeros(5, dtype=int))
    1.0
    """
    rule = JNDPairRule(jnd_db, neg_margin_db) if pair_rule is None else pair_rule
    emb = _to_numpy(embeddings)
    if emb.size and not np.isfinite(emb).all():
        return float("nan")
    similar, different = jnd_pair_scores(
        emb, snrs, groups, rule, within_group, normalize, max_pairs, seed, families, severities
    )
    return auc_from_scores(similar, different)


def linear_probe_spearman(
    train_emb: ArrayLike,
    train_snr: ArrayLike,
    valid_emb: ArrayLike,
    valid_snr: ArrayLike,
    alpha: float = 1.0,
) -> float:
    """Spearman correlation of a ridge-regression SNR probe on held-out embeddings.

    Features standardised on the training set (constant ones only centred), an
    unpenalised intercept, ``w = (X'X + alpha I)^-1 X'(y - mean(y))`` in float64
    (``alpha=0``: minimum-norm least squares). NaN when the predictions or the
    validation SNRs are constant, or an input is not finite.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> snr = rng.uniform(-5, 30, 200)
    >>> emb = np.stack([np.tanh(snr / 10), rng.normal(size=200)], axis=1)
    >>> rho = linear_probe_spearman(emb[:100], snr[:100], emb[100:], snr[100:])
    >>> rho > 0.95
    True
    """
    if alpha < 0:
        raise ValueError(f"alpha must be non-negative, got {alpha}")
    x_tr, x_va = _to_numpy(train_emb), _to_numpy(valid_emb)
    y_tr, y_va = _to_numpy(train_snr).ravel(), _to_numpy(valid_snr).ravel()
    if x_tr.ndim != 2 or x_va.ndim != 2 or x_tr.shape[1] != x_va.shape[1]:
        raise ValueError(
            f"train_emb and valid_emb must be (N, D) and (M, D), got {x_tr.shape} and {x_va.shape}"
        )
    if x_tr.shape[0] != y_tr.size or x_va.shape[0] != y_va.size:
        raise ValueError(
            f"embeddings and SNRs must have the same number of rows, got {x_tr.shape[0]} "
            f"and {y_tr.size} (train), {x_va.shape[0]} and {y_va.size} (valid)"
        )
    if x_tr.shape[0] == 0 or x_va.shape[0] < 2:
        raise ValueError("need at least one training and two validation points")
    if not all(np.isfinite(a).all() for a in (x_tr, x_va, y_tr, y_va)):
        return float("nan")
    mean = x_tr.mean(axis=0)
    std = x_tr.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    x_tr, x_va = (x_tr - mean) / std, (x_va - mean) / std
    y_mean = y_tr.mean()
    if alpha > 0:
        gram = x_tr.T @ x_tr + alpha * np.eye(x_tr.shape[1])
        w = np.linalg.solve(gram, x_tr.T @ (y_tr - y_mean))
    else:
        w = np.linalg.lstsq(x_tr, y_tr - y_mean, rcond=None)[0]
    pred = x_va @ w + y_mean
    if np.ptp(pred) == 0 or np.ptp(y_va) == 0:
        return float("nan")
    return float(spearmanr(pred, y_va)[0])


class JNDMetricTracker:
    """Collects the embeddings of a validation epoch and reports the pair AUCs.

    Each batch's groups are new groups (group 0 of two batches are two groups); the
    other arguments are those of :func:`pair_auc`.

    Example
    -------
    >>> tracker = JNDMetricTracker()
    >>> snrs = torch.tensor([0.0, 1.0, 12.0, 0.5, 20.0, 21.0])
    >>> emb = torch.stack([torch.cos(snrs / 20), torch.sin(snrs / 20)], dim=1)
    >>> tracker.append(emb[:3], snrs[:3], torch.tensor([0, 0, 0]))
    >>> tracker.append(emb[3:], snrs[3:], torch.tensor([0, 0, 0]))
    >>> tracker.summarize()
    {'within_auc': 1.0, 'cross_auc': 1.0}
    """

    def __init__(
        self,
        jnd_db: float = 3.0,
        neg_margin_db: Optional[float] = None,
        max_pairs: Optional[int] = 2_000_000,
        seed: int = 0,
        pair_rule: Optional[JNDPairRule] = None,
    ):
        self.pair_rule = JNDPairRule(jnd_db, neg_margin_db) if pair_rule is None else pair_rule
        self.max_pairs = max_pairs
        self.seed = seed
        self.clear()

    def clear(self) -> None:
        """Forget everything appended so far."""
        self.embeddings: list[torch.Tensor] = []
        self.snrs: list[torch.Tensor] = []
        self.groups: list[torch.Tensor] = []
        self.degradations: list[torch.Tensor] = []
        self._next_group = 0

    def __len__(self) -> int:
        return sum(len(s) for s in self.snrs)

    def append(
        self,
        embeddings: torch.Tensor,
        snrs: torch.Tensor,
        groups: torch.Tensor,
        families: Optional[torch.Tensor] = None,
        severities: Optional[torch.Tensor] = None,
    ) -> None:
        """Add (N, D) embeddings, (N,) SNRs (dB) and group indices (any integers) of a batch.

        With the views' degradation ``families`` (-1: none) and ``severities`` when the
        pair rule has degradations: :meth:`summarize` then also reports each family.
        """
        emb = torch.as_tensor(embeddings).detach().to("cpu", torch.float32)
        snr = torch.as_tensor(snrs).detach().to("cpu", torch.float64).reshape(-1)
        grp = torch.as_tensor(groups).detach().to("cpu").reshape(-1)
        if emb.dim() != 2 or not (emb.shape[0] == snr.numel() == grp.numel()):
            raise ValueError(
                f"expected (N, D) embeddings with (N,) snrs and groups, got shapes "
                f"{tuple(emb.shape)}, {tuple(snr.shape)} and {tuple(grp.shape)}"
            )
        if self.embeddings and emb.shape[1] != self.embeddings[0].shape[1]:
            raise ValueError(
                f"embedding size changed from {self.embeddings[0].shape[1]} to {emb.shape[1]}"
            )
        _, local = torch.unique(grp, return_inverse=True)
        self.embeddings.append(emb)
        self.snrs.append(snr)
        self.groups.append(local.to(torch.long) + self._next_group)
        self._next_group += int(local.max()) + 1 if local.numel() else 0
        if families is not None:
            fam = torch.as_tensor(families).detach().to("cpu", torch.float64).reshape(-1)
            sev = torch.as_tensor(severities).detach().to("cpu", torch.float64).reshape(-1)
            self.degradations.append(torch.stack([fam, sev], dim=1))

    def family_names(self) -> list[str]:
        """The pair rule's degradation families, by family id."""
        return [spec.family for spec in self.pair_rule.degradations]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Embeddings (float32, ``(0, 1)`` when empty), SNRs and unique groups appended."""
        if not self.embeddings:
            return torch.zeros(0, 1), torch.zeros(0, dtype=torch.float64), torch.zeros(0).long()
        return torch.cat(self.embeddings), torch.cat(self.snrs), torch.cat(self.groups)

    def summarize(self, field: Optional[str] = None) -> Union[dict[str, float], float]:
        """``{"within_auc": ..., "cross_auc": ...}`` of everything appended (NaN if undefined).

        With degradations, also ``cross_auc_<family>`` of each family's views, and
        ``cross_auc_noise`` of the views with noise only. ``field``: that entry only.
        """
        emb, snr, grp = self.tensors()
        args = dict(max_pairs=self.max_pairs, seed=self.seed, pair_rule=self.pair_rule)
        if self.pair_rule.degradations and len(self.degradations) == len(self.snrs) > 0:
            fam, sev = torch.cat(self.degradations).T
            fam = fam.long()
            args.update(families=fam, severities=sev)
        stats = {
            "within_auc": pair_auc(emb, snr, grp, within_group=True, **args),
            "cross_auc": pair_auc(emb, snr, grp, within_group=False, **args),
        }
        if "families" in args:  # the cross-group AUC of each family's views (-1: noise only)
            for family, name in [*enumerate(self.family_names()), (-1, "noise")]:
                rows = fam == family
                sub = dict(args, families=fam[rows], severities=sev[rows])
                view = (emb[rows], snr[rows], grp[rows])
                stats[f"cross_auc_{name}"] = pair_auc(*view, within_group=False, **sub)
        return stats if field is None else stats[field]
