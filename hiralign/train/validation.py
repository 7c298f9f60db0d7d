"""Scoring restorers during and after training: PSNR / SSIM / SAM of restored pairs and of their input."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from hiralign.data import Cube
from hiralign.degrade import upsample_bicubic
from hiralign.metrics import evaluate
from hiralign.restorers.inference import restore
from hiralign.tasks import Task, get_task
from hiralign.train.patches import Pair

#: Validation observations use seeds ``VALIDATION_SEED + i`` so every epoch sees the same ones.
VALIDATION_SEED = 10_000


def reference_input(observation: np.ndarray, task: Task) -> np.ndarray:
    """The observation brought to the clean grid for an "input" score (bicubic for SR)."""
    return upsample_bicubic(observation, task.scale) if task.scale > 1 else observation


def evaluate_pairs(model: nn.Module, pairs: Sequence[Pair], tile: int | None = None,
                   device: str | torch.device = "cpu") -> dict[str, float]:
    """Mean PSNR / SSIM / SAM of the restored (clipped to [0, 1]) pairs, and of the raw input
    (``input_*``; bicubic-upsampled for SR)."""
    rows = []
    for pair in pairs:
        restored = np.clip(restore(model, pair.degraded, pair.extra, tile=tile, device=device), 0.0, 1.0)
        scale = pair.clean.shape[-1] // pair.degraded.shape[-1]
        base = upsample_bicubic(pair.degraded, scale) if scale > 1 else pair.degraded
        row = evaluate(restored, pair.clean)
        row.update({f"input_{k}": v for k, v in evaluate(base, pair.clean).items()})
        rows.append(row)
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} | {"n": len(rows)}


def validation_pairs(cubes: Sequence[Cube | np.ndarray], task: str | Task, seed: int = VALIDATION_SEED) -> list[Pair]:
    """Whole cubes degraded by ``task`` with seeds ``seed + i`` (fixed, so epochs are comparable)."""
    task = get_task(task)
    pairs = []
    for i, cube in enumerate(cubes):
        clean = cube.data if isinstance(cube, Cube) else np.asarray(cube, dtype=np.float32)
        observed = task.degrade(clean, seed=seed + i)
        pairs.append(Pair(observed.data, clean, task.extra_inputs(observed.info, observed.data.shape)))
    return pairs


def evaluate_restorer(model: nn.Module, cubes: Sequence[Cube | np.ndarray], task: str | Task,
                      seed: int = VALIDATION_SEED, tile: int | None = None,
                      device: str | torch.device = "cpu") -> dict[str, float]:
    """Degrade ``cubes`` by ``task`` (seeds ``seed + i``), restore them and score against the clean
    cubes: ``psnr``, ``ssim``, ``sam`` and the same for the input (``input_psnr`` ...)."""
    return evaluate_pairs(model, validation_pairs(cubes, task, seed), tile=tile, device=device)
