import json
import logging
import shutil

import torch

from jsqa_sb.data.jnd_data import JNDViewMaker, jnd_collate, make_jnd_dataset
from jsqa_sb.data.minicorpus import build_chime3, build_librispeech
from jsqa_sb.data.prepare_jnd import prepare_jnd
from jsqa_sb.networks.losses import JNDContrastiveLoss


def test_nonfinite_batch_is_named_skipped_and_counted(tmp_path, caplog, tiny_jnd_brain):
    build_librispeech(tmp_path / "libri")
    build_chime3(tmp_path / "chime")
    out = prepare_jnd(tmp_path / "libri", tmp_path / "chime", tmp_path / "m", segment_seconds=1.0)
    folders = {
        "librispeech_folder": str(tmp_path / "libri"),
        "chime3_folder": str(tmp_path / "chime"),
    }
    manifest = json.loads(open(out["train"]).read())
    uid, entry = sorted(manifest.items())[0]
    # A corrupt file that slipped through preparation, in the middle of good ones.
    broken = tmp_path / "broken.flac"
    shutil.copy(entry["wav"].format(**folders), broken)
    broken.write_bytes(broken.read_bytes()[:64] + bytes(4000))
    manifest["corrupt-utt"] = {**entry, "wav": str(broken)}
    path = tmp_path / "train.json"
    path.write_text(json.dumps(manifest))
    views = JNDViewMaker(out["noise_train"], folders, segment_seconds=1.0)
    train = make_jnd_dataset(path, folders, views, fixed=False)
    valid = make_jnd_dataset(out["valid"], folders, JNDViewMaker(segment_seconds=1.0), fixed=True)

    brain = tiny_jnd_brain(
        loss=JNDContrastiveLoss(), jnd_db=3.0, neg_margin_db=6.0, train_view_maker=views
    )
    encoder, counter = brain.hparams.encoder, brain.hparams.epoch_counter
    loader_opts = {"batch_size": 4, "collate_fn": jnd_collate}
    with caplog.at_level(logging.WARNING):
        brain.fit(
            counter,
            train,
            valid,
            train_loader_kwargs={**loader_opts, "shuffle": False},
            valid_loader_kwargs=loader_opts,
        )
    assert brain.skipped_batches == 1
    assert "corrupt-utt" in caplog.text and str(broken) in caplog.text
    assert all(torch.isfinite(p).all() for p in encoder.parameters())  # not a NaN model
    assert 0 <= brain.last_stats["cross_auc"] <= 1
    summary = brain.export_encoder(tmp_path / "encoder.ckpt", tmp_path / "summary.json")
    assert summary["skipped_batches"] == 1 and summary["best_epoch"] == 1
    state = torch.load(tmp_path / "encoder.ckpt", weights_only=True)
    assert state.keys() == encoder.state_dict().keys()
