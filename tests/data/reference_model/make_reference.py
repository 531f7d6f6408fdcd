"""Write the reference model of ``tests/test_reference_model.py`` (run once, then commit).

It was run with the code of the commit that added it, before the encoder moved onto
library layers: ``model/`` is what ``jsqa export`` wrote for a tiny fine-tuning run
(old attention key names in ``encoder.ckpt``), and ``reference_scores.json`` holds what
that code computed from it. Run again only to make a new reference on purpose::

    PYTHONPATH=. python tests/data/reference_model/make_reference.py
"""

import json
import re
import shutil
import tempfile
from pathlib import Path

import soundfile as sf
import torch

from jsqa_sb.hub_export import export_model
from jsqa_sb.inference import JSQA
from jsqa_sb.models import JSQAEncoder, MOSHead

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
TINY = {"cnn_channels": 4, "d_model": 16, "att_layers": 2, "att_heads": 2, "emb_dim": 16}
SAMPLES = sorted((REPO / "jsqa_sb" / "samples").glob("*.flac"))
DIMS = ["mos", "noi", "col", "dis", "loud"]


def trained_looking_modules() -> tuple[JSQAEncoder, MOSHead]:
    """Random tiny modules; BatchNorm statistics from a few batches, no default norms."""
    torch.manual_seed(15)
    encoder = JSQAEncoder(**TINY, att_ffn=32)
    head = MOSHead(16, 8)
    speech = [torch.from_numpy(sf.read(p, dtype="float32")[0][:32000]) for p in SAMPLES]
    encoder.train()
    with torch.no_grad():
        for step in range(4):  # running statistics that saw speech, noise and levels
            wavs = torch.stack([w * (0.5 + step) for w in speech[:4]])
            wavs = wavs + 0.01 * step * torch.randn_like(wavs)
            encoder(wavs, torch.tensor([1.0, 0.9, 0.75, 0.6]))
        for name, value in encoder.named_parameters():  # LayerNorm/BN weights not 1, 0
            if "norm" in name:
                value.add_(0.2 * torch.randn_like(value))
    return encoder.eval(), head.eval()


def write_run(run: Path, encoder: JSQAEncoder, head: MOSHead) -> None:
    """A finished fine-tuning run folder, as ``tests/conftest.py`` builds one."""
    ckpt = run / "save" / "CKPT+2026-01-01+00-00-00+00"
    ckpt.mkdir(parents=True)
    text = (REPO / "hparams" / "finetune.yaml").read_text()
    values = {**TINY, "head_hidden": 8, "nisqa_folder": "/data", "pretrained_encoder": "e.ckpt"}
    for key, value in values.items():
        text, n = re.subn(rf"^{key}: .*$", f"{key}: {value}", text, count=1, flags=re.M)
        assert n == 1, key
    line = "    d_model: !ref <d_model>\n"
    text = text.replace(line, line + "    att_ffn: 32\n", 1)
    (run / "hyperparams.yaml").write_text(text)
    torch.save(encoder.state_dict(), ckpt / "encoder.ckpt")
    torch.save(head.state_dict(), ckpt / "head.ckpt")
    metrics = {"pcc": 0.9, "srcc": 0.88, "rmse": 0.4, "n_files": 90}
    results = {
        "databases": {"NISQA_TEST_SIM": {dim: metrics for dim in DIMS}},
        "config": {"stage": "finetune", "seed": 3, "yaml": "hparams/finetune.yaml"},
        "checkpoint": str(ckpt),
        "test_sets": ["NISQA_TEST_SIM"],
    }
    (run / "results.json").write_text(json.dumps(results))


def main() -> None:
    encoder, head = trained_looking_modules()
    model_dir = HERE / "model"
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        write_run(run, encoder, head)
        export_model(run, Path(tmp) / "export")
        shutil.rmtree(model_dir, ignore_errors=True)
        model_dir.mkdir()
        for name in ("hyperparams.yaml", "encoder.ckpt", "head.ckpt"):  # what loading reads
            shutil.copyfile(Path(tmp) / "export" / name, model_dir / name)
        # window_seconds 4: the longer samples are scored by windows, the rest in one batch
        yaml = model_dir / "hyperparams.yaml"
        yaml.write_text(yaml.read_text().replace("window_seconds: 10.0", "window_seconds: 4.0"))
        model = JSQA.from_hparams(source=str(model_dir), savedir=Path(tmp) / "sd")
        names = [p.name for p in SAMPLES]
        files = {n: model.score_file(p) for n, p in zip(names, SAMPLES)}
        batch = dict(zip(names, model.score_files(SAMPLES)))
        wav = torch.from_numpy(sf.read(SAMPLES[0], dtype="float32")[0][:24000])
        with torch.no_grad():
            embedding = encoder(wav.unsqueeze(0))[0].tolist()
    reference = {"score_file": files, "score_files": batch, "embedding_first_24000": embedding}
    (HERE / "reference_scores.json").write_text(json.dumps(reference, indent=1) + "\n")


if __name__ == "__main__":
    main()
