"""Tests of the ESSAformer re-implementation (:mod:`hiralign.restorers.essaformer`).

No reference implementation is installed, so the layout is pinned by facts read from the official
code (github.com/Rexzhan/ESSAformer, ``ESSA.py``): the ``state_dict`` key -> shape table that
``ESSA(inch, dim, upscale)`` of that file builds is written out below by hand, and so is the
parameter count derived from it (neither the paper's text available to us nor the official README
reports one; ``PAPER_PARAMETERS`` is None).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hiralign.restorers import essaformer
from hiralign.restorers.essaformer import (
    PAPER_CONFIG,
    PAPER_PARAMETERS,
    PAPER_SCALE,
    TINY_CONFIG,
    ESSAttention,
    build,
    scc_feature_map,
)
from hiralign.restorers.inference import restore_batch
from net_helpers import fit_losses, smooth_cubes

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def official_state_shapes(bands: int, dim: int, scale: int) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the official ``ESSA(inch=bands, dim=dim, upscale=scale)`` state_dict, in its
    order, as read from ``ESSA.py`` of Rexzhan/ESSAformer:

    * ``conv_first`` Conv2d(bands, dim, 3), ``conv_last`` Conv2d(dim, bands, 3), with bias;
    * ``blockup.convup`` (``Convup``: ``convu``, ``drop``, ``norm``, ``attn``) and
      ``blockup.convdown`` (``Convdown``: ``convd``, ``attn``, ``norm``, ``drop``), each with the
      Sequential [Conv2d(2d, 2d, 1), LeakyReLU, Dropout2d, Conv2d(2d, 2d, 3), LeakyReLU, Dropout2d,
      Conv2d(2d, d, 1)], LayerNorm(d), and ESSAttn = ``lnqkv`` Linear(d, 3d), ``ln`` Linear(d, d);
    * ``blockup.convupsample`` (``Upsample``): [Conv2d(d, 4d, 3), PixelShuffle(2)] per factor 2
      ([Conv2d(d, 9d, 3), PixelShuffle(3)] for x3); ``blockup.convdownsample`` (``Downsample``):
      [Conv2d(d, d // 4, 3), PixelUnshuffle(2)] per factor 2 ([Conv2d(d, d // 9, 3), ...] for x3).
    """
    d, w = dim, 2 * dim
    shapes = {"conv_first.weight": (d, bands, 3, 3), "conv_first.bias": (d,)}
    fusion = {"0.weight": (w, w, 1, 1), "0.bias": (w,), "3.weight": (w, w, 3, 3), "3.bias": (w,),
              "6.weight": (d, w, 1, 1), "6.bias": (d,)}
    norm = {"norm.weight": (d,), "norm.bias": (d,)}
    attn = {"attn.lnqkv.weight": (3 * d, d), "attn.lnqkv.bias": (3 * d,), "attn.ln.weight": (d, d),
            "attn.ln.bias": (d,)}
    for block, conv, rest in (("convup", "convu", {**norm, **attn}), ("convdown", "convd", {**attn, **norm})):
        shapes.update({f"blockup.{block}.{conv}.{k}": v for k, v in fusion.items()})
        shapes.update({f"blockup.{block}.{k}": v for k, v in rest.items()})
    factors = [3] if scale == 3 else [2] * int(math.log2(scale))
    for i, f in enumerate(factors):
        shapes[f"blockup.convupsample.{2 * i}.weight"] = (f * f * d, d, 3, 3)
        shapes[f"blockup.convupsample.{2 * i}.bias"] = (f * f * d,)
    for i, f in enumerate(factors):
        shapes[f"blockup.convdownsample.{2 * i}.weight"] = (d // (f * f), d, 3, 3)
        shapes[f"blockup.convdownsample.{2 * i}.bias"] = (d // (f * f),)
    shapes["conv_last.weight"] = (bands, d, 3, 3)
    shapes["conv_last.bias"] = (bands,)
    return shapes


def official_parameter_count(bands: int, dim: int, scale: int) -> int:
    """Parameters of the official structure, by hand: the head and tail 3x3 convs ``18 B d + d + B``;
    each of the two ESSA blocks ``46 d^2 + 11 d`` (fusion 4d^2+2d, 36d^2+2d, 2d^2+d; LayerNorm 2d;
    q/k/v 3d^2+3d; output d^2+d); per factor 2 the upsampler ``36 d^2 + 4 d`` and the downsampler
    ``9 d^2 / 4 + d / 4`` (for x3: ``81 d^2 + 9 d`` and ``d^2 + d / 9``)."""
    d = dim
    count = 18 * bands * d + d + bands + 2 * (46 * d * d + 11 * d)
    if scale == 3:
        return count + 81 * d * d + 9 * d + d * d + d // 9
    return count + int(math.log2(scale)) * (36 * d * d + 4 * d + 9 * d * d // 4 + d // 4)


def state_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def tiny(bands: int = 4, scale: int = 2, seed: int = 0, **overrides) -> essaformer.ESSAformer:
    torch.manual_seed(seed)
    return build(bands, scale, **{**TINY_CONFIG, **overrides})


# ---------------------------------------------------------------- parameters and state_dict layout


def test_parameter_count_derived_from_official_structure():
    """No count is reported (PAPER_PARAMETERS is None): ours equals the hand-derived count of the
    official structure for the paper width (dim 256) at x4 and x8, and of the released Chikusei
    model (128 bands, x4)."""
    assert PAPER_PARAMETERS is None and PAPER_CONFIG == {"dim": 256} and PAPER_SCALE == 4
    for bands, scale, expected in [(31, 4, 11_193_759), (31, 8, 13_701_599), (128, 4, 11_640_832)]:
        assert official_parameter_count(bands, 256, scale) == expected
        assert n_params(build(bands, scale, **PAPER_CONFIG)) == expected
    assert n_params(build(31, 3, dim=9)) == official_parameter_count(31, 9, 3) == 19_436
    tiny_count = n_params(build(31, 4, **TINY_CONFIG))
    assert tiny_count == official_parameter_count(31, 8, 4) == 15_531
    assert tiny_count < 100_000


def test_tiny_state_dict_literal_keys():
    """The full key -> shape table of ``ESSA(inch=5, dim=8, upscale=2)``, written out literally."""
    expected = {
        "conv_first.weight": (8, 5, 3, 3), "conv_first.bias": (8,),
        "blockup.convup.convu.0.weight": (16, 16, 1, 1), "blockup.convup.convu.0.bias": (16,),
        "blockup.convup.convu.3.weight": (16, 16, 3, 3), "blockup.convup.convu.3.bias": (16,),
        "blockup.convup.convu.6.weight": (8, 16, 1, 1), "blockup.convup.convu.6.bias": (8,),
        "blockup.convup.norm.weight": (8,), "blockup.convup.norm.bias": (8,),
        "blockup.convup.attn.lnqkv.weight": (24, 8), "blockup.convup.attn.lnqkv.bias": (24,),
        "blockup.convup.attn.ln.weight": (8, 8), "blockup.convup.attn.ln.bias": (8,),
        "blockup.convdown.convd.0.weight": (16, 16, 1, 1), "blockup.convdown.convd.0.bias": (16,),
        "blockup.convdown.convd.3.weight": (16, 16, 3, 3), "blockup.convdown.convd.3.bias": (16,),
        "blockup.convdown.convd.6.weight": (8, 16, 1, 1), "blockup.convdown.convd.6.bias": (8,),
        "blockup.convdown.attn.lnqkv.weight": (24, 8), "blockup.convdown.attn.lnqkv.bias": (24,),
        "blockup.convdown.attn.ln.weight": (8, 8), "blockup.convdown.attn.ln.bias": (8,),
        "blockup.convdown.norm.weight": (8,), "blockup.convdown.norm.bias": (8,),
        "blockup.convupsample.0.weight": (32, 8, 3, 3), "blockup.convupsample.0.bias": (32,),
        "blockup.convdownsample.0.weight": (2, 8, 3, 3), "blockup.convdownsample.0.bias": (2,),
        "conv_last.weight": (5, 8, 3, 3), "conv_last.bias": (5,),
    }
    model = build(5, 2, **TINY_CONFIG)
    assert list(state_shapes(model).items()) == list(expected.items())  # same keys, shapes and order
    assert official_state_shapes(5, 8, 2) == expected


@pytest.mark.parametrize("bands,dim,scale", [(31, 256, 4), (31, 256, 8), (128, 256, 4), (31, 8, 4),
                                             (31, 8, 8), (6, 9, 3), (3, 4, 1)])
def test_state_dict_equals_official_structure(bands, dim, scale):
    model = build(bands, scale, dim=dim)
    expected = official_state_shapes(bands, dim, scale)
    assert list(state_shapes(model).items()) == list(expected.items())
    assert not list(model.buffers())  # the official model stores no buffers either
    if dim < 256:  # an official-layout state_dict loads strictly
        torch.manual_seed(0)
        model.load_state_dict({k: torch.randn(s) for k, s in expected.items()}, strict=True)


@pytest.mark.parametrize("scale,dim", [(5, 8), (6, 8), (0, 8), (2, 6), (3, 12)])
def test_unsupported_scale_or_width_raises(scale, dim):
    with pytest.raises(ValueError):
        build(4, scale, dim=dim)


# ---------------------------------------------------------------- forward, backward, training


@pytest.mark.parametrize("scale,dim,size", [(2, 8, (6, 5)), (3, 9, (4, 5)), (4, 8, (5, 3)), (8, 8, (3, 2))])
def test_forward_backward(scale, dim, size):
    model = tiny(bands=6, scale=scale, dim=dim)
    x = torch.rand(2, 6, *size)
    y = model(x)
    assert y.shape == (2, 6, size[0] * scale, size[1] * scale) and torch.isfinite(y).all()
    F.mse_loss(y, torch.rand_like(y)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_input_layout_is_hiralign_lr_convention():
    """The official network takes the LR cube (N, B, h, w) itself (no bicubic input); wrong band
    counts or layouts are rejected."""
    model = tiny(bands=4, scale=2).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 4, 3, 7)).shape == (1, 4, 6, 14)
    with pytest.raises(ValueError):
        model(torch.rand(1, 5, 4, 4))
    with pytest.raises(ValueError):
        model(torch.rand(1, 1, 4, 4, 4))


def test_dropout_only_in_training():
    model = tiny(bands=4, scale=2)
    x = torch.rand(1, 4, 6, 6)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(x), model(x))
        model.train()
        torch.manual_seed(1)
        a = model(x)
        torch.manual_seed(1)
        a_again = model(x)
        torch.manual_seed(2)
        b = model(x)
    assert torch.equal(a, a_again)
    assert (a - b).abs().max() > 1e-4
    assert (tiny(bands=4, scale=2, dropout=0.0).train()(x) - tiny(bands=4, scale=2, dropout=0.0).eval()(x)).abs().max() < 1e-6


def test_short_training_lowers_sr_loss():
    torch.manual_seed(0)
    bands, scale = 4, 2
    hr = smooth_cubes(2, bands, 16)
    lr = F.avg_pool2d(hr, scale)
    model = tiny(bands=bands, scale=scale)
    losses = fit_losses(model, lr, hr, 30, 2e-3)
    assert sum(losses[-5:]) / 5 < 0.3 * sum(losses[:5]) / 5


# ---------------------------------------------------------------- the ESSA attention


def test_scc_feature_map_is_invariant_to_offset_and_scale_of_a_spectrum():
    """The SCC's robustness: centring and the ratio of squares make the kernel features of a token
    independent of a per-token offset and (non-zero) rescaling; they are >= 0 and sum to ~1."""
    torch.manual_seed(0)
    t = torch.randn(2, 7, 12)
    offset, factor = torch.randn(2, 7, 1), torch.rand(2, 7, 1) * 3 + 0.2
    sign = torch.where(torch.rand(2, 7, 1) > 0.5, 1.0, -1.0)
    phi = scc_feature_map(t)
    torch.testing.assert_close(scc_feature_map(sign * factor * t + offset), phi, rtol=1e-4, atol=1e-5)
    assert (phi >= 0).all()
    torch.testing.assert_close(phi.sum(-1), torch.ones(2, 7), rtol=0, atol=1e-5)
    # a constant spectrum has no correlation structure: its features vanish (no division by zero)
    assert scc_feature_map(torch.full((1, 3, 5), 0.7)).abs().max() < 1e-5


def test_essa_equals_explicit_quadratic_attention():
    """The linear-cost evaluation ``phi(Q) (phi(K)^T V)`` equals the explicit L x L attention
    matrix ``A = phi(Q) phi(K)^T / sqrt(L)`` applied to V, plus the identity term."""
    torch.manual_seed(0)
    attn = ESSAttention(6)
    tokens = torch.randn(2, 20, 6)
    q, k, v = attn.lnqkv(tokens).split(6, dim=-1)
    centred_q, centred_k = q - q.mean(-1, keepdim=True), k - k.mean(-1, keepdim=True)
    phi_q = centred_q ** 2 / ((centred_q ** 2).sum(-1, keepdim=True) + 1e-7)
    phi_k = centred_k ** 2 / ((centred_k ** 2).sum(-1, keepdim=True) + 1e-7)
    phi_q = phi_q / phi_q.norm(dim=-1, keepdim=True)  # unit over the channels
    phi_k = phi_k / phi_k.norm(dim=-2, keepdim=True)  # unit over the tokens
    matrix = phi_q @ phi_k.transpose(-2, -1) / math.sqrt(20)  # (L, L)
    expected = attn.ln(v + matrix @ v)
    torch.testing.assert_close(attn(tokens), expected, rtol=1e-5, atol=1e-6)
    # permuting the tokens permutes the output: no positional terms, attention is over the token set
    perm = torch.randperm(20)
    torch.testing.assert_close(attn(tokens[:, perm]), attn(tokens)[:, perm], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- sizes, locality and tiling


def test_declared_attributes_and_any_size():
    model = tiny(bands=3, scale=4).eval()
    assert model.receptive_radius is None and model.tile_align == 1 and model.input_multiple == 1
    with torch.no_grad():
        for size in [(1, 1), (3, 7), (5, 2)]:  # nothing below the LR grid: any size works
            assert model(torch.rand(1, 3, *size)).shape == (1, 3, 4 * size[0], 4 * size[1])


def test_output_depends_on_the_whole_image():
    """Why ``receptive_radius`` is None: the attention summarises all pixels, so changing one LR
    pixel in a corner changes the HR output at the opposite corner, far beyond the convolutions' reach."""
    model = tiny(bands=3, scale=2).eval()
    x = torch.rand(1, 3, 40, 40)
    changed = x.clone()
    changed[..., 0, 0] += 0.5
    with torch.no_grad():
        delta = (model(changed) - model(x)).abs()
    assert delta[..., -4:, -4:].max() > 1e-6


@pytest.fixture(scope="module")
def tiled_outputs():
    torch.manual_seed(0)
    model = build(4, 2, **TINY_CONFIG)
    x = torch.rand(1, 4, 40, 24)
    full = restore_batch(model, x)
    crop = restore_batch(model, x, tile=24, overlap=6)  # rows tiled [0, 24), [12, 36), [16, 40); columns whole
    window = restore_batch(model, x, tile=24, overlap=6, blend="window")
    return full, crop, window


def test_tiling_not_exact_but_close(tiled_outputs):
    """ESSAformer cannot be tiled exactly: each tile's attention summarises only the tile's pixels
    (and scales by 1/sqrt of the tile's pixel count), whatever the overlap. The tiled outputs
    nevertheless stay close to the untiled one, both with crop-and-stitch and the window blend."""
    full, crop, window = tiled_outputs
    spread = (full - full.mean()).abs().mean()
    for tiled in (crop, window):
        assert tiled.shape == full.shape
        difference = (tiled - full).abs()
        assert difference.max() > 1e-5  # not exact
        assert difference.mean() < 0.05 * spread  # but close: a few percent of the output's variation
