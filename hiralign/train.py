"""Supervised training of restorers: source pretraining (stage 1) and the loop reused by finetuning (stage 3).

Two entry points share one loop (:func:`fit`):

* :func:`train` -- from *clean* cubes and a task: every step samples random patches (seeded by
  ``(seed, epoch)``), augments them (flips, 90-degree rotations) and degrades them on the fly with
  :mod:`hiralign.degrade`, so the noise is re-drawn every epoch. ``weights`` sets how often each
  cube is sampled (e.g. a source / synthetic-target mixture ratio).
* :func:`train_pairs` -- from explicit ``(degraded, clean, extra)`` :class:`Pair` s, a fixed list
  or a function ``epoch -> pairs`` (to re-draw them every epoch); aligned patches are cropped
  (flips only: rotating a striped observation would turn column stripes into row stripes).

Optimiser AdamW with a per-step cosine schedule, L1 loss by default, gradient clipping, validation
PSNR / SSIM / SAM after every epoch, tqdm progress. With ``checkpoint=PATH`` the loop saves a resume
state ``PATH.resume.pt`` after every epoch (an interrupted run continues where it stopped) and the
final checkpoint at ``PATH``: safetensors weights whose header holds the JSON config (backbone,
cfg, bands, task, wavelengths, training parameters, metrics, history).

``hiralign pretrain`` (:func:`pretrain_main`) pretrains a backbone on the source domain of the
embedded benchmark, or on ICVL scenes.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

import hiralign
from hiralign import restorers
from hiralign.data import Cube
from hiralign.degrade import upsample_bicubic
from hiralign.metrics import evaluate
from hiralign.restorers.inference import restore
from hiralign.tasks import Task, get_task

#: Folder of the committed demo checkpoints (see its README.md for the regenerate commands).
CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
CHECKPOINT_FORMAT = "hiralign-checkpoint/1"
#: Validation observations use seeds ``VALIDATION_SEED + i`` so every epoch sees the same ones.
VALIDATION_SEED = 10_000


class CheckpointError(ValueError):
    """A checkpoint is unreadable or was made for other data (bands / task); the message names both."""


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
class Pair:
    """A training / validation pair: ``degraded`` ``(B, h, w)``, ``clean`` ``(B, H, W)`` and the
    task's extra inputs (e.g. ``mask``) as ``(B, h, w)`` arrays."""

    degraded: np.ndarray
    clean: np.ndarray
    extra: dict = field(default_factory=dict)


@dataclass
class TrainResult:
    """The trained model, one history row per epoch, and the checkpoint path (if saved)."""

    model: nn.Module
    history: list[dict]
    checkpoint: Path | None = None

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


Batch = tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]


# ----------------------------------------------------------------------------- patches and pairs


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
    """``n`` random clean ``patch x patch`` crops (augmented), each degraded by ``task`` with its own seed."""
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
        observed = task.degrade(clean, seed=int(rng.integers(2**31)))
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
    window = (slice(None), slice(top, top + lr), slice(left, left + lr))
    hr = (slice(None), slice(top * scale, (top + lr) * scale), slice(left * scale, (left + lr) * scale))
    keys = list(pair.extra)
    arrays = [pair.degraded[window], pair.clean[hr], *(pair.extra[k][window] for k in keys)]
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


# ----------------------------------------------------------------------------- evaluation


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


# ----------------------------------------------------------------------------- the loop


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
    meta = {"task": task.name, **(meta or {})}
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


# ----------------------------------------------------------------------------- checkpoints


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (np.ndarray, tuple)):
        return list(np.asarray(value).tolist())
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{value!r} is not JSON-serialisable")


def save_checkpoint(path: str | Path, model: nn.Module, config: dict | None = None) -> Path:
    """Write ``model``'s weights as safetensors with a JSON config in the header (atomically).

    The config is the model's ``build_config`` (set by :func:`hiralign.restorers.get`: backbone,
    size, cfg, bands, task, scale) updated by ``config`` (wavelengths, train, metrics ...).
    """
    path = Path(path)
    full = {"format": CHECKPOINT_FORMAT, **getattr(model, "build_config", {}), **(config or {}),
            "code_version": hiralign.__version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(state, str(tmp), metadata={"hiralign": json.dumps(full, default=_json_default)})
    os.replace(tmp, path)
    return path


def read_checkpoint_config(path: str | Path) -> dict:
    """The JSON config stored in a checkpoint's header."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"checkpoint {path} is not a readable safetensors file ({err})") from err
    if "hiralign" not in meta:
        raise CheckpointError(f"checkpoint {path} has no hiralign config in its header")
    return json.loads(meta["hiralign"])


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (eval mode, on the requested device), its stored config and file."""

    model: nn.Module
    config: dict
    path: Path | None = None


def check_compatible(path: str | Path, config: dict, bands: int | None, task: str | Task | None) -> None:
    """Raise :class:`CheckpointError` when the checkpoint's bands / task differ from the requested ones."""
    want_task = None if task is None else get_task(task).name
    bad_bands = bands is not None and int(bands) != config.get("bands")
    bad_task = want_task is not None and want_task != config.get("task")
    if bad_bands or bad_task:
        raise CheckpointError(
            f"checkpoint {path} was trained for {config.get('bands')} bands and task {config.get('task')!r}, "
            f"but {bands if bands is not None else config.get('bands')} bands and task "
            f"{want_task if want_task is not None else config.get('task')!r} were requested; "
            "use a checkpoint made for this data and task (or pretrain one: hiralign pretrain --help)"
        )


def load_checkpoint(path: str | Path, bands: int | None = None, task: str | Task | None = None,
                    device: str | torch.device = "cpu", model: nn.Module | None = None) -> Checkpoint:
    """Load a checkpoint, checking it was made for ``bands`` bands and ``task`` (when given).

    The model is rebuilt from the registry by the stored backbone / size / cfg, or ``model`` (e.g. a
    user-defined module) receives the weights.
    """
    path = Path(path)
    config = read_checkpoint_config(path)
    check_compatible(path, config, bands, task)
    if model is None:
        if "backbone" not in config:
            raise CheckpointError(f"checkpoint {path} holds a model built outside the registry; pass model=")
        model = restorers.get(config["backbone"], config["bands"], config["task"], config.get("size", "small"),
                              **config.get("cfg", {}))
    try:
        model.load_state_dict(load_file(str(path), device=str(device)))
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path} does not fit the model: {err}") from err
    return Checkpoint(model.to(device).eval(), config, path)


def demo_checkpoint(task: str | Task) -> Path:
    """The committed demo checkpoint of ``task`` (raises if there is none)."""
    name = get_task(task).name
    path = CHECKPOINT_DIR / f"{name}.safetensors"
    if not path.exists():
        available = sorted(p.stem for p in CHECKPOINT_DIR.glob("*.safetensors"))
        raise CheckpointError(f"no demo checkpoint for task {name!r} in {CHECKPOINT_DIR}; available: {available}. "
                              f"Pretrain one with `hiralign pretrain --task {name}`")
    return path


# ----------------------------------------------------------------------------- source pretraining


def source_cubes(icvl: str | None, image_size: int, seed: int) -> tuple[list[Cube], list[Cube], list[Cube], str]:
    """(train, validation, target, label) cubes for pretraining: the embedded benchmark's source
    train / source test / target observed splits, or ICVL tiles (last 10% of tiles for validation,
    no target)."""
    if icvl:
        from hiralign.data import load
        from hiralign.data.stage import scene_files, tiles

        pool = [t for f in scene_files(icvl) for t in tiles(load(f, kind="icvl"), image_size)]
        if len(pool) < 2:
            raise ValueError(f"{icvl}: only {len(pool)} tiles of {image_size} px; need at least 2")
        order = np.random.default_rng(seed).permutation(len(pool))
        n_val = max(1, len(pool) // 10)
        return ([pool[i] for i in order[n_val:]], [pool[i] for i in order[:n_val]], [],
                f"ICVL {icvl} ({len(pool)} tiles of {image_size} px)")
    from hiralign.data.synthetic import make_benchmark

    bench = make_benchmark(size=image_size, seed=seed)
    label = f"embedded SYNTHETIC benchmark source domain (size {image_size}, seed {seed})"
    return bench.source_train, bench.source_test, bench.target_observed, label


def pretrain(task: str | Task, train_cubes: Sequence[Cube], val_cubes: Sequence[Cube], config: TrainConfig,
             backbone: str | None = None, size: str = "small", out: str | Path | None = None,
             source: str = "", resume: bool = True, progress: bool = True, **cfg: Any) -> TrainResult:
    """Build backbone ``backbone`` (default: the task's CPU default) for the cubes' band count and
    train it on ``train_cubes`` for ``task``; the checkpoint records the source and wavelengths."""
    task = get_task(task)
    backbone = backbone or restorers.default_backbone(task)
    torch.manual_seed(config.seed)
    model = restorers.get(backbone, train_cubes[0].bands, task, size=size, **cfg)
    meta = {"wavelengths": train_cubes[0].wavelengths.tolist(), "source": source}
    return train(model, train_cubes, task, config, val_cubes=val_cubes, checkpoint=out, meta=meta, resume=resume,
                 progress=progress)


def _check_backbone(path: Path, config: dict, backbone: str) -> None:
    if backbone and config.get("backbone") != backbone:
        raise CheckpointError(f"checkpoint {path} holds backbone {config.get('backbone')!r}, but backbone "
                              f"{backbone!r} was requested; leave backbone empty or pass a matching checkpoint")


def source_model(task: str | Task, train_cubes: Sequence[Cube], val_cubes: Sequence[Cube] = (), checkpoint: str = "",
                 backbone: str = "", out: str | Path | None = None, config: TrainConfig | None = None,
                 device: str = "cpu", source: str = "", progress: bool = True) -> Checkpoint:
    """The source-pretrained restorer ``R_theta`` of stage 1, for the band count of ``train_cubes``:

    1. ``checkpoint`` when given (it must match bands, task and ``backbone`` if one is named);
    2. else the committed demo checkpoint of the task, if its backbone is ``backbone`` (or none is named);
    3. else the checkpoint at ``out`` from an earlier call with the same backbone and training parameters;
    4. else ``backbone`` (default: the task's CPU default) pretrained on ``train_cubes`` with
       ``config``, saved at ``out`` (``source`` describes the training data in its config).
    """
    task = get_task(task)
    bands = train_cubes[0].bands
    if checkpoint:
        loaded = load_checkpoint(checkpoint, bands, task, device)
        _check_backbone(Path(checkpoint), loaded.config, backbone)
        return loaded
    demo = CHECKPOINT_DIR / f"{task.name}.safetensors"
    if demo.exists() and (not backbone or read_checkpoint_config(demo).get("backbone") == backbone):
        return load_checkpoint(demo, bands, task, device)
    config = config or TrainConfig(device=device)
    backbone = backbone or restorers.default_backbone(task)
    if out is not None and Path(out).exists():
        stored = read_checkpoint_config(out)
        same = (stored.get("backbone") == backbone and stored.get("bands") == bands and stored.get("task") == task.name
                and {k: v for k, v in stored.get("train", {}).items() if k not in ("device", "val_tile")}
                == config.resumable())
        if same:
            return load_checkpoint(out, bands, task, device)
    result = pretrain(task, train_cubes, val_cubes, config, backbone=backbone, out=out, progress=progress,
                      source=source)
    return Checkpoint(result.model.eval(), read_checkpoint_config(out) if out is not None else {},
                      None if out is None else Path(out))


def pretrain_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    p = argparse.ArgumentParser(prog="hiralign pretrain",
                                description="Pretrain a restorer on the source domain (embedded benchmark or ICVL).")
    p.add_argument("--task", default="denoise-gaussian", help="task name (hiralign.tasks.TASKS)")
    p.add_argument("--backbone", default=None, help="registered backbone (default: the task's CPU default)")
    p.add_argument("--size", default="small", choices=restorers.SIZES, help="backbone configuration")
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--steps-per-epoch", type=int, default=defaults.steps_per_epoch)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--patch-size", type=int, default=defaults.patch_size)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--loss", default=defaults.loss, choices=sorted(LOSSES))
    p.add_argument("--out", required=True, help="checkpoint path (.safetensors); resumes from OUT.resume.pt")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0, help="seeds the benchmark, patches, noise and weights")
    p.add_argument("--image-size", type=int, default=64, help="benchmark image size / ICVL tile size")
    p.add_argument("--icvl", default=None, metavar="PATH", help="ICVL .mat file or folder (instead of the benchmark)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is fastest on a busy machine)")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing resume state")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def pretrain_main(argv: Sequence[str] | None = None) -> int:
    """``hiralign pretrain``: train, save the checkpoint, print source and target scores."""
    args = pretrain_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
                         patch_size=args.patch_size, lr=args.lr, loss=args.loss, seed=args.seed, device=args.device)
    train_cubes, val_cubes, target, source = source_cubes(args.icvl, args.image_size, args.seed)
    tic, cpu_tic = time.perf_counter(), time.process_time()
    result = pretrain(args.task, train_cubes, val_cubes, config, backbone=args.backbone, size=args.size,
                      out=args.out, source=source, progress=not args.quiet, resume=not args.no_resume)
    minutes, cpu_minutes = (time.perf_counter() - tic) / 60, (time.process_time() - cpu_tic) / 60
    scores = {"source_test": result.final}
    if target:
        scores["target_observed"] = evaluate_restorer(result.model, target, args.task, device=args.device)
    save_checkpoint(args.out, result.model, {**read_checkpoint_config(args.out), "evaluation": scores,
                                             "train_minutes": minutes, "train_cpu_minutes": cpu_minutes,
                                             "command": "python -m hiralign.train " + " ".join(argv or [])})
    for split, s in scores.items():
        print(f"{split:>16s}: input PSNR {s['input_psnr']:.2f} dB -> restored {s['psnr']:.2f} dB "
              f"(SSIM {s['ssim']:.3f}, SAM {s['sam']:.2f} deg)")
    print(f"saved {args.out} ({Path(args.out).stat().st_size / 1e6:.2f} MB) after {minutes:.1f} min "
          f"({cpu_minutes:.1f} CPU min)")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(pretrain_main(sys.argv[1:]))
