"""MCNet: mixed 2D/3D convolutional network for single hyperspectral image super-resolution.

Paper: Qiang Li, Qi Wang, Xuelong Li, "Mixed 2D/3D Convolutional Network for Hyperspectral Image
Super-Resolution", *Remote Sensing* 12(10):1660, 2020, doi:10.3390/rs12101660 (open access; no
arXiv version is known to us). Official code: github.com/qianngli/MCNet (``model.py``), re-packaged
by the HSIR toolbox as ``hsir.model.sr.mcnet.MCNet``. In HIR-ALIGN it is one of the SR backbones
(x4 and x8).

Architecture (paper Sec. 3, "Proposed method"). The low-resolution cube ``(N, B, h, w)`` minus a
per-band dataset mean is treated as a one-channel volume ``(N, 1, B, h, w)``:

* shallow features ``T``: one 3x3x3 convolution, 1 -> ``n_feats`` channels;
* four *mixed convolutional modules* (MCM), each followed by the global skip ``+ T``. An MCM runs
  three *3D units* in a chain, each with a local residual; a 3D unit is the spatial-spectral
  separable 3D convolution (1x3x3 spatial then 3x1x1 spectral, ReLU after each), ``n_conv`` of
  them per unit. The output of every 3D unit is refined by its own *2D unit* (3x3 conv, ReLU,
  3x3 conv) applied band by band with weights shared over the bands. *Local feature fusion*
  concatenates the three 2D-unit outputs scaled by learnable weights ``gamma``, reduces them with
  a 1x1x1 convolution + ReLU, adds the module input, and ends with one more 3D unit;
* reconstruction: a 3D transposed convolution (kernel ``3 x (s+2) x (s+2)``, stride ``(1, s, s)``,
  padding 1) upsamples space by ``s``, a 3x3x3 convolution maps back to one channel, the channel
  axis is dropped and the band mean is added back.

Every convolution is weight-normalised (Salimans & Kingma, 2016): its kernel is
``w = g * v / ||v||`` with the norm over all axes but the first, stored as ``weight_g``/``weight_v``
exactly as ``torch.nn.utils.weight_norm`` (dim 0) stores it, so the official checkpoints load with
``strict=True``. :class:`WeightNormConv` implements this directly instead of through the deprecated
``torch.nn.utils.weight_norm`` hook; for the transposed convolution "the first axis" is the input
channel axis, as in the official code.

Layouts: ``forward`` takes hiralign's ``(N, B, h, w)`` (as the official ``model.py`` does) and
returns ``(N, B, h*s, w*s)``; it also takes HSIR's ``(N, 1, B, h, w)`` and then returns
``(N, 1, B, h*s, w*s)``. No parameters are involved in the conversion.

Deviations from the official code: none in the computation. The per-band mean is a constructor
argument ``band_mean`` (default: none, i.e. zeros; the official ``model.py`` hard-codes the CAVE
mean :data:`CAVE_BAND_MEAN`, HSIR reads ``data_mean`` from a ``.npy`` statistics file). Like the
official plain tensor attribute it is not in the state dict (a non-persistent buffer), and it moves
with ``.to(device)`` instead of the official unconditional ``.cuda()``.

Locality: every layer is a local convolution and the transposed convolution's output grid is tied
to the input grid (through the reconstruction tail, HR pixel ``o`` depends on the features at LR
pixels ``floor(o/s) - 1 .. floor(o/s) + 1``), so
tiling on the LR input is exact for any integer offset (``tile_align = 1``) with a receptive radius
of ``12 * n_conv + 14`` LR pixels (26 for the paper configuration), and any ``h, w`` work.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

#: Per-band mean of the CAVE training set, hard-coded in the official ``model.py`` (its default).
CAVE_BAND_MEAN = (0.0939, 0.0950, 0.0869, 0.0839, 0.0850, 0.0809, 0.0769, 0.0762, 0.0788, 0.0790, 0.0834,
                  0.0894, 0.0944, 0.0956, 0.0939, 0.1187, 0.0903, 0.0928, 0.0985, 0.1046, 0.1121, 0.1194,
                  0.1240, 0.1256, 0.1259, 0.1272, 0.1291, 0.1300, 0.1352, 0.1428, 0.1541)

#: Official default architecture (``option.py``: ``--n_feats 64 --n_conv 1``; four MCMs in ``model.py``).
#: The scale is passed separately (``build(bands, scale, **PAPER_CONFIG)``); the parameter count depends on it.
PAPER_CONFIG = {"n_feats": 64, "n_conv": 1}
#: A CPU-test size (about 8k parameters at x2, 9k at x4, 12k at x8).
TINY_CONFIG = {"n_feats": 4, "n_conv": 1}
#: Scale of :data:`PAPER_PARAMETERS` (the official README's and ``option.py``'s default ``--upscale_factor 4``).
PAPER_SCALE = 4
#: Trainable parameters of the official ``model.py`` MCNet for PAPER_CONFIG at x4, as printed by the
#: official ``train.py`` (``'# parameters:'``, sum of ``numel`` over ``model.parameters()``, weight-norm
#: ``g`` and ``v`` included) -- github.com/qianngli/MCNet, model.py/train.py. Same count from
#: ``hsir.model.sr.mcnet.MCNet(31, 64, 1, 4, ...)``. The paper prints no exact count we could check.
PAPER_PARAMETERS = 2_174_094
#: The same count at the other scales (the tail's transposed kernel grows with the scale).
PAPER_PARAMETERS_BY_SCALE = {2: 1_928_334, 3: 2_038_926, 4: 2_174_094, 8: 2_960_526}


class WeightNormConv(nn.Module):
    """A convolution (2-D, 3-D or 3-D transposed) with a weight-normalised kernel
    ``w = g * v / ||v||_2``, the norm taken over all kernel axes but the first (Salimans & Kingma 2016).

    Parameters ``weight_g`` (shape ``(v.shape[0], 1, ..., 1)``), ``weight_v`` and ``bias``, named as
    ``torch.nn.utils.weight_norm`` names them. Initialised like that function: ``v`` is PyTorch's
    default kernel initialisation of the plain layer and ``g = ||v||``, so ``w`` starts equal to it.
    """

    _LAYERS: ClassVar[dict] = {"conv2d": (nn.Conv2d, F.conv2d), "conv3d": (nn.Conv3d, F.conv3d),
                               "conv_transpose3d": (nn.ConvTranspose3d, F.conv_transpose3d)}

    def __init__(self, kind: str, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        super().__init__()
        layer_class, self._op = self._LAYERS[kind]
        plain = layer_class(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        self.kind, self.stride, self.padding = kind, plain.stride, plain.padding
        self.weight_v = nn.Parameter(plain.weight.detach().clone())
        self.weight_g = nn.Parameter(self._norm(self.weight_v.detach()))
        self.bias = nn.Parameter(plain.bias.detach().clone())

    @staticmethod
    def _norm(v: torch.Tensor) -> torch.Tensor:
        """``||v||_2`` over all axes but the first, shaped ``(v.shape[0], 1, ..., 1)``."""
        return v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))

    def kernel(self) -> torch.Tensor:
        """The effective kernel ``g * v / ||v||``."""
        return self.weight_v * (self.weight_g / self._norm(self.weight_v))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._op(x, self.kernel(), self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        return f"{self.kind}, kernel={tuple(self.weight_v.shape)}, stride={self.stride}, padding={self.padding}"


class ConvReLU3d(nn.Module):
    """Weight-normalised 3-D convolution followed by ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, padding=0):
        super().__init__()
        self.conv = WeightNormConv("conv3d", in_channels, out_channels, kernel_size, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x))


class SeparableConv3d(nn.Module):
    """Spatial-spectral separable 3-D convolution of the 3D unit: a 1x3x3 (spatial) then a 3x1x1
    (spectral) convolution, each with ReLU -- cheaper than one 3x3x3 kernel (paper Sec. 3, 3D unit)."""

    def __init__(self, features: int):
        super().__init__()
        self.conv = nn.Sequential(ConvReLU3d(features, features, (1, 3, 3), padding=(0, 1, 1)),
                                  ConvReLU3d(features, features, (3, 1, 1), padding=(1, 0, 0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def unit_3d(features: int, n_conv: int) -> nn.Sequential:
    """A 3D unit: ``n_conv`` separable 3-D convolutions (its local residual is added by the MCM)."""
    return nn.Sequential(*(SeparableConv3d(features) for _ in range(n_conv)))


class BandwiseConv2dUnit(nn.Sequential):
    """The 2D unit: 3x3 conv, ReLU, 3x3 conv on every band's ``(features, H, W)`` map, with weights
    shared across bands (paper Sec. 3, 2D unit). Takes and returns ``(N, C, B, H, W)`` volumes; the
    bands are folded into the batch for the 2-D convolutions."""

    def __init__(self, features: int):
        super().__init__(WeightNormConv("conv2d", features, features, 3, padding=1), nn.ReLU(),
                         WeightNormConv("conv2d", features, features, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, b, h, w = x.shape
        maps = x.transpose(1, 2).reshape(n * b, c, h, w)  # (N*B, C, H, W): one image per band
        maps = super().forward(maps)
        return maps.reshape(n, b, c, h, w).transpose(1, 2)


class MixedConvModule(nn.Module):
    """Mixed convolutional module (MCM): three chained 3D units with local residuals, a 2D unit on
    each of their outputs, local feature fusion (learnable weights ``gamma``, concatenation, 1x1x1
    convolution + ReLU), a module residual and a final 3D unit (paper Sec. 3).

    Attribute names follow the official code (they are the state-dict keys): ``Block1..3`` are the
    3D units, ``conv1..3`` the 2D units, ``reduceF`` the fusion convolution, ``Conv`` the last 3D unit.
    """

    def __init__(self, features: int, n_conv: int):
        super().__init__()
        self.Block1 = unit_3d(features, n_conv)
        self.Block2 = unit_3d(features, n_conv)
        self.Block3 = unit_3d(features, n_conv)
        self.reduceF = ConvReLU3d(3 * features, features, 1)
        self.Conv = SeparableConv3d(features)
        self.gamma = nn.Parameter(torch.ones(3))  # adaptive weights of the local feature fusion
        self.conv1 = BandwiseConv2dUnit(features)
        self.conv2 = BandwiseConv2dUnit(features)
        self.conv3 = BandwiseConv2dUnit(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f1 = self.Block1(x) + x  # 3D units with local residual learning
        f2 = self.Block2(f1) + f1
        f3 = self.Block3(f2) + f2
        s1, s2, s3 = self.conv1(f1), self.conv2(f2), self.conv3(f3)  # 2D units, one per 3D unit
        fused = torch.cat([self.gamma[0] * s1, self.gamma[1] * s2, self.gamma[2] * s3], dim=1)
        fused = F.relu(self.reduceF(fused))  # local feature fusion (the official ReLU is applied twice; idempotent)
        return self.Conv(fused + x)


class MCNet(nn.Module):
    """MCNet for ``bands`` bands and a fixed integer upscaling ``scale`` (module docstring).

    ``band_mean``: per-band mean subtracted from the input and added to the output (a float, a
    sequence of ``bands`` values, or None for no normalisation); not part of the state dict.
    """

    input_multiple = 1
    tile_align = 1

    def __init__(self, bands: int = 31, scale: int = 4, n_feats: int = 64, n_conv: int = 1,
                 band_mean: float | Sequence[float] | torch.Tensor | None = None):
        super().__init__()
        if scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        self.bands, self.scale = int(bands), int(scale)
        self.receptive_radius = 12 * n_conv + 14  # head 1 + 4 MCMs x (3 n_conv + 2 + 1) + tail 1 (LR pixels)
        self.register_buffer("band_mean", self._band_mean(band_mean, self.bands), persistent=False)
        self.head = WeightNormConv("conv3d", 1, n_feats, 3, padding=1)  # shallow feature extraction
        self.SSRM1 = MixedConvModule(n_feats, n_conv)
        self.SSRM2 = MixedConvModule(n_feats, n_conv)
        self.SSRM3 = MixedConvModule(n_feats, n_conv)
        self.SSRM4 = MixedConvModule(n_feats, n_conv)
        self.tail = nn.Sequential(  # reconstruction: transposed 3-D conv upsampling, then to one channel
            WeightNormConv("conv_transpose3d", n_feats, n_feats, (3, scale + 2, scale + 2),
                           stride=(1, scale, scale), padding=1),
            WeightNormConv("conv3d", n_feats, 1, 3, padding=1),
        )

    @staticmethod
    def _band_mean(band_mean, bands: int) -> torch.Tensor:
        if band_mean is None:
            band_mean = 0.0
        mean = torch.as_tensor(band_mean, dtype=torch.float32).flatten()
        if mean.numel() == 1:
            mean = mean.expand(bands)
        if mean.numel() != bands:
            raise ValueError(f"band_mean has {mean.numel()} values for {bands} bands")
        return mean.clone().view(1, bands, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, B, h, w) -> (N, B, h*s, w*s)``; a ``(N, 1, B, h, w)`` volume gives ``(N, 1, B, h*s, w*s)``."""
        volume = x.dim() == 5
        if volume:
            if x.shape[1] != 1:
                raise ValueError(f"a 5-D input must be (N, 1, B, h, w); got {tuple(x.shape)}")
            x = x[:, 0]
        mean = self.band_mean.to(x.dtype)
        shallow = self.head((x - mean).unsqueeze(1))
        y = shallow
        for module in (self.SSRM1, self.SSRM2, self.SSRM3, self.SSRM4):
            y = module(y) + shallow  # global residual to the shallow features after every MCM
        y = self.tail(y)[:, 0] + mean
        return y.unsqueeze(1) if volume else y


def build(bands: int, scale: int, **cfg) -> MCNet:
    """MCNet for ``bands`` bands at upscaling ``scale``; ``cfg``: ``n_feats``, ``n_conv``, ``band_mean``."""
    return MCNet(bands=bands, scale=scale, **cfg)
