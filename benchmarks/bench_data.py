"""Throughput of the JND data pipeline, in seconds of audio produced per wall second.

Measures, in one run on the same manifests:

- ``pipeline``: the real path a training run takes: ``DynamicItemDataset`` ->
  ``jnd_collate`` -> ``DataLoader`` with N workers, reading from disk, and the views
  made from each batch in this process (``batch.wavs``: on the CPU, as a CPU training
  run makes them; a GPU run makes them on the GPU); one long pass (the mini corpora
  are too small for an epoch to amortise the workers' start, which a real LibriSpeech
  epoch does), reported per worker, with the CPU time of this process and of the
  workers;
- ``bare``: the bound: the same view maker called in a plain loop in this process
  (read + mix only, no dataset, collate or loader).

With ``--degradations F ...``, every repeat also runs the pipeline with half the view
groups carrying one of those degradation families (their default severity ranges),
applied where the views are made (here): ``workers_N_degraded``, and the median of its
paired per-worker ratios to the plain run, ``degraded_to_plain``.

Each is run ``--repeats`` times, interleaved; the JSON line gives medians, ranges and
the median of the ratios to the bare run of the same repeat. Usage::

    python benchmarks/bench_data.py [--librispeech_folder D --chime3_folder D] [--workers 0 1 2]

Defaults to the shared development corpora (``../shared/data``), else builds the
miniature corpora.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path
from statistics import median

import torch
from torch.utils.data import DataLoader, RandomSampler

from jsqa_sb.data.degradations import Degrader
from jsqa_sb.data.jnd_data import JNDViewMaker, jnd_collate, make_jnd_dataset, mix_views
from jsqa_sb.data.minicorpus import build_all
from jsqa_sb.data.pairs import JNDPairRule
from jsqa_sb.data.prepare_jnd import prepare_jnd

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def produced_seconds(batch, sample_rate, degrader=None):
    views = batch.degrade(degrader).wavs  # made here, in the training process
    return float((batch.wav_lens * views.shape[1]).sum()) / sample_rate


def cpu_seconds(who):
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def bench_pipeline(dataset, maker, workers, batch_size, num_items):
    degrader = maker.degrader
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
    main_cpu, workers_cpu = cpu_seconds(resource.RUSAGE_SELF), cpu_seconds(resource.RUSAGE_CHILDREN)
    audio, start = 0.0, time.perf_counter()
    batches = iter(loader)
    for batch in batches:
        audio += produced_seconds(batch, maker.sample_rate, degrader)
    wall = time.perf_counter() - start
    del batches  # workers joined: their CPU time is counted in RUSAGE_CHILDREN
    return {
        "audio_s": audio,
        "wall_s": wall,
        "main_cpu_s": cpu_seconds(resource.RUSAGE_SELF) - main_cpu,
        "workers_cpu_s": cpu_seconds(resource.RUSAGE_CHILDREN) - workers_cpu,
    }


def bench_bare(manifest, maker, min_seconds):
    entries = list(manifest.items())
    audio, start, epoch = 0.0, time.perf_counter(), 0
    while time.perf_counter() - start < min_seconds:
        maker.set_epoch(epoch)
        for uid, e in entries:
            excerpts, gains, *_ = maker.train_views(uid, e["wav"], e["duration"], e["sample_rate"])
            audio += mix_views(excerpts, gains).numel() / maker.sample_rate
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
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of each")
    parser.add_argument("--degradations", nargs="*", default=[], help="degradation families")
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
    settings = dict(segment_seconds=args.segment_seconds, views_per_group=args.views_per_group)
    maker = JNDViewMaker(out["noise_train"], replacements, **settings)
    dataset = make_jnd_dataset(out["train"], replacements, maker, fixed=False)
    variants = {"": (dataset, maker)}
    if args.degradations:
        degrader = Degrader([{"family": f} for f in args.degradations], p_none=0.5)
        rule = JNDPairRule(degradations=degrader)
        degraded = JNDViewMaker(
            out["noise_train"], replacements, pair_rule=rule, degrader=degrader, **settings
        )
        degraded_set = make_jnd_dataset(out["train"], replacements, degraded, fixed=False)
        variants["_degraded"] = (degraded_set, degraded)
    manifest = {
        k: dict(v, wav=v["wav"].format(**replacements))
        for k, v in json.loads(Path(out["train"]).read_text()).items()
    }

    torch.set_num_threads(1)
    # Interleaved repeats, medians and paired ratios: this machine's speed drifts by tens
    # of percent from one minute to the next.
    bares, runs = [], {(w, v): [] for w in args.workers for v in variants}
    for _ in range(args.repeats):
        bares.append(bench_bare(manifest, maker, args.seconds))
        for workers in args.workers:
            for variant, (data, views) in variants.items():
                run = bench_pipeline(data, views, workers, args.batch_size, args.items)
                run["per_worker"] = run["audio_s"] / run["wall_s"] / max(1, workers)
                run["ratio_to_bare"] = run["per_worker"] / bares[-1]
                runs[workers, variant].append(run)
    result = {
        "benchmark": "jnd_data_pipeline",
        "unit": "audio seconds produced per wall second",
        "corpus": corpus,
        "manifest_items": len(dataset),
        "segment_seconds": args.segment_seconds,
        "views_per_group": args.views_per_group,
        "batch_size": args.batch_size,
        "degradations": args.degradations,
        "repeats": args.repeats,
        "bare_read_mix_x_realtime": round(median(bares), 1),
        "bare_range": [round(min(bares), 1), round(max(bares), 1)],
        "pipeline": {},
        "target_per_worker_x_realtime": 2000,
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }
    for (workers, variant), repeats in runs.items():
        per_worker = [r["per_worker"] for r in repeats]
        # What one worker gives per second of its own CPU time (what it would give with a
        # core to itself); in process, per second of this process's CPU time.
        cpu = [r["workers_cpu_s"] if workers else r["main_cpu_s"] for r in repeats]
        result["pipeline"][f"workers_{workers}{variant}"] = {
            "x_realtime": round(median(r["audio_s"] / r["wall_s"] for r in repeats), 1),
            "x_realtime_per_worker": round(median(per_worker), 1),
            "per_worker_range": [round(min(per_worker), 1), round(max(per_worker), 1)],
            "ratio_to_bare": round(median(r["ratio_to_bare"] for r in repeats), 3),
            "x_realtime_per_worker_cpu_second": round(
                median(r["audio_s"] / c for r, c in zip(repeats, cpu)), 1
            ),
            "main_process_cpu_share": round(
                median(r["main_cpu_s"] / r["wall_s"] for r in repeats), 2
            ),
            "items": args.items,
            "meets_target": median(per_worker) >= 2000,
        }
        if variant:
            plain = runs[workers, ""]
            ratios = [r["per_worker"] / p["per_worker"] for r, p in zip(repeats, plain)]
            result["pipeline"][f"workers_{workers}{variant}"]["degraded_to_plain"] = round(
                median(ratios), 3
            )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
