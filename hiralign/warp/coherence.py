"""Coherence-aware candidate selection (coherent mode): reliable matches define a smooth prior
displacement, and candidates that agree with it win where the descriptors cannot tell apart.

Why. Eq. 12 ranks candidates by descriptor distance alone. Where the guide is flat, blurred or
noisy, many proxy pixels are equally close -- within the noise -- and the best-ranked one is a
metamer anywhere in the image (the paper mode's 20 px median displacement on a noisy copy of the
proxy). Each pass here:

1. **confidence** of every pixel's best match, a ratio test in the spirit of Lowe (2004): how much
   closer it is than the best candidate more than one pixel away from it (:func:`match_confidence`);
2. **prior displacement**: the confidence-weighted, multi-scale normalised convolution (Knutsson &
   Westin 1993) of the best matches' displacements (:func:`prior_displacement`), so flat regions
   take the displacement of the reliable matches around them;
3. **proposals**: the ``(2r+1)^2`` window around ``p + prior(p)`` and each 4-neighbour's best match
   shifted by one pixel (PatchMatch propagation, Barnes et al. 2009), scored with Eq. 12 next to the
   current K candidates;
4. **coherence-aware ranking**: a candidate ranks as if its distance were divided by
   ``1 + discount * agreement`` (:func:`agreement`: 1 at the prior, 0 from ``r + 1`` px away). Within that factor (about the spread of distances under noise) the
   coherent match wins; a distinctly better match elsewhere (new layout, a true discontinuity) still
   wins. The stored distances stay the true Eq. 12 values.

The output is a :class:`~hiralign.warp.retrieval.Candidates` of the same shape as Eq. 13's, so the
transport, the operator ``W = S A`` and all its invariants are unchanged.
"""
from __future__ import annotations

import torch

from hiralign.warp.descriptors import gaussian_smooth
from hiralign.warp.retrieval import Candidates, score_pool, select_candidates
from hiralign.warp.transport import displacement_field, pixel_grid

#: Confidence is raised to this power where it weights matches: the few distinctive matches (measured
#: on CAVE crops: 90% of those with confidence > 0.4 are exact) outweigh the many ambiguous ones.
CONFIDENCE_POWER = 4

#: Scales (multiples of ``sigma``) of the normalised convolution and their weights: local evidence
#: dominates where it exists, wider rings fill regions without any reliable match.
PRIOR_SCALES = ((1.0, 1.0), (4.0, 0.1), (16.0, 0.01))


def candidate_yx(indices: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column of proxy pixel indices."""
    return indices // width, indices % width


def match_confidence(candidates: Candidates, width: int, eps: float = 1e-12) -> torch.Tensor:
    """``(N,)`` in [0, 1]: ``1 - d_best / d_far``, with ``d_far`` the Eq. 12 distance of the best
    candidate more than one pixel (Chebyshev) from the best one; 1 where every candidate is near it."""
    y, x = candidate_yx(candidates.indices, width)
    far = torch.maximum((y - y[:, :1]).abs(), (x - x[:, :1]).abs()) > 1
    d_far = torch.where(far, candidates.distances, torch.full_like(candidates.distances, float("inf"))).min(dim=1).values
    d_best = candidates.distances[:, 0]
    confidence = 1.0 - d_best / (d_far + eps)
    return torch.where(torch.isinf(d_far), torch.ones_like(confidence), confidence).clamp_(0.0, 1.0)


def best_displacement(best: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(2, H, W)`` displacement (y, x) of each guide pixel's best match: proxy minus guide coordinate."""
    return displacement_field(torch.stack(candidate_yx(best, width)).reshape(2, height, width).to(torch.float32))


def prior_displacement(best: torch.Tensor, confidence: torch.Tensor, height: int, width: int, sigma: float) -> torch.Tensor:
    """``(2, H, W)`` confidence-weighted normalised convolution of the best matches' displacements,
    summed over :data:`PRIOR_SCALES` (numerators and denominators separately)."""
    displacement = best_displacement(best, height, width)
    weight = confidence.reshape(1, height, width).to(torch.float32) ** CONFIDENCE_POWER
    numerator = torch.zeros_like(displacement)
    denominator = torch.zeros_like(weight)
    for scale, importance in PRIOR_SCALES:
        stacked = gaussian_smooth(torch.cat([weight * displacement, weight]), scale * sigma)
        numerator += importance * stacked[:2]
        denominator += importance * stacked[2:]
    return numerator / denominator.clamp_min(1e-8)


def prior_targets(prior: torch.Tensor) -> torch.Tensor:
    """``(2, N)`` proxy coordinates (y, x) the prior points at: ``p + prior(p)``."""
    _, height, width = prior.shape
    return (pixel_grid(height, width, prior.device) + prior).reshape(2, -1)


def prior_window(prior: torch.Tensor, radius: int) -> torch.Tensor:
    """``(N, (2r+1)^2)`` proxy pixels around ``round(p + prior(p))``, clamped to the image."""
    _, height, width = prior.shape
    target = prior_targets(prior).round().long()
    ty, tx = target[0][:, None], target[1][:, None]
    offsets = torch.arange(-radius, radius + 1, device=prior.device)
    dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
    y = (ty + dy.reshape(1, -1)).clamp(0, height - 1)
    x = (tx + dx.reshape(1, -1)).clamp(0, width - 1)
    return y * width + x


def neighbour_proposals(best: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """PatchMatch propagation: for every guide pixel p, the match of each 4-neighbour n shifted by
    ``p - n`` (clamped to the image), ``(N, 4)``; a pixel at the border proposes its own match."""
    by, bx = (v.reshape(height, width) for v in candidate_yx(best, width))
    grid_y, grid_x = torch.meshgrid(torch.arange(height, device=best.device), torch.arange(width, device=best.device), indexing="ij")
    proposals = []
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):  # neighbour n = p + (dy, dx)
        ny, nx = (grid_y + dy).clamp(0, height - 1), (grid_x + dx).clamp(0, width - 1)
        qy = (by[ny, nx] - (ny - grid_y)).clamp(0, height - 1)  # q(n) + (p - n)
        qx = (bx[ny, nx] - (nx - grid_x)).clamp(0, width - 1)
        proposals.append((qy * width + qx).reshape(-1))
    return torch.stack(proposals, dim=1)


def agreement(indices: torch.Tensor, targets: torch.Tensor, width: int, radius: int) -> torch.Tensor:
    """``(n, K)`` in [0, 1]: how well candidate ``indices`` (n, K) agree with their pixel's prior target
    ``targets`` (2, n): 1 at the target, falling linearly to 0 at ``radius + 1`` px (Chebyshev)."""
    y, x = candidate_yx(indices, width)
    gap = torch.maximum((y - targets[0, :, None]).abs(), (x - targets[1, :, None]).abs())
    return (1.0 - gap / (radius + 1)).clamp_(min=0.0)


def coherent_pass(candidates: Candidates, guide_desc: torch.Tensor, proxy_desc: torch.Tensor, prior: torch.Tensor,
                  radius: int, discount: float, chunk: int = 8192) -> Candidates:
    """One pass of steps 3-4: score the prior window and the neighbours' shifted matches, keep the
    K best under the coherence-aware ranking (true Eq. 12 distances stored)."""
    _, height, width = prior.shape
    indices = candidates.indices
    n_candidates = indices.shape[1]
    targets = prior_targets(prior)
    proposals = torch.cat([prior_window(prior, radius), neighbour_proposals(indices[:, 0], height, width)], dim=1)
    new_indices, new_distances = torch.empty_like(indices), torch.empty_like(candidates.distances)
    for start in range(0, indices.shape[0], chunk):
        sl = slice(start, start + chunk)
        current = indices[sl]
        new_pool, new_dist = score_pool(guide_desc[sl], proxy_desc, proposals[sl])
        new_dist[(new_pool[:, :, None] == current[:, None, :]).any(dim=2)] = float("inf")  # already a candidate
        pool = torch.cat([current, new_pool], dim=1)
        dist = torch.cat([candidates.distances[sl], new_dist], dim=1)
        ranked = dist / (1.0 + discount * agreement(pool, targets[:, sl], width, radius))
        order = torch.topk(ranked, n_candidates, dim=1, largest=False, sorted=True).indices
        new_indices[sl], new_distances[sl] = select_candidates(pool.gather(1, order), dist.gather(1, order), n_candidates,
                                                               keep_order=True)
    return Candidates(new_indices, new_distances, candidates.index_kind)


def coherent_selection(candidates: Candidates, guide_desc: torch.Tensor, proxy_desc: torch.Tensor, height: int, width: int,
                       *, iters: int, sigma: float, radius: int, discount: float, chunk: int = 8192) -> tuple[Candidates, torch.Tensor]:
    """``iters`` passes of steps 1-4 from Eq. 13's candidates; returns the candidates and the final
    prior displacement ``(2, H, W)``."""
    prior = torch.zeros((2, height, width), device=candidates.indices.device)
    for _ in range(iters):
        confidence = match_confidence(candidates, width)
        prior = prior_displacement(candidates.indices[:, 0], confidence, height, width, sigma)
        candidates = coherent_pass(candidates, guide_desc, proxy_desc, prior, radius, discount, chunk)
    return candidates, prior
