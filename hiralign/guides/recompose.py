"""Offline ``recompose`` generator: new layouts built from the proxy's own regions (dead leaves).

The paper's generated RGBs bring *new* target-like layouts whose spectra the warp then borrows
from the proxy (Sec. III-B). Without diffusion weights, ``jitter`` and a low-strength ``local-ddpm``
give near-copies of the proxy layout. ``recompose`` gives new layouts from the proxy's own
content. Each guide is a dead-leaves occlusion model (Matheron 1968; Lee, Mumford & Huang,
"Occlusion models for natural images", IJCV 2001) whose leaves are regions of the proxy:

1. the proxy RGB is over-segmented with SLIC (Achanta et al., TPAMI 2012) at several scales
   (``segment_counts``), so that leaves are material-coherent regions with natural outlines;
2. leaves are drawn front to back: each one is a segment at a random scale, every segment of a
   scale once in random order before any repeats (a leaf covers a point in proportion to its
   area, so each region shows about as often as in the proxy), carried rigidly
   (one of the 8 flips / quarter turns, then a random position) with its own pixels. It only
   fills pixels no earlier leaf covers (occlusion), until ``max_leaves`` leaves are down;
3. pixels no leaf reaches show the background leaf: the proxy under a random flip / quarter
   turn and a random circular shift;
4. leaf boundaries are anti-aliased: only the pixels on a boundary get a Gaussian blur of
   ``boundary_sigma`` px, much as a camera's point-spread function mixes two surfaces.

A guide holds only the proxy's pixel colours (plus mixed pixels on boundaries), so its colour
statistics stay those of the target, and every region is a rigid copy of a proxy region, which
the patch-matching warp can recover. The leaves come from the guide's own proxy because stage 2b
warps each guide against its own proxy. Seeded and deterministic; a 256 px guide takes well
under a second on a CPU.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import find_boundaries, slic

from hiralign.guides.resize import as_rgb_batch


def segment_scales(rgb: np.ndarray, segment_counts: tuple[int, ...], compactness: float) -> list[np.ndarray]:
    """One SLIC label map ``(H, W)``, labels ``0..n-1``, per segment count (the leaf scales)."""
    image = np.moveaxis(rgb, 0, -1).astype(np.float64)
    maps = [slic(image, n_segments=int(count), compactness=compactness, start_label=0, channel_axis=-1) for count in segment_counts]
    return [np.unique(m, return_inverse=True)[1].reshape(m.shape) for m in maps]  # labels 0..n-1


def dihedral(array: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips / quarter turns of the last two axes (``k`` in 0..7; 0 is the identity)."""
    turned = np.rot90(array, k % 4, axes=(-2, -1))
    return turned[..., ::-1] if k >= 4 else turned


def place_leaf(canvas: np.ndarray, covered: np.ndarray, labels: np.ndarray, leaf: int,
               rgb: np.ndarray, mask: np.ndarray, top: int, left: int) -> None:
    """Paint the ``mask`` pixels of ``rgb`` at ``(top, left)`` where nothing is yet (front-to-back occlusion)."""
    h, w = covered.shape
    mh, mw = mask.shape
    t0, l0 = max(top, 0), max(left, 0)
    t1, l1 = min(top + mh, h), min(left + mw, w)
    if t0 >= t1 or l0 >= l1:
        return
    window = (slice(t0, t1), slice(l0, l1))
    source = (slice(t0 - top, t1 - top), slice(l0 - left, l1 - left))
    paint = mask[source] & ~covered[window]
    canvas[(slice(None),) + window][:, paint] = rgb[(slice(None),) + source][:, paint]
    labels[window][paint] = leaf
    covered[window] |= paint


def leaf_of(rgb: np.ndarray, mask: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """A segment cut to its bounding box and carried by the flip / quarter turn ``k``: (pixels, mask)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return dihedral(rgb[(slice(None),) + box], k).copy(), dihedral(mask[box], k).copy()


def background_leaf(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The proxy under a random flip / quarter turn and a random circular shift (its size kept)."""
    h, w = rgb.shape[1:]
    k = int(rng.integers(8)) if h == w else int(rng.choice([0, 2, 4, 6]))  # quarter turns only when square
    shifted = np.roll(dihedral(rgb, k), (int(rng.integers(h)), int(rng.integers(w))), axis=(1, 2))
    return np.ascontiguousarray(shifted)


def anti_alias(canvas: np.ndarray, labels: np.ndarray, sigma: float) -> np.ndarray:
    """Blur only the pixels on a leaf boundary by ``sigma`` px (a point-spread function at the occlusions)."""
    if sigma <= 0:
        return canvas
    boundary = find_boundaries(labels, mode="thick")
    blurred = ndimage.gaussian_filter(canvas, sigma=(0, sigma, sigma), mode="reflect")
    return np.where(boundary[None], blurred, canvas)


def recompose_guide(rgb: np.ndarray, scales: list[np.ndarray], rng: np.random.Generator,
                    max_leaves: int, boundary_sigma: float) -> np.ndarray:
    """One dead-leaves recomposition ``(3, H, W)`` of a proxy RGB from its segments ``scales``."""
    h, w = rgb.shape[1:]
    canvas = np.zeros_like(rgb)
    covered = np.zeros((h, w), dtype=bool)
    labels = np.full((h, w), -1, dtype=np.int64)
    queues: list[list[int]] = [[] for _ in scales]
    for leaf in range(max_leaves):
        if covered.all():
            break
        scale = int(rng.integers(len(scales)))
        if not queues[scale]:  # every segment of a scale once, in random order, before any repeats
            queues[scale] = list(rng.permutation(int(scales[scale].max()) + 1))
        pixels, mask = leaf_of(rgb, scales[scale] == queues[scale].pop(), int(rng.integers(8)))
        top = int(rng.integers(-mask.shape[0] // 2, h - mask.shape[0] // 2 + 1))
        left = int(rng.integers(-mask.shape[1] // 2, w - mask.shape[1] // 2 + 1))
        place_leaf(canvas, covered, labels, leaf, pixels, mask, top, left)
    background = background_leaf(rgb, rng)
    canvas[:, ~covered] = background[:, ~covered]
    labels[~covered] = max_leaves
    return np.clip(anti_alias(canvas, labels, boundary_sigma), 0.0, 1.0)


def recompose_guides(
    proxy_rgbs,
    n_guides: int = 3,
    seed: int = 0,
    segment_counts: tuple[int, ...] = (8, 32, 128),
    compactness: float = 10.0,
    max_leaves: int = 300,
    boundary_sigma: float = 0.5,
) -> np.ndarray:
    """``(N, G, 3, H, W)`` dead-leaves recompositions of each proxy RGB, in [0, 1], reproducible from ``seed``.

    ``segment_counts``: SLIC segment counts, one leaf scale each (a leaf's scale is drawn uniformly);
    ``compactness``: SLIC's colour-vs-space balance (CIELAB units; higher = rounder leaves);
    ``max_leaves``: leaves drawn before the background fills what is left; ``boundary_sigma``: the
    blur (px) of the leaf-boundary pixels (0: hard boundaries). Guide ``(n, g)`` draws from
    ``numpy.random.default_rng([seed, n, g])``, so it does not depend on the other guides.
    """
    proxies = as_rgb_batch(proxy_rgbs)
    if min(proxies.shape[-2:]) < 2:
        raise ValueError(f"recompose needs proxies of at least 2x2 px; got {proxies.shape[-2:]}")
    if not segment_counts or min(segment_counts) < 1:
        raise ValueError(f"segment_counts must be a non-empty list of positive counts; got {segment_counts}")
    if max_leaves < 1 or boundary_sigma < 0:
        raise ValueError(f"need max_leaves >= 1 and boundary_sigma >= 0; got {max_leaves}, {boundary_sigma}")
    guides = np.empty((len(proxies), n_guides) + proxies.shape[1:], dtype=np.float32)
    for n, proxy in enumerate(proxies):
        scales = segment_scales(proxy, tuple(segment_counts), compactness)
        for g in range(n_guides):
            guides[n, g] = recompose_guide(proxy, scales, np.random.default_rng([seed, n, g]), max_leaves, boundary_sigma)
    return guides
