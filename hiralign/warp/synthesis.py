"""Warp-based hyperspectral generation (Sec. III-B.2): one call from (proxy, guide) to a synthesized HSI.

Steps and the timings they record: ``descriptors`` (Eq. 9), ``retrieval`` (index build + Eq. 10-13),
``optimisation`` (Eq. 14-21), ``transfer`` (Eq. 22-26: sparse ``W = S A`` and its application to the
proxy HSI and RGB). ``total`` is their sum; an optional recall check is timed apart. In coherent mode
``descriptors`` includes the guide model (:mod:`hiralign.warp.guide_model`) and ``retrieval`` the
coherence-aware selection (:mod:`hiralign.warp.coherence`).

:func:`spectral_warps` warps many pairs: consecutive pairs of one size are optimised together in one
batched transport (up to ``batch_pixels`` guide pixels in all; :mod:`hiralign.warp.optimise`), and the
descriptors and FAISS index of a proxy are built once and reused by each of its guides whose
descriptors are computed alike (same intensity scale, proxy blur and patch side). A pair's
``optimisation`` time is then its share of its batch's.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from hiralign.runtime import resolve_device, thread_limit
from hiralign.warp import operator as sparse_operator
from hiralign.warp import transport
from hiralign.warp.coherence import agreement, coherent_selection, prior_targets
from hiralign.warp.descriptors import smoothed_descriptors
from hiralign.warp.guide_model import guide_model
from hiralign.warp.optimise import TransportProblem, TransportWeights, optimise_transport
from hiralign.warp.params import WarpParams, validate_inputs
from hiralign.warp.result import WarpResult
from hiralign.warp.retrieval import SearchIndex, build_index, resolve_index_kind, retrieval_recall, retrieve_candidates


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
    return next(spectral_warps([(proxy_hsi, proxy_rgb, guide_rgb)], **params))


def spectral_warps(pairs: Iterable[tuple[Any, Any, Any]], **params: Any) -> Iterator[WarpResult]:
    """:func:`spectral_warp` for every ``(proxy_hsi, proxy_rgb, guide_rgb)`` of ``pairs``, in order.

    Consecutive pairs of one size go through one batched optimisation (``batch_pixels``); a proxy's
    index is reused by its consecutive guides (pass the same proxy array objects for that). Results
    equal one-at-a-time calls up to float rounding. Yields each batch's results as it finishes.
    """
    if params.get("device") == "auto":
        params["device"] = resolve_device("auto")  # the concrete device is what the result records
    p = WarpParams.from_kwargs(**params)
    device = torch.device(resolve_device(p.device))
    indexes = ProxyIndexes(p, device)
    batch: list[PreparedPair] = []
    for proxy_hsi, proxy_rgb, guide_rgb in pairs:
        with thread_limit(p.threads):  # around the work only: never across a yield to the caller
            pair = prepare_pair(proxy_hsi, proxy_rgb, guide_rgb, p, device, indexes)
        if batch and not fits(batch, pair, p.batch_pixels):
            yield from finish_batch(batch, p)
            batch = []
        batch.append(pair)
    if batch:
        yield from finish_batch(batch, p)


def fits(batch: list["PreparedPair"], pair: "PreparedPair", batch_pixels: int) -> bool:
    """Whether ``pair`` joins ``batch``: same size, and the batch stays within ``batch_pixels`` guide pixels."""
    n = pair.hsi.shape[1] * pair.hsi.shape[2]
    return batch[0].hsi.shape[1:] == pair.hsi.shape[1:] and (len(batch) + 1) * n <= batch_pixels


@dataclass
class PreparedPair:
    """One pair after Eq. 9-13: its transport problem and what the transfer step needs."""

    hsi: np.ndarray
    proxy_rgb: np.ndarray
    problem: TransportProblem
    clock: _Clock
    diagnostics: dict[str, Any]


@dataclass
class ProxyEntry:
    """A proxy's descriptors (Eq. 9) and, once built, its FAISS index; ``uses`` counts its guides."""

    descriptors: torch.Tensor
    index: SearchIndex | None = None
    uses: int = 0


class ProxyIndexes:
    """The descriptors and FAISS index of the current proxy, kept while its guides are warped.

    Keyed by what the proxy's descriptors depend on (the proxy array, the common intensity scale,
    the guide model's proxy blur and patch side); a new proxy drops the previous one's."""

    def __init__(self, params: WarpParams, device: torch.device):
        self.params, self.device = params, device
        self.proxy: np.ndarray | None = None
        self.entries: dict[tuple, ProxyEntry] = {}

    def entry(self, proxy_rgb: np.ndarray, proxy_t: torch.Tensor, scale: float, sigma: float, patch: int) -> ProxyEntry:
        """The proxy's entry for these descriptor settings (descriptors computed on first use)."""
        if proxy_rgb is not self.proxy:
            self.proxy, self.entries = proxy_rgb, {}
        key = (scale, sigma, patch)
        if key not in self.entries:
            p = self.params
            self.entries[key] = ProxyEntry(smoothed_descriptors(proxy_t, sigma, patch, p.w_chroma, p.w_grad, p.eps))
        found = self.entries[key]
        found.uses += 1
        return found

    def index(self, entry: ProxyEntry) -> SearchIndex:
        """The entry's FAISS index, built on first use."""
        if entry.index is None:
            p = self.params
            kind = resolve_index_kind(p.index, entry.descriptors.shape[0], p.auto_exact_max_pixels, self.device.type == "cuda")
            entry.index = build_index(entry.descriptors.cpu().numpy(), kind, pca_dim=p.pca_dim, ivf_nlist=p.ivf_nlist,
                                      ivf_nprobe=p.ivf_nprobe, refine_factor=p.refine_factor, kmeans_iters=p.kmeans_iters,
                                      hnsw_m=p.hnsw_m, hnsw_ef_search=p.hnsw_ef_search, seed=p.seed, device=p.device)
        return entry.index


def prepare_pair(proxy_hsi: Any, proxy_rgb: Any, guide_rgb: Any, p: WarpParams, device: torch.device,
                 indexes: ProxyIndexes) -> PreparedPair:
    """Eq. 9-13 for one pair (descriptors, retrieval, coherent selection): its transport problem."""
    hsi, prgb, grgb = validate_inputs(proxy_hsi, proxy_rgb, guide_rgb)
    proxy_key = proxy_rgb if isinstance(proxy_rgb, np.ndarray) else prgb  # the caller's array identifies the proxy
    _, height, width = hsi.shape
    clock = _Clock(device)
    diagnostics: dict[str, Any] = {}
    scale = common_intensity_scale(prgb, grgb) if p.normalise_intensity else 1.0
    diagnostics["intensity_scale"] = scale
    proxy_t = torch.from_numpy(prgb * scale).to(device)
    with clock.step("descriptors"):  # Eq. 9
        model = guide_model(grgb, prgb, scale, p, device)  # coherent mode: noise, blur, tone (hiralign.warp.guide_model)
        diagnostics["guide_model"] = asdict(model)
        guide_t = torch.from_numpy(model.toned(grgb) * scale).to(device)
        proxy = indexes.entry(proxy_key, proxy_t, scale, model.proxy_sigma, model.patch)  # reused by the proxy's guides
        proxy_desc = proxy.descriptors
        guide_desc = smoothed_descriptors(guide_t, model.sigma, model.patch, p.w_chroma, p.w_grad, p.eps)
    with clock.step("retrieval"):  # index build (or reuse) + Eq. 10-13
        index = indexes.index(proxy)
        candidates = retrieve_candidates(guide_desc, proxy_desc, height, width, index=index, k=p.k, radius=p.radius,
                                         n_candidates=p.n_candidates, chunk=p.query_chunk)
        prior = None
        if p.coherent and p.coherence_iters:  # hiralign.warp.coherence
            candidates, prior = coherent_selection(candidates, guide_desc, proxy_desc, height, width, iters=p.coherence_iters,
                                                   sigma=p.coherence_sigma, radius=p.coherence_radius,
                                                   discount=p.coherence_discount, chunk=p.query_chunk)
    diagnostics.update(index=index.kind, index_on_gpu=index.on_gpu, index_reused=proxy.uses > 1)
    if p.recall_queries:
        start = time.perf_counter()
        diagnostics.update(retrieval_recall(index, guide_desc.cpu().numpy(), proxy_desc.cpu().numpy(), p.k, p.recall_queries, p.seed))
        diagnostics["recall_check_s"] = time.perf_counter() - start
    bonus = None
    if prior is not None:
        bonus = p.coherence_logit * agreement(candidates.indices, prior_targets(prior), width, p.coherence_radius)
    pair_params = replace(p, lambda_flow=model.flow_weight) if p.coherent else p
    return PreparedPair(hsi, prgb, TransportProblem(proxy_t, guide_t, candidates, pair_params, bonus), clock, diagnostics)


def finish_batch(batch: list[PreparedPair], p: WarpParams) -> list[WarpResult]:
    """Eq. 14-21 for the whole batch at once (each pair's share of the time), then each pair's transfer."""
    with thread_limit(p.threads):
        start = time.perf_counter()
        weights = optimise_transport([pair.problem for pair in batch])  # Eq. 14-21
        if batch[0].clock.device.type == "cuda":
            torch.cuda.synchronize(batch[0].clock.device)
        share = (time.perf_counter() - start) / len(batch)
        for pair in batch:
            pair.clock.seconds["optimisation"] = share
            pair.diagnostics["batch_pairs"] = len(batch)
        return [transfer(pair, w, p) for pair, w in zip(batch, weights)]


def transfer(pair: PreparedPair, weights: TransportWeights, p: WarpParams) -> WarpResult:
    """Eq. 22-26 for one optimised pair: the sparse operator, the moved HSI and RGB, the displacement."""
    clock, candidates = pair.clock, pair.problem.candidates
    _, height, width = pair.hsi.shape
    with clock.step("transfer"):  # Eq. 22-26
        indices = candidates.indices.cpu().numpy()
        alpha = weights.alpha.cpu().numpy()
        beta = np.ascontiguousarray(weights.beta.T.cpu().numpy())  # (N, s^2)
        w = sparse_operator.composed_operator(indices, alpha, beta, height, width, p.stencil)  # Eq. 25
        warped_hsi = sparse_operator.apply_operator(w, pair.hsi)  # Eq. 26
        warped_rgb = sparse_operator.apply_operator(w, pair.proxy_rgb)
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
        diagnostics=pair.diagnostics,
    )
