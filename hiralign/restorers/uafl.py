"""UAFL: unregistered RGB-guided HSI super-resolution by unmixing-based abundance fusion learning.

Y. Zhang et al., "Enhancing Unregistered Hyperspectral Image Super-Resolution via Unmixing-based
Abundance Fusion Learning", CVPR 2026 (code announced at github.com/yingkai-zhang/UAFL, not
released when this was written). Written here from the paper's description:

1. **Unmixing reformulation.** The LR HSI is upsampled, ``X_up`` (bicubic), and unmixed by SVD:
   ``X_up = U S V^T``, the first ``K`` left singular vectors are the endmembers ``E`` (B x K, fixed,
   no gradient), the initial abundance is ``A = E^T X_up``.
2. **Abundance enhancement.** An encoder-decoder ``f(A, I)`` on the abundance and the unregistered
   HR RGB ``I`` predicts the residual abundance ``A_hat``; at every encoder level

   * CFDA (coarse-to-fine deformable aggregation) aligns the reference features to the abundance
     features: a coarse pyramid flow ``C_flow`` (CPFP; the paper: a 3x3 convolution of the
     downsampled features, ``cpfp="conv"``; ours by default, ``cpfp="matching"``: block matching of
     the reference's luminance onto the first abundance at a quarter of the resolution, computed
     once and resized to every level, because a convolution cannot measure a displacement and the
     paper's version stays at zero flow, docs/uafl.md), a residual flow and a similarity map from ``[F, Warp(F_ref, C_flow)]`` (``F_flow``, ``F_sim``),
     a sin/cos positional encoding of the flow's fractional part, offsets ``O = F_flow +
     tanh(dP_o)`` and mask ``M = sigmoid(F_sim * dP_m)`` of a modulated deformable convolution
     that aggregates the reference features (``F_ref_hat``);
   * SCACA (spatial-channel abundance cross-attention) refines the abundance features: the
     reference self-modulated (``F_refm = F_ref_hat + F_ref_hat * sigmoid(conv5x5(F_ref_hat))``),
     then window attention whose values are modulated by the reference (``V_mod = V * F_refm``,
     with a relative position bias), then channel ("transposed") attention with ``V_mod`` likewise;

   and the decoder merges skip and upsampled features with SCMF (spatial-channel modulated
   fusion: a depthwise value gated per pixel by ``sigmoid(conv3x3)`` plus a pointwise value gated
   per channel by ``sigmoid(conv1x1(GAP))``, added to the concatenation and projected).
3. **Mixing.** ``Y = E A_hat + X_up``: with ``A_hat = 0`` the output is ``X_up`` exactly.

The paper gives ``C = 64`` features and ``K = 3`` endmembers but not the depth; ours (``paper``
configuration) has three levels of 64 / 128 / 256 channels; docs/backbones.md gives its parameter
count beside the paper's 5.94 M. The network is global (SVD and channel attention see the whole
image), so tiled inference is not exact.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hiralign.restorers.blocks import GatedFeedForward, LayerNorm2d, crop_to, from_windows, pad_to_multiple, to_windows
from hiralign.restorers.deform import flow_warp, modulated_deform_conv2d
from hiralign.restorers.matching import block_matching_flow

#: The paper's count for its model (REAL x4 table, 5.94 M); ours differs (module docstring).
PAPER_PARAMETERS = 5_940_000
PAPER_CONFIG = {"channels": 64, "endmembers": 3, "levels": 3, "heads": 4, "window": 8, "frequencies": 4, "deform_groups": 4}
TINY_CONFIG = {"channels": 8, "endmembers": 3, "levels": 2, "heads": 2, "window": 4, "frequencies": 2, "deform_groups": 2}
#: ``cpfp``: the coarse flow of CFDA, ``"matching"`` (ours, default) or ``"conv"`` (the paper's text).
CPFP_KINDS = ("matching", "conv")
#: Block matching of ``cpfp="matching"`` (hiralign.restorers.matching): at a quarter of the image,
#: displacements up to 12 px, 11 x 11 ZNCC windows, smoothing over 8 pooled px.
MATCHING = {"stride": 4, "radius": 3, "window": 11, "sigma": 8.0}


def svd_endmembers(x_up: torch.Tensor, k: int) -> torch.Tensor:
    """``(N, B, K)``: the first ``k`` left singular vectors of each ``(B, H W)`` cube (step 1), each
    signed so that its entry of largest magnitude is positive (SVD leaves the sign free; the
    convention of :func:`hiralign.unmixing.svd_basis`): the first abundance is then brightness-like,
    positive on a non-negative cube."""
    n, b = x_up.shape[:2]
    u, _, _ = torch.linalg.svd(x_up.reshape(n, b, -1).double(), full_matrices=False)
    u = u[:, :, :k]
    sign = torch.sign(u.gather(1, u.abs().argmax(dim=1, keepdim=True)))
    return (u * sign).to(x_up.dtype)


def unmix(x_up: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E, A)`` of step 1: fixed SVD endmembers ``(N, B, K)`` and ``A = E^T X_up`` ``(N, K, H, W)``."""
    with torch.no_grad():
        e = svd_endmembers(x_up, k)
    return e, torch.einsum("nbk,nbhw->nkhw", e, x_up)


def mix(e: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``E A`` for ``(N, B, K)`` endmembers and ``(N, K, H, W)`` abundances (step 3)."""
    return torch.einsum("nbk,nkhw->nbhw", e, a)


def fractional_encoding(flow: torch.Tensor, frequencies: int) -> torch.Tensor:
    """``[sin(gamma(d_f)), cos(gamma(d_f))]`` with ``gamma(d) = [pi d, 2 pi d, ..., 2^(L-1) pi d]`` of the
    flow's fractional part ``d_f = flow - floor(flow)``: ``(N, 4 L, H, W)`` for a ``(N, 2, H, W)`` flow."""
    d = flow - torch.floor(flow)
    gamma = torch.cat([math.pi * 2 ** i * d for i in range(frequencies)], dim=1)
    return torch.cat([torch.sin(gamma), torch.cos(gamma)], dim=1)


class ConvCoarseFlow(nn.Module):
    """The paper's CPFP, ``C_flow = Up(Conv3x3(F_down, F_ref_down))`` (``cpfp="conv"``): a convolution is
    linear in its inputs and cannot measure a displacement; docs/uafl.md shows it staying at zero flow."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(2 * c, 2, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)  # start from zero flow

    def forward(self, f: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        low = self.conv(torch.cat([F.avg_pool2d(f, 2, ceil_mode=True), F.avg_pool2d(ref, 2, ceil_mode=True)], dim=1))
        return 2.0 * F.interpolate(low, size=f.shape[-2:], mode="bilinear", align_corners=False)  # px


def matched_coarse_flow(a: torch.Tensor, ref: torch.Tensor, **matching) -> torch.Tensor:
    """Ours (``cpfp="matching"``): ``C_flow`` at the image resolution by block matching
    (:func:`hiralign.restorers.matching.block_matching_flow`) of the reference's luminance onto the
    first abundance (the projection on the dominant endmember, brightness-like)."""
    return block_matching_flow(a[:, :1], ref.mean(dim=1, keepdim=True), **matching)


def resize_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A ``(N, 2, H, W)`` flow in pixels resampled to ``size``, its vectors rescaled to the new grid."""
    (h, w), (h2, w2) = flow.shape[-2:], size
    scale = torch.tensor([w2 / w, h2 / h], device=flow.device, dtype=flow.dtype).view(1, 2, 1, 1)
    return scale * F.interpolate(flow, size=size, mode="bilinear", align_corners=False)


class CoarseToFineDeformableAggregation(nn.Module):
    """CFDA: reference features ``F_ref`` aggregated onto the abundance features ``F``, from the coarse
    flow of :class:`ConvCoarseFlow` (``cpfp="conv"``) or a given one (``cpfp="matching"``)."""

    def __init__(self, c: int, frequencies: int, groups: int, cpfp: str = "matching", kernel: int = 3):
        super().__init__()
        self.frequencies, self.groups, self.kernel = frequencies, groups, kernel
        self.coarse = ConvCoarseFlow(c) if cpfp == "conv" else None
        self.residual = nn.Sequential(nn.Conv2d(2 * c, c, 3, padding=1), nn.LeakyReLU(0.1), nn.Conv2d(c, 3, 3, padding=1))
        taps = groups * kernel * kernel
        self.refine = nn.Sequential(nn.Conv2d(2 * c + 4 * frequencies, c, 3, padding=1), nn.LeakyReLU(0.1),
                                    nn.Conv2d(c, 3 * taps, 3, padding=1))  # FSPR: dP_o (2 taps), dP_m (taps)
        for conv in (self.residual[-1], self.refine[-1]):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)  # start from the coarse flow, no residual offsets
        self.weight = nn.Parameter(torch.empty(c, c, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(c))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def prior_flow(self, f: torch.Tensor, ref: torch.Tensor, coarse: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(F_flow, F_sim)``: the coarse pyramid flow plus its residual, and the confidence map."""
        coarse = self.coarse(f, ref) if self.coarse is not None else resize_flow(coarse, f.shape[-2:])  # C_flow
        delta = self.residual(torch.cat([f, flow_warp(ref, coarse)], dim=1))
        return coarse + delta[:, :2], torch.sigmoid(delta[:, 2:])

    def forward(self, f: torch.Tensor, ref: torch.Tensor, coarse: torch.Tensor | None = None) -> torch.Tensor:
        flow, similarity = self.prior_flow(f, ref, coarse)
        taps = self.groups * self.kernel ** 2
        p = self.refine(torch.cat([f, flow_warp(ref, flow), fractional_encoding(flow, self.frequencies)], dim=1))
        flow_yx = flow.flip(1).repeat(1, taps, 1, 1)  # deform_conv2d offsets are (dy, dx) per tap
        offset = flow_yx + torch.tanh(p[:, : 2 * taps])
        mask = torch.sigmoid(similarity * p[:, 2 * taps :])
        return modulated_deform_conv2d(ref, offset, self.weight, mask, self.bias, padding=self.kernel // 2)


class WindowCrossAttention(nn.Module):
    """SACA: window attention of the abundance features, values modulated by the reference."""

    def __init__(self, c: int, heads: int, window: int):
        super().__init__()
        self.heads, self.window = heads, window
        self.qkv = nn.Linear(c, 3 * c)
        self.project = nn.Linear(c, c)
        self.bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + window - 1
        self.register_buffer("bias_index", rel[..., 0] * (2 * window - 1) + rel[..., 1], persistent=False)

    def forward(self, z: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        n, c, h, w = z.shape
        zp, offset = pad_to_multiple(z, self.window)
        rp, _ = pad_to_multiple(ref, self.window)
        windows, refs = to_windows(zp, self.window), to_windows(rp, self.window)  # (nW, w^2, C)
        q, k, v = self.qkv(windows).chunk(3, dim=-1)
        v = v * refs  # V_mod = V * Reshape(F_refw)
        split = lambda t: t.view(t.shape[0], t.shape[1], self.heads, -1).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        bias = self.bias_table[self.bias_index].permute(2, 0, 1)  # (heads, w^2, w^2): B
        attention = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]) + bias, dim=-1)
        out = self.project((attention @ v).transpose(1, 2).reshape(windows.shape))
        return crop_to(from_windows(out, self.window, n, *zp.shape[-2:]), offset, h, w)


class ChannelCrossAttention(nn.Module):
    """CACA: attention across channels (per head), values modulated by the reference."""

    def __init__(self, c: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Sequential(nn.Conv2d(c, 3 * c, 1), nn.Conv2d(3 * c, 3 * c, 3, padding=1, groups=3 * c))
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.project = nn.Conv2d(c, c, 1)

    def forward(self, z: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        n, c, h, w = z.shape
        q, k, v = self.qkv(z).chunk(3, dim=1)
        v = v * ref  # V_mod = V * F_refm
        q, k, v = (t.reshape(n, self.heads, c // self.heads, h * w) for t in (q, k, v))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attention = torch.softmax(q @ k.transpose(-2, -1) * self.temperature, dim=-1)
        return self.project((attention @ v).reshape(n, c, h, w))


class AbundanceCrossAttention(nn.Module):
    """SCACA: reference self-modulation, then spatial (SACA) and channel (CACA) cross-attention and a feed-forward."""

    def __init__(self, c: int, heads: int, window: int):
        super().__init__()
        self.modulate = nn.Conv2d(c, c, 5, padding=2)
        self.norm1, self.norm2, self.norm3 = LayerNorm2d(c), LayerNorm2d(c), LayerNorm2d(c)
        self.spatial = WindowCrossAttention(c, heads, window)
        self.channel = ChannelCrossAttention(c, heads)
        self.ffn = GatedFeedForward(c)

    def forward(self, z: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        ref_m = ref + ref * torch.sigmoid(self.modulate(ref))  # F_refm
        z = z + self.spatial(self.norm1(z), ref_m)
        z = z + self.channel(self.norm2(z), ref_m)
        return z + self.ffn(self.norm3(z))


class ModulatedFusion(nn.Module):
    """SCMF: encoder and decoder features merged by spatial and channel gating."""

    def __init__(self, c: int):
        super().__init__()
        self.spatial_value = nn.Sequential(nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c), nn.LeakyReLU(0.1))
        self.spatial_gate = nn.Conv2d(2 * c, 2 * c, 3, padding=1)
        self.channel_value = nn.Conv2d(2 * c, 2 * c, 1)
        self.channel_gate = nn.Conv2d(2 * c, 2 * c, 1)
        self.project = nn.Conv2d(2 * c, c, 1)

    def forward(self, enc: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
        cat = torch.cat([enc, dec], dim=1)
        spatial = self.spatial_value(cat) * torch.sigmoid(self.spatial_gate(cat))  # F_spa = V_spa * M_spa
        channel = self.channel_value(cat) * torch.sigmoid(self.channel_gate(F.adaptive_avg_pool2d(cat, 1)))  # F_spe
        return self.project(cat + spatial + channel)


class EncoderLevel(nn.Module):
    """One encoder level: CFDA then SCACA at ``c`` channels."""

    def __init__(self, c: int, heads: int, window: int, frequencies: int, groups: int, cpfp: str):
        super().__init__()
        self.aggregate = CoarseToFineDeformableAggregation(c, frequencies, groups, cpfp)
        self.attend = AbundanceCrossAttention(c, heads, window)

    def forward(self, f: torch.Tensor, ref: torch.Tensor, coarse: torch.Tensor | None) -> torch.Tensor:
        return self.attend(f, self.aggregate(f, ref, coarse))


class UAFL(nn.Module):
    """``model(x, ref=I)``: ``(N, B, h, w)`` LR HSI and ``(N, 3, h s, w s)`` unregistered RGB -> ``(N, B, h s, w s)``."""

    def __init__(self, bands: int, scale: int, channels: int = 64, endmembers: int = 3, levels: int = 3, heads: int = 4,
                 window: int = 8, frequencies: int = 4, deform_groups: int = 4, cpfp: str = "matching",
                 matching: dict | None = None):
        super().__init__()
        if endmembers > bands:
            raise ValueError(f"uafl: {endmembers} endmembers for {bands} bands; K must be <= B")
        if cpfp not in CPFP_KINDS:
            raise ValueError(f"uafl: unknown cpfp {cpfp!r}; choose one of {CPFP_KINDS}")
        self.cpfp, self.matching = cpfp, dict(MATCHING if matching is None else matching)
        self.bands, self.scale, self.k, self.levels = int(bands), int(scale), int(endmembers), int(levels)
        widths = [channels * 2 ** i for i in range(levels)]
        self.embed = nn.Conv2d(endmembers, channels, 3, padding=1)
        self.embed_ref = nn.Conv2d(3, channels, 3, padding=1)
        self.encoders = nn.ModuleList(EncoderLevel(c, heads, window, frequencies, deform_groups, cpfp) for c in widths)
        self.down = nn.ModuleList(nn.Conv2d(c, 2 * c, 4, stride=2, padding=1) for c in widths[:-1])
        self.down_ref = nn.ModuleList(nn.Conv2d(c, 2 * c, 4, stride=2, padding=1) for c in widths[:-1])
        self.up = nn.ModuleList(nn.ConvTranspose2d(2 * c, c, 2, stride=2) for c in widths[:-1])
        self.fuse = nn.ModuleList(ModulatedFusion(c) for c in widths[:-1])
        self.head = nn.Conv2d(channels, endmembers, 3, padding=1)  # the residual abundance A_hat
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)  # ours: training starts from Y = X_up
        self.receptive_radius = None  # global: SVD and channel attention see the whole image
        self.tile_align = 1

    def residual_abundance(self, a: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """``A_hat = f(A, I)`` (step 2) on sides that are multiples of ``2^(levels - 1)``."""
        coarse = matched_coarse_flow(a, ref, **self.matching) if self.cpfp == "matching" else None
        f, r = self.embed(a), self.embed_ref(ref)
        skips = []
        for i, encoder in enumerate(self.encoders):
            f = encoder(f, r, coarse)
            if i < self.levels - 1:
                skips.append(f)
                f, r = self.down[i](f), self.down_ref[i](r)
        for i in reversed(range(self.levels - 1)):
            f = self.fuse[i](skips[i], self.up[i](f))
        return self.head(f)

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        n, b, h, w = x.shape
        if b != self.bands or ref.shape != (n, 3, h * self.scale, w * self.scale):
            raise ValueError(f"uafl expects ({n}, {self.bands}, h, w) and a ({n}, 3, {h * self.scale}, {w * self.scale}) "
                             f"reference; got {tuple(x.shape)} and {tuple(ref.shape)}")
        x_up = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        e, a = unmix(x_up, self.k)
        multiple = 2 ** (self.levels - 1)
        a_pad, offset = pad_to_multiple(a, multiple)
        ref_pad, _ = pad_to_multiple(ref.to(x.dtype), multiple)
        a_hat = crop_to(self.residual_abundance(a_pad, ref_pad), offset, h * self.scale, w * self.scale)
        return mix(e, a_hat) + x_up  # Y = E A_hat + X_up


def build(bands: int, scale: int = 4, **cfg) -> UAFL:
    """The UAFL network for ``bands`` bands at ``scale`` (:data:`PAPER_CONFIG` / :data:`TINY_CONFIG` keywords)."""
    return UAFL(bands, scale, **cfg)
