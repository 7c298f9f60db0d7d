"""RGB-guided estimation of the transport weights (Eq. 19-21): joint Adam over both logit sets.

Aggregation logits (N, K) start at ``-init_sharpness * normalised distance`` (closer candidates get
larger logits); interpolation logits (s^2, N) start peaked at the centre offset. Zero iterations
therefore return retrieval plus these initial weights. The mutual-information term is evaluated on
``mi_samples`` pixels drawn afresh each iteration from a seeded generator.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hiralign.warp import losses, transport
from hiralign.warp.params import WarpParams
from hiralign.warp.retrieval import Candidates


@dataclass
class TransportWeights:
    """Optimised weights of Eq. 22 and the per-iteration loss history."""

    alpha: torch.Tensor  # (N, K) aggregation weights, rows sum to 1
    beta: torch.Tensor  # (s^2, N) interpolation weights, columns sum to 1
    history: dict[str, list[float]] = field(default_factory=dict)


class AlignmentObjective:
    """Eq. 20 for one (proxy RGB, guide RGB, candidates) triple; call with both logit sets."""

    def __init__(self, proxy_rgb: torch.Tensor, guide_rgb: torch.Tensor, candidates: Candidates, params: WarpParams):
        _, self.height, self.width = guide_rgb.shape
        self.params = params
        self.guide = guide_rgb
        self.terms = losses.active_terms(params)
        # Candidate RGB (Eq. 15) and, when the TV term is on, candidate coordinates (Eq. 18): one gather, one aggregation.
        values = [transport.gather_candidates(proxy_rgb, candidates.indices)]
        if "tv" in self.terms:
            values.append(transport.candidate_coordinates(candidates.indices, self.width))
        self.candidate_values = torch.cat(values, dim=1)  # (N, 3 or 5, K)
        self.candidate_values_t = self.candidate_values.transpose(1, 2).contiguous()  # for the backward pass
        self.distance = transport.normalised_distances(candidates.distances, params.eps)  # Eq. 21
        self.coverage = losses.patch_coverage(self.height, self.width, params.loss_patch, guide_rgb.device)
        kernel = losses.ssim_kernel(params.ssim_window, params.ssim_sigma, self.height, self.width, guide_rgb.device)
        self.guide_ssim_stats = losses.ssim_guide_statistics(guide_rgb, kernel)
        self.generator = torch.Generator(device=guide_rgb.device).manual_seed(params.seed)

    def mi_sample(self) -> torch.Tensor | None:
        n = self.height * self.width
        if self.params.mi_samples == 0 or self.params.mi_samples >= n:
            return None
        return torch.randint(n, (self.params.mi_samples,), generator=self.generator, device=self.guide.device)

    def __call__(self, agg_logits: torch.Tensor, interp_logits: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total Eq. 20 loss and the unweighted active terms."""
        p = self.params
        alpha = transport.aggregation_weights(agg_logits, p.tau)  # Eq. 14
        beta = transport.interpolation_weights(interp_logits)  # Eq. 16
        pre = transport.aggregate(self.candidate_values, alpha, self.height, self.width, self.candidate_values_t)  # Eq. 15 (+ 18)
        image = transport.interpolate(pre[:3], beta, p.stencil)  # Eq. 17
        values: dict[str, torch.Tensor] = {}
        if "rgb" in self.terms:
            values["rgb"] = losses.rgb_l1(image, self.guide)
        if "patch" in self.terms:
            values["patch"] = losses.patch_l1(image, self.guide, self.coverage)
        if "mi" in self.terms:
            values["mi"] = losses.mutual_information_loss(image, self.guide, p.mi_bins, self.mi_sample())
        if "ssim" in self.terms:
            values["ssim"] = losses.ssim_loss(image, self.guide, p.ssim_window, p.ssim_sigma, self.guide_ssim_stats)
        if "grad" in self.terms:
            values["grad"] = losses.gradient_l1(image, self.guide)
        if "tv" in self.terms:
            field_tv = losses.displacement_curvature if p.coherent else losses.coordinate_tv
            values["tv"] = field_tv(pre[3:])  # Eq. 18 field, normalised inside
        if "prior" in self.terms:
            values["prior"] = losses.descriptor_prior(alpha, self.distance)  # Eq. 21
        total = sum((self.terms[name] * value for name, value in values.items()), image.new_zeros(()))
        return total, values


def _record(history: dict[str, list[float]], total: torch.Tensor, values: dict[str, torch.Tensor]) -> None:
    history.setdefault("total", []).append(float(total.detach()))
    for name, value in values.items():
        history.setdefault(name, []).append(float(value.detach()))


def optimise_transport(proxy_rgb: torch.Tensor, guide_rgb: torch.Tensor, candidates: Candidates, params: WarpParams,
                       logit_bonus: torch.Tensor | None = None) -> TransportWeights:
    """Eq. 19: Adam on aggregation and interpolation logits for ``params.iters`` steps.

    ``logit_bonus`` (N, K), optional, is added to the initial aggregation logits (coherent mode:
    candidates that continue a neighbour's match start with more weight).

    ``history[name]`` has ``iters + 1`` entries: the loss before every step and at the returned
    weights, for ``total`` and each active (unweighted) term.
    """
    n = guide_rgb.shape[1] * guide_rgb.shape[2]
    objective = AlignmentObjective(proxy_rgb, guide_rgb, candidates, params)
    agg_logits = transport.initial_aggregation_logits(candidates.distances, params.init_sharpness, params.eps)
    if logit_bonus is not None:
        agg_logits = agg_logits + logit_bonus
    agg_logits.requires_grad_(True)
    interp_logits = transport.initial_interpolation_logits(n, params.stencil, params.init_centre_logit, guide_rgb.device).requires_grad_(True)
    optimiser = torch.optim.Adam([agg_logits, interp_logits], lr=params.lr, fused=True)  # one fused kernel per step
    history: dict[str, list[float]] = {}
    for _ in range(params.iters):
        optimiser.zero_grad(set_to_none=True)
        total, values = objective(agg_logits, interp_logits)
        total.backward()
        optimiser.step()
        _record(history, total, values)
    with torch.no_grad():
        total, values = objective(agg_logits, interp_logits)
        _record(history, total, values)
        alpha = transport.aggregation_weights(agg_logits, params.tau)  # Eq. 22
        beta = transport.interpolation_weights(interp_logits)
    return TransportWeights(alpha=alpha, beta=beta, history=history)
