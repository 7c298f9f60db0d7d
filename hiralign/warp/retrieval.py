"""Candidate retrieval of Eq. 10-13: FAISS seeds, local expansion, mean-absolute-distance selection.

For every guide pixel q: the k proxy pixels whose descriptors are nearest (L2, FAISS) are the seeds
(Eq. 10); each seed is expanded to its (2r+1)^2 window, coordinates clamped to the image (Eq. 11);
the unique pool members are scored by the mean absolute descriptor difference (Eq. 12) and the K
best are kept (Eq. 13). Everything runs in chunks of guide pixels, so memory stays O(N * pool).

Index kinds: ``flat`` (exact ``IndexFlatL2``), ``ivf`` (optional PCA to ``pca_dim`` + IVF-Flat, the
shortlist of ``refine_factor * k`` re-ranked with exact full-dimension L2), ``hnsw`` (same, with an
HNSW graph), ``auto`` (exact up to ``auto_exact_max_pixels`` pixels, IVF above). On a CUDA device with
a GPU build of faiss, ``flat``/``auto`` use ``GpuIndexFlatL2`` and ``ivf`` moves its trained coarse
index to the GPU with ``index_cpu_to_gpu``; HNSW has no faiss GPU version and stays on the CPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np
import torch


@dataclass
class SearchIndex:
    """A built FAISS index over proxy descriptors, with the Python objects it references kept alive."""

    index: Any
    kind: str
    on_gpu: bool
    keep_alive: list = field(default_factory=list)

    def search(self, queries: np.ndarray, k: int, chunk: int) -> np.ndarray:
        """Labels ``(n, k)`` int64 of the k nearest database rows for each query (chunked)."""
        labels = np.empty((queries.shape[0], k), dtype=np.int64)
        for start in range(0, queries.shape[0], chunk):
            _, labels[start : start + chunk] = self.index.search(queries[start : start + chunk], k)
        return labels


@dataclass
class Candidates:
    """Retained candidates of Eq. 13: ``indices`` (N, K) proxy pixels (row-major), ``distances`` (N, K) Eq. 12."""

    indices: torch.Tensor
    distances: torch.Tensor
    index_kind: str


def faiss_gpu_available(device: str) -> bool:
    """True when ``device`` is CUDA and this faiss build sees a GPU."""
    return device.startswith("cuda") and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def resolve_index_kind(kind: str, n_pixels: int, auto_exact_max_pixels: int, on_gpu: bool = False) -> str:
    """``auto`` -> ``flat`` for small images (or on a GPU, where exact search is cheap), ``ivf`` otherwise."""
    if kind != "auto":
        return kind
    return "flat" if on_gpu or n_pixels <= auto_exact_max_pixels else "ivf"


def _gpu_device_id(device: str) -> int:
    return int(device.split(":")[1]) if ":" in device else 0


def _training_sample(database: np.ndarray, n: int, seed: int) -> np.ndarray:
    if database.shape[0] <= n:
        return database
    rows = np.sort(np.random.default_rng(seed).choice(database.shape[0], size=n, replace=False))
    return np.ascontiguousarray(database[rows])


def build_index(
    database: np.ndarray,
    kind: str = "flat",
    *,
    pca_dim: int = 32,
    ivf_nlist: int = 0,
    ivf_nprobe: int = 8,
    refine_factor: int = 2,
    kmeans_iters: int = 10,
    hnsw_m: int = 32,
    hnsw_ef_search: int = 64,
    seed: int = 0,
    device: str = "cpu",
) -> SearchIndex:
    """Build the FAISS index of ``kind`` (``flat``/``ivf``/``hnsw``) over float32 ``(N, D)`` descriptors."""
    database = np.ascontiguousarray(database, dtype=np.float32)
    n, dim = database.shape
    on_gpu = faiss_gpu_available(device)
    keep: list = []
    if kind == "flat":
        if on_gpu:
            res = faiss.StandardGpuResources()
            keep.append(res)
            index = faiss.GpuIndexFlatL2(res, dim)
        else:
            index = faiss.IndexFlatL2(dim)
        index.add(database)
        return SearchIndex(index, kind, on_gpu, keep)
    if kind not in ("ivf", "hnsw"):
        raise ValueError(f"unknown index kind {kind!r}; use 'flat', 'ivf', 'hnsw' or 'auto'")
    reduced = pca_dim if 0 < pca_dim < dim else dim
    if kind == "ivf":
        nlist = ivf_nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
        quantizer = faiss.IndexFlatL2(reduced)
        core = faiss.IndexIVFFlat(quantizer, reduced, nlist)
        core.cp.seed = seed  # seeded k-means
        core.cp.niter = kmeans_iters
        core.nprobe = min(ivf_nprobe, nlist)
        keep += [quantizer, core]
        train_rows = min(n, max(40 * nlist, 10000))  # faiss asks for >= 39 points per list
    else:
        core = faiss.IndexHNSWFlat(reduced, hnsw_m)
        core.hnsw.efSearch = max(hnsw_ef_search, refine_factor * 16)
        keep.append(core)
        train_rows = min(n, 50000)
    base = core
    if reduced < dim:
        pca = faiss.PCAMatrix(dim, reduced)
        base = faiss.IndexPreTransform(pca, core)
        keep += [pca, base]
    base.train(_training_sample(database, train_rows, seed))
    on_gpu = on_gpu and kind == "ivf"
    if on_gpu:
        res = faiss.StandardGpuResources()
        base = faiss.index_cpu_to_gpu(res, _gpu_device_id(device), base)
        keep += [res, base]
    index = faiss.IndexRefineFlat(base)  # exact full-dimension L2 re-ranking of the shortlist
    index.k_factor = float(refine_factor)
    index.add(database)
    return SearchIndex(index, kind, on_gpu, keep)


def exact_neighbours(queries: np.ndarray, database: np.ndarray, k: int) -> np.ndarray:
    """Exact L2 k-nearest database rows for each query (brute force, faiss.knn)."""
    _, labels = faiss.knn(np.ascontiguousarray(queries, dtype=np.float32), np.ascontiguousarray(database, dtype=np.float32), k)
    return labels


def search_seeds(index: SearchIndex, queries: np.ndarray, database: np.ndarray, k: int, chunk: int) -> np.ndarray:
    """Seeds of Eq. 10: ``(N, k)`` proxy pixel indices; rows an approximate index leaves short are searched exactly."""
    labels = index.search(np.ascontiguousarray(queries, dtype=np.float32), k, chunk)
    short = np.flatnonzero((labels < 0).any(axis=1))
    if short.size:
        labels[short] = exact_neighbours(queries[short], database, k)
    return labels


def expand_seeds(seeds: torch.Tensor, height: int, width: int, radius: int) -> torch.Tensor:
    """Candidate pool of Eq. 11: each seed's (2r+1)^2 window, coordinates clamped to the image; ``(Q, k*(2r+1)^2)``."""
    offsets = torch.arange(-radius, radius + 1, device=seeds.device)
    dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
    y = (seeds // width)[:, :, None] + dy.reshape(1, 1, -1)
    x = (seeds % width)[:, :, None] + dx.reshape(1, 1, -1)
    pool = y.clamp_(0, height - 1) * width + x.clamp_(0, width - 1)
    return pool.reshape(seeds.shape[0], -1)


def mean_abs_distance_pairs(
    guide_desc: torch.Tensor, proxy_desc: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, pair_chunk: int = 4096
) -> torch.Tensor:
    """Eq. 12 for listed pairs: ``mean_d |guide_desc[rows] - proxy_desc[cols]|``.

    Gathers ``pair_chunk`` rows at a time into two reused buffers (in-place difference and abs),
    so the working set stays a few MB and no large temporary is allocated per chunk.
    """
    n_pairs, dim = rows.shape[0], guide_desc.shape[1]
    out = torch.empty(n_pairs, dtype=torch.float32, device=guide_desc.device)
    a = torch.empty((min(pair_chunk, n_pairs), dim), dtype=torch.float32, device=guide_desc.device)
    b = torch.empty_like(a)
    for start in range(0, n_pairs, pair_chunk):
        stop = min(start + pair_chunk, n_pairs)
        ga, gb = a[: stop - start], b[: stop - start]
        torch.index_select(guide_desc, 0, rows[start:stop], out=ga)
        torch.index_select(proxy_desc, 0, cols[start:stop], out=gb)
        torch.sum(ga.sub_(gb).abs_(), dim=1, out=out[start:stop])
    return out.div_(dim)


def score_pool(guide_desc: torch.Tensor, proxy_desc: torch.Tensor, pool: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 12 on a pool ``(Q, P)``: sorted pool and distances, repeated locations scored once (repeats get +inf)."""
    pool, _ = pool.sort(dim=1)
    first = torch.ones_like(pool, dtype=torch.bool)
    first[:, 1:] = pool[:, 1:] != pool[:, :-1]
    rows, cols = first.nonzero(as_tuple=True)
    dist = torch.full(pool.shape, float("inf"), dtype=torch.float32, device=pool.device)
    dist[rows, cols] = mean_abs_distance_pairs(guide_desc, proxy_desc, rows, pool[rows, cols])
    return pool, dist


def select_candidates(pool: torch.Tensor, dist: torch.Tensor, n_candidates: int, keep_order: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 13: the K pool members with the smallest distance; if fewer than K are unique, the best one repeats.

    ``keep_order``: the pool is already ranked (first K kept as they are, e.g. a coherence-aware order)."""
    if keep_order:
        best_dist, indices = dist[:, :n_candidates], pool[:, :n_candidates]
    else:
        best_dist, best = torch.topk(dist, n_candidates, dim=1, largest=False, sorted=True)
        indices = pool.gather(1, best)
    missing = torch.isinf(best_dist)
    if missing.any():
        indices = torch.where(missing, indices[:, :1], indices)
        best_dist = torch.where(missing, best_dist[:, :1], best_dist)
    return indices, best_dist


def retrieve_candidates(
    guide_desc: torch.Tensor,
    proxy_desc: torch.Tensor,
    height: int,
    width: int,
    *,
    index: SearchIndex,
    k: int = 16,
    radius: int = 1,
    n_candidates: int = 16,
    chunk: int = 8192,
) -> Candidates:
    """Eq. 10-13 for every guide pixel: ``Candidates`` with (N, K) proxy indices and Eq. 12 distances."""
    proxy_np = proxy_desc.detach().cpu().numpy()
    guide_np = guide_desc.detach().cpu().numpy()
    seeds = torch.from_numpy(search_seeds(index, guide_np, proxy_np, k, chunk)).to(guide_desc.device)  # Eq. 10
    n = guide_desc.shape[0]
    indices = torch.empty((n, n_candidates), dtype=torch.int64, device=guide_desc.device)
    distances = torch.empty((n, n_candidates), dtype=torch.float32, device=guide_desc.device)
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        pool = expand_seeds(seeds[sl], height, width, radius)  # Eq. 11
        pool, dist = score_pool(guide_desc[sl], proxy_desc, pool)  # Eq. 12
        indices[sl], distances[sl] = select_candidates(pool, dist, n_candidates)  # Eq. 13
    return Candidates(indices, distances, index.kind)


def retrieval_recall(index: SearchIndex, queries: np.ndarray, database: np.ndarray, k: int = 16, n_queries: int = 2000, seed: int = 0) -> dict[str, float]:
    """Recall@k of ``index`` against exact L2 search on a seeded subsample of queries.

    ``recall`` = mean fraction of the exact k nearest neighbours that the index returns;
    ``recall_ties`` also counts a returned row whose true distance ties the exact k-th distance
    (flat image regions hold many equidistant patches, where set recall understates quality).
    """
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(queries.shape[0], size=min(n_queries, queries.shape[0]), replace=False))
    q = np.ascontiguousarray(queries[rows], dtype=np.float32)
    approx = index.search(q, k, chunk=4096)
    _, exact = faiss.knn(q, np.ascontiguousarray(database, dtype=np.float32), k)
    hits = [len(np.intersect1d(a[a >= 0], e)) for a, e in zip(approx, exact)]

    def true_distances(labels: np.ndarray) -> np.ndarray:
        return ((database[np.maximum(labels, 0)] - q[:, None, :]) ** 2).sum(axis=2)

    kth = true_distances(exact).max(axis=1, keepdims=True) * (1 + 1e-6)  # same arithmetic for both sides
    tie_hits = ((true_distances(approx) <= kth) & (approx >= 0)).sum(axis=1)
    return {"recall": float(np.mean(hits) / k), "recall_ties": float(np.mean(np.minimum(tie_hits, k)) / k), "n_queries": int(rows.size)}
