"""T3SC (hiralign.restorers.t3sc): size, gradients, training, tiling, and equivalence with the official
code as shipped by HSIR (``hsir.model.t3sc.MultilayerModel``, the official inria-thoth/T3SC model)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from hsir_reference import hsir_model

from hiralign.restorers import t3sc
from hiralign.restorers.inference import restore_batch
from net_helpers import fit_losses

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: The model configuration transcribed from the official t3sc/config/model/t3sc.yaml (model.beta=0,
#: data.ssl=0), in the official nested form that MultilayerModel takes.
OFFICIAL_YAML_LAYERS = {
    "l0": {"name": "LowRankSCLayer", "params": dict(
        patch_side=1, K=12, rank=1, code_size=64, stride=1, input_centering=1, patch_centering=0, tied="D",
        init_method="kaiming_uniform", lbda_init=0.001, lbda_mode="MC", beta=0, ssl=0)},
    "l1": {"name": "LowRankSCLayer", "params": dict(
        patch_side=5, K=5, rank=3, code_size=1024, stride=1, input_centering=0, patch_centering=1, tied="D",
        init_method="kaiming_uniform", lbda_init=0.001, lbda_mode="MC", beta=0, ssl=0)},
}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def official(layers) -> dict:
    """Our per-layer dicts in the official nested ``{"l0": {"name", "params"}}`` form."""
    return {f"l{i}": {"name": "LowRankSCLayer", "params": dict(p)} for i, p in enumerate(layers)}


def reference(bands: int, layers: dict, seed: int = 0) -> torch.nn.Module:
    """The official MultilayerModel, configured as HSIR's ``build_t3sc`` does (without omegaconf)."""
    torch.manual_seed(seed)
    net = hsir_model("t3sc").MultilayerModel(channels=bands, layers=layers)
    net.use_2dconv = True
    net.bandwise = False
    for layer in net.layers:  # the official fixed kernels are plain attributes created on CUDA if present
        for name in ("ker_mean", "ker_divider"):
            if hasattr(layer, name):
                setattr(layer, name, getattr(layer, name).cpu())
    return net


def ours_like(ref: torch.nn.Module, bands: int, layers) -> t3sc.T3SC:
    model = t3sc.build(bands, layers=layers)
    model.load_state_dict(ref.state_dict(), strict=True)
    return model


def shapes(model: torch.nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def smooth_cube(n: int, bands: int, size: int, seed: int) -> torch.Tensor:
    """Clean synthetic HSIs in [0, 1]: 3 smooth spectra mixed by smooth spatial abundances."""
    g = torch.Generator().manual_seed(seed)
    wl = torch.linspace(0, 1, bands)
    centres = torch.rand(n, 3, 1, generator=g)
    spectra = torch.exp(-((wl - centres) ** 2) / 0.1)  # (n, 3, B)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    phase = torch.rand(n, 3, 1, 1, generator=g) * 6.28
    abundance = 0.5 + 0.5 * torch.sin(3 * xx + 2 * yy + phase)  # (n, 3, H, W)
    cube = torch.einsum("nkb,nkhw->nbhw", spectra, abundance) / 3
    return cube.clamp(0, 1)


# 1. size ------------------------------------------------------------------------------------------

def test_paper_parameter_count():
    model = t3sc.build(31, **t3sc.PAPER_CONFIG)
    count = n_params(model)
    assert count == 832_256  # 3 x (64*31 + 64) + 12*64 + 3 x (1024*64*3 + 1024*3*25) + 5*1024
    assert abs(count - t3sc.PAPER_PARAMETERS) <= 0.05 * t3sc.PAPER_PARAMETERS
    assert n_params(t3sc.build(31, **t3sc.TINY_CONFIG)) < 100_000
    assert t3sc.build(31).local_radius == 5 * (5 - 1) + 12 * (1 - 1) == 20


# 2. forward / backward ----------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(12, 12), (13, 9)])
def test_forward_backward_tiny(size):
    torch.manual_seed(0)
    model = t3sc.build(31, **t3sc.TINY_CONFIG)
    assert model.input_multiple == 1 and model.tile_align == 1
    x = torch.rand(2, 31, *size)
    y = model(x)
    assert y.shape == x.shape and y.dtype == torch.float32 and torch.isfinite(y).all()
    ((y - x) ** 2).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


# 3. training --------------------------------------------------------------------------------------

def test_short_training_lowers_denoising_loss():
    torch.manual_seed(0)
    model = t3sc.build(8, **t3sc.TINY_CONFIG)
    clean = smooth_cube(2, 8, 12, seed=1)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(2))
    losses = fit_losses(model, noisy, clean, 25, 1e-2)
    assert losses[-1] < 0.5 * losses[0]
    with torch.no_grad():  # and it denoises: better than the noisy input itself
        assert torch.nn.functional.mse_loss(model(noisy), clean) < torch.nn.functional.mse_loss(noisy, clean)


# 4. tiling ----------------------------------------------------------------------------------------

def test_tiling_exact_without_image_wide_statistics():
    """Without input centering (and without the noise estimator) every layer is local with radius
    K (p - 1): crop-and-stitch tiling with overlap = receptive_radius is exact; smaller overlaps are not."""
    torch.manual_seed(0)
    layers = (dict(t3sc.TINY_CONFIG["layers"][0], input_centering=False), t3sc.TINY_CONFIG["layers"][1])
    model = t3sc.build(31, layers=layers)
    assert model.receptive_radius == model.local_radius == 2 * (3 - 1)
    x = torch.rand(1, 31, 28, 26)
    full = restore_batch(model, x)
    tiled = restore_batch(model, x, tile=16, overlap=model.receptive_radius)
    assert (tiled - full).abs().max() < 1e-5
    short = restore_batch(model, x, tile=16, overlap=model.receptive_radius - 1)
    assert (short - full).abs().max() > 1e-6


def test_tiling_paper_layout_is_not_exact_but_window_blend_is_close():
    """The paper layout centres the input on its *image-wide* band means before the (nonlinear) sparse
    coding, so a tile's output depends on the tile's own means: crop-and-stitch is not exact for any
    overlap (receptive_radius is None), and a larger overlap does not remove the difference (it is not
    an edge effect). For a (briefly) trained denoiser the difference is small against the denoising
    error: the window-blended tiles denoise about as well as the whole image."""
    torch.manual_seed(0)
    model = t3sc.build(31, **t3sc.TINY_CONFIG)
    assert model.receptive_radius is None and model.local_radius == 4
    clean = smooth_cube(4, 31, 16, seed=1)
    noisy = clean + 0.05 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(noisy), clean).backward()
        opt.step()
    clean = smooth_cube(1, 31, 32, seed=3)
    x = clean + 0.05 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(4))
    full = restore_batch(model, x)
    for overlap in (model.local_radius, 2 * model.local_radius):
        crop = restore_batch(model, x, tile=20, overlap=overlap)
        assert (crop - full).abs().max() > 1e-4  # not exact, whatever the overlap
    window = restore_batch(model, x, tile=20, overlap=2 * model.local_radius, blend="window")
    noise_err, full_err = (x - clean).abs().mean(), (full - clean).abs().mean()
    assert (window - full).abs().mean() < 0.5 * noise_err
    assert (window - clean).abs().mean() < 1.5 * full_err < noise_err


# 5. official reference ----------------------------------------------------------------------------

def test_paper_config_matches_official_yaml_keys_and_shapes():
    ref = reference(31, OFFICIAL_YAML_LAYERS)
    ours = t3sc.build(31, **t3sc.PAPER_CONFIG)
    assert shapes(ours) == shapes(ref)
    assert n_params(ours) == n_params(ref)
    ours.load_state_dict(ref.state_dict(), strict=True)
    # the official nested form is accepted as is
    assert shapes(t3sc.T3SC(31, layers=OFFICIAL_YAML_LAYERS)) == shapes(ref)
    ref_beta = reference(31, official(t3sc.NOISE_ADAPTIVE_CONFIG["layers"]))
    assert shapes(t3sc.build(31, **t3sc.NOISE_ADAPTIVE_CONFIG)) == shapes(ref_beta)


def test_paper_config_output_equals_official():
    ref = reference(31, OFFICIAL_YAML_LAYERS, seed=1)
    ours = ours_like(ref, 31, t3sc.PAPER_CONFIG["layers"])
    x = torch.rand(1, 31, 7, 6, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out, expected = ours.eval()(x), ref.eval()(x)
    assert out.shape == x.shape
    assert (out - expected).abs().max() < 1e-5


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("lbda_mode", ["MC", "SG", "SC", "MG"])
def test_tiny_output_equals_official(mode, lbda_mode):
    layers = tuple(dict(p, lbda_mode=lbda_mode) for p in t3sc.TINY_CONFIG["layers"])
    ref = reference(31, official(layers), seed=2)
    ours = ours_like(ref, 31, layers)
    with torch.no_grad():  # perturb the thresholds so the soft thresholds do something
        for p in ref.parameters():
            if p.shape[-2:] == (1, 1) and p.dim() == 4:
                p.uniform_(0.0, 0.1)
    ours.load_state_dict(ref.state_dict(), strict=True)
    getattr(ours, mode)(), getattr(ref, mode)()
    x = torch.rand(2, 31, 11, 9, generator=torch.Generator().manual_seed(6))
    out, expected = ours(x), ref(x)
    assert (out - expected).abs().max() < 1e-5
    if mode == "train":  # same gradients too
        out.square().mean().backward()
        expected.square().mean().backward()
        grads = dict(ref.named_parameters())
        for name, p in ours.named_parameters():
            assert torch.allclose(p.grad, grads[name].grad, atol=1e-5, rtol=1e-4), name


def test_noise_adaptive_and_self_supervised_equal_official():
    """The optional paths: noise-adaptive band weights (beta=1, needs H, W >= 56) and self-supervised
    band masking (ssl=1 with ssl_idx)."""
    layers = (dict(t3sc.TINY_CONFIG["layers"][0], beta=1, ssl=1), t3sc.TINY_CONFIG["layers"][1])
    ref = reference(31, official(layers), seed=3)
    ours = ours_like(ref, 31, layers)
    assert ours.receptive_radius is None
    x = torch.rand(1, 31, 58, 57, generator=torch.Generator().manual_seed(7))
    ssl_idx = torch.tensor([0, 7, 30])
    with torch.no_grad():
        out = ours(x, ssl_idx=ssl_idx)
        expected = ref(x, ssl_idx=ssl_idx)
        unmasked = ours(x, ssl_idx=torch.tensor([], dtype=torch.long))
    assert (out - expected).abs().max() < 1e-5
    assert (out - unmasked).abs().max() > 1e-6  # the mask matters
    with pytest.raises(ValueError, match="ssl_idx"):
        ours(x)
