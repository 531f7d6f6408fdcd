"""The model card (``README.md``) of a model folder that ``jsqa export`` writes."""

from __future__ import annotations

from pathlib import Path

from jsqa_sb.data.prepare_utils import read_json

CITATION = """@inproceedings{fan2025jsqa,
  title     = {{JSQA}: Speech Quality Assessment with Perceptually-Inspired Contrastive
               Pretraining Based on {JND} Audio Pairs},
  author    = {Fan, Junyi and Williamson, Donald S.},
  booktitle = {IEEE Workshop on Applications of Signal Processing to Audio and Acoustics
               (WASPAA)},
  year      = {2025},
  note      = {arXiv:2507.11636}
}
@misc{speechbrainV1,
  title  = {Open-Source Conversational AI with {SpeechBrain} 1.0},
  author = {Ravanelli, Mirco and others},
  year   = {2024},
  eprint = {2407.00463},
  archivePrefix = {arXiv}
}"""


def _metrics_table(results: dict, outputs: list) -> str:
    rows = [
        "| Test set | Output | Files | PCC | SRCC | RMSE | RMSE (3rd-order map) "
        "| PCC per condition |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for db, dims in results.get("databases", {}).items():
        for dim in outputs:
            m = dims.get(dim)
            if not m:
                continue
            figures = [_f(m.get(k)) for k in ("pcc", "srcc", "rmse", "rmse_map3", "pcc_con")]
            rows.append(f"| {db} | {dim} | {m.get('n_files', '')} | {' | '.join(figures)} |")
    return "\n".join(rows)


def _f(x) -> str:
    return "" if x is None else f"{x:.3f}"


def _card(license: str, tag: str, body: str, with_scores: bool) -> str:
    """A whole card: front matter (with ``tag``), ``body``, usage, license and citation."""
    call = (
        'model.score_file("speech.wav")        # {"mos": ...}'
        if with_scores
        else 'model.encode_file("speech.wav")      # quality embedding'
    )
    return f"""---
library_name: speechbrain
license: {license}
tags:
- speechbrain
- speech-quality-assessment
- mos
- jsqa
- {tag}
---

{body}
## Usage

With the JSQA package (`pip install jsqa-sb`):

```python
from jsqa_sb import JSQA
model = JSQA.from_hparams(source="THIS_REPO_OR_FOLDER", savedir="pretrained/jsqa")
{call}
model.distance("a.wav", "b.wav")      # quality distance, 0 = same quality
```

From the command line: `jsqa score THIS_REPO_OR_FOLDER recordings/ --out scores.csv`.

With SpeechBrain alone (the code is in `custom_interface.py` of this folder):

```python
from speechbrain.inference.interfaces import foreign_class
model = foreign_class(source="THIS_REPO_OR_FOLDER", pymodule_file="custom_interface.py",
                      classname="JSQA")
```

## License and citation

License: {license}. If you use this model, please cite:

```bibtex
{CITATION}
```
"""


def input_section(sample_rate: int, window: float) -> str:
    """The card's "Input" section, for the sample rate and window the YAML sets."""
    return f"""## Input

Any sample rate (resampled to {sample_rate} Hz), any number of channels (averaged to
mono), WAV (8/16/24/32-bit, float), FLAC or OGG. Recordings longer than {window:g} s are
scored by equal windows of at most {window:g} s and the window scores averaged, weighted
by duration, in bounded memory. Recordings shorter than the encoder's minimum (0.16 s
with the default encoder) are refused with an error; digital silence is scored with a
warning.
"""


def _used_splits(run: Path, cfg: dict) -> dict:
    """The databases the run trained and validated on (its nisqa_splits.json)."""
    for folder in (cfg.get("manifest_folder", run / "manifests"), run / "manifests"):
        path = Path(str(folder)) / "nisqa_splits.json"
        if not path.is_file():
            continue
        try:
            splits = read_json(path)
            return {split: [str(db) for db in splits[split]] for split in ("train", "valid")}
        except (OSError, ValueError, TypeError, KeyError):
            continue  # damaged: the next folder, then the configuration
    return {  # the configuration's lists, some of which may have been absent
        split: [f"{db} (if present)" for db in _as_list(cfg.get(f"{split}_dbs"))]
        for split in ("train", "valid")
    }


def _as_list(value) -> list:
    """A list setting of the run's configuration (anything else: none)."""
    return value if isinstance(value, list) else []


def finetune_card(
    run: Path, results: dict, outputs: list, ckpt: Path, inputs: str, license: str
) -> str:
    """The card of a fine-tuned scoring model, with its test figures."""
    cfg = results.get("config")
    cfg = cfg if isinstance(cfg, dict) else {}
    yaml_name = Path(str(cfg.get("yaml", "?"))).name
    splits = _used_splits(run, cfg)
    pretrained = cfg.get("pretrained_encoder")
    init = (
        f"the JND-contrastively pretrained encoder `{Path(str(pretrained)).name}`"
        if pretrained
        else "a randomly initialised encoder (the from-scratch baseline)"
    )
    body = f"""# JSQA speech quality model ({", ".join(outputs)})

Non-intrusive speech quality prediction: from a degraded recording alone, this model
predicts {", ".join(f"`{o}`" for o in outputs)} on the 1-5 scale of the NISQA corpus.
It is a JSQA model: a CNN-self-attention encoder pretrained with a contrastive loss on
just-noticeable-difference (JND) audio pairs, then fine-tuned for MOS.

{inputs}
## Training

- Run: `{run.name}`, stage `{cfg.get("stage", "finetune")}` with `{yaml_name}`,
  {cfg.get("number_of_epochs", "?")} epochs, seed {cfg.get("seed", "?")}, from {init}.
- Data: NISQA databases {", ".join(splits["train"]) or "(not recorded)"} (training) and
  {", ".join(splits["valid"]) or "(not recorded)"} (checkpoint selection by validation PCC),
  from `{cfg.get("nisqa_folder", "?")}`.
- Checkpoint: `{ckpt.name}`.

## Test results

{_metrics_table(results, outputs)}

Figures from `training_results.json` (the run's `results.json`). RMSE after a
third-order monotonic mapping per test set follows ITU-T P.1401. Check which corpus
these come from before you compare them with published figures: a run on a
miniature or proxy-labelled corpus says nothing about quality on real data.
"""
    return _card(license, "non-intrusive", body, with_scores=True)


def pretrain_card(run: Path, summary: dict, inputs: str, license: str) -> str:
    """The card of an encoder-only (pretrained) model, with its validation figures."""
    best = summary.get("best_valid", {})
    rand = summary.get("random_init_valid", {})
    rows = "\n".join(
        f"| {k} | {_f(rand.get(k))} | {_f(best.get(k))} |"
        for k in ("cross_auc", "within_auc", "probe_snr_spearman")
        if k in best
    )
    body = f"""# JSQA quality encoder (JND contrastive pretraining, no MOS head)

A speech quality encoder pretrained with a contrastive loss on just-noticeable-
difference (JND) audio pairs: mixtures of the same speech and noise at SNRs closer than
a JND are pulled together, mixtures far apart pushed apart. It gives quality
embeddings and a quality distance; it predicts no MOS (fine-tune it first).

{inputs}
## Validation (fixed JND mixtures)

| Metric | Random init | Best epoch ({summary.get("best_epoch", "?")}) |
|---|---|---|
{rows}

From `pretrain_summary.json` of run `{run.name}`.
"""
    return _card(license, "embeddings", body, with_scores=False)
