import math

import pytest
import torch
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.utils.epoch_loop import EpochCounter

from jsqa_sb.brains import MOSBrain
from jsqa_sb.models import JSQAEncoder, MOSHead

DIMS = ["mos", "noi", "col", "dis", "loud"]


def _brain(**options):
    encoder = JSQAEncoder(cnn_channels=4, d_model=16, att_layers=1, att_heads=2, emb_dim=16)
    head = MOSHead(16, 8, outputs=DIMS)
    hparams = {
        "encoder": encoder,
        "head": head,
        "dims": DIMS,
        "epoch_counter": EpochCounter(1),
        **options,
    }
    brain = MOSBrain(
        modules={"encoder": encoder, "head": head},
        opt_class=lambda groups: torch.optim.Adam(groups, lr=1e-3),
        hparams=hparams,
        run_opts={"device": "cpu", "noprogressbar": True},
    )
    brain.init_optimizers()
    return brain, encoder, head


def test_frozen_encoder_is_not_optimised():
    brain, encoder, head = _brain(freeze_encoder=True)
    optimised = {id(p) for g in brain.optimizer.param_groups for p in g["params"]}
    assert optimised == {id(p) for p in head.parameters()}
    assert not any(p.requires_grad for p in encoder.parameters())


def test_encoder_has_its_own_learning_rate():
    brain, encoder, head = _brain(lr_encoder=1e-5)
    lrs = [g["lr"] for g in brain.optimizer.param_groups]
    assert lrs == [1e-3, 1e-5]
    assert {id(p) for p in brain.optimizer.param_groups[1]["params"]} == {
        id(p) for p in encoder.parameters()
    }


def test_loss_skips_missing_labels_and_predictions_stay_in_range():
    brain, _, _ = _brain()
    torch.manual_seed(0)
    items = [
        {
            "id": f"f{i}",
            "sig": torch.randn(16000 + 1000 * i) * 0.1,
            "con": str(i),
            "db": "X",
            "targets": torch.tensor([3.0, math.nan, 2.0, math.nan, math.nan]),
        }
        for i in range(3)
    ]
    batch = PaddedBatch(items)
    preds = brain.compute_forward(batch, stage=None)
    assert preds.shape == (3, 5) and ((preds >= 1) & (preds <= 5)).all()
    brain.collected = []
    loss = brain.compute_objectives(preds, batch, stage=None)
    expected = torch.cat([(preds[:, 0] - 3.0) ** 2, (preds[:, 2] - 2.0) ** 2]).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    frame = brain.predictions_frame()
    assert list(frame["file"]) == ["f0", "f1", "f2"] and frame["true_noi"].isna().all()
