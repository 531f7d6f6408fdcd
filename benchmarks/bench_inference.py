"""Inference speed and memory of ``JSQA``: batch scoring, single-file latency, long files.

Measures, in one run, on the same files (``--files`` recordings of 10 s at 16 kHz, real
speech from ``jsqa_sb/samples`` mixed with noise at random SNRs):

- ``batch_rtf``: real-time factor (wall seconds per audio second) of scoring them all
  through ``jsqa score``'s path (``score_collection``: header scan, batching by length,
  reading, resampling, the model, the CSV);
- ``model_only_rtf``: the same recordings already in memory, through the encoder and head
  alone: the bound the batch path is compared with;
- ``batch_rtf_48k``: ``batch_rtf`` for the same recordings stored at 48 kHz (as NISQA's
  files are), so resampling is part of the path; ``resample_48k_rtf`` is the anti-aliased
  resampler of ``jsqa_sb.audio`` alone on them, beside ``resample_48k_rtf_torchaudio_default``
  (torchaudio's default kernel, which aliases: the peer it replaced);
- ``latency_ms``: the median time of ``score_file`` on one 10 s file, model loaded;
- ``hour_peak_rss_mb``: the peak resident memory of a fresh process that loads the model
  and scores a one-hour file with ``score_file`` (and ``hour_rss_after_load_mb``, the
  same process before scoring);
- ``hour_timeline_peak_rss_mb``: the same for ``jsqa score --timeline``'s work on that
  file (``write_timelines``: 3 s windows every 1 s, the CSV and the PNG);
- with ``--background-load N``: ``batch_rtf`` with N CPU-bound processes running beside
  the scoring and without them, measured alternately (``--repeats`` times each, for
  each of ``--compare_threads``), so that both see the same machine otherwise; the
  load processes are paused (SIGSTOP) between the loaded measurements;
- the same figures for ``nisqa`` and ``speechmos`` when they are importable (optional
  peers, never dependencies), with ratios.

Torch threads: those ``jsqa score`` uses
(:func:`jsqa_sb.serving.batch_scoring.default_scoring_threads`,
the CPUs other processes leave free) unless ``--threads`` says otherwise.

The model is the default network of ``hparams/finetune.yaml`` (randomly initialised:
speed does not depend on the weights), or ``--model FOLDER`` (an exported model).

    python benchmarks/bench_inference.py [--files 50] [--device cuda] [--model FOLDER]
        [--background-load 1 --compare_threads 1 2 --repeats 3] [--skip_hour]

Prints one JSON line. Target on the 2-core development machine: ``batch_rtf`` <= 0.004.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
TARGET_RTF = 0.004
SR = 16000


def make_files(folder: Path, n: int, seconds: float = 10.0, seed: int = 0) -> list[Path]:
    """``n`` recordings of real speech in white noise at random SNRs, 16-bit WAV."""
    rng = np.random.default_rng(seed)
    speech = np.concatenate(
        [
            sf.read(p, dtype="float32")[0]
            for p in sorted((ROOT / "jsqa_sb" / "samples").glob("*.flac"))
        ]
    )
    length = int(seconds * SR)
    paths = []
    for i in range(n):
        start = rng.integers(0, speech.size - length)
        clean = speech[start : start + length]
        noise = rng.standard_normal(length).astype(np.float32)
        snr = rng.uniform(0, 30)
        gain = np.sqrt(np.mean(clean**2) / np.mean(noise**2) / 10 ** (snr / 10))
        mix = clean + gain * noise
        path = folder / f"rec_{i:03d}.wav"
        sf.write(path, 0.5 * mix / np.abs(mix).max(), SR, subtype="PCM_16")
        paths.append(path)
    return paths


def build_model(model_folder: str | None, device: str):
    """An exported model, or the default network of finetune.yaml with random weights."""
    from jsqa_sb.serving.inference import JSQA

    run_opts = {"device": "cuda:0" if device == "cuda" else device}
    if model_folder:
        return JSQA.from_hparams(source=model_folder, savedir=tempfile.mkdtemp(), run_opts=run_opts)
    from jsqa_sb.networks import JSQAEncoder, MOSHead

    torch.manual_seed(0)
    modules = {"encoder": JSQAEncoder(), "head": MOSHead()}
    hparams = {"sample_rate": SR, "outputs": ["mos"], "window_seconds": 10.0, **modules}
    return JSQA(modules=modules, hparams=hparams, run_opts=run_opts)


def batch_rtf(model, paths: list[Path], audio_seconds: float, out: Path) -> float:
    from jsqa_sb.serving.batch_scoring import score_collection

    start = time.perf_counter()
    summary = score_collection(model, [str(p) for p in paths], out, progress=False)
    wall = time.perf_counter() - start
    if summary.failed:
        raise RuntimeError(summary.format())
    return wall / audio_seconds


def stored_at_48k(folder: Path, paths: list[Path]) -> list[Path]:
    """The same recordings upsampled to 48 kHz (polyphase, scipy), 16-bit WAV."""
    from scipy.signal import resample_poly

    folder.mkdir()
    out = []
    for path in paths:
        audio, _ = sf.read(path, dtype="float32")
        out.append(folder / path.name)
        sf.write(out[-1], resample_poly(audio, 3, 1), 3 * SR, subtype="PCM_16")
    return out


def resample_rtfs(paths: list[Path], audio_seconds: float) -> dict:
    """RTF of resampling 48 kHz files to 16 kHz: the project's kernel and torchaudio's default.

    Interleaved over the files, so that both see the same machine load.
    """
    import torchaudio

    from jsqa_sb.audio import resample

    default = torchaudio.transforms.Resample(3 * SR, SR)
    ours, theirs = 0.0, 0.0
    with torch.no_grad():
        for path in paths:
            audio, _ = sf.read(path, dtype="float32")
            start = time.perf_counter()
            resample(audio, 3 * SR, SR)
            ours += time.perf_counter() - start
            start = time.perf_counter()
            default(torch.from_numpy(audio))
            theirs += time.perf_counter() - start
    return {
        "resample_48k_rtf": ours / audio_seconds,
        "resample_48k_rtf_torchaudio_default": theirs / audio_seconds,
    }


def model_only_rtf(model, paths: list[Path], audio_seconds: float, batch_size: int) -> float:
    wavs = torch.stack([torch.from_numpy(sf.read(p, dtype="float32")[0]) for p in paths])
    start = time.perf_counter()
    for i in range(0, len(wavs), batch_size):
        model.score_batch(wavs[i : i + batch_size])
    return (time.perf_counter() - start) / audio_seconds


def latency_ms(model, path: Path, repeats: int = 10) -> float:
    model.score_file(path)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.score_file(path)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


HOUR_CHILD = """
import json, resource, sys, time
sys.path.insert(0, {bench!r})
import bench_inference as b
model = b.build_model({model!r}, {device!r})
after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
scores = model.score_file({path!r})
wall = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
gpu = b.torch.cuda.max_memory_allocated() / 2**20 if b.torch.cuda.is_available() else None
print(json.dumps({{"after_load_mb": after_load, "peak_mb": peak, "wall_s": wall,
                   "gpu_peak_mb": gpu, "scores": scores}}))
"""


def hour_file(folder: Path, paths: list[Path], hours: float = 1.0) -> Path:
    """Write a long file by tiling the recordings, block by block (bounded memory here too)."""
    path = folder / "one_hour.wav"
    total = int(hours * 3600 * SR)
    with sf.SoundFile(path, "w", SR, 1, subtype="PCM_16") as f:
        written, i = 0, 0
        while written < total:
            block = sf.read(paths[i % len(paths)], dtype="float32")[0][: total - written]
            f.write(block)
            written += block.size
            i += 1
    return path


def hour_memory(model_folder, device, path: Path) -> dict:
    code = HOUR_CHILD.format(
        bench=str(Path(__file__).parent), model=model_folder, device=device, path=str(path)
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


HOUR_TIMELINE_CHILD = """
import json, resource, sys, time
sys.path.insert(0, {bench!r})
import bench_inference as b
from jsqa_sb.serving.timeline import write_timelines
model = b.build_model({model!r}, {device!r})
after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
rows = write_timelines(model, [{path!r}], {folder!r}, progress=False)
wall = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"after_load_mb": after_load, "peak_mb": peak, "wall_s": wall,
                   "windows": rows[0]["windows"], "error": rows[0]["error"]}}))
"""


def hour_timeline_memory(model_folder, device, path: Path, folder: Path) -> dict:
    code = HOUR_TIMELINE_CHILD.format(
        bench=str(Path(__file__).parent),
        model=model_folder,
        device=device,
        path=str(path),
        folder=str(folder),
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


class BackgroundLoad:
    """``n`` CPU-bound processes (a Python busy loop each), paused until :meth:`run`."""

    def __init__(self, n: int):
        self.procs = [
            subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)
        ]
        self.pause()

    def _signal(self, sig: int) -> None:
        for proc in self.procs:
            proc.send_signal(sig)

    def run(self) -> None:
        """Resume the processes."""
        self._signal(signal.SIGCONT)
        time.sleep(0.5)  # let the scheduler spread them

    def pause(self) -> None:
        """Pause the processes (SIGSTOP)."""
        self._signal(signal.SIGSTOP)

    def close(self) -> None:
        """End the processes."""
        for proc in self.procs:
            proc.kill()  # SIGKILL ends a stopped process too
            proc.wait()


def load_comparison(
    model, paths: list[Path], audio_seconds: float, tmp: Path, load: int, threads_list, repeats: int
) -> dict:
    """``batch_rtf`` idle and beside ``load`` busy processes, alternately, per thread count."""
    background = BackgroundLoad(load)
    from jsqa_sb.serving.batch_scoring import default_scoring_threads

    runs = {t: {"idle": [], "loaded": []} for t in threads_list}
    chosen = {"idle": [], "loaded": []}
    try:
        for _ in range(repeats):
            for threads in threads_list:
                for state in ("idle", "loaded"):
                    if state == "loaded":
                        background.run()
                        time.sleep(0.2)  # the busy loops are running when "auto" looks
                    if threads == "auto":  # jsqa score's choice, made now, as it would be
                        chosen[state].append(default_scoring_threads())
                    torch.set_num_threads(chosen[state][-1] if threads == "auto" else threads)
                    try:
                        rtf = batch_rtf(model, paths, audio_seconds, tmp / "load.csv")
                    finally:
                        background.pause()
                    runs[threads][state].append(rtf)
    finally:
        background.close()
    out = {}
    for threads, run in runs.items():
        idle, loaded = statistics.median(run["idle"]), statistics.median(run["loaded"])
        out[f"threads_{threads}"] = {
            "idle_rtf_median": idle,
            "loaded_rtf_median": loaded,
            "loaded_over_idle": loaded / idle,
            "idle_rtf_runs": [round(v, 5) for v in run["idle"]],
            "loaded_rtf_runs": [round(v, 5) for v in run["loaded"]],
        }
        if threads == "auto":
            out["threads_auto"]["chosen_threads"] = chosen
    return out


def busy_processes(limit: int = 5) -> list[str]:
    """What else was using the CPU (``ps``, highest first): the context of the figures."""
    try:
        ps = subprocess.run(
            ["ps", "-eo", "pcpu,comm", "--sort=-pcpu", "--no-headers"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return []
    return [" ".join(line.split()) for line in ps.stdout.splitlines()[:limit]]


def peers(paths: list[Path], audio_seconds: float) -> dict:
    """NISQA and speechmos (DNSMOS) on the same files, when they are installed."""
    out = {}
    if importlib.util.find_spec("speechmos") is not None:
        from speechmos import dnsmos

        dnsmos.run(sf.read(paths[0], dtype="float32")[0], SR)  # warm-up: loads, JIT-compiles
        start = time.perf_counter()
        for p in paths:
            dnsmos.run(sf.read(p, dtype="float32")[0], SR)
        out["speechmos_dnsmos_rtf"] = (time.perf_counter() - start) / audio_seconds
    else:
        out["speechmos_dnsmos_rtf"] = "not installed"
    # NISQA is distributed as a repository with a script, not as an importable package;
    # an importable ``nisqa`` module is measured through its documented model class.
    if importlib.util.find_spec("nisqa") is not None:
        out["nisqa_rtf"] = "installed, but no measurement adapter for this version"
    else:
        out["nisqa_rtf"] = "not installed"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default=None, help="an exported model folder")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: jsqa score's choice)"
    )
    parser.add_argument("--skip_hour", action="store_true", help="skip the one-hour file")
    parser.add_argument(
        "--background-load",
        "--background_load",
        dest="background_load",
        type=int,
        default=0,
        metavar="N",
        help="also measure batch_rtf beside N CPU-bound processes, alternating with idle",
    )
    parser.add_argument(
        "--compare_threads",
        type=lambda v: v if v == "auto" else int(v),
        nargs="+",
        default=None,
        help="thread counts measured with --background-load, or auto (jsqa score's choice, "
        "made in each state); default: auto and all CPUs",
    )
    parser.add_argument("--repeats", type=int, default=3, help="idle/loaded pairs per setting")
    parser.add_argument("--no_peers", action="store_true", help="skip NISQA and speechmos")
    args = parser.parse_args()
    from jsqa_sb.serving.batch_scoring import default_scoring_threads

    chosen = args.threads or default_scoring_threads()
    torch.set_num_threads(chosen)
    load_before = os.getloadavg()
    busy_before = busy_processes()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_files(tmp, args.files)
        audio_seconds = 10.0 * len(paths)
        model = build_model(args.model, args.device)
        batch_rtf(model, paths[:4], 40.0, tmp / "warmup.csv")  # first calls allocate
        result = {
            "benchmark": "inference",
            "machine": f"{platform.machine()} {os.cpu_count()} CPUs, torch threads "
            f"{torch.get_num_threads()}",
            "threads": chosen,
            "device": str(model.device),
            "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
            "files": len(paths),
            "file_seconds": 10.0,
            "batch_rtf": batch_rtf(model, paths, audio_seconds, tmp / "scores.csv"),
            "model_only_rtf": model_only_rtf(model, paths, audio_seconds, 16),
            "latency_ms": latency_ms(model, paths[0]),
            "target_batch_rtf": TARGET_RTF,
        }
        result["batch_over_model_only"] = result["batch_rtf"] / result["model_only_rtf"]
        paths_48k = stored_at_48k(tmp / "48k", paths)
        result["batch_rtf_48k"] = batch_rtf(model, paths_48k, audio_seconds, tmp / "s48.csv")
        result.update(resample_rtfs(paths_48k, audio_seconds))
        result["meets_target"] = result["batch_rtf"] <= TARGET_RTF
        if not args.skip_hour:
            hour = hour_memory(args.model, args.device, hour_file(tmp, paths))
            result["hour_rss_after_load_mb"] = round(hour["after_load_mb"], 1)
            result["hour_peak_rss_mb"] = round(hour["peak_mb"], 1)
            result["hour_wall_s"] = round(hour["wall_s"], 2)
            result["hour_rtf"] = hour["wall_s"] / 3600
            result["hour_gpu_peak_mb"] = hour["gpu_peak_mb"]
        if args.background_load > 0:
            cpus = os.cpu_count() or 1
            threads_list = args.compare_threads or ["auto", cpus]
            result["background_load"] = args.background_load
            result["load_comparison"] = load_comparison(
                model, paths, audio_seconds, tmp, args.background_load, threads_list, args.repeats
            )
            torch.set_num_threads(chosen)
            chosen_run = result["load_comparison"].get("threads_auto")
            if chosen_run:
                result["chosen_threads_meets_load_target"] = (
                    chosen_run["loaded_over_idle"] <= 2.0
                    and chosen_run["idle_rtf_median"] <= TARGET_RTF
                )
        if not args.skip_hour:
            hour_path = tmp / "one_hour.wav"
            timeline = hour_timeline_memory(args.model, args.device, hour_path, tmp / "timeline")
            result["hour_timeline_peak_rss_mb"] = round(timeline["peak_mb"], 1)
            result["hour_timeline_wall_s"] = round(timeline["wall_s"], 2)
            result["hour_timeline_windows"] = timeline["windows"]
        if not args.no_peers:
            result.update(peers(paths, audio_seconds))
        if isinstance(result.get("speechmos_dnsmos_rtf"), float):
            result["speechmos_over_batch_rtf"] = (
                result["speechmos_dnsmos_rtf"] / result["batch_rtf"]
            )
        result["loadavg_before_after"] = [
            [round(v, 2) for v in load_before],
            [round(v, 2) for v in os.getloadavg()],
        ]
        result["busiest_processes_at_start"] = busy_before
        result["self_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


if __name__ == "__main__":
    main()
