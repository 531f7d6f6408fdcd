r"""Invariance of the predicted MOS to changes a listener does not hear (or barely).

For real speech (the files of a NISQA-layout test database, ``--data``), each file is
rewritten, unchanged to the ear, and scored again; the JSON line gives, per change, the
mean and the largest ``|MOS(changed) - MOS(original)|`` over the files:

- ``wav16``, ``flac``, ``wav_float``, ``ogg``: the same samples as 16-bit WAV, FLAC,
  32-bit float WAV and Ogg Vorbis (lossy, at libsndfile's default quality);
- ``stored_48k``: 16 kHz content upsampled to 48 kHz (polyphase, scipy), 16-bit WAV
  (files stored at 16 kHz only);
- ``stereo``: the same signal in two identical channels;
- ``silence``: 0.5 s of digital silence added at both ends;
- ``halves_swapped``: the file cut in two and its halves swapped, on the files whose
  condition (``con_description``) holds a local degradation (``packetloss``, ``clip``).
  The cut is at the quietest 20 ms frame of the middle third, so it does not fall in a
  word;
- ``burst_moved``: NISQA issue 12's case made explicit. A clean reference (``ref/``)
  gets a burst of packet loss (1.5 s in which each 20 ms frame is dropped, zeroed,
  with probability 0.5) or of clipping (1 s clipped at 10% of the peak) in its first
  half; the burst is then moved to the second half by the same halves swap.

Targets: ``wav16``, ``flac``, ``wav_float``, ``ogg``, ``stored_48k`` and ``stereo`` under
0.02 mean |ΔMOS|; ``halves_swapped`` and ``burst_moved`` under 0.1.

DNSMOS (``speechmos``, an optional peer: ``pip install -e ".[bench]"``) is measured on
the same files in the same run, side by side (its ``ovrl_mos``, each file read by
speechmos itself, as a user would give it the path). It needs no network: its ONNX
models ship in the package.

    python benchmarks/bench_invariance.py --model FOLDER \\
        [--data ../shared/data/nisqa_mini/NISQA_Corpus/NISQA_TEST_SIM] [--files 30]

``--model`` is a folder written by ``jsqa export`` from a fine-tuning run. Prints one
JSON line; ``--csv FILE`` also writes every file's scores.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "nisqa_mini" / "NISQA_Corpus" / "NISQA_TEST_SIM"
FORMAT_CHANGES = ("wav16", "flac", "wav_float", "ogg", "stored_48k", "stereo")
LOCAL_DEGRADATIONS = ("packetloss", "clip")
TARGETS = {
    **{name: 0.02 for name in FORMAT_CHANGES},
    "silence": None,
    "halves_swapped": 0.1,
    "burst_moved": 0.1,
}


def file_table(data: Path) -> pd.DataFrame:
    """The database's files: ``path`` (degraded), ``ref``, ``condition``, ``con``."""
    tables = sorted(data.glob("*_file.csv"))
    if tables:
        table = pd.read_csv(tables[0])
    else:
        corpus = pd.read_csv(data.parent / "NISQA_corpus_file.csv")
        table = corpus[corpus["db"] == data.name]
    return pd.DataFrame(
        {
            "path": [str(data / "deg" / f) for f in table["filename_deg"]],
            "ref": [str(data / "ref" / f) for f in table["filename_ref"]],
            "condition": table["con_description"].fillna("").astype(str).to_numpy(),
            "con": table["con"].to_numpy(),
        }
    )


def pick(table: pd.DataFrame, n: int | None) -> pd.DataFrame:
    """``n`` files spread over the conditions: one of each condition first, then more."""
    if not n or n >= len(table):
        return table.reset_index(drop=True)
    order = table.assign(rank=table.groupby("con").cumcount()).sort_values(
        ["rank", "con"], kind="stable"
    )
    return order.head(n).drop(columns="rank").reset_index(drop=True)


def quiet_cut(audio: np.ndarray, sr: int) -> int:
    """The start of the quietest 20 ms frame in the middle third: where to cut."""
    frame = int(0.02 * sr)
    mono = audio if audio.ndim == 1 else audio.mean(axis=1)
    lo, hi = len(mono) // 3, 2 * len(mono) // 3
    starts = np.arange(lo, max(lo + 1, hi - frame), frame // 2)
    energy = [float(np.sum(mono[s : s + frame] ** 2)) for s in starts]
    return int(starts[int(np.argmin(energy))])


def swap_halves(audio: np.ndarray, sr: int) -> np.ndarray:
    """The file cut at :func:`quiet_cut`, second part first."""
    cut = quiet_cut(audio, sr)
    return np.concatenate([audio[cut:], audio[:cut]])


def variants(audio: np.ndarray, sr: int, folder: Path, local: bool) -> dict[str, Path]:
    """Write the unchanged-to-the-ear versions of one recording; their paths by name."""
    from scipy.signal import resample_poly

    folder.mkdir(parents=True, exist_ok=True)
    out = {}

    def write(name: str, data: np.ndarray, rate: int, ext: str = "wav", **kwargs) -> None:
        out[name] = folder / f"{name}.{ext}"
        sf.write(out[name], data, rate, **kwargs)

    write("wav16", audio, sr, subtype="PCM_16")
    write("flac", audio, sr, "flac", subtype="PCM_16")
    write("wav_float", audio, sr, subtype="FLOAT")
    write("ogg", audio, sr, "ogg", format="OGG", subtype="VORBIS")
    if sr == 16000:
        up = np.clip(resample_poly(audio, 3, 1), -1.0, 1.0)
        write("stored_48k", up, 3 * sr, subtype="PCM_16")
    write("stereo", np.stack([audio, audio], axis=1), sr, subtype="PCM_16")
    pad = np.zeros(sr // 2, dtype=audio.dtype)
    write("silence", np.concatenate([pad, audio, pad]), sr, subtype="PCM_16")
    if local:
        write("halves_swapped", swap_halves(audio, sr), sr, subtype="PCM_16")
    return out


def with_burst(audio: np.ndarray, sr: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """``audio`` with a packet-loss or clipping burst in its first half."""
    out = audio.copy()
    start = int(0.1 * len(audio))
    if kind == "packetloss":
        frame = int(0.02 * sr)
        for s in range(start, min(start + int(1.5 * sr), len(out) // 2 - frame), frame):
            if rng.random() < 0.5:
                out[s : s + frame] = 0.0
    else:
        stop = min(start + sr, len(out) // 2)
        limit = 0.1 * float(np.abs(audio).max())
        out[start:stop] = np.clip(out[start:stop], -limit, limit)
    return out


def scorers(model_folder: str, use_dnsmos: bool) -> dict[str, Callable[[Path], float]]:
    """JSQA (the exported model) and, when installed, DNSMOS: path -> MOS."""
    from jsqa_sb.serving.inference import JSQA

    model = JSQA.from_hparams(source=model_folder, savedir=tempfile.mkdtemp())
    out: dict[str, Callable[[Path], float]] = {"jsqa": lambda path: model.score_file(path)["mos"]}
    if use_dnsmos and importlib.util.find_spec("speechmos") is not None:
        from speechmos import dnsmos

        out["dnsmos"] = lambda path: float(dnsmos.run(str(path), 16000)["ovrl_mos"])
    return out


def summarize(deltas: dict[str, dict[str, list[float]]]) -> dict:
    """Mean and max |ΔMOS| per change and scorer, with the targets."""
    out = {}
    for change, by_scorer in deltas.items():
        entry = {"target_mean_abs": TARGETS.get(change)}
        for scorer, values in by_scorer.items():
            absolute = [abs(v) for v in values]
            entry[scorer] = {
                "files": len(values),
                "mean_abs": statistics.fmean(absolute) if values else math.nan,
                "max_abs": max(absolute) if values else math.nan,
                "mean_signed": statistics.fmean(values) if values else math.nan,
            }
            if entry["target_mean_abs"] is not None and values:
                entry[scorer]["meets_target"] = entry[scorer]["mean_abs"] < entry["target_mean_abs"]
        out[change] = entry
    return out


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; print and return its JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a model folder from jsqa export")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="a NISQA-layout database")
    parser.add_argument("--files", type=int, default=None, help="at most this many (spread)")
    parser.add_argument("--burst_files", type=int, default=10, help="references given bursts")
    parser.add_argument("--no_dnsmos", action="store_true", help="skip DNSMOS even if installed")
    parser.add_argument("--csv", default=None, help="also write every file's scores here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = Path(args.data)
    table = pick(file_table(data), args.files)
    score = scorers(args.model, not args.no_dnsmos)
    rng = np.random.default_rng(args.seed)
    deltas: dict[str, dict[str, list[float]]] = {}
    rows = []
    seconds = {name: 0.0 for name in score}

    def measure(name: str, path: Path) -> float:
        start = time.perf_counter()
        value = score[name](path)
        seconds[name] += time.perf_counter() - start
        return value

    with tempfile.TemporaryDirectory() as tmp:
        for i, item in table.iterrows():
            audio, sr = sf.read(item["path"], dtype="float32")
            local = any(word in item["condition"] for word in LOCAL_DEGRADATIONS)
            paths = variants(audio, sr, Path(tmp) / f"f{i}", local)
            for name in score:
                reference = measure(name, Path(item["path"]))
                row = {"file": Path(item["path"]).name, "scorer": name, "original": reference}
                for change, path in paths.items():
                    row[change] = measure(name, path)
                    deltas.setdefault(change, {}).setdefault(name, []).append(
                        row[change] - reference
                    )
                rows.append(row)
        refs = list(dict.fromkeys(table["ref"]))[: args.burst_files]
        for j, ref in enumerate(refs):
            audio, sr = sf.read(ref, dtype="float32")
            for kind in LOCAL_DEGRADATIONS:
                early = with_burst(audio, sr, kind, rng)
                folder = Path(tmp) / f"burst{j}_{kind}"
                folder.mkdir()
                sf.write(folder / "early.wav", early, sr, subtype="PCM_16")
                sf.write(folder / "late.wav", swap_halves(early, sr), sr, subtype="PCM_16")
                for name in score:
                    first = measure(name, folder / "early.wav")
                    moved = measure(name, folder / "late.wav")
                    deltas.setdefault("burst_moved", {}).setdefault(name, []).append(moved - first)
                    rows.append(
                        {
                            "file": f"{Path(ref).name}+{kind}",
                            "scorer": name,
                            "original": first,
                            "burst_moved": moved,
                        }
                    )
    result = {
        "benchmark": "invariance",
        "data": str(data),
        "model": args.model,
        "files": len(table),
        "local_degradation_files": int(
            sum(any(w in c for w in LOCAL_DEGRADATIONS) for c in table["condition"])
        ),
        "burst_references": len(refs),
        "scorers": list(score),
        "dnsmos": "measured" if "dnsmos" in score else "not installed (or --no_dnsmos)",
        "changes": summarize(deltas),
        "scoring_seconds": {name: round(s, 1) for name, s in seconds.items()},
    }
    if args.csv:
        pd.DataFrame(rows).to_csv(args.csv, index=False)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
