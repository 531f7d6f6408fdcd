"""Pretraining step throughput against the JND loader's, with the same batch settings.

Measures, in one run:

- ``step``: views per second through making the views on the device (``batch.wavs``),
  forward + backward + optimiser step of the encoder, projection head and JND loss
  built from ``hparams/pretrain.yaml``, on batches already in memory;
- ``loader``: views per second the JND loader delivers (``DynamicItemDataset`` ->
  ``jnd_collate`` -> ``DataLoader`` with ``--workers`` workers, reading from disk;
  the batches carry excerpts and gains, the views are made in the step);

and prints their ratio as one JSON line. The loader keeps up when the ratio is at
least 2 (target with 2 workers on the 2-core development machine). ``--degradations``
takes the YAML's ``all_degradations`` table: the step then also degrades its views.

    python benchmarks/bench_train.py [--librispeech_folder D --chime3_folder D] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from hyperpyyaml import load_hyperpyyaml
from torch.utils.data import DataLoader, RandomSampler

from jsqa_sb.data.jnd_data import jnd_collate, make_jnd_dataset
from jsqa_sb.data.minicorpus import build_all

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def loader_rate(dataset, maker, batch_size, workers, num_batches):
    maker.set_epoch(0)
    sampler = RandomSampler(
        dataset,
        replacement=True,
        num_samples=batch_size * num_batches,
        generator=torch.Generator().manual_seed(0),
    )
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, collate_fn=jnd_collate, num_workers=workers
    )
    views, start = 0, time.perf_counter()
    for batch in loader:
        views += batch.num_views  # the views are made on the training device, in the step
    return views / (time.perf_counter() - start)


def step_rate(hparams, batches, device, steps):
    modules = torch.nn.ModuleDict(hparams["modules"]).to(device).train()
    optimizer = hparams["opt_class"](modules.parameters())
    loss_fn = hparams["loss"]

    def step(batch):
        batch = batch.to(device).degrade(hparams.get("degrader"))
        emb = modules["encoder"](batch.wavs, batch.wav_lens)
        projections = modules["projector"](emb)
        degradations = {"families": batch.families, "severities": batch.severities}
        loss = loss_fn(projections, batch.snrs, batch.groups, noises=batch.noises, **degradations)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for batch in batches[:2]:  # warm-up
        step(batch)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    views, start = 0, time.perf_counter()
    for i in range(steps):
        batch = batches[i % len(batches)]
        step(batch)
        views += batch.num_views
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return views / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--librispeech_folder", default=str(SHARED / "librispeech_mini"))
    parser.add_argument("--chime3_folder", default=str(SHARED / "chime3_mini"))
    parser.add_argument("--hparams", default=str(ROOT / "hparams" / "pretrain.yaml"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--loader_batches", type=int, default=60)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--degradations", action="store_true", help="all_degradations on")
    parser.add_argument("overrides", nargs="*", help="YAML overrides, e.g. batch_size=8")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    libri, chime = Path(args.librispeech_folder), Path(args.chime3_folder)
    if not (libri / "LibriSpeech").is_dir() or not (chime / "CHiME3").is_dir():
        folders = build_all(work / "mini")
        libri, chime = folders["librispeech_folder"], folders["chime3_folder"]
    overrides = {
        "librispeech_folder": str(libri),
        "chime3_folder": str(chime),
        "output_folder": str(work / "out"),
        "manifest_folder": str(work / "manifests"),
    }
    for item in args.overrides:
        key, value = item.split("=", 1)
        overrides[key] = json.loads(value) if value[:1].isdigit() or value[:1] == "-" else value
    # As YAML text, so that the !ref of --degradations resolves
    text = "".join(f"{key}: {json.dumps(value)}\n" for key, value in overrides.items())
    text += "degradations: !ref <all_degradations>\n" if args.degradations else ""
    with open(args.hparams) as f:
        hparams = load_hyperpyyaml(f, text)
    out = hparams["prepare_data"]()
    maker = hparams["train_view_maker"]
    dataset = make_jnd_dataset(out["train"], hparams["data_folders"], maker, fixed=False)
    batch_size = hparams["batch_size"]

    loader = loader_rate(dataset, maker, batch_size, args.workers, args.loader_batches)
    batches = list(
        DataLoader(
            dataset,
            batch_size=batch_size,
            collate_fn=jnd_collate,
            sampler=RandomSampler(dataset, num_samples=batch_size * 4),
        )
    )
    step = step_rate(hparams, batches, args.device, args.steps)
    print(
        json.dumps(
            {
                "benchmark": "pretrain_step_vs_loader",
                "unit": "views per second",
                "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
                "batch_size_groups": batch_size,
                "views_per_group": hparams["views_per_group"],
                "segment_seconds": hparams["segment_seconds"],
                "degradations": [spec.family for spec in hparams["degrader"].specs],
                "loader_workers": args.workers,
                "step_views_per_s": round(step, 1),
                "loader_views_per_s": round(loader, 1),
                "loader_to_step_ratio": round(loader / step, 2),
                "target_ratio": 2.0,
                "meets_target": loader / step >= 2.0,
                "torch_threads": torch.get_num_threads(),
                "machine": platform.machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
