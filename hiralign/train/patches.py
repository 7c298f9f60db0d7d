"""Training patches and pairs: random crops, flips / rotations, on-the-fly degradation, batching.

:func:`degraded_patches` crops clean patches and degrades them with a task (used by
:func:`hiralign.train.train`); :func:`crop_pair` crops aligned patches from explicit :class:`Pair` s
(used by :func:`hiralign.train.train_pairs`). Every random choice comes from a generator seeded by
``(seed, epoch)`` (:func:`epoch_rng`), so resuming an interrupted run is exact.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from hiralign.data import Cube
from hiralign.tasks import Task


@dataclass
class Pair:
    """A training / validation pair: ``degraded`` ``(B, h, w)``, ``clean`` ``(B, H, W)`` and the
    task's extra inputs at the observation's size (``mask`` ``(B, h, w)``) or the clean one's
    (``ref`` ``(3, H, W)``)."""

    degraded: np.ndarray
    clean: np.ndarray
    extra: dict = field(default_factory=dict)


Batch = tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]


def augment_patch(arrays: list[np.ndarray], rng: np.random.Generator, rotate: bool) -> list[np.ndarray]:
    """The same random flip (and, with ``rotate``, 90-degree rotation) applied to every array."""
    k = int(rng.integers(4)) if rotate else 0
    flip = bool(rng.integers(2))
    out = []
    for a in arrays:
        a = np.rot90(a, k, axes=(-2, -1))
        out.append(np.ascontiguousarray(a[..., ::-1] if flip else a))
    return out


def sampling_probabilities(sizes: Sequence[int], weights: Sequence[float] | None) -> np.ndarray:
    """Per-item sampling probabilities: ``weights`` normalised, else proportional to ``sizes``."""
    p = np.asarray(sizes if weights is None else weights, dtype=np.float64)
    if p.shape != (len(sizes),) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError(f"need one non-negative weight per item ({len(sizes)}), not all zero; got {p.tolist()}")
    return p / p.sum()


def degraded_patches(cubes: Sequence[Cube | np.ndarray], task: Task, n: int, patch: int, rng: np.random.Generator,
                     weights: Sequence[float] | None = None, augment: bool = True) -> list[Pair]:
    """``n`` random clean ``patch x patch`` crops (augmented), each degraded by ``task`` with its own
    seed (its training degradation: ``Task.degrade(..., training=True)``)."""
    data = [c.data if isinstance(c, Cube) else np.asarray(c, dtype=np.float32) for c in cubes]
    too_small = [i for i, d in enumerate(data) if min(d.shape[1:]) < patch]
    if too_small:
        raise ValueError(f"cubes {too_small} are smaller than patch_size={patch}")
    probs = sampling_probabilities([d.shape[1] * d.shape[2] for d in data], weights)
    pairs = []
    for _ in range(n):
        d = data[int(rng.choice(len(data), p=probs))]
        top, left = int(rng.integers(d.shape[1] - patch + 1)), int(rng.integers(d.shape[2] - patch + 1))
        clean = np.ascontiguousarray(d[:, top : top + patch, left : left + patch])
        if augment:
            (clean,) = augment_patch([clean], rng, rotate=True)
        observed = task.degrade(clean, seed=int(rng.integers(2**31)), training=True)
        pairs.append(Pair(observed.data, clean, task.extra_inputs(observed.info, observed.data.shape)))
    return pairs


def crop_pair(pair: Pair, patch: int, rng: np.random.Generator, augment: bool) -> Pair:
    """An aligned random crop of a pair: ``patch`` px of clean, ``patch / scale`` px of the observation."""
    scale = pair.clean.shape[-1] // pair.degraded.shape[-1]
    if patch % scale:
        raise ValueError(f"patch_size {patch} must be a multiple of the pair's scale {scale}")
    lr = patch // scale
    h, w = pair.degraded.shape[-2:]
    if min(h, w) < lr:
        raise ValueError(f"pair observation {pair.degraded.shape} is smaller than a {lr}-px patch")
    top, left = int(rng.integers(h - lr + 1)), int(rng.integers(w - lr + 1))

    def window(a: np.ndarray) -> np.ndarray:  # the crop at a's own scale (1 for the observation, scale for HR arrays)
        f = a.shape[-1] // w
        return a[..., top * f : (top + lr) * f, left * f : (left + lr) * f]

    keys = list(pair.extra)
    arrays = [window(pair.degraded), window(pair.clean), *(window(pair.extra[k]) for k in keys)]
    if augment:
        arrays = augment_patch(arrays, rng, rotate=False)
    return Pair(arrays[0], arrays[1], dict(zip(keys, arrays[2:])))


def collate(pairs: Sequence[Pair], device: str | torch.device) -> Batch:
    """Stack pairs into ``(x, y, extra)`` float32 tensors on ``device``."""

    def stack(arrays: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(arrays).astype(np.float32, copy=False)).to(device)

    keys = pairs[0].extra.keys()
    return (stack([p.degraded for p in pairs]), stack([p.clean for p in pairs]),
            {k: stack([p.extra[k] for p in pairs]) for k in keys})


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator of one epoch's patches: depends only on (seed, epoch), so resuming is exact."""
    return np.random.default_rng([seed, epoch])
