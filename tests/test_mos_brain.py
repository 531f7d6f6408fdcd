import math

import pytest
import torch
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.utils.epoch_loop import EpochCounter

from jsqa_sb.networks import JSQAEncoder, MOSHead
from jsqa_sb.training.brains import MOSBrain

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


def test_annealing_keeps_the_encoder_learning_rate_ratio(tmp_path):
    """Two NewBob annealings halve both groups; the encoder keeps lr_encoder / lr."""
    import speechbrain as sb
    from speechbrain.nnet.schedulers import NewBobScheduler

    from jsqa_sb.training.checkpoints import Checkpointer

    class Logger:
        def log_stats(self, *args, **kwargs):
            self.last = args[0]

    brain, encoder, head = _brain(
        lr_encoder=3e-4,
        lr_scheduler=NewBobScheduler(initial_value=1e-3, annealing_factor=0.5, patient=0),
        train_logger=Logger(),
    )
    brain.checkpointer = Checkpointer(tmp_path, recoverables={"head": head})
    brain.train_stats = {"loss": 1.0}
    ids, cons, dbs = ["a", "b", "c", "d"], ["1", "2", "3", "4"], ["X"] * 4
    seen = []
    for epoch, loss in enumerate([1.0, 1.0, 1.0], start=1):  # no improvement: anneal twice
        targets = torch.tensor([[1.0] * 5, [2.0] * 5, [3.0] * 5, [5.0] * 5])
        brain.collected = [(ids, cons, dbs, targets, targets + 0.1 * epoch)]
        brain.on_stage_end(sb.Stage.VALID, loss, epoch)
        seen.append([g["lr"] for g in brain.optimizer.param_groups])
    assert seen[0] == pytest.approx([1e-3, 3e-4])
    assert seen[1] == pytest.approx([5e-4, 1.5e-4])
    assert seen[2] == pytest.approx([2.5e-4, 7.5e-5])
    assert brain.hparams.train_logger.last["lr_encoder"] == pytest.approx(1.5e-4)

    # The ratio survives a resume through the optimiser's state dict.
    state = brain.optimizer.state_dict()
    resumed, _, _ = _brain(lr_encoder=3e-4)
    resumed.optimizer.load_state_dict(state)
    from jsqa_sb.training.brains import anneal_learning_rates

    anneal_learning_rates(resumed.optimizer, 1e-4)
    assert [g["lr"] for g in resumed.optimizer.param_groups] == pytest.approx([1e-4, 3e-5])
