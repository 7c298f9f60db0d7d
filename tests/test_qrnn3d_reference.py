"""QRNN3D (hiralign.restorers.qrnn3d): size, gradients, training, locality/tiling, and equivalence with
the official network as packaged by HSIR 0.1.1 (``hsir.model.qrnn3d.QRNNREDC3D``)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from hiralign.restorers import qrnn3d
from hiralign.restorers.inference import restore_batch

sys.path.insert(0, str(Path(__file__).parent))
from hsir_reference import hsir_model
from net_helpers import fit_losses

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(bands: int = 6, **overrides) -> qrnn3d.QRNNREDC3D:
    return qrnn3d.build(bands, **{**qrnn3d.TINY_CONFIG, **overrides})


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics and affine parameters, so eval-mode comparisons exercise them."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------- size, shapes, gradients


def test_paper_configuration_has_the_reported_parameter_count():
    model = qrnn3d.build(31, **qrnn3d.PAPER_CONFIG)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - qrnn3d.PAPER_PARAMETERS) <= 0.05 * qrnn3d.PAPER_PARAMETERS
    assert count == 860_453  # official qrnn3d() builder, exactly
    tiny_count = sum(p.numel() for p in tiny().parameters())
    assert tiny_count < 100_000
    assert (model.input_multiple, model.tile_align, model.receptive_radius, model.spatial_reach) == (4, 4, None, 28)


def test_forward_backward_on_the_tiny_configuration():
    torch.manual_seed(0)
    model = tiny(bands=6)
    x = torch.rand(2, 6, 8, 12)
    y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    ((y - x.flip(1)) ** 2).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    # the official 5-D layout gives a 5-D answer, the same numbers; any band count works
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x.unsqueeze(1)).squeeze(1), model(x))
        assert model(torch.rand(1, 9, 4, 4)).shape == (1, 9, 4, 4)


def test_spatial_size_must_be_a_multiple_of_four():
    model = tiny().eval()
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.rand(1, 6, 8, 10))
    with pytest.raises(ValueError, match=r"\(N, B, H, W\)"):
        model(torch.rand(1, 2, 6, 8, 8))


def test_a_short_training_run_lowers_the_denoising_loss():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    bands, size = 6, 8
    # smooth, spectrally low-rank clean cubes (2 endmember spectra, smooth abundances) + Gaussian noise
    spectra = torch.linspace(0, 1, bands)[:, None] * torch.tensor([1.0, -0.5]) + torch.tensor([0.2, 0.6])
    yy, xx = torch.meshgrid(torch.linspace(0, 3, size), torch.linspace(0, 3, size), indexing="ij")
    phase = torch.rand(2, 2, 1, 1, generator=g) * 6
    abundance = 0.5 + 0.5 * torch.sin(yy + phase) * torch.cos(xx - phase)
    clean = torch.einsum("bk,nkhw->nbhw", spectra, abundance).clamp(0, 1) * 0.8
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=g)
    model = tiny(bands)
    losses = fit_losses(model, noisy, clean, 20, 2e-3)
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5])


# ----------------------------------------------------------------------------- locality and tiling


@pytest.mark.parametrize("align_corners", [True, False])
def test_spatial_reach_matches_the_gradient_support(align_corners):
    """Autograd support of output columns (middle and right edge, where the align_corners=True
    sampling grid has drifted most) stays within ``spatial_reach`` and reaches it (28 | 25 px)."""
    torch.manual_seed(0)
    model = tiny(bands=3, align_corners=align_corners).double().eval()
    randomize_batchnorm(model)
    width = 128
    x = torch.rand(1, 3, 4, width, dtype=torch.float64, requires_grad=True)
    out = model(x)
    left = right = 0
    for col in [60, 61, 62, 63, width - 32, width - 31, width - 30, width - 29]:
        (grad,) = torch.autograd.grad(out[0, :, 1, col].sum(), x, retain_graph=True)
        seen = torch.nonzero(grad.abs().sum(dim=(0, 1, 2)) > 0).flatten()
        left, right = max(left, col - seen.min().item()), max(right, seen.max().item() - col)
    assert model.spatial_reach == qrnn3d.receptive_reach(5, (1, 3)) == 28
    assert (left, right) == (28, 25)


def test_tiled_inference_is_exact_with_shift_equivariant_upsampling():
    torch.manual_seed(1)
    model = tiny(bands=4, align_corners=False)
    randomize_batchnorm(model)
    assert model.receptive_radius == 28 and model.tile_align == 4
    x = torch.rand(1, 4, 8, 96, generator=torch.Generator().manual_seed(2))
    tile = 64  # a multiple of input_multiple, >= 2 * radius + tile_align; only W is tiled
    full = restore_batch(model, x)
    tiled = restore_batch(model, x, tile=tile)  # overlap defaults to receptive_radius
    assert torch.allclose(full, tiled, atol=1e-5, rtol=0)
    # in float64 the margin is visibly needed: exact at the radius, not one tile_align step below it
    model.double()
    full = restore_batch(model, x.double())
    assert (restore_batch(model, x.double(), tile=tile) - full).abs().max() < 1e-12
    assert (restore_batch(model, x.double(), tile=tile, overlap=28 - 4) - full).abs().max() > 1e-12


def test_official_upsampling_cannot_be_tiled_exactly_but_blends_closely():
    """``align_corners=True`` interpolation weights depend on the input (tile) width, so the official
    network is not translation-equivariant: tiles differ from the full image although the overlap
    covers the whole reach; the difference is small (a sub-pixel shift of the coarse sampling grid)."""
    torch.manual_seed(1)
    model = tiny(bands=4)
    randomize_batchnorm(model)
    assert model.receptive_radius is None
    x = torch.rand(1, 4, 8, 96, generator=torch.Generator().manual_seed(2))
    full = restore_batch(model, x)
    crop = restore_batch(model, x, tile=64, overlap=model.spatial_reach)
    window = restore_batch(model, x, tile=64, overlap=model.spatial_reach, blend="window")
    spread = (full - x).abs().max().item()  # the size of the network's correction
    crop_err, window_err = (full - crop).abs().max().item(), (full - window).abs().max().item()
    assert crop_err > 1e-5 and window_err > 1e-5
    assert crop_err < 0.01 * spread and window_err < 0.05 * spread


# ----------------------------------------------------------------------------- the official network


@pytest.fixture(scope="module")
def official():
    return hsir_model("qrnn3d")


def test_state_dict_keys_and_shapes_equal_the_official_paper_configuration(official):
    ref = official.QRNNREDC3D(1, 16, 5, [1, 3], has_ad=True)
    ours = qrnn3d.build(31, **qrnn3d.PAPER_CONFIG)
    assert shapes(ours) == shapes(ref)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict(), strict=True)


@pytest.mark.parametrize("variant", [
    {},
    {"has_ad": False},
    {"bn": False},
    {"act": "relu"},
    {"num_half_layer": 3, "sample_idx": (1,)},
])
def test_same_weights_give_the_official_output(official, variant):
    cfg = {**qrnn3d.TINY_CONFIG, **variant}
    torch.manual_seed(0)
    ref = official.QRNNREDC3D(cfg["in_channels"], cfg["channels"], cfg["num_half_layer"], list(cfg["sample_idx"]),
                              has_ad=cfg["has_ad"], bn=cfg["bn"], act=cfg["act"])
    randomize_batchnorm(ref)
    ours = qrnn3d.build(7, **cfg)
    assert shapes(ours) == shapes(ref)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.rand(2, 1, 7, 8, 12, generator=torch.Generator().manual_seed(3))
    for mode in ("eval", "train"):  # train: batch statistics, deterministic on CPU
        ref.train(mode == "train"), ours.train(mode == "train")
        with torch.no_grad():
            expected = ref(x)
            assert (ours(x) - expected).abs().max().item() <= 1e-5
            # after one forward each, the running statistics were updated identically
            for (k, a), b in zip(ref.state_dict().items(), ours.state_dict().values()):
                assert torch.allclose(a.float(), b.float(), atol=1e-6), k
            ours.eval(), ref.eval()
            assert (ours(x.squeeze(1)) - ref(x).squeeze(1)).abs().max().item() <= 1e-5  # (N, B, H, W) layout
