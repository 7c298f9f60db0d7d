"""How the coherent mode reads a guide before matching it: its noise, its blur and its tone curves.

A generated guide differs from its proxy in ways no rearrangement of proxy spectra can reproduce:
sensor-like noise, a softer focus, a global tone or colour change. Matching raw descriptors then
rewards metamers that copy those differences (the paper mode's failure on the known-answer
benchmark, ``docs/warp.md``). :func:`guide_model` estimates them once per pair:

* **noise** beyond the proxy's own fine texture (:func:`~hiralign.warp.descriptors.excess_noise`,
  against the proxy blurred like the guide):
  a guide whose noise reaches ``noise_reference`` is described by ``noisy_patch`` patches of the guide
  smoothed by ``descriptor_sigma`` (more signal per descriptor), and gets the displacement-curvature
  term at full weight; a cleaner guide keeps ``patch`` on the unsmoothed image and a curvature weight
  falling with the square of its noise (data term ~ 1 / noise^2, as in a MAP estimate);
* **blur**: the proxy copy smoothed by ``b`` px extra (``b`` = 0, 1, ... ``max_guide_blur``) whose
  descriptors lie nearest to the guide's, so a blurred guide is matched against a blurred proxy
  instead of shifted sharp edges;
* **tone curves** (``match_colours``): the per-channel gain-gamma curves mapping the guide's quantiles
  onto the proxy's (:mod:`hiralign.warp.colour`), kept only if the toned guide lies clearly nearer
  the proxy (by more than ``tone_margin``).

Blur and tone are chosen together by the median nearest-neighbour descriptor distance of
``model_samples`` seeded guide pixels (exact search), so the full retrieval runs once, on a database
of the proxy's size.
"""
from __future__ import annotations

from dataclasses import dataclass
import faiss
import numpy as np
import torch

from hiralign.warp.colour import apply_tone_curves, tone_curves_from_quantiles
from hiralign.warp.descriptors import excess_noise, gaussian_smooth, smoothed_descriptors
from hiralign.warp.params import WarpParams

#: Tone curves within this of gain 1, gamma 1 are the identity and are not tried.
IDENTITY_TOLERANCE = 0.01


@dataclass(frozen=True)
class GuideModel:
    """The settings one guide is matched with (see the module docstring)."""

    noise: float  # guide noise beyond the proxy's, per unit intensity
    patch: int  # descriptor patch side
    sigma: float  # Gaussian smoothing (px) of the guide before its descriptors
    blur: float  # extra smoothing (px) of the proxy copy it is matched against
    flow_weight: float  # weight of the displacement-curvature term
    tone_curves: tuple[tuple[float, float], ...] | None  # per-channel (gain, gamma) applied to the guide, or None

    @property
    def proxy_sigma(self) -> float:
        """Total smoothing (px) of the proxy before its descriptors: the guide's, combined with the blur."""
        return float(np.hypot(self.sigma, self.blur))

    def toned(self, guide_rgb: np.ndarray) -> np.ndarray:
        """The guide in the proxy's colours (unchanged without tone curves)."""
        return guide_rgb if self.tone_curves is None else apply_tone_curves(guide_rgb, np.asarray(self.tone_curves))


def blur_options(p: WarpParams) -> list[float]:
    """Extra proxy blurs tried (px): 0, 1, ... up to ``max_guide_blur`` (and ``max_guide_blur`` itself)."""
    options = [float(b) for b in np.arange(0.0, p.max_guide_blur + 1e-9, 1.0)]
    if p.max_guide_blur - options[-1] > 1e-9:
        options.append(float(p.max_guide_blur))
    return options


def noise_settings(noise: float, p: WarpParams) -> tuple[int, float, float]:
    """``(patch, sigma, flow_weight)`` for a guide of this excess ``noise``."""
    ratio = min(1.0, noise / p.noise_reference) if p.noise_reference > 0 else 1.0
    if ratio < 1.0:
        return p.patch, 0.0, p.lambda_flow * ratio**2
    return p.noisy_patch, p.descriptor_sigma, p.lambda_flow


def median_nearest_distance(queries: torch.Tensor, database: torch.Tensor) -> float:
    """Median over ``queries`` of the L2 distance to the nearest ``database`` row (exact, faiss.knn)."""
    distances, _ = faiss.knn(np.ascontiguousarray(queries.cpu().numpy()), np.ascontiguousarray(database.cpu().numpy()), 1)
    return float(np.median(np.sqrt(np.maximum(distances[:, 0], 0.0))))


def guide_model(guide_rgb: np.ndarray, proxy_rgb: np.ndarray, scale: float, p: WarpParams, device: torch.device) -> GuideModel:
    """The :class:`GuideModel` of one (guide, proxy) pair; ``scale`` is the common intensity scale.

    Order: tone curves and blur are chosen together on ``patch`` descriptors of the unsmoothed images
    (noise does not yet decide anything); the guide's noise is then measured against the proxy blurred
    by the chosen amount (a blurred guide has lost the proxy's fine texture, which
    :func:`~hiralign.warp.descriptors.noise_sigma` would otherwise count as noise), and decides the
    descriptors and the curvature weight. Paper mode: ``patch``, no smoothing, blur, curvature or tone."""
    if not p.coherent:
        return GuideModel(0.0, p.patch, 0.0, 0.0, 0.0, None)
    proxy_t = torch.from_numpy(proxy_rgb * scale).to(device)
    curves, blur = tone_and_blur(guide_rgb, proxy_rgb, proxy_t, scale, p, device)
    toned = guide_rgb if curves is None else apply_tone_curves(guide_rgb, curves)
    noise = excess_noise(torch.from_numpy(toned * scale).to(device), gaussian_smooth(proxy_t, blur))
    patch, sigma, flow_weight = noise_settings(noise, p)
    return GuideModel(noise, patch, sigma, blur, flow_weight, None if curves is None else tuple((float(g), float(e)) for g, e in curves))


def tone_and_blur(guide_rgb: np.ndarray, proxy_rgb: np.ndarray, proxy_t: torch.Tensor, scale: float, p: WarpParams,
                  device: torch.device) -> tuple[np.ndarray | None, float]:
    """The (tone curves or None, extra proxy blur) whose descriptors lie nearest to the guide's, by the
    median nearest-neighbour distance of ``model_samples`` seeded guide pixels: first the blur of the
    guide as it is, then the toned guide at that blur and unblurred. Tone curves are kept only
    if they lower that distance by more than ``tone_margin`` (a fraction): a layout change (a zoom, a
    rotation's corners) also shifts the quantiles, and a small gain is then a coincidence."""
    tones: list[np.ndarray | None] = [None]
    if p.match_colours:
        curves = tone_curves_from_quantiles(guide_rgb, proxy_rgb)
        if not np.allclose(curves, 1.0, atol=IDENTITY_TOLERANCE):
            tones.append(curves)
    blurs = blur_options(p)
    if len(tones) == 1 and len(blurs) == 1:
        return None, blurs[0]
    n = guide_rgb.shape[1] * guide_rgb.shape[2]
    sample = torch.from_numpy(np.sort(np.random.default_rng(p.seed).choice(n, size=min(n, p.model_samples), replace=False))).to(device)
    weights = (p.w_chroma, p.w_grad, p.eps)
    queries = [smoothed_descriptors(torch.from_numpy(guide_rgb if t is None else apply_tone_curves(guide_rgb, t)).to(device) * scale,
                                    0.0, p.patch, *weights)[sample] for t in tones]
    databases = {b: smoothed_descriptors(proxy_t, b, p.patch, *weights) for b in blurs}
    untoned = {b: median_nearest_distance(queries[0], databases[b]) for b in blurs}
    best_untoned = min(blurs, key=untoned.get)
    if len(tones) == 2:  # the toned guide, at the blur the untoned one chose and unblurred
        toned = {b: median_nearest_distance(queries[1], databases[b]) for b in {0.0, best_untoned}}
        best_toned = min(toned, key=toned.get)
        if toned[best_toned] < (1.0 - p.tone_margin) * untoned[best_untoned]:
            return tones[1], best_toned
    return None, best_untoned
