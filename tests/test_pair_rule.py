"""The one JND pair rule: one object from the YAML, and nobody labels pairs but it."""

import ast
import dataclasses
import doctest
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml

import jsqa_sb.data.pairs
from jsqa_sb.data.pairs import PAIR_SCHEMES, JNDPairRule, JNDSettingsError
from jsqa_sb.evaluation.jnd_metrics import labelled_pairs
from jsqa_sb.networks.losses import JNDContrastiveLoss
from jsqa_sb.training.brains import JNDContrastiveBrain

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"librispeech_folder": "/data", "chime3_folder": "/data"}


def test_doctests():
    assert doctest.testmod(jsqa_sb.data.pairs).failed == 0


def _load(name, **overrides):
    with open(REPO / "hparams" / name) as fin:
        return load_hyperpyyaml(fin, {**FOLDERS, **overrides})


@pytest.mark.parametrize("name", ["pretrain.yaml", "pretrain_ecapa.yaml"])
@pytest.mark.parametrize("overrides, jnd, margin", [({}, 3.0, 6.0), ({"jnd_db": 4.0}, 4.0, 8.0)])
def test_every_user_of_the_rule_has_the_yaml_s_one_object(name, overrides, jnd, margin):
    hparams = _load(name, **overrides)
    rule = hparams["pair_rule"]
    assert (rule.jnd_db, rule.neg_margin_db, rule.pairs) == (jnd, margin, "same_noise")
    users = {
        "loss": hparams["loss"],
        "train_view_maker": hparams["train_view_maker"],
        "probe_view_maker": hparams["probe_view_maker"],
        "valid_view_maker": hparams["valid_view_maker"],
    }
    for user in users.values():
        assert user.pair_rule is rule
    assert hparams["prepare_data"].keywords["pair_rule"] is rule
    # The validation metrics: the tracker the Brain makes at each validation.
    brain = JNDContrastiveBrain(
        modules=hparams["modules"], hparams=hparams, run_opts={"device": "cpu"}
    )
    brain.on_stage_start(sb.Stage.VALID)
    assert brain.tracker.pair_rule is rule
    assert hparams["loss"].neg_margin_db == margin and hparams["loss"].jnd_db == jnd


def _views(seed, n=24):
    """SNRs on a 0.5 dB grid (differences exactly at 3 and 6 dB) and float ones."""
    rng = np.random.default_rng(seed)
    snrs = rng.integers(-10, 60, n) * 0.5 if seed % 2 else rng.uniform(-5, 30, n)
    snrs[:4] = [0.0, 3.0, 6.0, 2.999]  # the boundaries, whatever the grid
    groups = np.repeat(np.arange(n // 4), 4)
    noises = rng.integers(0, 3, n // 4)[groups]
    environments = noises % 2
    return torch.tensor(snrs, dtype=torch.float32), groups, noises, environments


def _pair_set(mask):
    return {tuple(p) for p in np.argwhere(np.triu(np.asarray(mask), 1)).tolist()}


def _metric_pairs(snrs, groups, rule, within_group, max_pairs=None):
    i, j, alike = labelled_pairs(snrs, groups, rule, within_group, max_pairs, seed=0)
    pairs = [tuple(sorted(p)) for p in zip(i.tolist(), j.tolist())]
    return {p for p, a in zip(pairs, alike) if a}, {p for p, a in zip(pairs, alike) if not a}


@pytest.mark.parametrize("scheme", PAIR_SCHEMES)
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("jnd, margin", [(3.0, None), (3.0, 3.0), (2.5, 7.0)])
def test_loss_masks_metric_pairs_and_labels_agree(scheme, seed, jnd, margin):
    rule = JNDPairRule(jnd, margin, scheme)
    snrs, groups, noises, environments = _views(seed)
    as_tensors = [torch.tensor(x) for x in (groups, noises, environments)]
    loss = JNDContrastiveLoss(pair_rule=rule)
    pos, neg = loss.pair_rule.masks(snrs, *as_tensors)
    # The rule's labels of every pair's SNR difference, as the metrics receive the SNRs.
    snr64 = snrs.double().numpy()
    alike, different = rule.label(np.abs(snr64[:, None] - snr64[None, :]))
    keys = rule.keys(*as_tensors).numpy()
    comparable = keys[:, None] == keys[None, :]
    assert _pair_set(pos) == _pair_set(alike & comparable)
    assert _pair_set(neg) == _pair_set(different)
    # The metrics' pairs: all pairs, within and across the scheme's keys.
    assert _metric_pairs(snr64, keys, rule, None) == (_pair_set(alike), _pair_set(different))
    within = _metric_pairs(snr64, keys, rule, True)
    assert within == (_pair_set(pos), _pair_set(neg.numpy() & comparable))
    across = _metric_pairs(snr64, keys, rule, False)
    assert across == (_pair_set(alike & ~comparable), _pair_set(different & ~comparable))
    # Sampled pairs (more pairs than max_pairs) carry the same labels.
    sim, diff = _metric_pairs(snr64, keys, rule, False, max_pairs=50)
    assert sim <= _pair_set(alike & ~comparable) and diff <= _pair_set(different & ~comparable)
    # The loss itself counts these pairs: with one embedding for every view, each
    # anchor's loss is log |A(i)|, A(i) its positives and negatives.
    anchors = pos.any(1)
    ids = dict(zip(("groups", "noises", "environments"), as_tensors))
    value = loss(torch.ones(len(snrs), 3), snrs, **ids).item()
    expected = torch.log((pos | neg).sum(1)[anchors].double()).mean().item() if anchors.any() else 0
    assert value == pytest.approx(expected, abs=1e-5)


def test_label_boundaries():
    alike, different = JNDPairRule(3.0).label(torch.tensor([0.0, 2.999, 3.0, 5.999, 6.0]))
    assert alike.tolist() == [True, True, False, False, False]
    assert different.tolist() == [False, False, False, False, True]


@pytest.mark.parametrize("jnd, margin", [(3.0, None), (3.0, 3.0), (1.0, 10.0)])
@pytest.mark.parametrize("views", [3, 4, 8])
def test_every_sampled_group_has_an_alike_and_a_different_pair(jnd, margin, views):
    rule = JNDPairRule(jnd, margin)
    rng = np.random.default_rng(0)
    for _ in range(300):
        snrs = rule.sample_snrs(rng, views, -5.0, 30.0)
        alike, different = rule.label(np.abs(snrs[:, None] - snrs[None, :]))
        upper = np.triu(np.ones((views, views), dtype=bool), 1)
        assert (alike & upper).any() and (different & upper).any()
        assert snrs.min() >= -5.0 and snrs.max() <= 30.0


def test_the_rule_is_frozen_and_travels_to_loader_workers():
    rule = JNDPairRule(2.0, pairs="snr_only")
    assert pickle.loads(pickle.dumps(rule)) == rule
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.jnd_db = 5.0


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"jnd_db": 0.0}, "jnd_db must be positive"),
        ({"jnd_db": -1.0}, "jnd_db must be positive"),
        ({"jnd_db": math.nan}, "jnd_db must be a finite number"),
        ({"jnd_db": "3"}, "jnd_db must be a finite number"),
        ({"jnd_db": True}, "jnd_db must be a finite number"),
        ({"neg_margin_db": 2.0}, "neg_margin_db (2.0) must be >= jnd_db (3.0)"),
        ({"neg_margin_db": math.inf}, "neg_margin_db must be a finite number"),
        ({"pairs": "same_room"}, "unknown pairs scheme 'same_room'"),
    ],
)
def test_bad_settings_are_refused_naming_them(kwargs, named):
    with pytest.raises(JNDSettingsError, match=named.replace("(", r"\(").replace(")", r"\)")):
        JNDPairRule(**kwargs)


@pytest.mark.parametrize(
    "args, named",
    [
        ((2, -5.0, 30.0), "views_per_group must be at least 3"),
        ((4.0, -5.0, 30.0), "views_per_group must be an integer"),
        ((4, math.nan, 30.0), "snr_min must be a finite number"),
        ((4, 0.0, 15.0), "too narrow"),
    ],
)
def test_view_groups_the_rule_cannot_fill_are_refused(args, named):
    with pytest.raises(JNDSettingsError, match=named):
        JNDPairRule().check_views(*args)


def test_a_bad_yaml_setting_is_refused_while_loading():
    with pytest.raises(JNDSettingsError, match=r"neg_margin_db \(2.0\) must be >= jnd_db"):
        _load("pretrain.yaml", neg_margin_db=2.0)


def _labelling_outside_the_rule(path: Path) -> list:
    """Comparisons and products of the JND settings in a module's code (not its text)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare) or (
            isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult)
        ):
            names = {getattr(n, "id", getattr(n, "attr", None)) for n in ast.walk(node)}
            if names & {"jnd_db", "neg_margin_db"}:
                found.append(f"{path.name}:{node.lineno}")
    return found


def test_nobody_but_the_rule_labels_pairs_or_derives_the_margin():
    modules = [*(REPO / "jsqa_sb").rglob("*.py"), *(REPO / "recipes" / "JSQA").glob("*.py")]
    found = [
        hit
        for path in modules
        if path.name != "pairs.py"
        for hit in _labelling_outside_the_rule(path)
    ]
    assert not found
    rule = REPO / "jsqa_sb" / "data" / "pairs.py"
    assert _labelling_outside_the_rule(rule)  # the check sees them
