"""ESSAformer: an efficient transformer for single hyperspectral image super-resolution.

Paper: Mingjin Zhang, Chi Zhang, Qiming Zhang, Jie Guo, Xinbo Gao, Jing Zhang, "ESSAformer:
Efficient Transformer for Hyperspectral Image Super-resolution", ICCV 2023, pp. 23073-23084;
arXiv:2307.14010. Official code: github.com/Rexzhan/ESSAformer (``ESSA.py``, class ``ESSA``). This
is an independent re-implementation written from the paper; the layer layout, constants and the
``state_dict`` key names follow ``ESSA.py``, so the released checkpoint (the official README loads it
with ``net.load_state_dict(checkpoint["model"].state_dict())``) loads with ``strict=True``. In
HIR-ALIGN it is one of the SR backbones (x4 and x8).

Architecture
------------
* **Shallow features**: a 3x3 convolution maps the ``B`` bands of the low-resolution cube to ``C``
  feature channels (``conv_first``).
* **Iterative refining structure** (the paper's up/down "iterative refining" design, in the spirit
  of back-projection): features alternate between the high-resolution (HR) and the low-resolution
  (LR) grid. With ``U`` the upsampler, ``D`` the downsampler, ``T_up`` / ``T_down`` the ESSA
  transformer blocks used on the HR / LR grid, and ``f_0`` the shallow features::

      g_1 = T_up(U(f_0))
      f_i = T_down(D(g_i) + f_{i-1}),   g_{i+1} = T_up(U(f_i) + g_i),   i = 1, 2

  and the network returns ``conv_last(g_3)`` (3x3 conv, ``C -> B``; no global skip). The two blocks
  and the two samplers are each *one* module reused at every step (shared weights): three HR passes
  through ``convup``, two LR passes through ``convdown``.
* **Samplers**: ``U`` is one (3x3 conv ``C -> 4C``, pixel shuffle x2) pair per factor 2 of the
  scale (``C -> 9C``, shuffle x3 for scale 3); ``D`` mirrors it with (3x3 conv ``C -> C/4``, pixel
  unshuffle x2) pairs (``C -> C/9``, unshuffle x3), so ``C`` must be a multiple of 4 (of 9 for x3).
* **ESSA transformer block**: every pixel's ``C``-vector is a token; ``LN`` then the ESSA attention
  (*without* a residual around it, as in the official code), channel dropout, concatenation with
  the block input, a convolutional fusion (1x1 conv ``2C -> 2C``, LeakyReLU 0.2, dropout, 3x3 conv,
  LeakyReLU 0.2, dropout, 1x1 conv ``2C -> C``) and the block residual. Dropouts are channel-wise
  (``nn.Dropout2d``, p = 0.2) and active only in training mode.
* **ESSA attention** (efficient SCC-kernel-based self-attention): one linear layer gives ``q, k, v``.
  The paper replaces the softmax similarity by the *spectral correlation coefficient* (SCC) of
  the query and key spectra, a Pearson correlation over the channels, and makes it kernelisable:
  each token's vector is centred over its channels (the mean removal of the SCC), squared and divided
  by its sum of squares (the SCC's normalisation), giving the feature map ``phi``; ``phi(Q)`` is
  then unit-normalised over the channels and ``phi(K)`` over the tokens. With ``L`` tokens the
  attention is linear in ``L`` (the ``C x C`` summary ``phi(K)^T V`` is formed first)::

      ESSA(X) = W_o ( V + phi(Q) (phi(K)^T V) / sqrt(L) ) + b_o

  where ``V`` is the zeroth-order (identity) term of the kernel expansion and the product the
  first-order term (the official README: "first order is sufficient"; higher orders are not in the
  released code). Centring and the ratio of squares make ``phi`` invariant to a per-token offset
  and rescaling of the spectrum, the robustness the SCC is chosen for.

Layout, size and tiling
-----------------------
The official network takes the LR cube ``(N, B, h, w)`` and returns ``(N, B, h s, w s)`` -- exactly
hiralign's SR convention, so no conversion is involved (no bicubic input either). The samplers move
between the HR and the LR grid only (nothing is downsampled below the LR grid), so any ``h, w``
work: ``input_multiple = 1``, and every convolution/shuffle is equivariant to integer LR shifts
(``tile_align = 1``). The ESSA attention is global -- ``phi(K)^T V`` sums over all pixels and the
``1/sqrt(L)`` factor depends on the image size -- so every output pixel depends on the whole input:
``receptive_radius = None`` and no tiling is exact (a window blend is close; see the tests).

Deviations from the official code
---------------------------------
None in the computation or the keys. Unsupported scales (neither a power of 2 nor 3) and feature
widths the downsampler cannot keep (``C`` not a multiple of 4, of 9 for x3) raise ``ValueError`` at
construction (the official code fails at the first forward). The channel-dropout rate is a
constructor argument (official: fixed 0.2, the default). The official file also imports ``timm``
(unused) and seeds numpy at import; neither is needed here.
"""
from __future__ import annotations

import math

import torch
from torch import nn

#: Official default width: ``ESSA(inch=128, dim=256, upscale=4)`` in the ``__main__`` of the official
#: ``ESSA.py`` (the released Chikusei x4 model). ``build(31, 4, **PAPER_CONFIG)`` for 31 bands.
PAPER_CONFIG: dict = {"dim": 256}
#: Scale of the official example and of the released checkpoint (Chikusei x4).
PAPER_SCALE = 4
#: A very small configuration for CPU tests (15,531 parameters for 31 bands at x4).
TINY_CONFIG: dict = {"dim": 8}
#: No parameter count is reported that we could find: the official README and ``ESSA.py``
#: (github.com/Rexzhan/ESSAformer) give none, and the paper (arXiv:2307.14010) could not be read
#: here beyond its abstract. Counted from the official structure, ``build(31, 4, **PAPER_CONFIG)``
#: has 11,193,759 parameters (13,701,599 at x8); ``tests/test_essaformer_net.py`` derives these
#: counts by hand, layer by layer.
PAPER_PARAMETERS: int | None = None

#: Channel-dropout rate of the official blocks (``nn.Dropout2d(0.2)``).
DROPOUT = 0.2
#: Negative slope of the LeakyReLUs of the block's convolutional fusion.
LEAKY_SLOPE = 0.2
#: Stabiliser of the SCC feature map's normalisation (official ``1e-7``).
SCC_EPS = 1e-7
#: Number of LR/HR refinement rounds after the first upsampling (fixed in the official code).
REFINEMENT_ROUNDS = 2


def sampling_factors(scale: int) -> list[int]:
    """Pixel-(un)shuffle factors realising ``scale``: ``[2] * log2(scale)`` for powers of two
    (none for 1), ``[3]`` for 3."""
    if scale >= 1 and scale & (scale - 1) == 0:
        return [2] * (scale.bit_length() - 1)
    if scale == 3:
        return [3]
    raise ValueError(f"scale {scale} is not supported; ESSAformer supports powers of 2 and 3")


def scc_feature_map(t: torch.Tensor, eps: float = SCC_EPS) -> torch.Tensor:
    """The SCC kernel's feature map of token vectors ``t`` (..., L, C): centre every vector over its
    channels (the correlation coefficient's mean removal), square, and divide by the sum of squares
    (its normalisation) -- non-negative, summing to ~1 over the channels, and invariant to adding a
    constant to or rescaling a token's vector."""
    centred = t - t.mean(dim=-1, keepdim=True)
    squared = centred.pow(2)
    return squared / (squared.sum(dim=-1, keepdim=True) + eps)


class ESSAttention(nn.Module):
    """Efficient SCC-kernel-based self-attention over ``L`` tokens of ``dim`` channels.

    ``forward`` maps ``(N, L, C)`` to ``(N, L, C)`` at cost linear in ``L`` (module docstring).
    Parameters: ``lnqkv`` (the joint q/k/v projection) and ``ln`` (the output projection),
    named as in the official code.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.lnqkv = nn.Linear(dim, 3 * dim)
        self.ln = nn.Linear(dim, dim)

    @staticmethod
    def kernel_features(q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``phi(Q)`` unit-normalised over the channels and ``phi(K)`` over the tokens."""
        phi_q = nn.functional.normalize(scc_feature_map(q), dim=-1)
        phi_k = nn.functional.normalize(scc_feature_map(k), dim=-2)
        return phi_q, phi_k

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[-2]
        q, k, v = self.lnqkv(tokens).chunk(3, dim=-1)
        phi_q, phi_k = self.kernel_features(q, k)
        summary = phi_k.transpose(-2, -1) @ v  # (C, C): the keys' kernel features against the values
        first_order = phi_q @ summary / math.sqrt(length)
        return self.ln(v + first_order)  # zeroth-order (identity) + first-order term, projected


def feature_fusion(dim: int, dropout: float) -> nn.Sequential:
    """The block's convolutional fusion of ``[attention output, block input]`` (``2C`` channels) back
    to ``C``: 1x1 conv, LeakyReLU, dropout, 3x3 conv, LeakyReLU, dropout, 1x1 conv (indices 0, 3, 6
    hold the convolutions, as in the official ``nn.Sequential``)."""
    wide = 2 * dim
    return nn.Sequential(
        nn.Conv2d(wide, wide, 1), nn.LeakyReLU(LEAKY_SLOPE, inplace=True), nn.Dropout2d(dropout),
        nn.Conv2d(wide, wide, 3, padding=1), nn.LeakyReLU(LEAKY_SLOPE, inplace=True), nn.Dropout2d(dropout),
        nn.Conv2d(wide, dim, 1),
    )


class ESSATransformerBlock(nn.Module):
    """ESSA transformer block on a ``(N, C, H, W)`` feature map: tokens = pixels, ``LN`` -> ESSA ->
    channel dropout, concatenated with the input, convolutional fusion, plus the input.

    The fusion is stored under :attr:`fusion_name` (``convu`` in the HR block, ``convd`` in the LR
    block: the official key names); otherwise the two blocks are the same.
    """

    fusion_name = "fusion"
    #: Order in which the sub-modules are registered (it fixes the ``state_dict`` order; the official
    #: ``Convup`` and ``Convdown`` register theirs differently).
    registration_order = ("fusion", "norm", "attn", "drop")

    def __init__(self, dim: int, dropout: float = DROPOUT):
        super().__init__()
        parts = {"fusion": feature_fusion(dim, dropout), "norm": nn.LayerNorm(dim), "attn": ESSAttention(dim),
                 "drop": nn.Dropout2d(dropout)}
        for name in self.registration_order:
            self.add_module(self.fusion_name if name == "fusion" else name, parts[name])

    @property
    def fusion(self) -> nn.Sequential:
        return getattr(self, self.fusion_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (N, H*W, C)
        attended = self.attn(self.norm(tokens)).transpose(1, 2).reshape(n, c, h, w)
        return self.fusion(torch.cat([self.drop(attended), x], dim=1)) + x


class HighResolutionBlock(ESSATransformerBlock):
    """The ESSA block applied on the HR grid (official ``Convup``)."""

    fusion_name = "convu"
    registration_order = ("fusion", "drop", "norm", "attn")


class LowResolutionBlock(ESSATransformerBlock):
    """The ESSA block applied on the LR grid (official ``Convdown``)."""

    fusion_name = "convd"
    registration_order = ("fusion", "attn", "norm", "drop")


class PixelShuffleUpsampler(nn.Sequential):
    """LR -> HR: per factor ``f`` of the scale a 3x3 conv ``C -> f^2 C`` and a pixel shuffle by ``f``."""

    def __init__(self, scale: int, dim: int):
        layers: list[nn.Module] = []
        for f in sampling_factors(scale):
            layers += [nn.Conv2d(dim, f * f * dim, 3, padding=1), nn.PixelShuffle(f)]
        super().__init__(*layers)


class PixelUnshuffleDownsampler(nn.Sequential):
    """HR -> LR: per factor ``f`` a 3x3 conv ``C -> C / f^2`` and a pixel unshuffle by ``f``."""

    def __init__(self, scale: int, dim: int):
        layers: list[nn.Module] = []
        for f in sampling_factors(scale):
            if dim % (f * f):
                raise ValueError(f"dim {dim} must be a multiple of {f * f} for the x{f} downsampler")
            layers += [nn.Conv2d(dim, dim // (f * f), 3, padding=1), nn.PixelUnshuffle(f)]
        super().__init__(*layers)


class IterativeRefinement(nn.Module):
    """The up/down iterative refining body (module docstring): LR features ``(N, C, h, w)`` to
    refined HR features ``(N, C, h s, w s)``. Attribute names are the official key prefixes."""

    def __init__(self, dim: int, scale: int, dropout: float = DROPOUT):
        super().__init__()
        self.convup = HighResolutionBlock(dim, dropout)
        self.convdown = LowResolutionBlock(dim, dropout)
        self.convupsample = PixelShuffleUpsampler(scale, dim)
        self.convdownsample = PixelUnshuffleDownsampler(scale, dim)

    def forward(self, low: torch.Tensor) -> torch.Tensor:
        high = self.convup(self.convupsample(low))
        for _ in range(REFINEMENT_ROUNDS):
            low = self.convdown(self.convdownsample(high) + low)  # back-project the HR estimate to LR
            high = self.convup(self.convupsample(low) + high)  # and the refined LR features to HR
        return high


class ESSAformer(nn.Module):
    """ESSAformer for ``bands`` bands and a fixed upscaling ``scale`` (a power of 2, or 3);
    ``model(lr)`` maps ``(N, bands, h, w)`` to ``(N, bands, h*scale, w*scale)``.

    ``dim`` is the feature width (official ``dim``; a multiple of 4, of 9 for x3); ``dropout`` the
    channel-dropout rate of the blocks (training only).
    """

    receptive_radius = None  # ESSA attends over all pixels of the image
    tile_align = 1  # convs and pixel (un)shuffles between the LR and HR grids: equivariant to any LR shift
    input_multiple = 1  # nothing is downsampled below the LR grid

    def __init__(self, bands: int = 31, scale: int = PAPER_SCALE, dim: int = 256, dropout: float = DROPOUT):
        super().__init__()
        self.bands, self.scale, self.dim = bands, scale, dim
        self.conv_first = nn.Conv2d(bands, dim, 3, padding=1)
        self.blockup = IterativeRefinement(dim, scale, dropout)
        self.conv_last = nn.Conv2d(dim, bands, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.bands:
            raise ValueError(f"expected a low-resolution batch (N, {self.bands}, h, w); got {tuple(x.shape)}")
        return self.conv_last(self.blockup(self.conv_first(x)))


def build(bands: int, scale: int = PAPER_SCALE, **cfg) -> ESSAformer:
    """ESSAformer for ``bands`` bands at upscaling ``scale``; ``cfg`` as :data:`PAPER_CONFIG` (default)."""
    return ESSAformer(bands=bands, scale=scale, **{**PAPER_CONFIG, **cfg})
