"""Tests of the SSPSR re-implementation (hiralign/restorers/sspsr.py).

No reference implementation is installed (the HSIR wheel lists ``sr.sspsr`` in
``hsir/model/sr/__init__.py`` but does not ship its code), so equivalence is pinned by facts read
from the official repository github.com/junjun-jiang/SSPSR (``SSPSR.py``, ``common.py``): the
``state_dict`` key names and shapes, and the parameter count derived from them by hand.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hiralign.restorers.inference import restore_batch
from hiralign.restorers.sspsr import (
    PAPER_CONFIG,
    PAPER_PARAMETERS,
    SSPSR,
    TINY_CONFIG,
    band_groups,
    build,
)
from net_helpers import fit_losses

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BANDS, SCALE = 8, 4


def tiny(seed: int = 0, bands: int = BANDS, scale: int = SCALE, **overrides) -> SSPSR:
    torch.manual_seed(seed)
    return build(bands, scale, **{**TINY_CONFIG, **overrides})


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Facts from the official code, written out by hand.
#   SSPSR.py: SSPSR has `branch` (BranchUnit(n_subs, ..., up_scale=n_scale//2); a ModuleList of
#   G branches when use_share=False), `trunk` (BranchUnit(n_colors, ..., up_scale=2,
#   use_tail=False)), `skip_conv` = conv3x3(n_colors, n_feats), `final` = conv3x3(n_feats, n_colors).
#   BranchUnit: head conv3x3(in, F), body = SSPN (`net` = Sequential of SSB), upsample (Upsampler:
#   per factor 2 [conv3x3(F, 4F), PixelShuffle(2)]), tail conv3x3(F, in).
#   SSB: spa = ResBlock(conv3x3: body [conv, ReLU, conv]), spc = ResAttentionBlock(kernel 1:
#   body [conv1x1, ReLU, conv1x1, CALayer]); CALayer(F, 16).conv_du = [conv1x1(F, F//16), ReLU,
#   conv1x1(F//16, F), Sigmoid]. All convolutions have biases.
# ---------------------------------------------------------------------------------------------

def conv_entries(prefix: str, cin: int, cout: int, k: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (cout, cin, k, k), f"{prefix}.bias": (cout,)}


def official_branch_keys(prefix: str, bands: int, feats: int, blocks: int, up: int, tail: bool) -> dict:
    keys = conv_entries(f"{prefix}.head", bands, feats, 3)
    for i in range(blocks):
        ssb = f"{prefix}.body.net.{i}"
        keys |= conv_entries(f"{ssb}.spa.body.0", feats, feats, 3)
        keys |= conv_entries(f"{ssb}.spa.body.2", feats, feats, 3)
        keys |= conv_entries(f"{ssb}.spc.body.0", feats, feats, 1)
        keys |= conv_entries(f"{ssb}.spc.body.2", feats, feats, 1)
        keys |= conv_entries(f"{ssb}.spc.body.3.conv_du.0", feats, feats // 16, 1)
        keys |= conv_entries(f"{ssb}.spc.body.3.conv_du.2", feats // 16, feats, 1)
    for j in range(int(math.log2(up))):  # Upsampler for scale 2^n: conv at Sequential index 2j
        keys |= conv_entries(f"{prefix}.upsample.{2 * j}", feats, 4 * feats, 3)
    if tail:
        keys |= conv_entries(f"{prefix}.tail", feats, bands, 3)
    return keys


def official_keys(colors: int, scale: int, n_subs: int, n_ovls: int, n_blocks: int, n_feats: int,
                  use_share: bool = True, **_) -> dict:
    if use_share:
        keys = official_branch_keys("branch", n_subs, n_feats, n_blocks, scale // 2, True)
    else:
        groups = math.ceil((colors - n_ovls) / (n_subs - n_ovls))
        keys = {}
        for g in range(groups):
            keys |= official_branch_keys(f"branch.{g}", n_subs, n_feats, n_blocks, 2, True)
    keys |= official_branch_keys("trunk", colors, n_feats, n_blocks, 2, False)
    keys |= conv_entries("skip_conv", colors, n_feats, 3)
    keys |= conv_entries("final", n_feats, colors, 3)
    return keys


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def hand_count(colors: int, scale: int, n_subs: int, n_blocks: int, n_feats: int, **_) -> int:
    """Parameters of the official (shared-branch) structure, layer by layer."""
    def conv3(i: int, o: int) -> int:
        return 9 * i * o + o

    def conv1(i: int, o: int) -> int:
        return i * o + o

    f = n_feats
    ssb = 2 * conv3(f, f) + 2 * conv1(f, f) + conv1(f, f // 16) + conv1(f // 16, f)

    def ups(factor: int) -> int:  # one conv3x3(F, 4F) per factor 2 (the pixel shuffles have none)
        return int(math.log2(factor)) * conv3(f, 4 * f)

    branch = conv3(n_subs, f) + n_blocks * ssb + ups(scale // 2) + conv3(f, n_subs)
    trunk = conv3(colors, f) + n_blocks * ssb + ups(2)
    return branch + trunk + conv3(colors, f) + conv3(f, colors)


# ---------------------------------------------------------------------------------------------
# 1. parameter count
# ---------------------------------------------------------------------------------------------

def test_paper_parameter_count():
    """No source reports SSPSR's parameter count (PAPER_PARAMETERS is None), so ours must equal the
    count derived by hand from the official structure: 20,815,079 for 31 bands at x4."""
    model = build(31, 4, **PAPER_CONFIG)
    expected = hand_count(31, 4, **PAPER_CONFIG)
    assert expected == 20_815_079
    assert n_params(model) == expected
    if PAPER_PARAMETERS is not None:
        assert abs(n_params(model) - PAPER_PARAMETERS) <= 0.05 * PAPER_PARAMETERS
    assert n_params(tiny()) < 100_000


# ---------------------------------------------------------------------------------------------
# 5. state_dict keys == official keys (no installed reference: hand-built from the official code)
# ---------------------------------------------------------------------------------------------

def test_tiny_state_dict_literal_keys():
    """A few keys of the tiny x4 model spelled out literally, and the total number of entries."""
    sd = shapes(tiny())
    assert len(sd) == 62  # branch 24 + trunk 34 - tail 2 + skip 2 + final 2 (2 SSBs of 12 entries)
    assert sd["branch.head.weight"] == (16, 4, 3, 3)
    assert sd["branch.body.net.1.spa.body.2.weight"] == (16, 16, 3, 3)
    assert sd["branch.body.net.0.spc.body.0.weight"] == (16, 16, 1, 1)
    assert sd["branch.body.net.0.spc.body.3.conv_du.0.weight"] == (1, 16, 1, 1)
    assert sd["branch.body.net.0.spc.body.3.conv_du.2.bias"] == (16,)
    assert sd["branch.upsample.0.weight"] == (64, 16, 3, 3)
    assert sd["branch.tail.weight"] == (4, 16, 3, 3)
    assert sd["trunk.head.weight"] == (16, BANDS, 3, 3)
    assert "trunk.tail.weight" not in sd
    assert sd["skip_conv.weight"] == (16, BANDS, 3, 3)
    assert sd["final.weight"] == (BANDS, 16, 3, 3) and sd["final.bias"] == (BANDS,)
    assert not any(k.startswith(("group_index", "band_coverage")) for k in sd)  # non-persistent


@pytest.mark.parametrize("colors,scale,overrides", [
    (BANDS, 4, {}), (BANDS, 8, {}), (BANDS, 2, {}), (9, 4, {"n_subs": 5, "n_ovls": 2}),
    (BANDS, 4, {"use_share": False}),
])
def test_tiny_state_dict_equals_official(colors, scale, overrides):
    cfg = {**TINY_CONFIG, **overrides}
    assert shapes(tiny(bands=colors, scale=scale, **overrides)) == official_keys(colors, scale, **cfg)


def test_paper_state_dict_equals_official():
    assert shapes(build(31, 4, **PAPER_CONFIG)) == official_keys(31, 4, **PAPER_CONFIG)


def test_official_state_dict_loads_strictly():
    """A state_dict with the official names (here: random tensors of the official shapes, as a
    released checkpoint would hold) loads with strict=True and changes the output."""
    model = tiny().eval()
    gen = torch.Generator().manual_seed(1)
    official = {k: 0.05 * torch.randn(s, generator=gen) for k, s in official_keys(BANDS, SCALE, **TINY_CONFIG).items()}
    x = torch.rand(1, BANDS, 5, 5, generator=gen)
    with torch.no_grad():
        before = model(x)
        model.load_state_dict(official, strict=True)
        after = model(x)
    assert not torch.allclose(before, after)


# ---------------------------------------------------------------------------------------------
# structure details: band groups, averaging, lms
# ---------------------------------------------------------------------------------------------

def test_band_groups_follow_official_formula():
    # official: G = ceil((C - o)/(p - o)); start = (p - o) g, moved back to C - p at the end
    assert band_groups(31, 8, 2) == [(0, 8), (6, 14), (12, 20), (18, 26), (23, 31)]
    assert band_groups(31, 4, 1) == [(3 * g, 3 * g + 4) for g in range(9)] + [(27, 31)]
    assert band_groups(8, 4, 1) == [(0, 4), (3, 7), (4, 8)]
    with pytest.raises(ValueError):
        band_groups(8, 9, 1)


class NearestUp(nn.Module):
    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return F.interpolate(x, scale_factor=self.scale, mode="nearest")


def test_group_outputs_are_placed_and_averaged():
    """With a branch that only upsamples, every band is covered by copies of itself, so the
    averaged placement must give back the (upsampled) input exactly; with a branch that adds the
    group's first band index, overlapping bands get the mean over their groups."""
    model = tiny(bands=BANDS, scale=4)
    model.branch = NearestUp(2)
    x = torch.rand(2, BANDS, 3, 4)
    torch.testing.assert_close(model.branches(x), F.interpolate(x, scale_factor=2, mode="nearest"))

    model = tiny(bands=BANDS, scale=4, use_share=False)  # groups (0,4), (3,7), (4,8)

    class AddConstant(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c = c

        def forward(self, x):
            return F.interpolate(x, scale_factor=2, mode="nearest") + self.c

    model.branch = nn.ModuleList(AddConstant(c) for c in (0.0, 30.0, 60.0))
    y = model.branches(torch.zeros(1, BANDS, 2, 2))[0, :, 0, 0]
    torch.testing.assert_close(y, torch.tensor([0, 0, 0, 15, 45, 45, 45, 60.0]))


def test_lms_defaults_to_bicubic_and_official_layout_is_accepted():
    model = tiny().eval()
    x = torch.rand(2, BANDS, 5, 6)
    lms = F.interpolate(x, scale_factor=SCALE, mode="bicubic", align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x, lms), rtol=0, atol=0)
        other = model(x, lms=torch.rand_like(lms))
    assert not torch.allclose(model(x).detach(), other)
    with pytest.raises(ValueError):
        model(x, torch.rand(2, BANDS, 10, 12))
    with pytest.raises(ValueError):
        model(torch.rand(2, BANDS + 1, 5, 6))


@pytest.mark.parametrize("scale", [1, 3, 5, 10])
def test_unsupported_scales_raise(scale):
    with pytest.raises(ValueError):
        build(BANDS, scale, **TINY_CONFIG)


# ---------------------------------------------------------------------------------------------
# 2. forward and backward
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scale", [2, 4, 8])
def test_forward_backward(scale):
    """Every parameter gets a finite, nonzero gradient. The tiny model's channel attention has a
    one-channel bottleneck (16 // 16) whose ReLU is often dead at the default init (no gradient to
    that attention at all), so its bias is opened to 1 first; nothing else is changed."""
    model = tiny(scale=scale)
    open_attention_bottleneck(model)
    x = torch.rand(2, BANDS, 6, 5, generator=torch.Generator().manual_seed(2))
    y = model(x)
    assert y.shape == (2, BANDS, 6 * scale, 5 * scale)
    assert torch.isfinite(y).all()
    (y - F.interpolate(x, scale_factor=scale, mode="bicubic")).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


# ---------------------------------------------------------------------------------------------
# 3. short training run
# ---------------------------------------------------------------------------------------------

def test_training_lowers_loss():
    """x4 SR of smooth synthetic cubes (LR = 4x4 box average of HR); 30 Adam steps."""
    gen = torch.Generator().manual_seed(3)
    coarse = torch.rand(4, BANDS, 4, 4, generator=gen)
    hr = F.interpolate(coarse, size=(16, 16), mode="bicubic", align_corners=False).clamp(0, 1)
    lr = F.avg_pool2d(hr, SCALE)
    model = tiny(seed=3)
    losses = fit_losses(model, lr, hr, 30, 1e-3, loss=F.l1_loss)
    assert losses[-1] < 0.5 * losses[0], losses


# ---------------------------------------------------------------------------------------------
# 4. tiled inference
# ---------------------------------------------------------------------------------------------

def neutralise_channel_attention(model: SSPSR) -> None:
    """Zero the second 1x1 conv of every channel attention: its gate becomes sigmoid(bias), a
    constant, so the global average pooling no longer matters and the network is local."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith("conv_du"):
                module[2].weight.zero_()


def test_declared_attributes():
    model = build(31, 4, **PAPER_CONFIG)
    assert model.receptive_radius is None and model.tile_align == 1 and model.input_multiple == 1
    # branch: 1 + 12 (head, SSBs) + 1 + 1/4 (x2 upsampler: conv, shuffle) + 1/2 (tail at x2);
    # trunk at x2: (1 + 12 + 1) / 2 + 1/8 (shuffle); final conv at x4: 1/4  ->  22.125
    assert model.local_radius == 23
    assert tiny().local_radius == 11  # 1 + 4 + 1 + 1/4 + 1/2 + 6/2 + 1/8 + 1/4 = 10.125


def test_local_radius_bounds_the_footprint():
    """With the channel attention neutralised, a change of one LR pixel changes only HR pixels
    whose LR coordinate lies within local_radius of it, and reaches nearly that far."""
    model = tiny(seed=4).eval()
    neutralise_channel_attention(model)
    r, s, size, p = model.local_radius, SCALE, 28, 14
    x = torch.rand(1, BANDS, size, size, generator=torch.Generator().manual_seed(4))
    x2 = x.clone()
    x2[..., p, p] += 1.0
    with torch.no_grad():
        changed = (model(x2) - model(x)).abs().amax(dim=(0, 1)) > 0
    u = (torch.arange(size * s) + 0.5) / s - 0.5 - p  # LR coordinate of each HR pixel, relative to p
    dist = torch.maximum(u.abs()[:, None], u.abs()[None, :])
    assert changed.any()
    assert dist[changed].max() <= r
    assert dist[changed].max() > r - 1


@pytest.mark.parametrize("size", [(45, 38)])
def test_tiled_equals_untiled_without_global_pooling(size):
    """The convolutional part is local: crop-and-stitch tiling with overlap >= local_radius is exact."""
    model = tiny(seed=5)
    neutralise_channel_attention(model)
    x = torch.rand(1, BANDS, *size, generator=torch.Generator().manual_seed(5))
    full = restore_batch(model, x)
    tiled = restore_batch(model, x, tile=2 * model.local_radius + 8, overlap=model.local_radius)
    assert (tiled - full).abs().max() < 1e-5


def open_attention_bottleneck(model: SSPSR) -> None:
    """Set the bias of each attention's first 1x1 conv to 1: the tiny model's one-channel bottleneck
    (16 // 16) is otherwise often cut off by its ReLU at the default init, which makes the gate a
    constant (and the model accidentally local)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("conv_du.0.bias"):
                p.fill_(1.0)


def sharpen_attention(model: SSPSR, gain: float = 10.0) -> None:
    """Open the attention bottleneck and scale both attention convs by ``gain``: at the default init
    the tiny model's gate is nearly constant (a trained gate is not), which would hide the global
    dependence below float rounding."""
    open_attention_bottleneck(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "conv_du" in name and name.endswith("weight"):
                p.mul_(gain)


def test_output_depends_on_pixels_beyond_local_radius():
    """receptive_radius is None: a change far outside local_radius still changes the output
    (through the attention's global average), unless the attention gate is made constant."""
    model = tiny(seed=7)
    sharpen_attention(model)
    model.eval()
    x = torch.rand(1, BANDS, 30, 30, generator=torch.Generator().manual_seed(7))
    x2 = x.clone()
    x2[..., 25:, 25:] += 1.0  # bottom-right corner; the probe is the HR pixels of LR (0..3, 0..3)
    probe = (..., slice(0, 4 * SCALE), slice(0, 4 * SCALE))
    assert 25 - 4 > model.local_radius  # well outside the local footprint of the probe
    with torch.no_grad():
        assert (model(x2) - model(x))[probe].abs().max() > 1e-6  # float noise cannot: the local path is untouched
        neutralise_channel_attention(model)
        assert (model(x2) - model(x))[probe].abs().max() == 0


def test_tiling_is_inexact_but_window_blend_close():
    """SSPSR's channel attention averages each feature map over the whole input (global pooling),
    so a tile's output depends on the tile's extent and no tiling is exact: on a scene whose
    statistics change across the image (brightness ramp) crop-and-stitch and window-blend tiling
    both differ from the untiled output by far more than float rounding, yet stay close (the
    attention enters through the 0.1-scaled residual branches). Crop-and-stitch with overlap >=
    local_radius is the closer of the two (its only error is the attention's); the window blend
    also averages in the zero-padding edge effects of the tiles. With a constant gate the same
    tiling is exact, so the pooling is the only non-local part."""
    model = tiny(seed=6)
    sharpen_attention(model)
    ramp = torch.linspace(0.05, 1.0, 38)
    x = torch.rand(1, BANDS, 45, 38, generator=torch.Generator().manual_seed(6)) * ramp
    full = restore_batch(model, x)
    r = model.local_radius
    crop = restore_batch(model, x, tile=2 * r + 8, overlap=r)
    window = restore_batch(model, x, tile=2 * r + 8, overlap=r, blend="window")
    spread = (full.max() - full.min()).item()
    for tiled in (crop, window):
        assert (tiled - full).abs().max() > 1e-4 * spread
        assert (tiled - full).abs().max() < 0.05 * spread
        assert (tiled - full).abs().mean() < 0.005 * spread
    assert (crop - full).abs().max() < (window - full).abs().max()
    neutralise_channel_attention(model)
    exact = restore_batch(model, x, tile=2 * r + 8, overlap=r)
    assert (exact - restore_batch(model, x)).abs().max() < 1e-5
