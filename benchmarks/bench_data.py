"""Throughput of the JND data pipeline, in seconds of audio produced per wall second.

Measures, in one run on the same manifests:

- ``pipeline``: the real path a training run takes: ``DynamicItemDataset`` ->
  ``jnd_collate`` -> ``DataLoader`` with N workers, reading from disk; one long pass
  (the mini corpora are too small for an epoch to amortise the workers' start, which
  a real LibriSpeech epoch does), reported per worker;
- ``bare``: the bound: the same view maker called in a plain loop in this process
  (read + mix only, no dataset, collate or loader).

Prints one JSON line. Usage::

    python benchmarks/bench_data.py [--librispeech_folder D --chime3_folder D] [--workers 0 1 2]

Defaults to the shared development corpora (``../shared/data``), else builds the
miniature corpora.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, RandomSampler

from jsqa_sb.jnd_data import JNDViewMaker, jnd_collate, make_jnd_dataset
from jsqa_sb.minicorpus import build_all
from jsqa_sb.prepare_jnd import prepare_jnd

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def produced_seconds(batch, sample_rate):
    return float((batch.wav_lens * batch.wavs.shape[1]).sum()) / sample_rate


def bench_pipeline(dataset, maker, workers, batch_size, num_items):
    maker.set_epoch(0)
    sampler = RandomSampler(
        dataset,
        replacement=True,
        num_samples=num_items,
        generator=torch.Generator().manual_seed(0),
    )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=jnd_collate,
        num_workers=workers,
    )
    audio, start = 0.0, time.perf_counter()
    for batch in loader:
        audio += produced_seconds(batch, maker.sample_rate)
    return audio / (time.perf_counter() - start)


def bench_bare(manifest, maker, min_seconds):
    entries = list(manifest.items())
    audio, start, epoch = 0.0, time.perf_counter(), 0
    while time.perf_counter() - start < min_seconds:
        maker.set_epoch(epoch)
        for uid, e in entries:
            views, _ = maker.train_views(uid, e["wav"], e["duration"], e["sample_rate"])
            audio += views.numel() / maker.sample_rate
        epoch += 1
    return audio / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--librispeech_folder", default=str(SHARED / "librispeech_mini"))
    parser.add_argument("--chime3_folder", default=str(SHARED / "chime3_mini"))
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--segment_seconds", type=float, default=3.0)
    parser.add_argument("--views_per_group", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=6.0, help="wall time of the bare run")
    parser.add_argument("--items", type=int, default=1500, help="items per pipeline run")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_data_"))
    libri, chime = Path(args.librispeech_folder), Path(args.chime3_folder)
    corpus = "shared"
    if not (libri / "LibriSpeech").is_dir() or not (chime / "CHiME3").is_dir():
        folders = build_all(work / "mini")
        libri, chime, corpus = folders["librispeech_folder"], folders["chime3_folder"], "mini"
    out = prepare_jnd(
        libri,
        chime,
        work / "manifests",
        segment_seconds=args.segment_seconds,
        views_per_group=args.views_per_group,
    )
    replacements = {"librispeech_folder": str(libri), "chime3_folder": str(chime)}
    maker = JNDViewMaker(
        out["noise_train"],
        replacements,
        segment_seconds=args.segment_seconds,
        views_per_group=args.views_per_group,
    )
    dataset = make_jnd_dataset(out["train"], replacements, maker, fixed=False)
    manifest = {
        k: dict(v, wav=v["wav"].format(**replacements))
        for k, v in json.loads(Path(out["train"]).read_text()).items()
    }

    torch.set_num_threads(1)
    bare = bench_bare(manifest, maker, args.seconds)
    result = {
        "benchmark": "jnd_data_pipeline",
        "unit": "audio seconds produced per wall second",
        "corpus": corpus,
        "manifest_items": len(dataset),
        "segment_seconds": args.segment_seconds,
        "views_per_group": args.views_per_group,
        "batch_size": args.batch_size,
        "bare_read_mix_x_realtime": round(bare, 1),
        "pipeline": {},
        "target_per_worker_x_realtime": 2000,
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }
    for workers in args.workers:
        rate = bench_pipeline(dataset, maker, workers, args.batch_size, args.items)
        per_worker = rate / max(1, workers)
        result["pipeline"][f"workers_{workers}"] = {
            "x_realtime": round(rate, 1),
            "x_realtime_per_worker": round(per_worker, 1),
            "ratio_to_bare": round(per_worker / bare, 3),
            "items": args.items,
            "meets_target": per_worker >= 2000,
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
