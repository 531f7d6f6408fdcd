import doctest
import itertools
import math
import time

import numpy as np
import pytest
import torch
from reference import jnd_pair_masks
from scipy.stats import mannwhitneyu

import jsqa_sb.evaluation.jnd_metrics
from jsqa_sb.evaluation.jnd_metrics import (
    JNDMetricTracker,
    auc_from_scores,
    jnd_pair_scores,
    linear_probe_spearman,
    pair_auc,
)


def test_doctests():
    assert doctest.testmod(jsqa_sb.evaluation.jnd_metrics).failed == 0


def _views(n_groups, k, seed=0, snr_min=-5.0, snr_max=30.0):
    rng = np.random.default_rng(seed)
    snrs = rng.uniform(snr_min, snr_max, size=n_groups * k)
    groups = np.repeat(np.arange(n_groups), k)
    return snrs, groups


def _arc(snrs, phase=0.0):
    """2-D unit embeddings whose distance grows monotonically with |dSNR| (span < pi)."""
    angle = snrs / 20.0 + phase
    return np.stack([np.cos(angle), np.sin(angle)], axis=1)


def _brute_force_auc(emb, snrs, groups, within_group, jnd=3.0, margin=6.0, normalize=True):
    if normalize:
        emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    similar, different = [], []
    for i, j in itertools.combinations(range(len(snrs)), 2):
        same = groups[i] == groups[j]
        if within_group is not None and same != within_group:
            continue
        score = emb[i] @ emb[j] if normalize else -np.linalg.norm(emb[i] - emb[j])
        d = abs(snrs[i] - snrs[j])
        if d < jnd:
            similar.append(score)
        elif d >= margin:
            different.append(score)
    wins = 0.0
    for s in similar:
        for t in different:
            wins += 1.0 if s > t else 0.5 if s == t else 0.0
    return wins / (len(similar) * len(different))


def test_auc_from_scores_matches_mann_whitney():
    rng = np.random.default_rng(1)
    pos = np.round(rng.normal(0.5, 1, 300), 1)  # rounding makes many ties
    neg = np.round(rng.normal(0, 1, 200), 1)
    u = mannwhitneyu(pos, neg, alternative="two-sided").statistic
    assert auc_from_scores(pos, neg) == pytest.approx(u / (300 * 200), abs=1e-12)
    assert auc_from_scores([1.0, 1.0], [1.0]) == 0.5
    assert math.isnan(auc_from_scores([], [1.0]))
    assert math.isnan(auc_from_scores([1.0], []))
    assert math.isnan(auc_from_scores([np.nan], [1.0]))


@pytest.mark.parametrize("within_group", [True, False, None])
def test_monotone_embedding_gives_one(within_group):
    snrs, groups = _views(50, 4)
    auc = pair_auc(_arc(snrs), snrs, groups, within_group=within_group)
    assert auc == 1.0


def test_reversed_ordering_gives_zero():
    # Per group: views at 0 and 1 dB (similar) and 20 and 21 dB (similar), placed on
    # the corners of a square so that the similar pairs are the diagonals (farthest)
    # and every different pair is a side (closest).
    corners = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    n_groups = 20
    snrs = np.tile([0.0, 1.0, 20.0, 21.0], n_groups) + np.repeat(np.arange(n_groups) * 0.01, 4)
    groups = np.repeat(np.arange(n_groups), 4)
    emb = np.tile(corners, (n_groups, 1))
    assert pair_auc(emb, snrs, groups, within_group=True) == 0.0


def test_random_embeddings_give_one_half():
    snrs, groups = _views(500, 4, seed=2)
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(snrs.size, 16))
    assert pair_auc(emb, snrs, groups, within_group=True) == pytest.approx(0.5, abs=0.05)
    assert pair_auc(emb, snrs, groups, within_group=False) == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("within_group", [True, False, None])
def test_matches_brute_force(within_group):
    snrs, groups = _views(8, 5, seed=4)
    emb = np.random.default_rng(5).normal(size=(snrs.size, 3))
    got = pair_auc(emb, snrs, groups, within_group=within_group)
    assert got == pytest.approx(_brute_force_auc(emb, snrs, groups, within_group), abs=1e-12)


@pytest.mark.parametrize("within_group", [True, False])
def test_matches_brute_force_with_ties(within_group):
    # Integer embeddings and raw Euclidean distances: many exact ties.
    snrs, groups = _views(8, 5, seed=6)
    snrs = np.round(snrs)  # SNR differences exactly on the jnd / margin boundaries too
    emb = np.random.default_rng(7).integers(0, 3, size=(snrs.size, 2)).astype(float)
    got = pair_auc(emb, snrs, groups, within_group=within_group, normalize=False)
    expected = _brute_force_auc(emb, snrs, groups, within_group, normalize=False)
    assert got == expected


def test_pairs_selected_match_the_loss_masks():
    snrs, groups = _views(10, 4, seed=8)
    emb = np.random.default_rng(9).normal(size=(snrs.size, 4))
    pos, neg = jnd_pair_masks(torch.tensor(snrs), torch.tensor(groups))
    upper = torch.ones_like(pos).triu(1)
    same = torch.tensor(groups[:, None] == groups[None, :])
    close = torch.tensor(np.abs(snrs[:, None] - snrs[None, :]) < 3.0) & upper
    sim, diff = jnd_pair_scores(emb, snrs, groups, within_group=True)
    assert len(sim) == int((pos & upper).sum())
    assert len(diff) == int((neg & same & upper).sum())
    sim, diff = jnd_pair_scores(emb, snrs, groups, within_group=False)
    assert len(sim) == int((close & ~same).sum())
    assert len(diff) == int((neg & ~same & upper).sum())


def test_within_and_cross_restrictions_select_the_right_pairs():
    # Each group lies on its own arc with a random phase: within a group the distance
    # is monotone in |dSNR| (perfect), across groups it is unrelated to it (chance).
    n_groups, k = 300, 4
    snrs, groups = _views(n_groups, k, seed=10)
    phases = np.random.default_rng(11).uniform(0, 2 * np.pi, n_groups)
    emb = _arc(snrs, phases[groups])
    assert pair_auc(emb, snrs, groups, within_group=True) == 1.0
    assert pair_auc(emb, snrs, groups, within_group=False) == pytest.approx(0.5, abs=0.05)


def test_nan_when_a_class_is_empty():
    groups = np.zeros(4, dtype=int)
    emb = np.random.default_rng(12).normal(size=(4, 3))
    assert math.isnan(pair_auc(emb, [0.0, 1.0, 2.0, 0.5], groups))  # no different pair
    assert math.isnan(pair_auc(emb, [0.0, 10.0, 20.0, 30.0], groups))  # no similar pair
    assert math.isnan(pair_auc(emb, [0.0, 1.0, 10.0, 11.0], groups, within_group=False))
    assert math.isnan(pair_auc(np.zeros((0, 3)), [], []))
    bad = emb.copy()
    bad[0, 0] = np.nan
    assert math.isnan(pair_auc(bad, [0.0, 1.0, 10.0, 11.0], groups))


def test_normalisation_is_applied():
    # A 1-D positive embedding collapses to a single point once L2-normalised (all
    # ties, AUC 1/2) but is perfect as a raw Euclidean distance.
    snrs, groups = _views(20, 4, seed=13)
    emb = (snrs + 10.0)[:, None]
    assert pair_auc(emb, snrs, groups) == 0.5
    assert pair_auc(emb, snrs, groups, normalize=False) == 1.0
    # Scaling the embeddings does not matter with normalisation.
    emb2 = np.random.default_rng(14).normal(size=(snrs.size, 5))
    scales = np.random.default_rng(15).uniform(0.1, 10, size=(snrs.size, 1))
    assert pair_auc(emb2, snrs, groups) == pytest.approx(pair_auc(emb2 * scales, snrs, groups))


def test_torch_inputs_and_validation():
    snrs, groups = _views(10, 4, seed=16)
    emb = np.random.default_rng(17).normal(size=(snrs.size, 4))
    expected = pair_auc(emb, snrs, groups)
    got = pair_auc(torch.tensor(emb, requires_grad=True), torch.tensor(snrs), torch.tensor(groups))
    assert got == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="same number of views"):
        pair_auc(emb, snrs[:-1], groups)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        pair_auc(emb[:, 0], snrs, groups)
    with pytest.raises(ValueError, match="neg_margin_db"):
        pair_auc(emb, snrs, groups, neg_margin_db=1.0)


def test_subsampling_is_deterministic_and_close():
    snrs, groups = _views(200, 4, seed=18)
    emb = _arc(snrs, np.random.default_rng(19).uniform(0, 1.0, 200)[groups])
    full = pair_auc(emb, snrs, groups, within_group=False, max_pairs=None)
    a = pair_auc(emb, snrs, groups, within_group=False, max_pairs=20_000, seed=1)
    b = pair_auc(emb, snrs, groups, within_group=False, max_pairs=20_000, seed=1)
    c = pair_auc(emb, snrs, groups, within_group=False, max_pairs=20_000, seed=2)
    assert a == b
    assert a != c
    assert a == pytest.approx(full, abs=0.02)
    sim, diff = jnd_pair_scores(emb, snrs, groups, within_group=False, max_pairs=20_000)
    assert 18_000 < len(sim) + len(diff) < 22_000


def test_cross_auc_timing_2000_views():
    snrs, groups = _views(500, 4, seed=20)
    emb = np.random.default_rng(21).normal(size=(snrs.size, 64)).astype(np.float32)
    start = time.perf_counter()
    auc = pair_auc(torch.from_numpy(emb), snrs, groups, within_group=False)
    elapsed = time.perf_counter() - start
    assert 0.4 < auc < 0.6
    assert elapsed < 2.0, f"cross-group AUC on 2000 views took {elapsed:.2f} s"


def test_linear_probe_monotone_feature():
    rng = np.random.default_rng(22)
    snr = rng.uniform(-5, 30, 1000)
    emb = np.concatenate(
        [
            np.tanh(snr / 15)[:, None] + 0.01 * rng.normal(size=(1000, 1)),
            rng.normal(size=(1000, 7)),
        ],
        axis=1,
    )
    rho = linear_probe_spearman(emb[:500], snr[:500], emb[500:], snr[500:])
    assert rho > 0.95
    # Standardisation: rescaling features does not change the probe much.
    scaled = emb * np.array([1e4, 1, 1e-3, 1, 1, 1, 1, 1])
    rho2 = linear_probe_spearman(scaled[:500], snr[:500], scaled[500:], snr[500:])
    assert rho2 == pytest.approx(rho, abs=1e-3)
    # alpha = 0 (least squares) and torch inputs work.
    t = torch.from_numpy(emb)
    s = torch.from_numpy(snr)
    assert linear_probe_spearman(t[:500], s[:500], t[500:], s[500:], alpha=0.0) > 0.95


def test_linear_probe_noise_features():
    rng = np.random.default_rng(23)
    snr = rng.uniform(-5, 30, 1000)
    emb = rng.normal(size=(1000, 8))
    rho = linear_probe_spearman(emb[:500], snr[:500], emb[500:], snr[500:])
    assert abs(rho) < 0.2


def test_linear_probe_degenerate_inputs():
    rng = np.random.default_rng(24)
    snr = rng.uniform(-5, 30, 40)
    const = np.ones((40, 3))
    assert math.isnan(linear_probe_spearman(const[:20], snr[:20], const[20:], snr[20:]))
    emb = rng.normal(size=(40, 3))
    assert math.isnan(linear_probe_spearman(emb[:20], snr[:20], emb[20:], np.zeros(20)))
    with pytest.raises(ValueError, match="alpha"):
        linear_probe_spearman(emb[:20], snr[:20], emb[20:], snr[20:], alpha=-1.0)
    with pytest.raises(ValueError, match="same number of rows"):
        linear_probe_spearman(emb[:20], snr[:19], emb[20:], snr[20:])
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        linear_probe_spearman(emb[:20], snr[:20], emb[20:, :2], snr[20:])


def test_tracker_offsets_groups_across_batches():
    # Two batches whose groups are both numbered 0 (and 1), with different phases:
    # within their own group the embedding is perfect, but views of batch 1's group 0
    # and batch 2's group 0 at similar SNRs lie far apart.
    snr_a = np.array([0.0, 1.0, 20.0, 5.0, 6.0, 25.0])
    snr_b = snr_a + 0.5
    g = np.array([0, 0, 0, 1, 1, 1])
    emb_a, emb_b = _arc(snr_a, 0.0), _arc(snr_b, np.pi)
    tracker = JNDMetricTracker()
    tracker.append(torch.tensor(emb_a), torch.tensor(snr_a), torch.tensor(g))
    tracker.append(torch.tensor(emb_b), torch.tensor(snr_b), torch.tensor(g + 7))  # any ids
    assert len(tracker) == 12
    all_emb, all_snr, all_grp = tracker.tensors()
    assert all_grp.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert all_emb.shape == (12, 2) and all_snr.tolist() == list(snr_a) + list(snr_b)
    emb = np.concatenate([emb_a, emb_b])
    snrs = np.concatenate([snr_a, snr_b])
    stats = tracker.summarize()
    assert set(stats) == {"within_auc", "cross_auc"}
    assert stats["within_auc"] == 1.0
    expected_cross = pair_auc(emb, snrs, np.repeat([0, 1, 2, 3], 3), within_group=False)
    assert stats["cross_auc"] == pytest.approx(expected_cross)
    assert tracker.summarize("within_auc") == 1.0
    # Without offsetting, the two group-0s would merge and the within AUC would drop.
    merged = pair_auc(emb, snrs, np.concatenate([g, g]), within_group=True)
    assert merged < 1.0
    tracker.clear()
    assert len(tracker) == 0
    assert [t.shape[0] for t in tracker.tensors()] == [0, 0, 0]
    assert all(math.isnan(v) for v in tracker.summarize().values())


def test_tracker_accepts_training_tensors():
    tracker = JNDMetricTracker(jnd_db=3.0, neg_margin_db=6.0)
    z = torch.randn(8, 4, requires_grad=True).to(torch.bfloat16)
    tracker.append(z, torch.tensor([0.0, 1, 10, 11, 0, 1, 10, 11]), torch.arange(2).repeat(4))
    assert tracker.embeddings[0].dtype == torch.float32
    assert not tracker.embeddings[0].requires_grad
    stats = tracker.summarize()
    assert 0.0 <= stats["within_auc"] <= 1.0
    with pytest.raises(ValueError, match="embedding size"):
        tracker.append(torch.randn(2, 5), torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="expected"):
        tracker.append(torch.randn(2, 4), torch.zeros(3), torch.zeros(2))
