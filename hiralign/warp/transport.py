"""The soft transport of Eq. 14-18 and Eq. 23-24: aggregation over candidates, local interpolation.

Shapes: N = H*W guide pixels (row-major), K candidates, s x s stencil. ``indices`` and aggregation
logits/weights are (N, K); interpolation logits/weights are stored offset-major, (s^2, N), because a
softmax over a short non-power-of-two last axis is several times slower on the CPU. Stencil offsets
are listed row-major, ``(dy, dx)`` from ``(-s//2, -s//2)``. Aggregation, interpolation and the
weights accept a leading batch axis P of independent pairs of one size ((P, N, K), (P, s^2, N),
images (P, C, H, W)): :func:`hiralign.warp.optimise.optimise_transport` moves several pairs at once.

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
    return distances / (distances.max(dim=-1, keepdim=True).values + eps)


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
    return torch.softmax(logits if tau == 1 else logits / tau, dim=-1)


def interpolation_weights(logits: torch.Tensor) -> torch.Tensor:
    """Eq. 16: softmax of ``([P,] s^2, N)`` logits over the s^2 stencil offsets; each pixel's weights sum to one."""
    return torch.softmax(logits, dim=-2)


def gather_candidates(values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Candidate values ``(N, C, K)`` of a ``(C, H, W)`` image at proxy ``indices`` (N, K)."""
    flat = values.reshape(values.shape[0], -1).T  # (N_proxy, C)
    return flat[indices].permute(0, 2, 1).contiguous()


class CandidateAggregation(torch.autograd.Function):
    """Eq. 15 / Eq. 23 as one batched matrix-vector product per pixel, ``(C, K) @ (K,)``.

    The backward pass ``d alpha(p) = sum_c g_c(p) * values_c(p)`` runs as C multiply-adds over
    (N, K) planes of a channel-major copy of the values (made once per optimisation), about four
    times faster than per-pixel ``(K, C) @ (C,)`` products.
    """

    @staticmethod
    def forward(ctx, values: torch.Tensor, values_cnk: torch.Tensor | None, alpha: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(values.permute(1, 0, 2) if values_cnk is None else values_cnk)
        return torch.bmm(values, alpha[:, :, None])[:, :, 0]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (values_cnk,) = ctx.saved_tensors
        g = grad.T.contiguous()  # (C, N)
        grad_alpha = values_cnk[0] * g[0, :, None]
        for c in range(1, values_cnk.shape[0]):
            grad_alpha.addcmul_(values_cnk[c], g[c, :, None])
        return None, None, grad_alpha


def aggregate(candidate_values: torch.Tensor, alpha: torch.Tensor, height: int, width: int, values_cnk: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 15 / Eq. 23: pre-interpolation image ``sum_k alpha_k * value(q_k)`` as ``([P,] C, H, W)``.

    ``candidate_values`` ([P,] N, C, K), ``alpha`` ([P,] N, K); ``values_cnk`` optionally the
    values channel-major, contiguous (C, P * N, K) (:func:`channel_major`), for the backward pass.
    """
    lead, (n, channels, k) = alpha.shape[:-2], candidate_values.shape[-3:]
    pre = CandidateAggregation.apply(candidate_values.reshape(-1, channels, k), values_cnk, alpha.reshape(-1, k))  # (P*N, C)
    return pre.reshape(*lead, n, channels).transpose(-1, -2).reshape(*lead, channels, height, width)


def channel_major(candidate_values: torch.Tensor) -> torch.Tensor:
    """The ([P,] N, C, K) candidate values as a contiguous (C, P * N, K) array (the backward pass of :func:`aggregate`)."""
    channels, k = candidate_values.shape[-2:]
    return candidate_values.reshape(-1, channels, k).permute(1, 0, 2).contiguous()


class StencilInterpolation(torch.autograd.Function):
    """Eq. 17 / Eq. 24 with a hand-written backward pass.

    Images are (P, C, H, W), weights (P, s^2, N). Forward: ``out(p) = sum_o beta_o(p) * pre(Pi(p + o))``
    on the replicate-padded image. Backward:
    ``d beta_o(p) = sum_c g_c(p) * pre_c(Pi(p + o))`` and the adjoint of the shifts, accumulated into
    one padded buffer whose border is then folded back onto the edge pixels (the adjoint of replicate
    padding). Autograd through s^2 slices would allocate and zero a padded buffer per offset.
    """

    @staticmethod
    def forward(ctx, pre: torch.Tensor, beta: torch.Tensor, stencil: int) -> torch.Tensor:
        batch, _, height, width = pre.shape
        half = stencil // 2
        padded = F.pad(pre, (half, half, half, half), mode="replicate") if half else pre
        weights = beta.reshape(batch, -1, 1, height, width)
        out = torch.zeros_like(pre)
        for o, (dy, dx) in enumerate(stencil_offsets(stencil)):
            out.addcmul_(weights[:, o], padded[:, :, half + dy : half + dy + height, half + dx : half + dx + width])
        ctx.save_for_backward(padded, beta)
        ctx.stencil = stencil
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        padded, beta = ctx.saved_tensors
        stencil = ctx.stencil
        half = stencil // 2
        batch, _, height, width = grad.shape
        weights = beta.reshape(batch, -1, 1, height, width)
        grad_beta = torch.empty((stencil * stencil, batch, height, width), dtype=grad.dtype, device=grad.device)
        grad_padded = torch.zeros_like(padded)
        for o, (dy, dx) in enumerate(stencil_offsets(stencil)):
            window = (slice(None), slice(None), slice(half + dy, half + dy + height), slice(half + dx, half + dx + width))
            torch.sum(grad * padded[window], dim=1, out=grad_beta[o])
            grad_padded[window].addcmul_(weights[:, o], grad)
        if half:  # adjoint of replicate padding: border rows / columns flow back to the edge pixels
            grad_padded[..., half] += grad_padded[..., :half].sum(dim=-1)
            grad_padded[..., -half - 1] += grad_padded[..., -half:].sum(dim=-1)
            grad_padded[..., half, :] += grad_padded[..., :half, :].sum(dim=-2)
            grad_padded[..., -half - 1, :] += grad_padded[..., -half:, :].sum(dim=-2)
            grad_padded = grad_padded[..., half:-half, half:-half]
        return grad_padded, grad_beta.transpose(0, 1).reshape(beta.shape), None


def interpolate(pre: torch.Tensor, beta: torch.Tensor, stencil: int) -> torch.Tensor:
    """Eq. 17 / Eq. 24: ``sum_o beta_o(p) * pre(Pi(p + o))`` for ``pre`` ([P,] C, H, W) and ``beta``
    ([P,] s^2, N), replicate boundary rule."""
    lead, (channels, height, width) = pre.shape[:-3], pre.shape[-3:]
    out = StencilInterpolation.apply(pre.reshape(-1, channels, height, width), beta.reshape(-1, *beta.shape[-2:]), stencil)
    return out.reshape(*lead, channels, height, width)


def transport_image(values: torch.Tensor, indices: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, stencil: int, channel_chunk: int = 8) -> torch.Tensor:
    """Eq. 23-24 computed directly: move a ``(C, H, W)`` proxy image with ``alpha`` (N, K) and ``beta`` (s^2, N), chunked over channels."""
    _, height, width = values.shape
    outs = []
    for start in range(0, values.shape[0], channel_chunk):
        part = values[start : start + channel_chunk]
        outs.append(interpolate(aggregate(gather_candidates(part, indices), alpha, height, width), beta, stencil))
    return torch.cat(outs)


def candidate_coordinates(indices: torch.Tensor, width: int) -> torch.Tensor:
    """Proxy coordinates ``([P,] N, 2, K)`` (row y, column x) of the candidates ``([P,] N, K)``."""
    return torch.stack([indices // width, indices % width], dim=-2).to(torch.float32)


def expected_coordinates(coords: torch.Tensor, alpha: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Eq. 18: expected proxy coordinate ``u(p) = sum_k alpha_k q_k`` as ``(2, H, W)`` (y, x)."""
    return aggregate(coords, alpha, height, width)


def pixel_grid(height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Guide coordinates ``(2, H, W)``: row y and column x of every pixel."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    return torch.stack([ys, xs]).to(torch.float32)


def displacement_field(expected: torch.Tensor) -> torch.Tensor:
    """Eq. 18: displacement ``u(p) - p`` from each guide pixel to its expected proxy coordinate, ``([P,] 2, H, W)``."""
    return expected - pixel_grid(expected.shape[-2], expected.shape[-1], expected.device)
