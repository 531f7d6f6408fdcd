import math

import pytest
import torch

from jsqa_sb.networks import (
    NISQA_OUTPUTS,
    JSQAEncoder,
    LogMelFrontEnd,
    MOSHead,
    ProjectionHead,
)

SR = 16000


def _noise(seconds, seed, level=0.05):
    gen = torch.Generator().manual_seed(seed)
    return level * torch.randn(int(round(seconds * SR)), generator=gen)


def _pad_batch(clips, total=None, fill=None):
    """Zero-pad (or fill with ``fill(n)``) a list of 1-D clips; return wavs, wav_lens."""
    total = total or max(len(c) for c in clips)
    wavs = torch.zeros(len(clips), total)
    for i, clip in enumerate(clips):
        wavs[i, : len(clip)] = clip
        if fill is not None and len(clip) < total:
            wavs[i, len(clip) :] = fill(total - len(clip))
    lens = torch.tensor([len(c) / total for c in clips])
    return wavs, lens


@pytest.fixture(scope="module")
def encoder():
    """A default encoder whose BatchNorm running statistics have seen some data."""
    torch.manual_seed(0)
    enc = JSQAEncoder()
    enc.train()
    with torch.no_grad():
        for seed in range(3):
            wavs, lens = _pad_batch([_noise(1.0, seed), _noise(0.7, seed + 10, 0.01)])
            enc(wavs, lens)
    return enc.eval()


def test_output_shapes_and_attributes(encoder):
    wavs, lens = _pad_batch([_noise(1.0, 1), _noise(0.5, 2), _noise(0.3, 3)])
    with torch.no_grad():
        emb = encoder(wavs, lens)
    assert emb.shape == (3, 128) == (3, encoder.embedding_dim)
    assert emb.dtype == torch.float32 and torch.isfinite(emb).all()
    assert encoder.min_samples == 2560
    assert encoder.min_seconds == pytest.approx(0.16)
    # A clip of exactly min_samples (one patch) works.
    with torch.no_grad():
        assert encoder(torch.randn(1, encoder.min_samples)).shape == (1, 128)


def test_default_encoder_size():
    n_params = sum(p.numel() for p in JSQAEncoder().parameters())
    print(f"JSQAEncoder default parameters: {n_params}")
    assert 100_000 < n_params < 1_000_000


def test_int_cnn_channels_and_tiny_config():
    # YAML files give cnn_channels as one int: c means (c, c, 2c).
    default = JSQAEncoder()
    assert [c.out_channels for c in JSQAEncoder(cnn_channels=16).cnn.convs] == [16, 16, 32]
    assert sum(p.numel() for p in JSQAEncoder(cnn_channels=16).parameters()) == sum(
        p.numel() for p in default.parameters()
    )
    tiny = JSQAEncoder(cnn_channels=4, d_model=16, att_layers=1, att_heads=2, emb_dim=16)
    assert sum(p.numel() for p in tiny.parameters()) < 50_000
    wavs, lens = _pad_batch([_noise(1.0, 1), _noise(0.5, 2)])
    assert tiny(wavs, lens).shape == (2, 16)
    assert JSQAEncoder(att_layers=0).eval()(wavs, lens).shape == (2, 128)


def test_frontend_shapes_and_valid_frames():
    frontend = LogMelFrontEnd()
    feats = frontend(torch.randn(2, SR))
    # 20 ms window (320), 10 ms hop (160), no centring: 1 + (16000 - 320) // 160 frames.
    assert feats.shape == (2, 99, 48)
    assert frontend.num_frames(SR) == 99 and frontend.num_frames(100) == 0
    assert frontend.valid_frames(torch.tensor([1.0, 0.5]), SR).tolist() == [99, 49]
    assert frontend.valid_frames(None, SR, batch=3).tolist() == [99, 99, 99]
    # A valid frame never sees the padding: changing everything after the true length
    # leaves the valid frames untouched.
    wav = torch.randn(1, SR)
    n_valid = int(frontend.valid_frames(torch.tensor([0.5]), SR)[0])
    other = wav.clone()
    other[:, SR // 2 :] = 100 * torch.randn(SR // 2)
    assert torch.equal(frontend(wav)[:, :n_valid], frontend(other)[:, :n_valid])
    assert not torch.equal(frontend(wav)[:, n_valid], frontend(other)[:, n_valid])


@pytest.mark.parametrize("pad", ["zeros", "noise"])
def test_padding_invariance(encoder, pad):
    short, long = _noise(2.1, 5), _noise(4.0, 6)
    fill = None if pad == "zeros" else (lambda n: torch.randn(n))
    wavs, lens = _pad_batch([short, long], fill=fill)
    with torch.no_grad():
        alone = encoder(short.unsqueeze(0))
        batched = encoder(wavs, lens)
        long_alone = encoder(long.unsqueeze(0))
    torch.testing.assert_close(batched[0:1], alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(batched[1:2], long_alone, atol=1e-5, rtol=0)


def test_padding_invariance_many_lengths(encoder):
    clips = [_noise(s, 20 + i) for i, s in enumerate([0.16, 0.33, 1.27, 3.0, 2.999])]
    wavs, lens = _pad_batch(clips, total=int(3.5 * SR), fill=lambda n: 0.3 * torch.randn(n))
    with torch.no_grad():
        batched = encoder(wavs, lens)
        for i, clip in enumerate(clips):
            torch.testing.assert_close(
                batched[i : i + 1], encoder(clip.unsqueeze(0)), atol=1e-5, rtol=0
            )


def test_wav_lens_none_equals_ones(encoder):
    wavs = torch.randn(3, SR) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(encoder(wavs), encoder(wavs, torch.ones(3)), atol=0, rtol=0)


def test_too_short_clip_raises(encoder):
    with pytest.raises(ValueError, match=r"0\.160 s"):
        encoder(torch.randn(1, encoder.min_samples - 1))
    # Also when the short clip hides in a padded batch.
    wavs, lens = _pad_batch([_noise(1.0, 1), _noise(0.1, 2)])
    with pytest.raises(ValueError, match=r"minimum of 0\.160 s.*clip 1"):
        encoder(wavs, lens)
    with pytest.raises(ValueError, match="shape"):
        encoder(torch.randn(2, 1, SR))


def test_different_inputs_give_different_embeddings(encoder):
    wavs = torch.stack([_noise(1.0, 7), _noise(1.0, 8), _noise(1.0, 7, level=0.001)])
    with torch.no_grad():
        emb = encoder(wavs)
    assert not torch.allclose(emb[0], emb[1], atol=1e-4)
    assert not torch.allclose(emb[0], emb[2], atol=1e-4)


def test_gradients_reach_every_parameter():
    torch.manual_seed(1)
    enc = JSQAEncoder().train()
    wavs, lens = _pad_batch([_noise(1.0, 1), _noise(0.6, 2), _noise(0.8, 3)])
    enc(wavs, lens).sum().backward()
    for name, param in enc.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    assert any(param.grad.abs().sum() > 0 for param in enc.parameters())


def test_bfloat16_autocast(encoder):
    wavs, lens = _pad_batch([_noise(1.0, 1), _noise(0.6, 2)])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        emb = encoder(wavs, lens)
        scores = MOSHead(128)(emb)
    assert emb.shape == (2, 128) and torch.isfinite(emb.float()).all()
    assert torch.isfinite(scores).all() and (scores >= 1).all() and (scores <= 5).all()


def test_projection_head_unit_norm():
    head = ProjectionHead(128)
    z = head(torch.randn(6, 128) * 50)
    assert z.shape == (6, 64)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(6))


def test_mos_head_range_and_outputs():
    head = MOSHead(128).eval()
    assert head.output_names == NISQA_OUTPUTS and len(head.output_names) == 5
    x = torch.cat([torch.randn(4, 128), 1e6 * torch.randn(4, 128), -1e6 * torch.randn(4, 128)])
    scores = head(x)
    assert scores.shape == (12, 5)
    assert (scores >= 1).all() and (scores <= 5).all()
    assert MOSHead(128, outputs=1)(torch.randn(2, 128)).shape == (2, 1)
    assert MOSHead(128, outputs=1).output_names == ("mos",)
    assert MOSHead(128, outputs=3)(torch.randn(2, 128)).shape == (2, 3)


def test_encoder_can_learn_the_level():
    """Encoder + linear layer fit the RMS level of noise clips in 30 Adam steps."""
    torch.manual_seed(0)
    levels_db = torch.linspace(-45, -10, 8)
    wavs = torch.stack([10 ** (db / 20) * torch.randn(int(0.5 * SR)) for db in levels_db.tolist()])
    target = (levels_db + 27.5) / 10  # about -1.75 .. 1.75
    enc = JSQAEncoder(dropout=0.0).train()
    linear = torch.nn.Linear(enc.embedding_dim, 1)
    opt = torch.optim.Adam([*enc.parameters(), *linear.parameters()], lr=2e-3)
    losses = []
    for _ in range(30):
        pred = linear(enc(wavs)).squeeze(1)
        loss = torch.nn.functional.mse_loss(pred, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert math.isfinite(losses[-1])
    assert min(losses[-5:]) < 0.5 * losses[0], losses


def test_chunked_cnn_equals_unchunked(encoder):
    wavs, lens = _pad_batch([_noise(1.3, 1), _noise(0.4, 2), _noise(0.9, 3)])
    chunked = JSQAEncoder(cnn_chunk=7)
    chunked.load_state_dict(encoder.state_dict())
    whole = JSQAEncoder(cnn_chunk=10_000)
    whole.load_state_dict(encoder.state_dict())
    with torch.no_grad():
        a = chunked.eval()(wavs, lens)
        b = whole.eval()(wavs, lens)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_for_inference_folds_batchnorm_into_a_copy(encoder):
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    fused = encoder.for_inference()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert encoder.state_dict().keys() == before.keys()  # the original is untouched
    assert all(torch.equal(encoder.state_dict()[k], v) for k, v in before.items())
    wavs, lens = _pad_batch([_noise(1.3, 1), _noise(0.4, 2), _noise(0.9, 3)])
    with torch.no_grad():
        torch.testing.assert_close(fused(wavs, lens), encoder(wavs, lens), atol=1e-5, rtol=0)


def test_inputs_longer_than_the_position_table():
    from speechbrain.lobes.models.transformer.Transformer import PositionalEncoding

    torch.manual_seed(0)
    tiny = JSQAEncoder(cnn_channels=4, d_model=16, att_layers=1, att_heads=2, seg_hop=1).eval()
    assert not any(k.endswith(".pe") for k in tiny.state_dict())  # computed, not saved
    wav = _noise(26.0, 4).unsqueeze(0)  # 2586 patches, the table has 2500
    assert int(tiny.valid_segments(None, wav.shape[1])[0]) > tiny.positions.max_len
    with torch.no_grad():
        long = tiny(wav)
        tiny.positions = PositionalEncoding(16, 3000)
        torch.testing.assert_close(long, tiny(wav), atol=0, rtol=0)
