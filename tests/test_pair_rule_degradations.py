"""The pair rule with degradation families, on hand-built batches (recipe README)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from jsqa_sb.data.pairs import JNDPairRule, JNDSettingsError
from jsqa_sb.evaluation.jnd_metrics import JNDMetricTracker, labelled_pairs

#: Family 0 (e.g. clipping in dB): jnd 2, margin 4; family 1: jnd 0.25, margin 0.5.
STEPS = [SimpleNamespace(family="clipping", jnd=2.0, margin=4.0),
         SimpleNamespace(family="band_limit", jnd=0.25, margin=0.5)]  # fmt: skip
RULE = JNDPairRule(jnd_db=3.0, pairs="within_group", degradations=STEPS)


def _masks(snrs, families, severities, groups=None, rule=RULE):
    n = len(snrs)
    groups = torch.zeros(n, dtype=torch.long) if groups is None else torch.tensor(groups)
    pos, neg = rule.masks(
        torch.tensor(snrs, dtype=torch.float64), groups, families=torch.tensor(families),
        severities=torch.tensor(severities, dtype=torch.float64),
    )  # fmt: skip
    return pos.int().tolist(), neg.int().tolist()


def test_one_family_one_snr_the_severity_decides():
    # clipping at 0, 1.5 (< jnd: alike), 3 (ignored against 0: between jnd and margin), 6
    pos, neg = _masks([10.0] * 4, [0, 0, 0, 0], [0.0, 1.5, 3.0, 6.0])
    assert pos == [[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    assert neg == [[0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0], [1, 1, 0, 0]]


def test_alike_needs_every_severity_within_its_jnd_different_needs_any_beyond_its_margin():
    # same clipping, SNRs 7 dB apart: different; SNRs 1 dB apart and clipping 1 dB: alike
    pos, neg = _masks([10.0, 17.0, 11.0], [0, 0, 0], [5.0, 5.0, 6.0])
    assert pos == [[0, 0, 1], [0, 0, 0], [1, 0, 0]]
    assert neg == [[0, 1, 0], [1, 0, 1], [0, 1, 0]]


def test_pairs_across_families_are_negatives_beyond_the_snr_margin_and_ignored_otherwise():
    # family 0 and 1 at equal severities: never alike; 20 dB apart: different
    pos, neg = _masks([10.0, 10.0, 30.0], [0, 1, 1], [0.0, 0.0, 0.0])
    assert pos == [[0, 0, 0], [0, 0, 0], [0, 0, 0]]
    assert neg == [[0, 0, 1], [0, 0, 1], [1, 1, 0]]
    # noise only (-1) against clipping at the same SNR: ignored, whatever the severity
    pos, neg = _masks([10.0, 10.0], [-1, 0], [0.0, 20.0])
    assert pos == [[0, 0], [0, 0]] and neg == [[0, 0], [0, 0]]


def test_each_family_uses_its_own_steps():
    # 0.4 apart: alike for clipping (jnd 2), ignored for band_limit (jnd 0.25, margin 0.5)
    assert _masks([5.0, 5.0], [0, 0], [1.0, 1.4])[0] == [[0, 1], [1, 0]]
    assert _masks([5.0, 5.0], [1, 1], [1.0, 1.4]) == ([[0, 0], [0, 0]], [[0, 0], [0, 0]])
    assert _masks([5.0, 5.0], [1, 1], [1.0, 1.5])[1] == [[0, 1], [1, 0]]


def test_views_with_noise_only_are_labelled_as_without_degradations():
    rng = np.random.default_rng(0)
    snrs, groups = rng.uniform(-5, 30, 40).round(), rng.integers(0, 5, 40).tolist()
    plain = JNDPairRule(jnd_db=3.0, pairs="within_group")
    expected = _masks(snrs, [-1] * 40, [0.0] * 40, groups, plain)
    assert _masks(snrs, [-1] * 40, [0.0] * 40, groups) == expected
    pos, neg = plain.masks(torch.tensor(snrs), torch.tensor(groups))
    assert expected == (pos.int().tolist(), neg.int().tolist())


def test_loss_masks_and_metric_labels_agree_with_families():
    rng = np.random.default_rng(1)
    n = 60
    snr = rng.choice([0.0, 2.0, 5.0, 10.0], n)
    fam = rng.integers(-1, 2, n)
    sev = rng.choice([0.0, 0.2, 0.5, 2.0, 4.0], n) * (fam >= 0)
    grp = np.zeros(n, dtype=np.int64)
    i, j, alike = labelled_pairs(snr, grp, RULE, None, None, 0, (fam, sev))
    pos, neg = RULE.masks(torch.tensor(snr), torch.tensor(grp), families=torch.tensor(fam),
                          severities=torch.tensor(sev))  # fmt: skip
    assert alike.tolist() == pos[i, j].tolist()
    assert (~alike).tolist() == neg[i, j].tolist()
    labelled = (pos | neg)[np.triu_indices(n, 1)].sum().item()
    assert len(i) == labelled


def test_bad_degradation_steps_are_refused():
    with pytest.raises(JNDSettingsError, match="jnd <= margin"):
        JNDPairRule(degradations=[SimpleNamespace(family="x", jnd=2.0, margin=1.0)])


def test_the_tracker_reports_each_family():
    tracker = JNDMetricTracker(pair_rule=RULE)
    snrs = torch.tensor([10.0] * 8)
    fam = torch.tensor([0, 0, 0, 0, -1, -1, -1, -1])
    sev = torch.tensor([0.0, 1.0, 8.0, 9.0, 0.0, 0.0, 0.0, 0.0])
    emb = torch.stack([torch.cos(sev / 10), torch.sin(sev / 10)], dim=1)
    tracker.append(emb[:4], snrs[:4], torch.tensor([0, 1, 0, 1]), fam[:4], sev[:4])
    tracker.append(emb[4:], torch.tensor([0.0, 1.0, 20.0, 21.0]), torch.tensor([0, 1, 0, 1]),
                   fam[4:], sev[4:])  # fmt: skip
    stats = tracker.summarize()
    assert set(stats) == {"within_auc", "cross_auc", "cross_auc_clipping",
                          "cross_auc_band_limit", "cross_auc_noise"}  # fmt: skip
    assert stats["cross_auc_clipping"] == 1.0  # the embedding follows the clipping level
    assert stats["cross_auc_noise"] == 0.5  # ... but not the SNR (noise-only views all alike)
    assert np.isnan(stats["cross_auc_band_limit"])  # no views of that family
