"""Warp-based hyperspectral generation (Sec. III-B.2): one call from (proxy, guide) to a synthesized HSI.

Steps and the timings they record: ``descriptors`` (Eq. 9), ``retrieval`` (index build + Eq. 10-13),
``optimisation`` (Eq. 14-21), ``transfer`` (Eq. 22-26: sparse ``W = S A`` and its application to the
proxy HSI and RGB). ``total`` is their sum; an optional recall check is timed apart. In coherent mode
``descriptors`` includes the guide model (:mod:`hiralign.warp.guide_model`) and ``retrieval`` the
coherence-aware selection (:mod:`hiralign.warp.coherence`).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, replace
from typing import Any, Iterator

import numpy as np
import torch

from hiralign.runtime import resolve_device, thread_limit
from hiralign.warp import operator as sparse_operator
from hiralign.warp import transport
from hiralign.warp.coherence import agreement, coherent_selection, prior_targets
from hiralign.warp.descriptors import smoothed_descriptors
from hiralign.warp.guide_model import guide_model
from hiralign.warp.optimise import optimise_transport
from hiralign.warp.params import WarpParams, validate_inputs
from hiralign.warp.result import WarpResult
from hiralign.warp.retrieval import build_index, resolve_index_kind, retrieval_recall, retrieve_candidates


def common_intensity_scale(proxy_rgb: np.ndarray, guide_rgb: np.ndarray, percentile: float = 99.0) -> float:
    """One factor for both RGBs that maps the brighter image's ``percentile`` to 1 (keeps their ratio)."""
    top = max(float(np.percentile(proxy_rgb, percentile)), float(np.percentile(guide_rgb, percentile)))
    return 1.0 / top if top > 0 else 1.0


class _Clock:
    """Accumulates wall-clock seconds per named step."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def spectral_warp(proxy_hsi: Any, proxy_rgb: Any, guide_rgb: Any, **params: Any) -> WarpResult:
    """Synthesize an HSI with ``guide_rgb``'s layout and ``proxy_hsi``'s spectra (Eq. 9-26).

    ``proxy_hsi``: (B, H, W) array or :class:`~hiralign.data.Cube`; ``proxy_rgb``, ``guide_rgb``:
    (3, H, W). Keyword parameters are the fields of :class:`WarpParams` (unknown names raise);
    ``device="auto"`` runs on CUDA when torch sees a GPU, else on the CPU.
    """
    if params.get("device") == "auto":
        params["device"] = resolve_device("auto")  # the concrete device is what the result records
    p = WarpParams.from_kwargs(**params)
    hsi, prgb, grgb = validate_inputs(proxy_hsi, proxy_rgb, guide_rgb)
    _, height, width = hsi.shape
    device = torch.device(resolve_device(p.device))
    clock = _Clock(device)
    diagnostics: dict[str, Any] = {}
    with thread_limit(p.threads):
        scale = common_intensity_scale(prgb, grgb) if p.normalise_intensity else 1.0
        diagnostics["intensity_scale"] = scale
        proxy_t = torch.from_numpy(prgb * scale).to(device)
        with clock.step("descriptors"):  # Eq. 9
            model = guide_model(grgb, prgb, scale, p, device)  # coherent mode: noise, blur, tone (hiralign.warp.guide_model)
            diagnostics["guide_model"] = asdict(model)
            guide_t = torch.from_numpy(model.toned(grgb) * scale).to(device)
            proxy_desc = smoothed_descriptors(proxy_t, model.proxy_sigma, model.patch, p.w_chroma, p.w_grad, p.eps)
            guide_desc = smoothed_descriptors(guide_t, model.sigma, model.patch, p.w_chroma, p.w_grad, p.eps)
        with clock.step("retrieval"):  # Eq. 10-13
            kind = resolve_index_kind(p.index, height * width, p.auto_exact_max_pixels, device.type == "cuda")
            proxy_np = proxy_desc.cpu().numpy()
            index = build_index(
                proxy_np, kind, pca_dim=p.pca_dim, ivf_nlist=p.ivf_nlist, ivf_nprobe=p.ivf_nprobe,
                refine_factor=p.refine_factor, kmeans_iters=p.kmeans_iters, hnsw_m=p.hnsw_m, hnsw_ef_search=p.hnsw_ef_search,
                seed=p.seed, device=p.device,
            )
            candidates = retrieve_candidates(guide_desc, proxy_desc, height, width, index=index, k=p.k, radius=p.radius,
                                             n_candidates=p.n_candidates, chunk=p.query_chunk)
            prior = None
            if p.coherent and p.coherence_iters:  # hiralign.warp.coherence
                candidates, prior = coherent_selection(candidates, guide_desc, proxy_desc, height, width, iters=p.coherence_iters,
                                                       sigma=p.coherence_sigma, radius=p.coherence_radius,
                                                       discount=p.coherence_discount, chunk=p.query_chunk)
        diagnostics["index"] = kind
        diagnostics["index_on_gpu"] = index.on_gpu
        if p.recall_queries:
            start = time.perf_counter()
            diagnostics.update(retrieval_recall(index, guide_desc.cpu().numpy(), proxy_np, p.k, p.recall_queries, p.seed))
            diagnostics["recall_check_s"] = time.perf_counter() - start
        del index, proxy_desc, guide_desc, proxy_np
        with clock.step("optimisation"):  # Eq. 14-21
            bonus = None
            if prior is not None:
                bonus = p.coherence_logit * agreement(candidates.indices, prior_targets(prior), width, p.coherence_radius)
            weights = optimise_transport(proxy_t, guide_t, candidates, replace(p, lambda_flow=model.flow_weight) if p.coherent else p, bonus)
        with clock.step("transfer"):  # Eq. 22-26
            indices = candidates.indices.cpu().numpy()
            alpha = weights.alpha.cpu().numpy()
            beta = np.ascontiguousarray(weights.beta.T.cpu().numpy())  # (N, s^2)
            w = sparse_operator.composed_operator(indices, alpha, beta, height, width, p.stencil)  # Eq. 25
            warped_hsi = sparse_operator.apply_operator(w, hsi)  # Eq. 26
            warped_rgb = sparse_operator.apply_operator(w, prgb)
        coords = transport.candidate_coordinates(candidates.indices, width)
        expected = transport.expected_coordinates(coords, weights.alpha, height, width)  # Eq. 18
        displacement = transport.displacement_field(expected)
    timings = dict(clock.seconds)
    timings["total"] = sum(timings[k] for k in ("descriptors", "retrieval", "optimisation", "transfer"))
    if p.iters:
        timings["seconds_per_iteration"] = timings["optimisation"] / p.iters
    return WarpResult(
        hsi=warped_hsi,
        rgb=warped_rgb,
        operator=w,
        displacement=displacement.cpu().numpy(),
        expected_coords=expected.cpu().numpy(),
        loss_history=weights.history,
        timings=timings,
        params=p.to_dict(),
        candidates=indices,
        candidate_distances=candidates.distances.cpu().numpy(),
        aggregation_weights=alpha,
        interpolation_weights=beta,
        diagnostics=diagnostics,
    )
