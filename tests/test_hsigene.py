"""Tests of the small HSIGene generator (tiny configurations: the whole file runs in well under a minute)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hiralign.generators import hsigene as hg

WL = np.linspace(400.0, 700.0, 8)
#: tiny training settings: a few optimiser steps of narrow networks
TINY = dict(vae_channels=8, vae_mult=(1, 2), z_channels=4, latent_channels=2, vae_norm_groups=4, vae_steps=30,
            block_out_channels=(8, 16), control_channels=8, batch_size=4, patch_size=16, sr_scales=(2,))
RUN = dict(steps=4, train_steps=20, **TINY)


def scenes(n: int = 2, height: int = 24, width: int = 24, seed: int = 0) -> np.ndarray:
    """``(n, 8, H, W)`` cubes in [0, 1]: two-material images split by a random oblique edge."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    out = np.empty((n, len(WL), height, width), dtype=np.float32)
    for i in range(n):
        a, b = rng.uniform(0.1, 0.9, (2, len(WL)))
        mask = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1) + rng.uniform(-5, 5)) > 0
        out[i] = np.where(mask[None], a[:, None, None], b[:, None, None]) * rng.uniform(0.8, 1.0, (height, width))
    return out


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("hsigene-cache")


@pytest.fixture(scope="module")
def proxies():
    return scenes()


@pytest.fixture(scope="module")
def model(proxies):
    return hg.train_hsigene(proxies, WL, hg._make_config({**TINY, "train_steps": 20}))


def test_shape_dtype_range(proxies, cache):
    out = hg.hsigene_hsis(proxies, WL, n_generated=2, seed=0, cache_dir=cache, **RUN)
    assert out.shape == (2, 2, len(WL), 24, 24) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    assert np.abs(out[:, 0] - out[:, 1]).mean() > 1e-4  # the G samples of one proxy differ


def test_seed_determinism_and_cache_reuse(proxies, cache, monkeypatch):
    first = hg.hsigene_hsis(proxies, WL, n_generated=2, seed=0, cache_dir=cache, **RUN)  # trains or loads
    calls = []
    real = hg.train_hsigene
    monkeypatch.setattr(hg, "train_hsigene", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = hg.hsigene_hsis(proxies, WL, n_generated=2, seed=0, cache_dir=cache, **RUN)
    other = hg.hsigene_hsis(proxies, WL, n_generated=2, seed=1, cache_dir=cache, **RUN)
    assert calls == []  # loaded from the cache, not retrained
    np.testing.assert_allclose(again, first, atol=1e-5)
    assert np.abs(other - first).mean() > 1e-3
    entries = [p for p in cache.iterdir() if p.is_dir()]
    assert entries and not any(".tmp" in p.name for p in entries)  # written atomically
    hg.hsigene_hsis(proxies, WL, n_generated=1, seed=0, cache_dir=cache, **{**RUN, "kl_weight": 1e-4})
    assert calls == [1]  # another setting is another cache entry


def test_vae_reconstruction_loss_decreases(model):
    losses = np.asarray(model.vae_losses)
    assert len(losses) == 30
    assert losses[-5:].mean() < 0.8 * losses[:5].mean()


def test_control_branch_changes_samples(model, proxies):
    assert isinstance(model.controlnet, hg.ControlEncoder)  # default: control features concatenated
    a = hg.sample_hsigene(model, proxies[:1], n_generated=1, steps=4, seed=3)
    b = hg.sample_hsigene(model, proxies[1:2], n_generated=1, steps=4, seed=3)  # same noise stream, other condition
    again = hg.sample_hsigene(model, proxies[:1], n_generated=1, steps=4, seed=3)
    np.testing.assert_array_equal(again, a)  # so any difference below comes from the condition
    assert np.abs(a - b).mean() > 2e-5  # tiny model, 20 steps: small but systematic effect
    unscaled = hg.sample_hsigene(model, proxies[:1], n_generated=1, steps=4, seed=3, conditioning_scale=0.0)
    assert np.abs(a - unscaled).mean() > 2e-5


def test_controlnet_variant(proxies, tmp_path):
    """The real diffusers ControlNet branch: its zero convolutions leave zero and it steers samples."""
    config = hg._make_config({**TINY, "train_steps": 15, "vae_steps": 5, "control": "controlnet"})
    model = hg.train_hsigene(proxies, WL, config)
    assert isinstance(model.controlnet, hg.ControlNetModel)
    zero_convs = [p for n, p in model.controlnet.named_parameters() if "controlnet_down_blocks" in n]
    assert zero_convs and any(p.abs().sum() > 0 for p in zero_convs), "zero convolutions never left zero"
    a = hg.sample_hsigene(model, proxies[:1], n_generated=1, steps=3, seed=3)
    b = hg.sample_hsigene(model, proxies[1:2], n_generated=1, steps=3, seed=3)
    assert np.abs(a - b).mean() > 1e-4
    loaded = hg.HSIGene.load(model.save(tmp_path / "m"))
    np.testing.assert_allclose(hg.sample_hsigene(loaded, proxies[:1], n_generated=1, steps=3, seed=3), a, atol=1e-5)


def test_odd_image_size_and_other_band_count(cache):
    wl = np.linspace(420.0, 680.0, 5)
    cube = scenes(1, 19, 23)[:, :5]
    out = hg.hsigene_hsis(cube, wl, n_generated=1, cache_dir=cache, **RUN)
    assert out.shape == (1, 1, 5, 19, 23) and np.isfinite(out).all()


def test_super_resolution_keeps_spectral_angle(proxies):
    x = torch.from_numpy(proxies) * 0.5 + 0.25  # away from the clip bounds
    up = hg.super_resolve_hsi(x, 2, WL, sharpen=0.6)
    assert up.shape == (2, len(WL), 48, 48)
    base = hg.resize(x, 48, 48)
    angle = torch.rad2deg(hg.spectral_angle(up, base)).max()
    assert angle < 0.05
    assert not torch.allclose(up, base)  # the RGB-guided detail gain did something


@pytest.mark.parametrize("bad, wl, message", [
    (np.full((1, 8, 16, 16), np.nan, np.float32), WL, "NaN"),
    (np.zeros((8, 16, 16), np.float32), WL, "ndim"),
    (np.zeros((1, 8, 16, 16), np.float32), WL[:5], "wavelengths"),
    (np.full((1, 8, 16, 16), 2.0, np.float32), WL, r"\[0, 1\]"),
])
def test_bad_input_raises(bad, wl, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        hg.hsigene_hsis(bad, wl, cache_dir=tmp_path, **RUN)


def test_unknown_training_key(tmp_path, proxies):
    with pytest.raises(TypeError, match="unknown parameters"):
        hg.hsigene_hsis(proxies, WL, cache_dir=tmp_path, not_a_field=1)


# ------------------------------------------------------------------------- official layout

def official_layout_checkpoint(path, bands: int = 48):
    """A random checkpoint in the official CRSControlNet key layout (configs/inference.yaml), VAE at
    width 32 instead of 64 but with the same module structure: ch_mult (1, 2, 4), 4 res blocks,
    attention at the 64-px level of a 256-px input (level 2), z_channels 96, embed_dim 4."""
    vae = hg.SpectralVAE(bands, ch=32, mult=(1, 2, 4), n_blocks=4, attn_levels=(2,), z_channels=96, latent_channels=4, groups=32)
    state = {f"first_stage_model.{k}": torch.randn_like(v) for k, v in vae.state_dict().items()}
    state.update({
        "model.diffusion_model.input_blocks.0.0.weight": torch.randn(32, 4, 3, 3),
        "model.diffusion_model.out.2.weight": torch.randn(4, 32, 3, 3),
        "local_adapter.feature_extractor.pre_extractor.0.weight": torch.randn(16, 18, 3, 3),
        "local_adapter.zero_convs.0.0.weight": torch.zeros(32, 32, 1, 1),
        "global_content_adapter.ff1.net.0.proj.weight": torch.randn(8, 768),
        "cond_stage_model.transformer.text_model.embeddings.position_ids": torch.arange(77)[None],
        "betas": torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64),
        "alphas_cumprod": torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0),
        "scale_factor": torch.tensor(0.18215),
    })
    torch.save({"state_dict": state, "global_step": 5}, path)
    return state


#: keys the official AutoencoderKL has (read off ldm/modules/diffusionmodules/model.py by hand)
OFFICIAL_VAE_KEYS = (
    "encoder.conv_in.weight", "encoder.down.0.block.3.norm1.weight", "encoder.down.1.block.0.nin_shortcut.weight",
    "encoder.down.1.downsample.conv.weight", "encoder.down.2.attn.3.proj_out.bias", "encoder.mid.attn_1.q.weight",
    "encoder.mid.block_2.conv2.weight", "encoder.norm_out.weight", "encoder.conv_out.weight",
    "decoder.conv_in.weight", "decoder.mid.block_1.norm2.bias", "decoder.up.2.attn.4.k.weight",
    "decoder.up.2.upsample.conv.weight", "decoder.up.1.block.0.nin_shortcut.weight", "decoder.up.0.block.4.conv1.weight",
    "decoder.conv_out.bias", "quant_conv.weight", "post_quant_conv.weight",
)


def test_official_layout_loader(tmp_path):
    path = tmp_path / "last.ckpt"
    state = official_layout_checkpoint(path)
    vae_keys = {k[len("first_stage_model."):] for k in state if k.startswith("first_stage_model.")}
    assert len(vae_keys) == 390  # 176 encoder + 210 decoder + 4 quant convs, counted by hand
    assert set(OFFICIAL_VAE_KEYS) <= vae_keys
    assert not any(k.startswith(("encoder.down.2.downsample", "decoder.up.0.upsample", "encoder.down.1.attn")) for k in vae_keys)

    ck = hg.load_official_checkpoint(path)
    assert ck.vae_hparams == dict(bands=48, ch=32, mult=(1, 2, 4), n_blocks=4, attn_levels=(2,), z_channels=96,
                                  latent_channels=4, groups=32)
    loaded = ck.vae.state_dict()
    for key in OFFICIAL_VAE_KEYS:
        assert torch.equal(loaded[key], state[f"first_stage_model.{key}"])
    assert ck.groups["first_stage_model."]["tensors"] == 390
    assert {"model.diffusion_model.", "local_adapter.", "global_content_adapter.", "cond_stage_model."} <= set(ck.unmapped)
    assert ck.groups["schedule buffers"]["tensors"] == 3
    assert ck.scale_factor == pytest.approx(0.18215)
    assert ck.schedule["timesteps"] == 1000 and ck.schedule["beta_end"] == pytest.approx(0.02)
    assert "first_stage_model." in ck.report()
    with torch.no_grad():
        mean, _ = ck.vae.encode(torch.zeros(1, 48, 16, 16))
        assert mean.shape == (1, 4, 4, 4)  # f = 4 like the official 256 -> 64 latent
        assert ck.vae.decode(mean).shape == (1, 48, 16, 16)

    bad = dict(state)
    bad["first_stage_model.decoder.conv_out.weight"] = torch.randn(47, 32, 3, 3)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="decoder.conv_out"):
        hg.load_official_checkpoint(tmp_path / "bad.pth")
    with pytest.raises(FileNotFoundError):
        hg.load_official_checkpoint(tmp_path / "missing.ckpt")
