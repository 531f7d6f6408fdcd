import doctest

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference import jnd_pair_masks, pair_keys

import jsqa_sb.networks.losses
from jsqa_sb.networks.losses import JNDContrastiveLoss


def WithinGroupLoss(**options):  # noqa: N802 - the loss of the first version, by name
    return JNDContrastiveLoss(pairs="within_group", **options)


# Two groups of three views; jnd 3 dB, margin 6 dB.
GROUPS = torch.tensor([0, 0, 0, 1, 1, 1])
SNRS = torch.tensor([0.0, 2.0, 10.0, 1.0, 20.0, 4.5])


def test_doctests():
    assert doctest.testmod(jsqa_sb.networks.losses).failed == 0


def test_masks_by_hand():
    pos, neg = jnd_pair_masks(SNRS, GROUPS, jnd_db=3.0, neg_margin_db=6.0)
    # |dSNR| matrix (rows/cols: 0, 2, 10 | 1, 20, 4.5):
    #        0    2   10    1   20  4.5
    #  0     0    2   10    1   20  4.5
    #  2     2    0    8    1   18  2.5
    # 10    10    8    0    9   10  5.5
    #  1     1    1    9    0   19  3.5
    # 20    20   18   10   19    0 15.5
    # 4.5  4.5  2.5  5.5  3.5 15.5    0
    expected_pos = [
        [0, 1, 0, 0, 0, 0],
        [1, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],  # 1 vs 4.5: same group but 3.5 dB >= jnd -> ignored
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
    ]
    expected_neg = [
        [0, 0, 1, 0, 1, 0],  # 0 vs 4.5 (other group, 4.5 < 6): ignored
        [0, 0, 1, 0, 1, 0],
        [1, 1, 0, 1, 1, 0],  # 10 vs 4.5: 5.5 < 6 -> ignored
        [0, 0, 1, 0, 1, 0],
        [1, 1, 1, 1, 0, 1],
        [0, 0, 0, 0, 1, 0],
    ]
    assert pos.dtype == torch.bool and neg.dtype == torch.bool
    assert pos.int().tolist() == expected_pos
    assert neg.int().tolist() == expected_neg


def test_masks_default_margin_and_boundaries():
    # Exactly jnd apart is not positive; exactly margin apart is negative.
    snrs = torch.tensor([0.0, 3.0, 6.0, 2.999])
    groups = torch.tensor([0, 0, 0, 0])
    pos, neg = jnd_pair_masks(snrs, groups, jnd_db=3.0)  # margin 6
    assert not pos[0, 1] and not neg[0, 1]
    assert neg[0, 2] and not pos[0, 2]
    assert pos[0, 3] and pos[1, 3]
    # Margin == jnd: every pair is either positive (same group) or negative.
    pos, neg = jnd_pair_masks(snrs, groups, jnd_db=3.0, neg_margin_db=3.0)
    off_diag = ~torch.eye(4, dtype=torch.bool)
    assert torch.equal(pos | neg, off_diag)


def test_masks_symmetric_disjoint_false_diagonal():
    gen = torch.Generator().manual_seed(0)
    snrs = torch.rand(40, generator=gen) * 35 - 5
    groups = torch.arange(10).repeat_interleave(4)
    pos, neg = jnd_pair_masks(snrs, groups)
    for m in (pos, neg):
        assert torch.equal(m, m.t())
        assert not m.diagonal().any()
    assert not (pos & neg).any()
    # Positives only within a group; negatives across groups exist.
    same = groups[:, None] == groups[None, :]
    assert not (pos & ~same).any()
    assert (neg & ~same).any() and (neg & same).any()


def test_masks_validation():
    with pytest.raises(ValueError, match="neg_margin_db"):
        jnd_pair_masks(SNRS, GROUPS, jnd_db=3.0, neg_margin_db=2.0)
    with pytest.raises(ValueError, match="same length"):
        jnd_pair_masks(SNRS, GROUPS[:4])
    with pytest.raises(ValueError):
        WithinGroupLoss(tau=0.0)
    with pytest.raises(ValueError):
        WithinGroupLoss(jnd_db=3.0, neg_margin_db=1.0)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        WithinGroupLoss()(torch.randn(6), SNRS, GROUPS)
    with pytest.raises(ValueError, match="match z"):
        WithinGroupLoss()(torch.randn(5, 3), SNRS, GROUPS)


def _numpy_loss(z, snrs, groups, tau, jnd, margin):
    """Literal per-anchor SupCon L_out with the JND mask, in float64."""
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    s = z @ z.T
    n = len(snrs)
    losses = []
    for i in range(n):
        P = [
            j
            for j in range(n)
            if j != i and groups[j] == groups[i] and abs(snrs[i] - snrs[j]) < jnd
        ]
        N = [j for j in range(n) if j != i and abs(snrs[i] - snrs[j]) >= margin]
        if not P:
            continue
        A = P + N
        denom = sum(np.exp(s[i, a] / tau) for a in A)
        losses.append(-np.mean([np.log(np.exp(s[i, p] / tau) / denom) for p in P]))
    return float(np.mean(losses)), len(losses)


@pytest.mark.parametrize("tau", [0.05, 0.1, 0.5])
def test_matches_hand_computation(tau):
    rng = np.random.default_rng(1)
    # 4 views: group 0 at 0, 1 dB (positives) and 10 dB; group 1 at 4 dB, which is
    # ignored by the anchors 0 and 1 (other group, < 6 dB) and a negative of view 2.
    snrs = np.array([0.0, 1.0, 10.0, 4.0])
    groups = np.array([0, 0, 0, 1])
    z = rng.normal(size=(4, 5))
    expected, n_anchors = _numpy_loss(z, snrs, groups, tau, 3.0, 6.0)
    loss_fn = WithinGroupLoss(tau=tau)
    got = loss_fn(torch.tensor(z, dtype=torch.float32), torch.tensor(snrs), torch.tensor(groups))
    assert got.item() == pytest.approx(expected, abs=1e-5)
    pos, _ = jnd_pair_masks(torch.tensor(snrs), torch.tensor(groups))
    assert int(pos.any(1).sum()) == n_anchors == 2
    # float64 stays float64 and matches tightly.
    got64 = loss_fn(torch.tensor(z), torch.tensor(snrs), torch.tensor(groups))
    assert got64.dtype == torch.float64
    assert got64.item() == pytest.approx(expected, abs=1e-12)


def test_matches_hand_computation_larger_random():
    rng = np.random.default_rng(2)
    snrs = np.round(rng.uniform(-5, 30, size=24), 1)
    groups = np.repeat(np.arange(6), 4)
    z = rng.normal(size=(24, 8))
    expected, n_anchors = _numpy_loss(z, snrs, groups, 0.1, 3.0, 6.0)
    loss_fn = WithinGroupLoss(tau=0.1)
    got = loss_fn(torch.tensor(z), torch.tensor(snrs), torch.tensor(groups))
    assert got.item() == pytest.approx(expected, abs=1e-10)
    assert (
        int(jnd_pair_masks(torch.tensor(snrs), torch.tensor(groups))[0].any(1).sum()) == n_anchors
    )


def test_ignored_pairs_do_not_matter():
    # View 3 (group 1, 4 dB) has no positive (so it is no anchor) and is ignored by
    # every other view (other group, less than 6 dB away): it cannot change the loss.
    snrs = torch.tensor([0.0, 1.0, 9.9, 4.0])
    groups = torch.tensor([0, 0, 0, 1])
    pos, neg = jnd_pair_masks(snrs, groups)
    assert not (pos[:, 3] | neg[:, 3]).any()
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(4, 6, generator=gen)
    loss_fn = WithinGroupLoss()
    base = loss_fn(z, snrs, groups)
    for _ in range(5):
        z2 = z.clone()
        z2[3] = torch.randn(6, generator=gen) * 10
        assert loss_fn(z2, snrs, groups).item() == pytest.approx(base.item(), abs=1e-6)
    # Whereas moving a negative (view 2) does change it.
    z3 = z.clone()
    z3[2] = z[0]
    assert abs(loss_fn(z3, snrs, groups).item() - base.item()) > 1e-3


def _grad_of(z, snrs, groups, **kw):
    z = z.detach().clone().requires_grad_(True)
    loss = WithinGroupLoss(**kw)(z, snrs, groups)
    loss.backward()
    return loss, z.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_finite_with_finite_gradients(dtype):
    gen = torch.Generator().manual_seed(4)
    z = F.normalize(torch.randn(6, 16, generator=gen), dim=1).to(dtype)
    loss, grad = _grad_of(z, SNRS, GROUPS)
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss) and loss.item() > 0
    assert grad.dtype == dtype
    assert torch.isfinite(grad.float()).all() and grad.abs().sum() > 0
    # Rows 2..5 have no positive: their gradient only comes through the other anchors.
    assert int(jnd_pair_masks(SNRS, GROUPS)[0].any(1).sum()) == 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_no_positive_at_all_gives_zero(dtype):
    snrs = torch.tensor([0.0, 10.0, 20.0, 0.5])  # the close pair is in different groups
    groups = torch.tensor([0, 0, 0, 1])
    z = torch.randn(4, 8).to(dtype)
    loss_fn = WithinGroupLoss()
    z_leaf = z.clone().requires_grad_(True)
    loss = loss_fn(z_leaf, snrs, groups)
    assert loss.item() == 0.0
    loss.backward()
    assert z_leaf.grad is not None and torch.equal(z_leaf.grad, torch.zeros_like(z))
    assert not jnd_pair_masks(snrs, groups)[0].any()


def test_positives_without_negatives_are_finite():
    snrs = torch.tensor([0.0, 1.0, 2.0])
    groups = torch.tensor([0, 0, 0])
    z = torch.randn(3, 4)
    loss, grad = _grad_of(z, snrs, groups)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    # Only positives in the denominator: with 2 positives each, L_i >= log 2 (Jensen).
    assert loss.item() >= np.log(2) - 1e-6


def test_extreme_values_are_stable():
    # Tiny tau, identical and opposite embeddings, zero vector: no inf/nan.
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 0.0], [1e-30, 1e-30], [0.0, 1.0]])
    for tau in (1e-3, 0.1, 10.0):
        loss, grad = _grad_of(z, SNRS, GROUPS, tau=tau)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()


def _good_bad_config():
    # Group 0 views at 0, 1, 2 dB (mutual positives) and 20 dB (negative of all).
    snrs = torch.tensor([0.0, 1.0, 2.0, 20.0, 0.5, 1.5, 21.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    low, high = F.normalize(a + 0.05 * b, dim=0), F.normalize(b + 0.05 * a, dim=0)
    good = torch.stack([a, low, a, b, a, low, high])  # similar SNR -> same direction
    bad = torch.stack([a, b, low, a, b, high, a])  # positives apart, negatives together
    return snrs, groups, good, bad


def test_good_configuration_has_lower_loss():
    snrs, groups, good, bad = _good_bad_config()
    loss_fn = WithinGroupLoss()
    assert loss_fn(good, snrs, groups).item() < loss_fn(bad, snrs, groups).item() - 1.0


def test_temperature_effect():
    snrs, groups, good, bad = _good_bad_config()
    # For a well separated configuration, lower tau gives a lower loss (sharper softmax);
    # for the bad one, a higher loss.
    good_losses = [WithinGroupLoss(tau=t)(good, snrs, groups).item() for t in (0.05, 0.1, 1.0)]
    bad_losses = [WithinGroupLoss(tau=t)(bad, snrs, groups).item() for t in (0.05, 0.1, 1.0)]
    assert good_losses[0] < good_losses[1] < good_losses[2]
    assert bad_losses[0] > bad_losses[1] > bad_losses[2]
    # Collapsed embeddings: every similarity equal, loss = mean log|A(i)| whatever tau.
    z = torch.ones(6, 3)
    pos, neg = jnd_pair_masks(SNRS, GROUPS)
    anchors = pos.any(1)
    expected = torch.log((pos | neg).sum(1)[anchors].float()).mean().item()
    for tau in (0.05, 1.0, 5.0):
        assert WithinGroupLoss(tau=tau)(z, SNRS, GROUPS).item() == pytest.approx(expected)


def test_sgd_on_free_embeddings_learns_the_structure():
    torch.manual_seed(5)
    n_groups, k = 8, 4
    snrs = (torch.rand(n_groups, k) * 35 - 5).flatten()
    # Make sure every group has a positive pair.
    snrs.view(n_groups, k)[:, 1] = snrs.view(n_groups, k)[:, 0] + 1.0
    groups = torch.arange(n_groups).repeat_interleave(k)
    pos, neg = jnd_pair_masks(snrs, groups)
    free = torch.randn(n_groups * k, 16, requires_grad=True)
    loss_fn = WithinGroupLoss(tau=0.1)
    losses = []
    for _ in range(50):  # plain SGD, lr 0.5 (torch.optim takes seconds to import)
        free.grad = None
        loss = loss_fn(F.normalize(free, dim=1), snrs, groups)
        loss.backward()
        with torch.no_grad():
            free -= 0.5 * free.grad
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    with torch.no_grad():
        z = F.normalize(free, dim=1)
        sim = z @ z.t()
    assert sim[pos].mean() > sim[neg].mean() + 0.5


def test_batch_order_invariance():
    gen = torch.Generator().manual_seed(6)
    z = torch.randn(6, 5, generator=gen)
    perm = torch.randperm(6, generator=gen)
    loss_fn = WithinGroupLoss()
    a = loss_fn(z, SNRS, GROUPS)
    b = loss_fn(z[perm], SNRS[perm], GROUPS[perm])
    assert a.item() == pytest.approx(b.item(), abs=1e-6)


# ----------------------------------------------------------------------------- pairing schemes
# Groups (utterances) 0 and 1 share noise recording 5 (CAF), group 2 has recording 9
# from the same environment, group 3 (one view) recording 11 of another environment.
SCHEME_SNRS = torch.tensor([0.0, 1.0, 1.5, 12.0, 0.5, 20.0, 2.0])
SCHEME_GROUPS = torch.tensor([0, 0, 1, 1, 2, 2, 3])
SCHEME_NOISES = torch.tensor([5, 5, 5, 5, 9, 9, 11])
SCHEME_ENVS = torch.tensor([1, 1, 1, 1, 1, 1, 2])


def _pairs(mask):
    return {(i, j) for i, j in torch.nonzero(torch.triu(mask, 1)).tolist()}


@pytest.mark.parametrize(
    "scheme, positives",
    [
        ("within_group", {(0, 1)}),
        ("same_noise", {(0, 1), (0, 2), (1, 2)}),
        ("same_environment", {(0, 1), (0, 2), (1, 2), (0, 4), (1, 4), (2, 4)}),
        ("snr_only", {(i, j) for i in (0, 1, 2, 4, 6) for j in (0, 1, 2, 4, 6) if i < j}),
    ],
)
def test_pairing_schemes_on_a_hand_built_batch(scheme, positives):
    keys = pair_keys(scheme, SCHEME_GROUPS, SCHEME_NOISES, SCHEME_ENVS)
    pos, neg = jnd_pair_masks(SCHEME_SNRS, keys, jnd_db=3.0, neg_margin_db=6.0)
    assert _pairs(pos) == positives
    # negatives do not depend on the scheme: 6 dB or more apart, whatever the content
    n = len(SCHEME_SNRS)
    far = {
        (i, j)
        for i in range(n)
        for j in range(i + 1, n)
        if abs(SCHEME_SNRS[i] - SCHEME_SNRS[j]) >= 6
    }
    assert _pairs(neg) == far
    assert not (pos & neg).any()


def test_unknown_scheme_and_missing_noise_ids_are_refused():
    with pytest.raises(ValueError, match="unknown pairs scheme 'same_room'"):
        JNDContrastiveLoss(pairs="same_room")
    with pytest.raises(ValueError, match="need the noise condition"):
        JNDContrastiveLoss(pairs="same_noise")(torch.randn(7, 3), SCHEME_SNRS, SCHEME_GROUPS)


def _quality_and_content_batch(groups=8, views=4, dim=32, seed=0):
    """SNRs of real view groups, a quality-only embedding and one content vector per group."""
    from reference import sample_group_snrs

    rng = np.random.default_rng(seed)
    snrs = torch.tensor(
        np.concatenate([sample_group_snrs(rng, views) for _ in range(groups)]),
        dtype=torch.float32,
    )
    angle = (snrs + 5.0) / 35.0 * 0.8 * np.pi  # a 1-D code of the SNR alone
    quality = torch.zeros(len(snrs), dim)
    quality[:, 0], quality[:, 1] = torch.cos(angle), torch.sin(angle)
    torch.manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(dim - 2, dim - 2))[0][:, :groups].T
    content = torch.zeros(groups, dim)
    content[:, 2:] = basis  # orthogonal to the quality code and to each other
    group_ids = torch.arange(groups).repeat_interleave(views)
    noises = (torch.arange(groups) % 2).repeat_interleave(views)  # two recordings
    return snrs, quality, content[group_ids], group_ids, noises


@pytest.mark.parametrize("scheme", ["same_noise", "same_environment", "snr_only", None])
def test_content_blind_schemes_do_not_reward_a_content_code(scheme):
    """Cause 1 of the pretraining issue: with same-group positives only, a code of the
    utterance lowers the loss; with content-blind pairs, adding it never does."""
    snrs, quality, content, groups, noises = _quality_and_content_batch()
    envs = torch.zeros_like(noises)

    def loss(pairs, weight):  # pairs None: the default scheme
        fn = JNDContrastiveLoss(tau=0.1, **({} if pairs is None else {"pairs": pairs}))
        return fn(quality + weight * content, snrs, groups, noises=noises, environments=envs)

    within = [loss("within_group", w).item() for w in (0.0, 0.5, 1.0)]
    assert within[1] < 0.6 * within[0]  # the first version rewards recognising utterances
    blind = [loss(scheme, w).item() for w in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert all(b >= blind[0] - 1e-6 for b in blind[1:])
