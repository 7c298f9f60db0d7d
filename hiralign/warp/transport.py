"""The soft transport of Eq. 14-18 and Eq. 23-24: aggregation over candidates, local interpolation.

Shapes: N = H*W guide pixels (row-major), K candidates, s x s stencil. ``indices`` and aggregation
logits/weights are (N, K); interpolation logits/weights are stored offset-major, (s^2, N), because a
softmax over a short non-power-of-two last axis is several times slower on the CPU. Stencil offsets
are listed row-major, ``(dy, dx)`` from ``(-s//2, -s//2)``.

Boundary rule of Eq. 17 (the map Pi): **replicate** — an offset that leaves the lattice is clamped
to the nearest border pixel (``y -> min(max(y, 0), H-1)``, same for x).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

#: The boundary rule Pi of Eq. 17 used everywhere (torch interpolation and the sparse S of Eq. 25).
BOUNDARY_RULE = "replicate"


def stencil_offsets(stencil: int) -> list[tuple[int, int]]:
    """Row-major ``(dy, dx)`` offsets of the s x s stencil centred at (0, 0)."""
    half = stencil // 2
    return [(dy, dx) for dy in range(-half, half + 1) for dx in range(-half, half + 1)]


def normalised_distances(distances: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-pixel normalised descriptor distances of Eq. 21: ``d_k / (max_j d_j + eps)`` in [0, 1]."""
    return distances / (distances.max(dim=1, keepdim=True).values + eps)


def initial_aggregation_logits(distances: torch.Tensor, sharpness: float, eps: float = 1e-6) -> torch.Tensor:
    """Start logits: closer candidates get larger logits, ``-sharpness * normalised distance``."""
    return -sharpness * normalised_distances(distances, eps)


def initial_interpolation_logits(n_pixels: int, stencil: int, centre_logit: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Start logits ``(s^2, N)``: ``centre_logit`` at offset (0, 0), zero elsewhere."""
    logits = torch.zeros((stencil * stencil, n_pixels), device=device)
    logits[(stencil * stencil) // 2] = centre_logit
    return logits


def aggregation_weights(logits: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq. 14: softmax over the K candidates with temperature tau; rows sum to one."""
    return torch.softmax(logits / tau, dim=1)


def interpolation_weights(logits: torch.Tensor) -> torch.Tensor:
    """Eq. 16: softmax of ``(s^2, N)`` logits over the s^2 stencil offsets; each pixel's weights sum to one."""
    return torch.softmax(logits, dim=0)


def gather_candidates(values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Candidate values ``(N, C, K)`` of a ``(C, H, W)`` image at proxy ``indices`` (N, K)."""
    flat = values.reshape(values.shape[0], -1).T  # (N_proxy, C)
    return flat[indices].permute(0, 2, 1).contiguous()


def aggregate(candidate_values: torch.Tensor, alpha: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Eq. 15 / Eq. 23: pre-interpolation image ``sum_k alpha_k * value(q_k)`` as ``(C, H, W)``.

    One batched matrix-vector product per pixel, ``(C, K) @ (K,)``, which is also the cheapest
    backward pass to ``alpha``.
    """
    pre = torch.bmm(candidate_values, alpha[:, :, None])[:, :, 0]  # (N, C)
    return pre.T.reshape(-1, height, width)


def interpolate(pre: torch.Tensor, beta: torch.Tensor, stencil: int) -> torch.Tensor:
    """Eq. 17 / Eq. 24: ``sum_o beta_o(p) * pre(Pi(p + o))``, ``beta`` (s^2, N), replicate boundary rule."""
    channels, height, width = pre.shape
    half = stencil // 2
    padded = F.pad(pre[None], (half, half, half, half), mode="replicate")[0] if half else pre
    weights = beta.reshape(stencil * stencil, 1, height, width)
    out = torch.zeros_like(pre)
    for o, (dy, dx) in enumerate(stencil_offsets(stencil)):
        out = out + weights[o] * padded[:, half + dy : half + dy + height, half + dx : half + dx + width]
    return out


def transport_image(values: torch.Tensor, indices: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, stencil: int, channel_chunk: int = 8) -> torch.Tensor:
    """Eq. 23-24 computed directly: move a ``(C, H, W)`` proxy image with ``alpha`` (N, K) and ``beta`` (s^2, N), chunked over channels."""
    _, height, width = values.shape
    outs = []
    for start in range(0, values.shape[0], channel_chunk):
        part = values[start : start + channel_chunk]
        outs.append(interpolate(aggregate(gather_candidates(part, indices), alpha, height, width), beta, stencil))
    return torch.cat(outs)


def candidate_coordinates(indices: torch.Tensor, width: int) -> torch.Tensor:
    """Proxy coordinates ``(N, 2, K)`` (row y, column x) of the candidates."""
    return torch.stack([indices // width, indices % width], dim=1).to(torch.float32)


def expected_coordinates(coords: torch.Tensor, alpha: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Eq. 18: expected proxy coordinate ``u(p) = sum_k alpha_k q_k`` as ``(2, H, W)`` (y, x)."""
    return aggregate(coords, alpha, height, width)


def pixel_grid(height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Guide coordinates ``(2, H, W)``: row y and column x of every pixel."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    return torch.stack([ys, xs]).to(torch.float32)


def displacement_field(expected: torch.Tensor) -> torch.Tensor:
    """Eq. 18: displacement ``u(p) - p`` from each guide pixel to its expected proxy coordinate, ``(2, H, W)``."""
    return expected - pixel_grid(expected.shape[1], expected.shape[2], expected.device)
