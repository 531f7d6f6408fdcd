#!/usr/bin/env python3
"""Calibrate a JND step per degradation family against the 3 dB SNR JND.

Where the literature gives no JND for a family, its step is the severity change that
moves an objective quality measure as much as the SNR JND does at a mid SNR:

1. ``--num_utterances`` LibriSpeech-layout utterances are mixed with CHiME-3
   background noise at ``--snr_db`` and ``--snr_db - --snr_jnd_db`` (the project's
   mixing: active speech level, -26 dBFS mixtures); the target is the mean change of
   the measure between the two.
2. For each family, the mixture at ``--snr_db`` is degraded on a grid of
   ``--grid_points`` severities spanning the family's default range (centred on its
   middle); the mean measure over the utterances is interpolated on the grid, and the
   step is the width ``d`` for which ``measure(centre - d/2) - measure(centre + d/2)``
   equals the target. Random families (packet loss, reverb) use one seed per
   utterance for every severity (common random numbers).
3. The 5-95 % interval of the step comes from resampling the utterances (bootstrap).

Measures: ``pesq`` (PESQ wide-band, ITU-T P.862.2 via the optional ``pesq`` package;
higher = better) and ``lsd`` (log-spectral distance in dB over active frames, after
matching the RMS of the degraded signal to the reference's; lower = better). The
reference is the clean speech at its level in the mixture. A CSV table goes to stdout:

    python calibrate_jnd_steps.py --librispeech_folder=/d/librispeech --chime3_folder=/d/chime3
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from jsqa_sb.data.degradations import FAMILIES, degrade
from jsqa_sb.data.jnd_mixing import apply_gains, mix_gains
from jsqa_sb.errors import JSQAError

SR = 16000


def parse_args(argv=None) -> argparse.Namespace:
    """The command line's options (every number of the procedure is one)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--librispeech_folder", required=True, help="folder holding LibriSpeech/")
    p.add_argument("--chime3_folder", required=True, help="folder holding CHiME3/")
    p.add_argument("--num_utterances", type=int, default=20)
    p.add_argument("--min_seconds", type=float, default=1.5, help="shorter utterances skipped")
    p.add_argument("--max_seconds", type=float, default=4.0, help="longer ones cut")
    p.add_argument("--snr_db", type=float, default=15.0, help="the mid SNR")
    p.add_argument("--snr_jnd_db", type=float, default=3.0)
    p.add_argument("--level_db", type=float, default=-26.0, help="mixture active level, dBFS")
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--grid_points", type=int, default=17)
    p.add_argument("--measures", nargs="+", default=["pesq", "lsd"], choices=["pesq", "lsd"])
    p.add_argument("--lsd_active_db", type=float, default=40.0, help="frames within this of max")
    p.add_argument("--bootstrap", type=int, default=500)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--curves", help="also write the mean measure curves to this JSON file")
    return p.parse_args(argv)


def load_pairs(args) -> list[tuple[np.ndarray, np.ndarray]]:
    """(speech, noise) excerpts: utterances drawn with the seed, noise cycled over files."""
    speech_files = sorted(Path(args.librispeech_folder).rglob("*.flac"))
    noise_files = sorted(Path(args.chime3_folder).rglob("backgrounds/*.wav"))
    if not speech_files or not noise_files:
        raise JSQAError("no .flac speech or no CHiME-3 background .wav under the folders")
    rng = np.random.default_rng(args.seed)
    pairs = []
    for path in rng.permutation(speech_files):
        speech, sr = sf.read(path, dtype="float32")
        if sr != SR or speech.size < args.min_seconds * SR:
            continue
        speech = speech[: int(args.max_seconds * SR)]
        noise, _ = sf.read(noise_files[len(pairs) % len(noise_files)], dtype="float32")
        start = rng.integers(0, noise.size - speech.size)
        pairs.append((speech, noise[start : start + speech.size]))
        if len(pairs) == args.num_utterances:
            return pairs
    raise JSQAError(f"only {len(pairs)} utterances of at least {args.min_seconds} s")


def lsd(ref: np.ndarray, deg: np.ndarray, active_db: float, n_fft: int = 512) -> float:
    """Log-spectral distance (dB) over the frames of ``ref`` within ``active_db`` of its max."""
    deg = deg * np.sqrt(np.mean(ref**2) / max(np.mean(deg**2), 1e-20))
    window = torch.hann_window(n_fft, dtype=torch.float64)

    def power(x):
        spec = torch.stft(torch.as_tensor(x, dtype=torch.float64), n_fft, n_fft // 2,
                          window=window, return_complex=True)  # fmt: skip
        return spec.abs().square().numpy().T  # (frames, bins)

    p_ref, p_deg = power(ref), power(deg)
    floor = 1e-10 * p_ref.max()
    frame_db = 10 * np.log10(p_ref.sum(axis=1) + floor)
    active = frame_db > frame_db.max() - active_db
    diff = 10 * np.log10((p_ref + floor) / (p_deg + floor))
    return float(np.sqrt(np.mean(diff[active] ** 2, axis=1)).mean())


def measure(name: str, ref: np.ndarray, deg: np.ndarray, args) -> float:
    """One measure, oriented so that larger = worse (PESQ is negated)."""
    if name == "lsd":
        return lsd(ref, deg, args.lsd_active_db)
    from pesq import pesq

    return -float(pesq(SR, ref.astype(np.float64), deg.astype(np.float64), "wb"))


def grid(family: str, points: int) -> np.ndarray:
    """``points`` severities over the family's default range."""
    low, high = FAMILIES[family].default_range
    return np.linspace(low, high, points)


def one_utterance(job) -> dict:
    """Measures of one utterance: at the two SNRs, and on each family's grid."""
    index, speech, noise, args = job
    torch.set_num_threads(1)
    gains = mix_gains(speech, noise, np.array([args.snr_db, args.snr_db - args.snr_jnd_db]),
                      SR, args.level_db)  # fmt: skip
    mixtures = apply_gains(speech, noise, gains)
    refs = [g * speech for g in gains[:, 0]]
    out = {("snr", m): [measure(m, refs[k], mixtures[k], args) for k in (0, 1)]
           for m in args.measures}  # fmt: skip
    mix = torch.as_tensor(mixtures[:1])
    for family in args.families:
        degraded = []
        for severity in grid(family, args.grid_points):
            gen = torch.Generator().manual_seed(args.seed * 100003 + index)
            degraded.append(degrade(mix, family, [float(severity)], SR, gen)[0].numpy())
        for m in args.measures:
            out[family, m] = [measure(m, refs[0], deg, args) for deg in degraded]
    return out


def step_for(curve: np.ndarray, severities: np.ndarray, target: float) -> float:
    """The width d with curve(c + d/2) - curve(c - d/2) = target around the grid's middle."""
    centre, half = severities.mean(), (severities[-1] - severities[0]) / 2
    widths = np.linspace(0.0, 2 * half, 2001)
    rise = np.interp(centre + widths / 2, severities, curve) - np.interp(
        centre - widths / 2, severities, curve
    )
    crossing = np.flatnonzero(rise >= target)
    if target <= 0 or not crossing.size:
        return float("nan")  # the measure does not change that much over the range
    i = crossing[0]  # at least 1: rise[0] is 0, below the positive target
    return float(np.interp(target, rise[i - 1 : i + 1], widths[i - 1 : i + 1]))


def table(results: list[dict], args) -> list[dict]:
    """One row per family and measure: the step, its bootstrap interval, the target."""
    rng = np.random.default_rng(args.seed)
    n = len(results)
    boot = [rng.integers(0, n, n) for _ in range(args.bootstrap)]
    rows = []
    for m in args.measures:
        snr = np.array([r[("snr", m)] for r in results])  # (n, 2): at s, at s - jnd
        deltas = snr[:, 1] - snr[:, 0]
        for family in args.families:
            curves = np.array([r[(family, m)] for r in results])  # (n, grid)
            sev = grid(family, args.grid_points)
            step = step_for(curves.mean(0), sev, deltas.mean())
            steps = [step_for(curves[b].mean(0), sev, deltas[b].mean()) for b in boot]
            lo, hi = np.nanpercentile(steps, [5, 95]) if np.isfinite(steps).any() else (np.nan,) * 2
            info = FAMILIES[family]
            rows.append({
                "family": family, "scale": info.scale, "unit": info.unit,
                "centre": round(float(sev.mean()), 4), "measure": m,
                "target_delta": round(float(deltas.mean()), 4),
                "step": round(step, 4), "step_p05": round(float(lo), 4),
                "step_p95": round(float(hi), 4), "default_jnd": info.jnd,
                "unresolved_share": round(float(np.mean(np.isnan(steps))), 3),
                "snr_db": args.snr_db, "snr_jnd_db": args.snr_jnd_db, "n_utterances": n,
            })  # fmt: skip
    return rows


def curves(results: list[dict], args) -> dict:
    """Family -> measure -> severities and mean measure (larger = worse); the SNR pair too."""
    out = {"snr": {m: np.mean([r[("snr", m)] for r in results], axis=0).tolist()
                   for m in args.measures}}  # fmt: skip
    for family in args.families:
        out[family] = {"severities": grid(family, args.grid_points).tolist()}
        out[family].update({m: np.mean([r[(family, m)] for r in results], axis=0).tolist()
                            for m in args.measures})  # fmt: skip
    return out


def main(argv=None) -> int:
    """Measure, calibrate, and print the CSV table on stdout."""
    args = parse_args(argv)
    if "pesq" in args.measures:
        try:
            import pesq  # noqa: F401
        except ImportError:
            print("pesq is not installed: measuring lsd only", file=sys.stderr)
            args.measures = [m for m in args.measures if m != "pesq"] or ["lsd"]
    try:
        pairs = load_pairs(args)
    except JSQAError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    jobs = [(i, s, n, args) for i, (s, n) in enumerate(pairs)]
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(one_utterance, jobs))
    rows = table(results, args)
    if args.curves:
        Path(args.curves).write_text(json.dumps(curves(results, args), indent=1))
    writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
