"""The training loop (:func:`fit`) and its two entry points :func:`train` (clean cubes + task) and
:func:`train_pairs` (explicit pairs); AdamW, per-step cosine schedule, resume states."""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from hiralign.data import Cube
from hiralign.tasks import Task, get_task
from hiralign.train.checkpoint import CheckpointError, save_checkpoint
from hiralign.train.patches import Batch, Pair, collate, crop_pair, degraded_patches, epoch_rng, sampling_probabilities
from hiralign.train.validation import evaluate_pairs, validation_pairs


@dataclass(frozen=True)
class TrainConfig:
    """Training parameters (all stored in the checkpoint).

    epochs, steps_per_epoch, batch_size: the schedule (``epochs * steps_per_epoch`` optimiser steps).
    patch_size: side of the clean training patches (a multiple of the SR scale).
    lr, min_lr, weight_decay: AdamW with a cosine decay from ``lr`` to ``min_lr`` over all steps.
    loss: "l1" (default), "l2" or "charbonnier". grad_clip: max gradient norm (None: off).
    augment: random flips / rotations. seed: seeds patches, degradations and initial torch RNG.
    device: "cpu", "cuda", ... val_tile: tile size for validation inference (None: whole cubes).
    """

    epochs: int = 20
    steps_per_epoch: int = 50
    batch_size: int = 16
    patch_size: int = 32
    lr: float = 2e-3
    min_lr: float = 2e-5
    weight_decay: float = 1e-4
    loss: str = "l1"
    grad_clip: float | None = 1.0
    augment: bool = True
    seed: int = 0
    device: str = "cpu"
    val_tile: int | None = None

    def resumable(self) -> dict:
        """The parameters a resumed run must share with the interrupted one."""
        return {k: v for k, v in asdict(self).items() if k not in ("device", "val_tile")}


@dataclass
class TrainResult:
    """The trained model, one history row per epoch, and the checkpoint path (if saved)."""

    model: nn.Module
    history: list[dict]
    checkpoint: Path | None = None

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l1": F.l1_loss,
    "l2": F.mse_loss,
    "charbonnier": lambda x, y: torch.sqrt((x - y) ** 2 + 1e-6).mean(),
}


def cosine_factor(step: int, total: int, floor: float) -> float:
    """Cosine decay of the learning-rate factor from 1 to ``floor`` over ``total`` steps."""
    progress = min(step, total) / max(total, 1)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def resume_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name + ".resume.pt")


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def fit(model: nn.Module, batches: Callable[[int], Iterable[Batch]], config: TrainConfig,
        validate: Callable[[nn.Module], dict] | None = None, checkpoint: str | Path | None = None,
        meta: dict | None = None, resume: bool = True, progress: bool = True) -> TrainResult:
    """The training loop. ``batches(epoch)`` yields at least ``steps_per_epoch`` ``(x, y, extra)``
    batches; ``validate(model)`` returns the epoch's metrics. ``meta`` is merged into the checkpoint
    config (backbone, task, bands, wavelengths ...). See the module docstring for checkpoints."""
    if config.loss not in LOSSES:
        raise ValueError(f"unknown loss {config.loss!r}; choose one of {sorted(LOSSES)}")
    loss_fn = LOSSES[config.loss]
    model.to(config.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total = config.epochs * config.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_factor(step, total, config.min_lr / config.lr))
    checkpoint = None if checkpoint is None else Path(checkpoint)
    history: list[dict] = []
    start = 0
    if checkpoint is not None and resume and resume_path(checkpoint).exists():
        start, history = _load_resume_state(resume_path(checkpoint), model, optimizer, scheduler, config)
    bar = tqdm(total=total, initial=start * config.steps_per_epoch, disable=not progress, desc="train", leave=False)
    for epoch in range(start, config.epochs):
        tic = time.perf_counter()
        model.train()
        losses = []
        for x, y, extra in islice(batches(epoch), config.steps_per_epoch):
            loss = loss_fn(model(x, **extra), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            bar.update(1)
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "lr": scheduler.get_last_lr()[0]}
        if validate is not None:
            row.update(validate(model))
        row["seconds"] = time.perf_counter() - tic
        history.append(row)
        bar.set_postfix({k: f"{row[k]:.4g}" for k in ("loss", "psnr") if k in row})
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            _atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "history": history,
                                "train": config.resumable()}, resume_path(checkpoint))
    bar.close()
    if checkpoint is not None:
        final = {k: v for k, v in (history[-1] if history else {}).items() if k not in ("epoch", "lr", "seconds")}
        save_checkpoint(checkpoint, model, {**(meta or {}), "train": asdict(config), "metrics": final,
                                            "history": history})
        resume_path(checkpoint).unlink(missing_ok=True)
    return TrainResult(model, history, checkpoint)


def _load_resume_state(path: Path, model: nn.Module, optimizer, scheduler, config: TrainConfig) -> tuple[int, list]:
    state = torch.load(path, map_location=config.device, weights_only=True)
    if state["train"] != config.resumable():
        diff = sorted(k for k in config.resumable() if state["train"].get(k) != config.resumable()[k])
        raise CheckpointError(f"resume state {path} was made with other training parameters ({', '.join(diff)}); "
                              "delete it or pass resume=False to start over")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["epoch"]), list(state["history"])


def train(model: nn.Module, cubes: Sequence[Cube | np.ndarray], task: str | Task, config: TrainConfig | None = None, *,
          val_cubes: Sequence[Cube | np.ndarray] | None = None, weights: Sequence[float] | None = None,
          checkpoint: str | Path | None = None, meta: dict | None = None, resume: bool = True,
          progress: bool = True) -> TrainResult:
    """Train ``model`` to undo ``task`` on patches of the clean ``cubes``, degraded on the fly.

    ``weights`` (one per cube) set the sampling frequency (default: by pixel count). ``val_cubes``
    are degraded once with fixed seeds and scored after every epoch. Other arguments: :func:`fit`.
    """
    config = config or TrainConfig()
    task = get_task(task)
    if config.patch_size % task.scale:
        raise ValueError(f"patch_size {config.patch_size} must be a multiple of the task scale {task.scale}")
    torch.manual_seed(config.seed)

    def batches(epoch: int) -> Iterator[Batch]:
        rng = epoch_rng(config.seed, epoch)
        for _ in range(config.steps_per_epoch):
            pairs = degraded_patches(cubes, task, config.batch_size, config.patch_size, rng, weights, config.augment)
            yield collate(pairs, config.device)

    validate = None
    if val_cubes:
        val_pairs = validation_pairs(val_cubes, task)
        validate = lambda m: evaluate_pairs(m, val_pairs, tile=config.val_tile, device=config.device)  # noqa: E731
    bands = int(np.asarray(getattr(cubes[0], "data", cubes[0])).shape[0])
    meta = {"task": task.name, "bands": bands, "scale": task.scale, **(meta or {})}  # so any module's checkpoint reloads
    return fit(model, batches, config, validate, checkpoint, meta, resume, progress)


def train_pairs(model: nn.Module, pairs: Sequence[Pair] | Callable[[int], Sequence[Pair]],
                config: TrainConfig | None = None, *, val_pairs: Sequence[Pair] | None = None,
                weights: Sequence[float] | None = None, checkpoint: str | Path | None = None,
                meta: dict | None = None, resume: bool = True, progress: bool = True) -> TrainResult:
    """Train ``model`` on explicit ``(degraded, clean, extra)`` pairs: a list, or a function
    ``epoch -> list`` to re-draw them each epoch. Aligned random patches (``config.patch_size`` on
    the clean grid) are cropped; ``weights`` (one per pair) set the sampling frequency."""
    config = config or TrainConfig()
    torch.manual_seed(config.seed)

    def batches(epoch: int) -> Iterator[Batch]:
        rng = epoch_rng(config.seed, epoch)
        pool = pairs(epoch) if callable(pairs) else pairs
        probs = sampling_probabilities([p.clean.shape[-1] * p.clean.shape[-2] for p in pool], weights)
        for _ in range(config.steps_per_epoch):
            picks = rng.choice(len(pool), size=config.batch_size, p=probs)
            yield collate([crop_pair(pool[int(i)], config.patch_size, rng, config.augment) for i in picks],
                          config.device)

    validate = None
    if val_pairs:
        validate = lambda m: evaluate_pairs(m, val_pairs, tile=config.val_tile, device=config.device)  # noqa: E731
    return fit(model, batches, config, validate, checkpoint, meta, resume, progress)
