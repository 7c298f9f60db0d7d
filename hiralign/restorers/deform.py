"""Modulated deformable convolution and flow warping, in plain PyTorch.

Modulated deformable convolution is DCNv2 (X. Zhu, H. Hu, S. Lin, J. Dai, "Deformable ConvNets v2:
More Deformable, Better Results", arXiv:1811.11168): every kernel tap ``k`` of output pixel ``p``
reads the input at ``p + p_k + o_k(p)`` (a learnt fractional offset, bilinear interpolation, zero
outside the image) and is weighted by a mask ``m_k(p)`` in [0, 1]:

    y(p) = sum_k w_k * m_k(p) * x(p + p_k + o_k(p)) + b

The argument layout is ``torchvision.ops.deform_conv2d``'s (offsets ``(N, 2 G K, H, W)`` as
``(dy, dx)`` pairs per offset group ``G`` and tap ``K = kh * kw`` in row-major order, masks
``(N, G K, H, W)``), so either can serve; ours exists because torchvision's CPU wheels cannot be
installed beside the CPU torch build here (its PyPI wheels link CUDA torch). A test compares both
where torchvision imports.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _normalised(coordinate: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel coordinates -> grid_sample's [-1, 1] (align_corners=True: -1 and 1 are pixel centres 0, size-1)."""
    return 2.0 * coordinate / max(size - 1, 1) - 1.0


def bilinear_sample(x: torch.Tensor, py: torch.Tensor, px: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """``x`` ``(N, C, H, W)`` read at fractional pixel rows ``py`` and columns ``px`` ``(N, *S)``:
    ``(N, C, *S)``, bilinear, with ``padding_mode`` outside (grid_sample's ``zeros`` / ``border``)."""
    n, c, h, w = x.shape
    shape = py.shape[1:]
    grid = torch.stack([_normalised(px, w), _normalised(py, h)], dim=-1).reshape(n, -1, 1, 2)
    out = F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode=padding_mode, align_corners=True)
    return out.reshape(n, c, *shape)


def flow_warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp: ``out(p) = x(p + flow(p))`` for a ``(N, 2, H, W)`` flow in pixels, channel 0 =
    horizontal (x), 1 = vertical (y); bilinear, the border pixel repeated outside."""
    n, _, h, w = x.shape
    rows = torch.arange(h, device=x.device, dtype=flow.dtype).view(1, h, 1)
    cols = torch.arange(w, device=x.device, dtype=flow.dtype).view(1, 1, w)
    return bilinear_sample(x, rows + flow[:, 1], cols + flow[:, 0], padding_mode="border")


def modulated_deform_conv2d(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor,
                            bias: torch.Tensor | None = None, padding: int = 0, dilation: int = 1) -> torch.Tensor:
    """DCNv2 with stride 1 (module docstring): ``x`` ``(N, C, H, W)``, ``weight`` ``(O, C, kh, kw)``,
    ``offset`` ``(N, 2 G kh kw, H', W')``, ``mask`` ``(N, G kh kw, H', W')`` -> ``(N, O, H', W')``
    with ``H' = H + 2 padding - dilation (kh - 1)``; ``C`` divisible by the offset groups ``G``."""
    n, c, h, w = x.shape
    out_c, in_c, kh, kw = weight.shape
    taps = kh * kw
    if in_c != c:
        raise ValueError(f"weight takes {in_c} input channels, x has {c}")
    groups = offset.shape[1] // (2 * taps)
    if groups < 1 or offset.shape[1] != 2 * groups * taps or c % groups:
        raise ValueError(f"offset has {offset.shape[1]} channels: expected 2 x groups x {taps} with {c} divisible by groups")
    out_h, out_w = h + 2 * padding - dilation * (kh - 1), w + 2 * padding - dilation * (kw - 1)
    if offset.shape[-2:] != (out_h, out_w) or mask.shape != (n, groups * taps, out_h, out_w):
        raise ValueError(f"offset {tuple(offset.shape)} / mask {tuple(mask.shape)} do not fit output {out_h}x{out_w}")
    tap_y = (torch.arange(kh, device=x.device) * dilation).repeat_interleave(kw).to(offset.dtype)
    tap_x = (torch.arange(kw, device=x.device) * dilation).repeat(kh).to(offset.dtype)
    rows = torch.arange(out_h, device=x.device, dtype=offset.dtype) - padding
    cols = torch.arange(out_w, device=x.device, dtype=offset.dtype) - padding
    off = offset.view(n, groups, taps, 2, out_h, out_w)
    py = rows.view(1, 1, 1, out_h, 1) + tap_y.view(1, 1, taps, 1, 1) + off[:, :, :, 0]
    px = cols.view(1, 1, 1, 1, out_w) + tap_x.view(1, 1, taps, 1, 1) + off[:, :, :, 1]
    sampled = bilinear_sample(x.reshape(n * groups, c // groups, h, w), py.reshape(n * groups, taps, out_h, out_w),
                              px.reshape(n * groups, taps, out_h, out_w))  # (N G, C / G, K, H', W')
    columns = sampled.view(n, groups, c // groups, taps, out_h, out_w) * mask.view(n, groups, 1, taps, out_h, out_w)
    out = torch.einsum("nckhw,ock->nohw", columns.reshape(n, c, taps, out_h, out_w), weight.reshape(out_c, c, taps))
    return out if bias is None else out + bias.view(1, -1, 1, 1)
