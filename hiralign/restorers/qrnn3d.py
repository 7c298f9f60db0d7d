"""QRNN3D: 3-D quasi-recurrent neural network for hyperspectral image denoising.

Re-implementation of Kaixuan Wei, Ying Fu, Hua Huang, "3-D Quasi-Recurrent Neural Network for
Hyperspectral Image Denoising", IEEE Transactions on Neural Networks and Learning Systems 32(1),
2021, arXiv:2003.04547 (network ``QRNNREDC3D``), written from the paper. Layer layout, constants
and state_dict key names follow the official repository (github.com/Vandermode/QRNN3D,
``models/qrnn/qrnn3d.py``, ``models/qrnn/combinations.py`` and the builder ``qrnn3d()`` in
``models/__init__.py``; re-packaged unchanged in the HSIR toolbox as ``hsir.model.qrnn3d``), so the
released checkpoints load with ``load_state_dict(strict=True)``.

Architecture (paper Sec. III)
-----------------------------
The cube is a 3-D volume ``(bands, H, W)`` with one feature channel; the band axis is the "time"
axis of a recurrence, so the network applies to any number of bands.

* **QRU3D** (quasi-recurrent unit, Sec. III-A). A 3x3x3 convolution of the input produces a
  candidate ``Z = tanh(W_z * X)`` and a forget gate ``F = sigmoid(W_f * X)`` (the "3D convolutional
  subcomponent"); then *f-pooling* runs along the bands,
  ``h_b = f_b * h_{b-1} + (1 - f_b) * z_b`` with ``h_0 = 0`` (the "quasi-recurrent pooling"),
  carrying information across the whole spectrum at the cost of one elementwise recursion.
  Batch normalisation precedes every convolution (no bias, except in the last layer).
* **Alternating directions** (Sec. III-B). Successive QRU3D layers pool forward and backward along
  the spectrum in turn, so the stack as a whole sees both spectral neighbours without paying for a
  bidirectional recursion in every layer. The first layer (feature extractor) and the last one
  (reconstructor) are *bidirectional*: two forget gates, one pooled forward and one backward, and
  the two hidden sequences are summed.
* **Residual encoder-decoder** (Sec. III-C, Fig. 3). Feature extractor (1 -> C channels), an
  encoder of ``num_half_layer`` QRU3D layers of which those at ``sample_idx`` halve H and W with a
  stride ``(1, 2, 2)`` and double the channels, a mirrored decoder whose layers at ``sample_idx``
  upsample H, W by two (trilinear interpolation, then a 3x3x3 convolution) and halve the channels,
  and the others use 3x3x3 transposed convolutions (stride 1: a convolution with flipped weights);
  symmetric additive skip connections join encoder and decoder, the feature extractor's output is
  added before the reconstructor (C -> 1), and the input is added to the output (global residual).
  Paper configuration: ``C = 16``, five layers per half, downsampling at layers 1 and 3 -- 860,453
  parameters.

Layouts
-------
The official network takes ``(N, 1, B, H, W)``. :meth:`QRNNREDC3D.forward` accepts that and
hiralign's ``(N, B, H, W)`` (a singleton channel axis is inserted and removed again; no
parameters are involved) and returns the rank it was given. H and W must be multiples of
``2 ** len(sample_idx)`` (4 for the paper): ``input_multiple``; hiralign pads to it.

Tiling
------
Along H and W the network is local: one output pixel sees at most 28 input pixels on each side for
the paper configuration (28 to one side, 25 to the other; ``spatial_reach``, computed by
:func:`receptive_reach` and checked against autograd by a test). With the official upsampling,
however, tiled inference is *not* exact, whatever the overlap: the decoder's
``nn.Upsample(mode="trilinear", align_corners=True)`` samples fine pixel ``j`` at coarse position
``j * (n - 1) / (2n - 1)`` for an input ``n`` coarse pixels wide, so the interpolation weights depend
on the width of the whole input (tile), and the network is not translation-equivariant (the
sampling grid drifts by up to half a coarse pixel across the image). ``receptive_radius`` is
therefore ``None``; tile with an overlap of at least ``spatial_reach`` (crop-and-stitch then differs
from the untiled output by a few 1e-4 for a random tiny model). With ``align_corners=False`` (an
option that is not in the official code; default off) the upsampling is shift-equivariant for shifts
of one coarse pixel, the network is translation-equivariant for shifts that are multiples of
``tile_align = 2 ** len(sample_idx)``, ``receptive_radius = spatial_reach``, and crop-and-stitch
tiling equals the untiled output. Tiles must have sides that are multiples of ``input_multiple``.
Along the bands the receptive field is global (the recurrence), which spatial tiles do not cut.

Deviations from the official code
---------------------------------
* None in the computation for the official options. ``SynchronizedBatchNorm3d`` is replaced by
  ``nn.BatchNorm3d`` (identical on one device; the same state_dict keys).
* Added: the ``(N, B, H, W)`` layout, the ``align_corners`` switch (default ``True`` = official),
  and a clear error for H, W that are not multiples of ``input_multiple`` (the official forward
  fails with a shape mismatch in a skip connection).
* Not ported: the official ``is_2d`` (QRNN2D, 1x3x3 kernels) and ``plain`` (no downsampling)
  variants, and the ``fname`` statistics dump of the bidirectional layer.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: Official configuration (``models/__init__.py: qrnn3d()`` = ``QRNNREDC3D(1, 16, 5, [1, 3], has_ad=True)``).
PAPER_CONFIG: dict = {"in_channels": 1, "channels": 16, "num_half_layer": 5, "sample_idx": (1, 3),
                      "has_ad": True, "bn": True, "act": "tanh"}
#: Same topology (two downsamplings, five layers per half) with 4 instead of 16 base channels: 54,413 parameters.
TINY_CONFIG: dict = {"in_channels": 1, "channels": 4, "num_half_layer": 5, "sample_idx": (1, 3),
                     "has_ad": True, "bn": True, "act": "tanh"}
#: Parameter count of the official paper configuration. Source: the official builder ``qrnn3d()``
#: (github.com/Vandermode/QRNN3D, ``models/__init__.py``), counted as ``sum(p.numel() for p in
#: net.parameters())`` = 860,453 (same for HSIR 0.1.1's ``hsir.model.qrnn3d.qrnn3d()``); neither the
#: repository's README nor the paper text available here prints a count. Later HSI-denoising comparisons
#: list QRNN3D at 0.86 M (e.g. Lai et al., "Hybrid Spectral Denoising Transformer with Guided Attention",
#: ICCV 2023, arXiv:2303.09040 -- quoted from memory, not re-checked here).
PAPER_PARAMETERS: int = 860_453

ACTIVATIONS = ("tanh", "relu", "none")


def f_pooling(z: torch.Tensor, f: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """Quasi-recurrent pooling along the band axis (dim 2) of ``(N, C, B, H, W)`` tensors (Sec. III-A):
    ``h_b = f_b * h_{b-1} + (1 - f_b) * z_b`` with ``h_0 = 0``, run from the last band to the first
    when ``reverse``. Returns the hidden states of every band, ``(N, C, B, H, W)``."""
    zs, fs = z.unbind(2), f.unbind(2)
    order = range(len(zs) - 1, -1, -1) if reverse else range(len(zs))
    states: list[torch.Tensor | None] = [None] * len(zs)
    h = None
    for b in order:
        h = (1 - fs[b]) * zs[b] if h is None else fs[b] * h + (1 - fs[b]) * zs[b]
        states[b] = h
    return torch.stack(states, dim=2)


class SpatialUpsampleConv3d(nn.Module):
    """Trilinear upsampling by ``(1, 2, 2)`` (bands kept, H and W doubled), then a 3-D convolution:
    the decoder's resize-convolution (checkerboard-free alternative to a strided transposed conv)."""

    def __init__(self, in_channels: int, out_channels: int, align_corners: bool = True):
        super().__init__()
        self.align_corners = align_corners
        self.conv3d = nn.Conv3d(in_channels, out_channels, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w = x.shape[-3:]
        x = F.interpolate(x, size=(b, 2 * h, 2 * w), mode="trilinear", align_corners=self.align_corners)
        return self.conv3d(x)


class GateConvolution(nn.Module):
    """The 3D convolutional subcomponent of a QRU3D: optional BatchNorm, then one 3x3x3 operator
    producing all gate maps at once. ``kind``: ``"conv"`` (``nn.Conv3d``, stride 1 or ``(1, 2, 2)``),
    ``"deconv"`` (``nn.ConvTranspose3d``, stride 1) or ``"upsample_conv"`` (:class:`SpatialUpsampleConv3d`);
    the attribute names are the official ones (``bn``, ``conv`` / ``deconv`` / ``upsample_conv``)."""

    def __init__(self, in_channels: int, out_channels: int, kind: str, stride=1, bias: bool = False,
                 bn: bool = True, align_corners: bool = True):
        super().__init__()
        if bn:
            self.bn = nn.BatchNorm3d(in_channels)
        if kind == "conv":
            self.conv = nn.Conv3d(in_channels, out_channels, 3, stride, 1, bias=bias)
        elif kind == "deconv":
            self.deconv = nn.ConvTranspose3d(in_channels, out_channels, 3, 1, 1, bias=bias)
        elif kind == "upsample_conv":
            self.upsample_conv = SpatialUpsampleConv3d(in_channels, out_channels, align_corners)
        else:
            raise ValueError(f"unknown gate convolution {kind!r}")
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "bn"):
            x = self.bn(x)
        return getattr(self, self.kind)(x)


class QuasiRecurrentUnit3d(nn.Module):
    """QRU3D (Sec. III-A): gates from :class:`GateConvolution`, then :func:`f_pooling` along the bands.

    Unidirectional (``bidirectional=False``): gates ``(Z, F)``, pooled forward, or backward when
    ``forward(x, reverse=True)``. Bidirectional: gates ``(Z, F_forward, F_backward)``; the forward-
    and backward-pooled hidden sequences are summed (first and last layers, Sec. III-B).
    """

    def __init__(self, in_channels: int, hidden_channels: int, kind: str = "conv", stride=1,
                 bidirectional: bool = False, bias: bool = False, bn: bool = True, act: str = "tanh",
                 align_corners: bool = True):
        super().__init__()
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r}; use one of {ACTIVATIONS}")
        self.hidden_channels, self.bidirectional, self.act = hidden_channels, bidirectional, act
        gates = 3 if bidirectional else 2
        self.conv = GateConvolution(in_channels, gates * hidden_channels, kind, stride, bias, bn, align_corners)

    def candidate(self, z: torch.Tensor) -> torch.Tensor:
        """The candidate activation: ``tanh`` in the paper."""
        return z.tanh() if self.act == "tanh" else z.relu() if self.act == "relu" else z

    def forward(self, x: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        gates = self.conv(x).split(self.hidden_channels, dim=1)
        z = self.candidate(gates[0])
        if not self.bidirectional:
            return f_pooling(z, gates[1].sigmoid(), reverse)
        return f_pooling(z, gates[1].sigmoid()) + f_pooling(z, gates[2].sigmoid(), reverse=True)

    def extra_repr(self) -> str:
        return f"bidirectional={self.bidirectional}, act={self.act}"


class QRNN3DEncoder(nn.Module):
    """Encoder half: ``num_half_layer`` QRU3D layers; those at ``sample_idx`` downsample H, W by a
    stride ``(1, 2, 2)`` and double the channels."""

    def __init__(self, channels: int, num_half_layer: int, sample_idx: Sequence[int], bn: bool = True,
                 act: str = "tanh"):
        super().__init__()
        self.layers = nn.ModuleList()
        for i in range(num_half_layer):
            if i in sample_idx:
                self.layers.append(QuasiRecurrentUnit3d(channels, 2 * channels, "conv", (1, 2, 2), bn=bn, act=act))
                channels *= 2
            else:
                self.layers.append(QuasiRecurrentUnit3d(channels, channels, "conv", bn=bn, act=act))


class QRNN3DDecoder(nn.Module):
    """Decoder half, the encoder mirrored: layers at ``sample_idx`` upsample H, W by two and halve
    the channels (:class:`SpatialUpsampleConv3d`), the others are stride-1 transposed convolutions."""

    def __init__(self, channels: int, num_half_layer: int, sample_idx: Sequence[int], bn: bool = True,
                 act: str = "tanh", align_corners: bool = True):
        super().__init__()
        self.layers = nn.ModuleList()
        for i in reversed(range(num_half_layer)):
            if i in sample_idx:
                self.layers.append(QuasiRecurrentUnit3d(channels, channels // 2, "upsample_conv", bn=bn, act=act,
                                                        align_corners=align_corners))
                channels //= 2
            else:
                self.layers.append(QuasiRecurrentUnit3d(channels, channels, "deconv", bn=bn, act=act))


def receptive_reach(num_half_layer: int, sample_idx: Sequence[int]) -> int:
    """Largest spatial distance (input pixels) between an output pixel and an input pixel it depends on.

    Walks the layer stack keeping ``step``, the input-pixel spacing of the current feature grid:
    a 3x3x3 convolution (strided or not) reaches one grid cell, ``step`` pixels, to each side, and
    downsampling doubles ``step``. Upsampling from spacing ``2s`` to ``s`` samples fine pixel ``j``
    at a coarse position in ``[j/2 - 1/2, j/2]`` (``j(n-1)/(2n-1)`` with ``align_corners=True``,
    ``j/2 - 1/4`` clamped with ``False``) and reads the coarse cells ``j/2 - 1, j/2`` (even ``j``) or
    ``(j-1)/2, (j+1)/2`` (odd ``j``): at most ``2s`` pixels to the left and ``s`` to the right, in
    both modes. Returns the larger side: 28 px for the paper configuration (left 28, right 25).
    """
    step = 1
    left = right = step  # feature extractor
    for i in range(num_half_layer):  # encoder: even the strided conv reads one cell of its input grid
        left, right = left + step, right + step
        if i in sample_idx:
            step *= 2
    for i in reversed(range(num_half_layer)):  # decoder
        if i in sample_idx:
            step //= 2
            left, right = left + 2 * step + step, right + step + step  # interpolation, then the conv
        else:
            left, right = left + step, right + step
    left, right = left + 1, right + 1  # reconstructor
    return max(left, right)


class QRNNREDC3D(nn.Module):
    """QRNN3D residual encoder-decoder (Sec. III-C): ``(N, B, H, W)`` or ``(N, 1, B, H, W)`` noisy
    cube -> denoised cube of the same shape. Argument names are the official ones."""

    receptive_radius: int | None = None  # official upsampling is not shift-equivariant: see module docstring
    tile_align: int = 4
    input_multiple: int = 4
    hiralign_layout = "bchw"  # forward also takes the official (N, 1, B, H, W)

    def __init__(self, in_channels: int = 1, channels: int = 16, num_half_layer: int = 5,
                 sample_idx: Sequence[int] | None = (1, 3), has_ad: bool = True, bn: bool = True,
                 act: str = "tanh", align_corners: bool = True, bands: int | None = None):
        super().__init__()
        sample_idx = tuple(sample_idx or ())
        self.bands, self.in_channels, self.enable_ad = bands, in_channels, has_ad
        self.feature_extractor = QuasiRecurrentUnit3d(in_channels, channels, "conv", bidirectional=True, bn=bn,
                                                      act=act)
        self.encoder = QRNN3DEncoder(channels, num_half_layer, sample_idx, bn, act)
        self.decoder = QRNN3DDecoder(channels * 2 ** len(sample_idx), num_half_layer, sample_idx, bn, act,
                                     align_corners)
        # official: a ReLU network ends without a candidate non-linearity
        self.reconstructor = QuasiRecurrentUnit3d(channels, in_channels, "deconv", bidirectional=True, bias=True,
                                                  bn=bn, act="none" if act == "relu" else act)
        self.input_multiple = self.tile_align = 2 ** len(sample_idx)
        self.spatial_reach = receptive_reach(num_half_layer, sample_idx)
        self.receptive_radius = None if align_corners else self.spatial_reach

    def directions(self) -> list[bool]:
        """``reverse`` flag of each encoder then decoder layer: alternating (Sec. III-B), starting
        forward, or all forward without ``has_ad``."""
        n = len(self.encoder.layers) + len(self.decoder.layers)
        return [self.enable_ad and i % 2 == 1 for i in range(n)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeeze = x.dim() == 4
        if squeeze:
            x = x.unsqueeze(1)  # (N, B, H, W) -> (N, 1, B, H, W): bands become the recurrence axis
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"QRNN3D takes (N, B, H, W) or (N, {self.in_channels}, B, H, W); got {tuple(x.shape)}")
        if x.shape[-2] % self.input_multiple or x.shape[-1] % self.input_multiple:
            raise ValueError(f"QRNN3D needs H and W divisible by {self.input_multiple}; got {tuple(x.shape[-2:])}")
        reverse = iter(self.directions())
        embedded = self.feature_extractor(x)
        skips, h = [], embedded
        for layer in self.encoder.layers:
            skips.append(h)
            h = layer(h, reverse=next(reverse))
        skips = skips[1:]  # the embedding joins after the decoder, the encoder's outputs before its layers
        for i, layer in enumerate(self.decoder.layers):
            if i > 0:
                h = h + skips.pop()  # symmetric skip connection
            h = layer(h, reverse=next(reverse))
        out = self.reconstructor(h + embedded) + x  # global residual
        return out.squeeze(1) if squeeze else out


def build(bands: int, **cfg) -> QRNNREDC3D:
    """QRNN3D for ``bands``-band cubes (the weights do not depend on the band count); ``cfg``
    defaults to :data:`PAPER_CONFIG`."""
    return QRNNREDC3D(**{**PAPER_CONFIG, **cfg}, bands=bands)
