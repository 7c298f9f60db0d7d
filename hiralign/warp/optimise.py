"""RGB-guided estimation of the transport weights (Eq. 19-21): joint Adam over both logit sets.

Aggregation logits (N, K) start at ``-init_sharpness * normalised distance`` (closer candidates get
larger logits); interpolation logits (s^2, N) start peaked at the centre offset. Zero iterations
therefore return retrieval plus these initial weights. The mutual-information term is evaluated on
``mi_samples`` pixels drawn afresh each iteration from a seeded generator.

Several pairs of one size are optimised together (:func:`optimise_transport` on a list of
:class:`TransportProblem`): their logits are stacked on a leading axis and the objective is the sum
of the pairs' Eq. 20 losses. Each pair's gradient is then its own loss's gradient and Adam works
element by element, so every pair gets the weights it would get alone (up to float rounding), at
one set of kernel launches per iteration for the whole batch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Sequence

import torch

from hiralign.warp import losses, transport
from hiralign.warp.params import WarpParams
from hiralign.warp.retrieval import Candidates


@dataclass
class TransportProblem:
    """One pair of Eq. 19: proxy RGB and guide RGB ``(3, H, W)`` on a common scale, their Eq. 13
    candidates, the pair's parameters (in coherent mode ``lambda_flow`` is the guide model's) and an
    optional ``logit_bonus`` (N, K) added to the initial aggregation logits (coherent mode: candidates
    that continue a neighbour's match start with more weight)."""

    proxy_rgb: torch.Tensor
    guide_rgb: torch.Tensor
    candidates: Candidates
    params: WarpParams
    logit_bonus: torch.Tensor | None = None


@dataclass
class TransportWeights:
    """Optimised weights of Eq. 22 and the per-iteration loss history."""

    alpha: torch.Tensor  # (N, K) aggregation weights, rows sum to 1
    beta: torch.Tensor  # (s^2, N) interpolation weights, columns sum to 1
    history: dict[str, list[float]] = field(default_factory=dict)


class AlignmentObjective:
    """Eq. 20 for a batch of P pairs of one size; call with both stacked logit sets.

    Returns the sum over pairs of each pair's weighted Eq. 20 loss and the unweighted active terms,
    each ``(P,)``. A term active for some pairs only is weighted 0 for the others.
    """

    def __init__(self, problems: Sequence[TransportProblem]):
        self.params = params = shared_params(problems)
        _, self.height, self.width = problems[0].guide_rgb.shape
        self.guide = torch.stack([pr.guide_rgb for pr in problems])  # (P, 3, H, W)
        device = self.guide.device
        self.pair_terms = [losses.active_terms(pr.params) for pr in problems]
        self.terms = [t for t in losses.TERM_WEIGHTS if any(t in terms for terms in self.pair_terms)]
        self.weights = torch.tensor([[terms.get(t, 0.0) for terms in self.pair_terms] for t in self.terms], device=device)  # (T, P)
        # Candidate RGB (Eq. 15) and, when the TV term is on, candidate coordinates (Eq. 18): one gather, one aggregation.
        values = torch.stack([transport.gather_candidates(pr.proxy_rgb, pr.candidates.indices) for pr in problems])  # (P, N, 3, K)
        if "tv" in self.terms:
            coords = torch.stack([transport.candidate_coordinates(pr.candidates.indices, self.width) for pr in problems])
            values = torch.cat([values, coords], dim=2)
        self.candidate_values = values.contiguous()  # (P, N, 3 or 5, K)
        self.candidate_values_cnk = transport.channel_major(values)  # for the backward pass
        distances = torch.stack([pr.candidates.distances for pr in problems])
        self.distance = transport.normalised_distances(distances, params.eps)  # Eq. 21
        self.coverage = losses.patch_coverage(self.height, self.width, params.loss_patch, device)
        kernel = losses.ssim_kernel(params.ssim_window, params.ssim_sigma, self.height, self.width, device)
        self.guide_ssim_stats = losses.ssim_guide_statistics(self.guide, kernel)
        self.generator = torch.Generator(device=device).manual_seed(params.seed)

    def mi_sample(self) -> torch.Tensor | None:
        n = self.height * self.width
        if self.params.mi_samples == 0 or self.params.mi_samples >= n:
            return None
        return torch.randint(n, (self.params.mi_samples,), generator=self.generator, device=self.guide.device)

    def __call__(self, agg_logits: torch.Tensor, interp_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed Eq. 20 loss and the unweighted active terms ``(T, P)`` in the order of ``self.terms``."""
        p = self.params
        alpha = transport.aggregation_weights(agg_logits, p.tau)  # Eq. 14
        beta = transport.interpolation_weights(interp_logits)  # Eq. 16
        pre = transport.aggregate(self.candidate_values, alpha, self.height, self.width, self.candidate_values_cnk)  # Eq. 15 (+ 18)
        image = transport.interpolate(pre[:, :3], beta, p.stencil)  # Eq. 17
        term = {
            "rgb": lambda: losses.rgb_l1(image, self.guide),
            "patch": lambda: losses.patch_l1(image, self.guide, self.coverage),
            "mi": lambda: losses.mutual_information_loss(image, self.guide, p.mi_bins, self.mi_sample()),
            "ssim": lambda: losses.ssim_loss(image, self.guide, p.ssim_window, p.ssim_sigma, self.guide_ssim_stats),
            "grad": lambda: losses.gradient_l1(image, self.guide),
            "tv": lambda: (losses.displacement_curvature if p.coherent else losses.coordinate_tv)(pre[:, 3:]),  # Eq. 18 field
            "prior": lambda: losses.descriptor_prior(alpha, self.distance),  # Eq. 21
        }
        values = torch.stack([term[name]() for name in self.terms])  # (T, P)
        return (self.weights * values).sum(), values


def shared_params(problems: Sequence[TransportProblem]) -> WarpParams:
    """The parameters every pair of a batch shares; the pairs may differ only in ``lambda_flow``."""
    if not problems:
        raise ValueError("no transport problems to optimise")
    first = problems[0]
    for pr in problems[1:]:
        if dataclasses.replace(pr.params, lambda_flow=first.params.lambda_flow) != first.params:
            raise ValueError("pairs optimised together must share their warp parameters (lambda_flow aside)")
        if pr.guide_rgb.shape != first.guide_rgb.shape or pr.candidates.indices.shape != first.candidates.indices.shape:
            raise ValueError(f"pairs optimised together must have one size: {tuple(pr.guide_rgb.shape)} vs {tuple(first.guide_rgb.shape)}")
    return first.params


def initial_logits(problems: Sequence[TransportProblem]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stacked start logits: aggregation (P, N, K) (plus each pair's bonus), interpolation (P, s^2, N)."""
    p = problems[0].params
    device = problems[0].guide_rgb.device
    agg = [transport.initial_aggregation_logits(pr.candidates.distances, p.init_sharpness, p.eps)
           + (0.0 if pr.logit_bonus is None else pr.logit_bonus) for pr in problems]
    n = problems[0].candidates.indices.shape[0]
    interp = transport.initial_interpolation_logits(n, p.stencil, p.init_centre_logit, device)
    return torch.stack(agg), interp.expand(len(problems), -1, -1).clone()


def optimise_transport(problems: Sequence[TransportProblem]) -> list[TransportWeights]:
    """Eq. 19: Adam on aggregation and interpolation logits for ``iters`` steps, all ``problems`` at once.

    Each returned ``history[name]`` has ``iters + 1`` entries: the pair's loss before every step and
    at the returned weights, for ``total`` and each of the pair's active (unweighted) terms.
    """
    objective = AlignmentObjective(problems)
    params = objective.params
    agg_logits, interp_logits = (t.requires_grad_(True) for t in initial_logits(problems))
    optimiser = torch.optim.Adam([agg_logits, interp_logits], lr=params.lr, fused=True)  # one fused kernel per step
    # One preallocated record: small tensors kept per iteration would pin glibc's heap between the
    # large temporaries and grow the resident memory by megabytes per iteration at 256 x 256.
    trace = torch.empty((params.iters + 1, len(objective.terms), len(problems)), device=agg_logits.device)
    for step in range(params.iters):
        optimiser.zero_grad(set_to_none=True)
        total, values = objective(agg_logits, interp_logits)
        total.backward()
        optimiser.step()
        trace[step] = values.detach()
    with torch.no_grad():
        trace[params.iters] = objective(agg_logits, interp_logits)[1]
        alpha = transport.aggregation_weights(agg_logits, params.tau)  # Eq. 22
        beta = transport.interpolation_weights(interp_logits)
    return [TransportWeights(alpha=alpha[i], beta=beta[i], history=pair_history(objective, trace, i))
            for i in range(len(problems))]


def pair_history(objective: AlignmentObjective, trace: torch.Tensor, pair: int) -> dict[str, list[float]]:
    """Pair ``pair``'s loss history from the (iters + 1, T, P) record: ``total`` (its weighted sum) and each of its own active terms."""
    values = trace[:, :, pair].double()  # (iters + 1, T)
    weights = objective.weights[:, pair].double()
    history = {"total": (values * weights).sum(dim=1).tolist()}
    for t, name in enumerate(objective.terms):
        if name in objective.pair_terms[pair]:
            history[name] = values[:, t].tolist()
    return history
