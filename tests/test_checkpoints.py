"""``training.checkpoints.Checkpointer``: a save interrupted half-way leaves no checkpoint."""

import pytest
import torch
from speechbrain.utils import checkpoints as sb_checkpoints

from jsqa_sb.training.checkpoints import Checkpointer


class Interrupted(Exception):
    """Stands for the process being killed while a checkpoint is written."""


def _interrupted_save(checkpointer_class, folder):
    """Save once, then start a second save that dies before its last file."""
    layer, optimizer_state = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    ckpt = checkpointer_class(folder, {"layer": layer, "optimizer": optimizer_state})
    first = ckpt.save_checkpoint(name="first")
    layer.weight.data.fill_(7.0)

    def die(obj, path):
        raise Interrupted

    ckpt.add_recoverable("zzz_last", torch.nn.Linear(1, 1), custom_save_hook=die)
    with pytest.raises(Interrupted):
        ckpt.save_checkpoint(name="second")
    return ckpt, first, layer


def test_interrupted_save_is_not_a_checkpoint(tmp_path):
    ckpt, first, layer = _interrupted_save(Checkpointer, tmp_path)
    assert [c.path.name for c in ckpt.list_checkpoints()] == ["CKPT+first"]
    assert sorted(p.name for p in first.path.iterdir()) == [
        "CKPT.yaml",
        "layer.ckpt",
        "optimizer.ckpt",
    ]
    # A restart recovers the last complete checkpoint (without the extra recoverable).
    restarted = Checkpointer(tmp_path, {"layer": layer, "optimizer": torch.nn.Linear(2, 2)})
    assert restarted.recover_if_possible().path == first.path
    assert not (layer.weight == 7.0).any()


def test_speechbrains_own_checkpointer_keeps_the_broken_one(tmp_path):
    """What the subclass is for: SpeechBrain lists the half-written checkpoint as the newest."""
    ckpt, _, _ = _interrupted_save(sb_checkpoints.Checkpointer, tmp_path)
    names = sorted(c.path.name for c in ckpt.list_checkpoints())
    assert names == ["CKPT+first", "CKPT+second"]
    broken = next(c for c in ckpt.list_checkpoints() if c.path.name == "CKPT+second")
    assert "zzz_last" not in broken.paramfiles


def test_saved_checkpoint_is_returned_at_its_final_path(tmp_path):
    ckpt = Checkpointer(tmp_path, {"layer": torch.nn.Linear(2, 2)})
    saved = ckpt.save_checkpoint(meta={"loss": 1.0})
    (listed,) = ckpt.list_checkpoints()
    assert saved.path == listed.path and saved.path.name.startswith("CKPT+")
    assert saved.paramfiles["layer"] == listed.paramfiles["layer"]
    assert saved.paramfiles["layer"].is_file() and saved.meta["loss"] == 1.0
    assert not list(tmp_path.glob("partial-*"))
    ckpt.save_and_keep_only(meta={"loss": 0.5}, min_keys=["loss"])  # SpeechBrain's clean-up
    (kept,) = ckpt.list_checkpoints()
    assert kept.meta["loss"] == 0.5


def test_every_process_sees_the_published_checkpoint_after_the_save(tmp_path, monkeypatch):
    # Under DDP the other processes leave save_checkpoint at its last barrier and list
    # the checkpoints to clean up: the rename must be done by then (a process that saw
    # only the partial folder deleted less than the main one, and both waited forever).
    seen = []
    monkeypatch.setattr(
        "jsqa_sb.training.checkpoints.ddp_barrier",
        lambda: seen.append(sorted(p.name for p in tmp_path.iterdir())),
    )
    Checkpointer(tmp_path, {"layer": torch.nn.Linear(2, 2)}).save_checkpoint(name="one")
    assert seen[-1] == ["CKPT+one"]


@pytest.mark.parametrize("order", [(0.5, "nan", 0.7), ("nan", 0.7, 0.5), (0.7, 0.5, "nan")])
def test_nan_metric_is_never_the_best_checkpoint(tmp_path, order):
    layer = torch.nn.Linear(2, 2)
    checkpointer = Checkpointer(tmp_path, {"layer": layer})
    for i, pcc in enumerate(order):
        value = float(pcc)
        checkpointer.save_and_keep_only(
            meta={"pcc": value, "loss": -value, "epoch": i}, max_keys=["pcc"], num_to_keep=1
        )
    kept = [c.meta["epoch"] for c in checkpointer.list_checkpoints()]
    # SpeechBrain also keeps the most recent one (for resuming)
    assert sorted(kept) == sorted({order.index(0.7), len(order) - 1})
    assert checkpointer.find_checkpoint(max_key="pcc").meta["pcc"] == 0.7
    assert checkpointer.find_checkpoint(min_key="loss").meta["pcc"] == 0.7


def test_nan_everywhere_still_finds_a_checkpoint(tmp_path):
    checkpointer = Checkpointer(tmp_path, {"layer": torch.nn.Linear(2, 2)})
    checkpointer.save_checkpoint(meta={"cross_auc": float("nan")})
    assert checkpointer.find_checkpoint(max_key="cross_auc") is not None
    assert checkpointer.find_checkpoint(max_key="absent") is None
