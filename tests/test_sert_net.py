"""Tests of the SERT re-implementation (:mod:`hiralign.restorers.sert`).

No reference implementation is installed, so the state_dict layout is checked against facts read
from the official code (github.com/MyuLi/SERT, ``models/sert.py``): the key -> shape table that
``SERT(...)`` of that file builds is written out below by hand.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hiralign.restorers import sert
from hiralign.restorers.inference import restore_batch
from net_helpers import fit_losses, smooth_cubes

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def official_state_shapes(bands: int, dim: int, window_sizes, depths, num_heads, split_sizes, mlp_ratio,
                          memory_blocks: int, down_rank: int, **_) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the official ``SERT(inp_channels=bands, ...)`` state_dict (defaults
    ``qkv_bias=True``, ``bias=False``), as read from ``models/sert.py`` of MyuLi/SERT:

    * ``conv_first``: Conv2d(bands, dim, 3) with bias; ``output``: Conv2d(dim, dim, 3, bias=False);
      ``conv_delasta``: Conv2d(dim, bands, 3) with bias;
    * ``layers.{g}`` = SMSBlock: ``smsblock.{i}`` (SSMTDA blocks) and ``conv`` Conv2d(dim, dim, 3);
    * SSMTDA: ``norm1``/``norm2`` LayerNorm(dim), ``mlp.fc1`` Linear(dim, dim*mlp_ratio),
      ``mlp.fc2``, ``attns`` = WindowAttention: ``qkv`` Linear(dim, 3 dim), ``proj`` Linear(dim, dim),
      ``attns.{0,1}.get_v`` depthwise Conv2d(dim/2, dim/2, 3, groups=dim/2) (LePEAttention),
      ``c_attns.cab`` = [Linear(dim, dim/4), GELU, Linear(dim/4, dim), ChannelAttention] and the
      ChannelAttention holds ``mb`` (dim/down_rank, memory_blocks), ``subnet.0`` Linear(dim, r),
      ``upnet.0`` Linear(r, dim). The window/split/head settings add no parameters.
    """
    d, r, hidden, half, quarter = dim, dim // down_rank, int(dim * mlp_ratio), dim // 2, dim // 4
    shapes = {"conv_first.weight": (d, bands, 3, 3), "conv_first.bias": (d,)}
    block = {
        "norm1.weight": (d,), "norm1.bias": (d,), "norm2.weight": (d,), "norm2.bias": (d,),
        "mlp.fc1.weight": (hidden, d), "mlp.fc1.bias": (hidden,),
        "mlp.fc2.weight": (d, hidden), "mlp.fc2.bias": (d,),
        "attns.qkv.weight": (3 * d, d), "attns.qkv.bias": (3 * d,),
        "attns.proj.weight": (d, d), "attns.proj.bias": (d,),
        "attns.attns.0.get_v.weight": (half, 1, 3, 3), "attns.attns.0.get_v.bias": (half,),
        "attns.attns.1.get_v.weight": (half, 1, 3, 3), "attns.attns.1.get_v.bias": (half,),
        "attns.c_attns.cab.0.weight": (quarter, d), "attns.c_attns.cab.0.bias": (quarter,),
        "attns.c_attns.cab.2.weight": (d, quarter), "attns.c_attns.cab.2.bias": (d,),
        "attns.c_attns.cab.3.mb": (r, memory_blocks),
        "attns.c_attns.cab.3.subnet.0.weight": (r, d), "attns.c_attns.cab.3.subnet.0.bias": (r,),
        "attns.c_attns.cab.3.upnet.0.weight": (d, r), "attns.c_attns.cab.3.upnet.0.bias": (d,),
    }
    for g, depth in enumerate(depths):
        for i in range(depth):
            shapes.update({f"layers.{g}.smsblock.{i}.{k}": v for k, v in block.items()})
        shapes[f"layers.{g}.conv.weight"] = (d, d, 3, 3)
        shapes[f"layers.{g}.conv.bias"] = (d,)
    shapes["output.weight"] = (d, d, 3, 3)
    shapes["conv_delasta.weight"] = (bands, d, 3, 3)
    shapes["conv_delasta.bias"] = (bands,)
    return shapes


def state_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_paper_parameter_count_matches_reported():
    model = sert.build(31, **sert.PAPER_CONFIG)
    count = sum(p.numel() for p in model.parameters())
    assert count == 1_905_319  # exact count of the official sert_base layout
    assert abs(count - sert.PAPER_PARAMETERS) / sert.PAPER_PARAMETERS < 0.05
    assert sum(p.numel() for p in sert.build(31, **sert.TINY_CONFIG).parameters()) < 100_000


@pytest.mark.parametrize("bands,config", [(4, sert.TINY_CONFIG), (31, sert.PAPER_CONFIG),
                                          (34, sert.REALISTIC_CONFIG), (210, sert.URBAN_CONFIG)])
def test_state_dict_keys_and_shapes_equal_official(bands, config):
    model = sert.build(bands, **config)
    expected = official_state_shapes(bands, **config)
    assert state_shapes(model) == expected
    assert not list(model.buffers())  # the official model stores no buffers either
    # a state_dict in the official layout loads strictly
    torch.manual_seed(0)
    model.load_state_dict({k: torch.randn(s) for k, s in expected.items()}, strict=True)


def test_tiny_key_count_fact():
    # 2 groups x 2 blocks x 25 tensors + 2 x 2 group convs + conv_first (2), output (1), conv_delasta (2)
    assert len(sert.build(4, **sert.TINY_CONFIG).state_dict()) == 109


def test_forward_backward_tiny():
    torch.manual_seed(0)
    model = sert.build(31, **{**sert.TINY_CONFIG, "drop_path_rate": 0.0})
    x = torch.rand(1, 31, 32, 32)
    y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    F.mse_loss(y, torch.rand_like(y)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_any_size_padded_per_axis_like_reflect_then_crop():
    """Non-multiple, non-square sizes work: the forward equals running on the bottom/right
    reflect-padded input (to multiples of lcm(16, windows) = 16) and cropping back."""
    torch.manual_seed(0)
    model = sert.build(3, **sert.TINY_CONFIG).eval()
    assert model.input_multiple == 1 and model.tile_align == 16
    assert sert.build(31).tile_align == 32
    x = torch.rand(1, 3, 20, 27)
    with torch.no_grad():
        y = model(x)
        padded = F.pad(x, (0, 5, 0, 12), mode="reflect")
        reference = model(padded)[..., :20, :27]
    assert y.shape == x.shape
    torch.testing.assert_close(y, reference, rtol=0, atol=1e-6)
    with torch.no_grad():  # too small for reflect: still runs (replicate padding)
        assert model(torch.rand(1, 3, 5, 7)).shape == (1, 3, 5, 7)


def test_stochastic_depth_only_in_training():
    torch.manual_seed(0)
    model = sert.build(3, **{**sert.TINY_CONFIG, "drop_path_rate": 0.5})
    x = torch.rand(4, 3, 16, 16)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        torch.manual_seed(1)
        a = model(x)
        torch.manual_seed(2)
        b = model(x)
    assert (a - b).abs().max() > 1e-4


def test_short_training_lowers_denoising_loss():
    torch.manual_seed(0)
    bands, size = 4, 16
    clean = smooth_cubes(2, bands, size, frequencies=(3, 2))  # smooth, spectrally correlated
    noisy = clean + 0.1 * torch.randn_like(clean)
    model = sert.build(bands, **sert.TINY_CONFIG)
    losses = fit_losses(model, noisy, clean, 25, 2e-3)
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_cyclic_shift_wraps_around_the_image():
    """Why ``receptive_radius`` is None: the half-shifted windows roll cyclically without a mask
    (as in the official code), so the top output rows depend on the bottom input rows."""
    torch.manual_seed(0)
    model = sert.build(3, **sert.TINY_CONFIG).eval()
    assert model.receptive_radius is None
    x = torch.rand(1, 3, 64, 16)
    changed = x.clone()
    changed[..., -2:, :] = torch.rand(1, 3, 2, 16)  # the last two rows only
    with torch.no_grad():
        delta = (model(changed) - model(x)).abs()
    assert delta[..., :2, :].max() > 1e-4  # 62+ pixels away, across the wrap
    assert delta[..., 24:40, :].max() == 0  # but not in the middle of the image


@pytest.fixture(scope="module")
def tiled_outputs():
    torch.manual_seed(0)
    model = sert.build(3, **sert.TINY_CONFIG)
    x = torch.rand(1, 3, 80, 48)
    full = restore_batch(model, x)
    # tile 64 > 48 columns: only rows are tiled, as [0, 64) and [16, 80) (offsets multiples of tile_align)
    crop = restore_batch(model, x, tile=64, overlap=24)
    window = restore_batch(model, x, tile=64, overlap=24, blend="window")
    return x, full, crop, window


def test_tiling_not_exact_but_window_blend_close(tiled_outputs):
    """SERT cannot be tiled exactly: every shifted-window block rolls the image cyclically, so the
    rows next to the top and bottom image borders see the opposite border -- in a tile that is the
    tile's own opposite edge, not the image's, whatever the overlap. The tiled result therefore
    differs near the image borders, but blending overlapping tiles stays close to the untiled one."""
    x, full, crop, window = tiled_outputs
    correction = (full - x).abs().mean()
    for tiled in (crop, window):
        assert tiled.shape == full.shape
        difference = (tiled - full).abs()
        assert difference.max() > 1e-4  # not exact
        assert difference.mean() < 0.05 * correction  # but close: a few percent of what the model changes


def test_tiling_exact_away_from_the_image_borders(tiled_outputs):
    """Away from the wrap-around (rows >= 24 from the top/bottom image edge; the tiny model's
    local receptive radius is < 20 px) the aligned, 24-px-overlap tiles reproduce the untiled
    output: the window grid is aligned (tile offsets are multiples of ``tile_align``) and the
    spectral-enhancement pooling stays inside windows."""
    _, full, crop, _ = tiled_outputs
    torch.testing.assert_close(crop[..., 24:56, :], full[..., 24:56, :], rtol=0, atol=1e-5)
