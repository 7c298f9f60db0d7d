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


class CandidateAggregation(torch.autograd.Function):
    """Eq. 15 / Eq. 23 as one batched matrix-vector product per pixel, ``(C, K) @ (K,)``.

    The backward pass needs ``(K, C) @ (C,)`` per pixel; with a contiguous transposed copy of the
    candidate values (made once per optimisation) it runs about twice as fast as through a strided view.
    """

    @staticmethod
    def forward(ctx, values: torch.Tensor, values_t: torch.Tensor | None, alpha: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(values.transpose(1, 2) if values_t is None else values_t)
        return torch.bmm(values, alpha[:, :, None])[:, :, 0]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (values_t,) = ctx.saved_tensors
        return None, None, torch.bmm(values_t, grad.contiguous()[:, :, None])[:, :, 0]


def aggregate(candidate_values: torch.Tensor, alpha: torch.Tensor, height: int, width: int, values_t: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 15 / Eq. 23: pre-interpolation image ``sum_k alpha_k * value(q_k)`` as ``(C, H, W)``.

    ``candidate_values`` (N, C, K); ``values_t`` optionally its contiguous (N, K, C) transpose.
    """
    pre = CandidateAggregation.apply(candidate_values, values_t, alpha)  # (N, C)
    return pre.T.reshape(-1, height, width)


class StencilInterpolation(torch.autograd.Function):
    """Eq. 17 / Eq. 24 with a hand-written backward pass.

    Forward: ``out(p) = sum_o beta_o(p) * pre(Pi(p + o))`` on the replicate-padded image. Backward:
    ``d beta_o(p) = sum_c g_c(p) * pre_c(Pi(p + o))`` and the adjoint of the shifts, accumulated into
    one padded buffer whose border is then folded back onto the edge pixels (the adjoint of replicate
    padding). Autograd through s^2 slices would allocate and zero a padded buffer per offset.
    """

    @staticmethod
    def forward(ctx, pre: torch.Tensor, beta: torch.Tensor, stencil: int) -> torch.Tensor:
        _, height, width = pre.shape
        half = stencil // 2
        padded = F.pad(pre[None], (half, half, half, half), mode="replicate")[0] if half else pre
        weights = beta.reshape(-1, 1, height, width)
        out = torch.zeros_like(pre)
        for o, (dy, dx) in enumerate(stencil_offsets(stencil)):
            out.addcmul_(weights[o], padded[:, half + dy : half + dy + height, half + dx : half + dx + width])
        ctx.save_for_backward(padded, beta)
        ctx.stencil = stencil
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        padded, beta = ctx.saved_tensors
        stencil = ctx.stencil
        half = stencil // 2
        _, height, width = grad.shape
        weights = beta.reshape(-1, 1, height, width)
        grad_beta = torch.empty((stencil * stencil, height, width), dtype=grad.dtype, device=grad.device)
        grad_padded = torch.zeros_like(padded)
        for o, (dy, dx) in enumerate(stencil_offsets(stencil)):
            window = (slice(None), slice(half + dy, half + dy + height), slice(half + dx, half + dx + width))
            torch.sum(grad * padded[window], dim=0, out=grad_beta[o])
            grad_padded[window].addcmul_(weights[o], grad)
        if half:  # adjoint of replicate padding: border rows / columns flow back to the edge pixels
            grad_padded[:, :, half] += grad_padded[:, :, :half].sum(dim=2)
            grad_padded[:, :, -half - 1] += grad_padded[:, :, -half:].sum(dim=2)
            grad_padded[:, half, :] += grad_padded[:, :half, :].sum(dim=1)
            grad_padded[:, -half - 1, :] += grad_padded[:, -half:, :].sum(dim=1)
            grad_padded = grad_padded[:, half:-half, half:-half]
        return grad_padded, grad_beta.reshape(beta.shape), None


def interpolate(pre: torch.Tensor, beta: torch.Tensor, stencil: int) -> torch.Tensor:
    """Eq. 17 / Eq. 24: ``sum_o beta_o(p) * pre(Pi(p + o))``, ``beta`` (s^2, N), replicate boundary rule."""
    return StencilInterpolation.apply(pre, beta, stencil)


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
