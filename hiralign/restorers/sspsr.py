"""SSPSR: the spatial-spectral prior network for single hyperspectral image super-resolution.

Paper: Junjun Jiang, He Sun, Xianming Liu, Jiayi Ma, "Learning Spatial-Spectral Prior for
Super-Resolution of Hyperspectral Imagery", IEEE Transactions on Computational Imaging 6,
pp. 1082-1096, 2020; arXiv:2005.08752. Official code: github.com/junjun-jiang/SSPSR
(``SSPSR.py``, ``common.py``). This is an independent re-implementation whose ``state_dict`` keys
and shapes equal the official ones, so the released / official-code checkpoints (saved by
``mains.py`` as ``net.module.state_dict()``, i.e. without a ``module.`` prefix) load with
``load_state_dict(strict=True)``.

Architecture (paper Sec. III, framework and SSB figures):

* **Group branches with shared parameters** (Sec. III-A). The ``C`` bands are split into
  ``G = ceil((C - o) / (p - o))`` groups of ``p = n_subs`` neighbouring bands overlapping by
  ``o = n_ovls``; group ``g`` starts at band ``(p - o) g``, and a group that would run past the
  last band is moved back to end flush with it. One branch network (shared by all groups when
  ``use_share``; one per group otherwise) maps each group ``(p, h, w)`` to ``(p, h s/2, w s/2)``.
  The branch outputs are put back at their bands and averaged over the groups covering each band.
* **Branch** = head 3x3 conv (p -> F) -> SSPN -> upsampler (x s/2: 3x3 conv to 4F + pixel
  shuffle per factor 2; 9F + pixel shuffle for 3) -> tail 3x3 conv (F -> p).
* **SSPN** (spatial-spectral prior network): ``n_blocks`` spatial-spectral blocks (SSB) with a
  long skip, ``SSPN(x) = SSBs(x) + x``.
* **SSB** (Sec. III-B) = spatial residual module (3x3 conv, ReLU, 3x3 conv; ``x + 0.1 * res``)
  followed by the spectral attention residual module (1x1 conv, ReLU, 1x1 conv, channel
  attention; ``x + 0.1 * res``). The channel attention (RCAN-style) multiplies the features by
  ``sigmoid(W2 relu(W1 avgpool(f)))`` with reduction 16.
* **Progressive upsampling** (Sec. III-C): the averaged x s/2 estimate goes through a trunk (a
  branch over all C bands, x2 upsampler, no tail); the bicubic-upsampled input ``lms`` passes a
  3x3 conv (C -> F, ``skip_conv``) and is added; a final 3x3 conv (F -> C) gives the output.

Call convention. The official ``forward(x, lms)`` takes the low-resolution cube and its bicubic
upsampling ``lms``, which the official pipeline precomputes in its MATLAB data preparation
(``mcodes/include/crop_image.m`` and ``generate_test_data.m``: ``ms = imresize(gt, 1/s)``,
``ms_bicubic = imresize(ms, s)``, i.e. MATLAB's bicubic ``imresize``, stored as ``ms_bicubic`` in
the .mat files and read by ``data/HStrain.py`` / ``HStest.py``). Our ``model(lr)`` (hiralign's
convention) computes ``lms`` internally with ``torch.nn.functional.interpolate(mode="bicubic",
align_corners=False)``; ``model(lr, lms)`` / ``model(lr, lms=...)`` uses a given one (the official
layout). PyTorch's bicubic kernel (a = -0.75, border replication) is not MATLAB's (a = -0.5,
symmetric borders), so to reproduce the official numbers exactly, pass MATLAB's ``ms_bicubic``.

Deviations from the official code (none change keys, shapes or the computed function for the
configurations the official code can run):

* The shared branch processes all groups in one batched call (groups folded into the batch)
  instead of a Python loop; the result is the same up to float rounding.
* The official code allocates its buffers with ``.cuda()``; ours runs on any device (the group
  index and band coverage are non-persistent buffers, so they are not in the ``state_dict``).
* With ``use_share=False`` the official code gives every branch an x2 upsampler whatever the scale,
  so its forward fails unless ``n_scale == 4``; ours gives each branch the x s/2 upsampler
  (identical keys for x4, the only scale at which the official non-shared model runs).
* Unsupported scales raise a ``ValueError`` at construction (the official code builds an x(s//2)*2
  network for odd ``s`` and then fails at the ``lms`` skip).

Tiling. The channel attention pools over the whole feature map, so every output pixel depends on
the whole input: ``receptive_radius = None`` and no tiling is exact (a window blend is close, see
the tests). Without the pooling the network is local with radius :attr:`SSPSR.local_radius`
low-resolution pixels.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: The paper configuration used by the HSIR toolbox (``hsir/model/sr/__init__.py``:
#: ``SSPSR(n_subs=8, n_ovls=2, n_colors=31, n_blocks=6, n_feats=256, n_scale=sf, res_scale=0.1,
#: use_share=True)``) for 31-band data; ``build(31, 4, **PAPER_CONFIG)``. (The official
#: ``demo.sh`` trains CAVE with ``n_blocks=8, n_subs=4, n_ovls=1`` and Chikusei with
#: ``n_blocks=3, n_subs=8, n_ovls=2``, all with ``n_feats=256``.)
PAPER_CONFIG: dict = {"n_subs": 8, "n_ovls": 2, "n_blocks": 6, "n_feats": 256, "res_scale": 0.1, "use_share": True}

#: A very small configuration for CPU tests (about 44k parameters for 8 bands at x4).
TINY_CONFIG: dict = {"n_subs": 4, "n_ovls": 1, "n_blocks": 2, "n_feats": 16, "res_scale": 0.1, "use_share": True}

#: No parameter count is reported for this configuration: the SSPSR paper (arXiv:2005.08752v2,
#: IEEE TCI 2020) and the official README (github.com/junjun-jiang/SSPSR) give none that we could
#: find. Counted from the official structure (``SSPSR.py`` / ``common.py``), ``build(31, 4,
#: **PAPER_CONFIG)`` has 20,815,079 parameters; ``tests/test_sspsr_net.py`` derives that count by
#: hand, layer by layer.
PAPER_PARAMETERS: int | None = None

#: Channel reduction of the channel attention (official ``CALayer(n_feats, 16)``).
ATTENTION_REDUCTION = 16


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    """3x3 'same' convolution with bias (the official ``default_conv``)."""
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


def conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1)


class ChannelAttention(nn.Module):
    """Spectral (channel) attention: ``f * sigmoid(W2 relu(W1 avgpool(f)))`` (Sec. III-B).

    The global average pooling makes the network non-local.
    """

    def __init__(self, channels: int, reduction: int = ATTENTION_REDUCTION):
        super().__init__()
        if channels // reduction < 1:
            raise ValueError(f"channel attention needs at least {reduction} features; got {channels}")
        # indices 0 / 2 hold the two 1x1 convolutions (official key names conv_du.0, conv_du.2)
        self.conv_du = nn.Sequential(conv1x1(channels, channels // reduction), nn.ReLU(inplace=True),
                                     conv1x1(channels // reduction, channels), nn.Sigmoid())

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return f * self.conv_du(f.mean(dim=(-2, -1), keepdim=True))


class SpatialResidualModule(nn.Module):
    """``x + res_scale * conv3x3(relu(conv3x3(x)))``: the spatial half of an SSB."""

    def __init__(self, features: int, res_scale: float):
        super().__init__()
        self.body = nn.Sequential(conv3x3(features, features), nn.ReLU(inplace=True), conv3x3(features, features))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.body(x)


class SpectralAttentionResidualModule(nn.Module):
    """``x + res_scale * CA(conv1x1(relu(conv1x1(x))))``: the spectral half of an SSB (1x1
    convolutions mix the feature channels only, then channel attention reweights them)."""

    def __init__(self, features: int, res_scale: float):
        super().__init__()
        self.body = nn.Sequential(conv1x1(features, features), nn.ReLU(inplace=True), conv1x1(features, features),
                                  ChannelAttention(features))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.body(x)


class SpatialSpectralBlock(nn.Module):
    """SSB: spatial residual module then spectral attention residual module (Sec. III-B)."""

    def __init__(self, features: int, res_scale: float):
        super().__init__()
        self.spa = SpatialResidualModule(features, res_scale)
        self.spc = SpectralAttentionResidualModule(features, res_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spc(self.spa(x))


class SpatialSpectralPriorNetwork(nn.Module):
    """SSPN: a chain of SSBs with a long skip connection, ``SSBs(x) + x``."""

    def __init__(self, features: int, blocks: int, res_scale: float):
        super().__init__()
        self.net = nn.Sequential(*(SpatialSpectralBlock(features, res_scale) for _ in range(blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) + x


def pixel_shuffle_upsampler(features: int, scale: int) -> nn.Sequential:
    """Sub-pixel upsampling by ``scale``: per factor 2 a 3x3 conv to ``4 F`` and a pixel shuffle
    (keys 0, 2, 4, ...); for 3 one conv to ``9 F`` and a pixel shuffle; empty for 1."""
    if scale >= 1 and (scale & (scale - 1)) == 0:
        layers: list[nn.Module] = []
        for _ in range(scale.bit_length() - 1):
            layers += [conv3x3(features, 4 * features), nn.PixelShuffle(2)]
        return nn.Sequential(*layers)
    if scale == 3:
        return nn.Sequential(conv3x3(features, 9 * features), nn.PixelShuffle(3))
    raise ValueError(f"the upsampler supports powers of 2 and 3; got {scale}")


class SpatialSpectralBranch(nn.Module):
    """One branch: head conv -> SSPN -> upsampler (x ``scale``) -> optional tail conv."""

    def __init__(self, bands: int, features: int, blocks: int, res_scale: float, scale: int, tail: bool = True):
        super().__init__()
        self.head = conv3x3(bands, features)
        self.body = SpatialSpectralPriorNetwork(features, blocks, res_scale)
        self.upsample = pixel_shuffle_upsampler(features, scale)
        self.tail = conv3x3(features, bands) if tail else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.upsample(self.body(self.head(x)))
        return y if self.tail is None else self.tail(y)


def band_groups(bands: int, n_subs: int, n_ovls: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of the ``ceil((C - o) / (p - o))`` overlapping band groups (Sec. III-A);
    the last group is moved back to end at the last band."""
    if not 0 <= n_ovls < n_subs <= bands:
        raise ValueError(f"need 0 <= n_ovls < n_subs <= bands; got n_ovls={n_ovls}, n_subs={n_subs}, bands={bands}")
    step = n_subs - n_ovls
    groups = []
    for g in range(math.ceil((bands - n_ovls) / step)):
        start = step * g
        if start + n_subs > bands:
            start = bands - n_subs
        groups.append((start, start + n_subs))
    return groups


class SSPSR(nn.Module):
    """SSPSR network; ``model(lr)`` maps ``(N, C, h, w)`` to ``(N, C, h s, w s)``.

    Args mirror the official constructor: ``n_subs`` bands per group, ``n_ovls`` overlap between
    neighbouring groups, ``n_colors`` bands, ``n_blocks`` SSBs per SSPN, ``n_feats`` features,
    ``n_scale`` upscaling factor (even; ``n_scale // 2`` a power of 2 or 3), ``res_scale`` residual
    scaling of the SSB modules, ``use_share`` one branch shared by all groups.
    """

    receptive_radius = None  # channel attention pools globally
    tile_align = 1  # integer-scale convs / pixel shuffle / bicubic: equivariant to any LR shift
    input_multiple = 1

    def __init__(self, n_subs: int, n_ovls: int, n_colors: int, n_blocks: int, n_feats: int, n_scale: int,
                 res_scale: float = 0.1, use_share: bool = True):
        super().__init__()
        if n_scale < 2 or n_scale % 2:
            raise ValueError(f"SSPSR upsamples by (n_scale // 2) in the branches and x2 in the trunk; "
                             f"n_scale must be even, got {n_scale}")
        self.n_colors, self.scale, self.n_blocks = n_colors, n_scale, n_blocks
        self.branch_scale = n_scale // 2
        self.groups = band_groups(n_colors, n_subs, n_ovls)
        self.shared = use_share
        if use_share:
            self.branch = SpatialSpectralBranch(n_subs, n_feats, n_blocks, res_scale, self.branch_scale)
        else:
            self.branch = nn.ModuleList(SpatialSpectralBranch(n_subs, n_feats, n_blocks, res_scale, self.branch_scale)
                                        for _ in self.groups)
        self.trunk = SpatialSpectralBranch(n_colors, n_feats, n_blocks, res_scale, 2, tail=False)
        self.skip_conv = conv3x3(n_colors, n_feats)
        self.final = conv3x3(n_feats, n_colors)
        index = torch.cat([torch.arange(start, stop) for start, stop in self.groups])
        self.register_buffer("group_index", index, persistent=False)
        self.register_buffer("band_coverage", torch.bincount(index, minlength=n_colors).float(), persistent=False)

    @property
    def local_radius(self) -> int:
        """Receptive radius in low-resolution pixels of the convolutional part (what the radius
        would be without the channel attention's global pooling).

        Along the branch -> trunk path a 3x3 conv at resolution ``a`` (pixels of ``1/a`` LR pixel)
        adds ``1/a``; a pixel shuffle by ``f`` from resolution ``a`` adds ``(f - 1) / (2 f a)`` (the
        offset of a sub-pixel centre from its source pixel). The bicubic skip path sees 2 LR pixels.
        """
        b = self.branch_scale
        factors = [2] * (b.bit_length() - 1) if (b & (b - 1)) == 0 else [3]
        radius, res = 1.0 + 2 * self.n_blocks, 1  # branch head + SSBs, at LR
        for f in factors + [None, 2]:  # branch upsampler, (tail, trunk head + SSBs), trunk upsampler
            if f is None:
                radius += (1 + 1 + 2 * self.n_blocks) / res
                continue
            radius += 1 / res + (f - 1) / (2 * f * res)
            res *= f
        radius += 1 / res  # final conv at x s
        skip = 2 + 2 / self.scale  # bicubic support, skip_conv and final at x s
        return math.ceil(max(radius, skip) - 1e-9)

    def bicubic(self, x: torch.Tensor) -> torch.Tensor:
        """The bicubic upsampling ``lms`` of the LR input (PyTorch's, see the module docstring)."""
        return F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)

    def branches(self, x: torch.Tensor) -> torch.Tensor:
        """Group branches, placed back at their bands and averaged over overlaps: ``(N, C, h s/2, w s/2)``."""
        groups = torch.stack([x[:, start:stop] for start, stop in self.groups])  # (G, N, p, h, w)
        if self.shared:
            out = self.branch(groups.flatten(0, 1)).unflatten(0, groups.shape[:2])
        else:
            out = torch.stack([branch(group) for branch, group in zip(self.branch, groups)])
        out = out.transpose(0, 1).flatten(1, 2)  # (N, G p, H, W), bands in group order
        summed = out.new_zeros(out.shape[0], self.n_colors, *out.shape[-2:]).index_add(1, self.group_index, out)
        return summed / self.band_coverage.to(out.dtype).view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor, lms: torch.Tensor | None = None) -> torch.Tensor:
        """Super-resolve ``x`` ``(N, C, h, w)``; ``lms`` (``(N, C, h s, w s)``) defaults to the
        bicubic upsampling of ``x``."""
        if x.ndim != 4 or x.shape[1] != self.n_colors:
            raise ValueError(f"expected (N, {self.n_colors}, h, w); got {tuple(x.shape)}")
        if lms is None:
            lms = self.bicubic(x)
        expected = (x.shape[0], self.n_colors, x.shape[-2] * self.scale, x.shape[-1] * self.scale)
        if tuple(lms.shape) != expected:
            raise ValueError(f"lms must have shape {expected}; got {tuple(lms.shape)}")
        y = self.trunk(self.branches(x))
        return self.final(y + self.skip_conv(lms))


def build(bands: int, scale: int = 4, **cfg) -> SSPSR:
    """SSPSR for ``bands`` bands at upscaling ``scale``; ``cfg`` as :data:`PAPER_CONFIG` (default)."""
    cfg = {**PAPER_CONFIG, **cfg}
    return SSPSR(n_colors=bands, n_scale=scale, **cfg)
