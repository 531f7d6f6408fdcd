"""``hparams/reuse_encoder_example.yaml``: another recipe loads ``encoder.ckpt``."""

from pathlib import Path

import torch
from hyperpyyaml import load_hyperpyyaml

from jsqa_sb.networks import JSQAEncoder

YAML = Path(__file__).resolve().parents[1] / "hparams" / "reuse_encoder_example.yaml"


def test_downstream_recipe_gets_the_pretrained_encoder(tmp_path):
    torch.manual_seed(0)
    original = JSQAEncoder().eval()  # the example's settings are pretrain.yaml's defaults
    (tmp_path / "out" / "save").mkdir(parents=True)  # what the recipe's Checkpointer makes
    ckpt = tmp_path / "encoder.ckpt"
    torch.save(original.state_dict(), ckpt)
    with open(YAML) as f:
        hparams = load_hyperpyyaml(
            f, {"pretrained_encoder": str(ckpt), "output_folder": str(tmp_path / "out")}
        )
    wavs, lens = 0.1 * torch.randn(3, 24000), torch.tensor([1.0, 0.8, 0.5])
    encoder = hparams["encoder"].eval()
    with torch.no_grad():
        assert not torch.allclose(encoder(wavs, lens), original(wavs, lens))  # before loading
        hparams["pretrainer"].collect_files()
        hparams["pretrainer"].load_collected()
        torch.testing.assert_close(encoder(wavs, lens), original(wavs, lens), rtol=0, atol=0)
        logits = hparams["modules"]["classifier"](encoder(wavs, lens))
    assert logits.shape == (3, 4)
