"""Stage 1: the source-pretrained restorer -- pretraining on the embedded benchmark or ICVL, or a
matching checkpoint (given, committed demo, or from an earlier run). ``hiralign pretrain`` is its
command line (:mod:`hiralign.cli.pretrain`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from hiralign import restorers
from hiralign.data import Cube
from hiralign.tasks import Task, get_task
from hiralign.train.checkpoint import (CHECKPOINT_DIR, Checkpoint, CheckpointError, load_checkpoint,
                                       read_checkpoint_config)
from hiralign.train.loop import TrainConfig, TrainResult, train


def source_cubes(icvl: str | None, image_size: int, seed: int) -> tuple[list[Cube], list[Cube], list[Cube], str]:
    """(train, validation, target, label) cubes for pretraining: the embedded benchmark's source
    train / source test / target observed splits, or ICVL tiles (last 10% of tiles for validation,
    no target)."""
    if icvl:
        from hiralign.data import load
        from hiralign.data.tiling import scene_files, tiles

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


def demo_fits(demo_config: dict, train_cubes: Sequence[Cube], backbone: str = "") -> bool:
    """A committed demo checkpoint stands for the source model only on the data it was trained on: the
    embedded synthetic source, with its band count and the named ``backbone`` (if any)."""
    synthetic = all(c.meta.get("synthetic", False) for c in train_cubes)
    return (synthetic and demo_config.get("bands") == train_cubes[0].bands
            and (not backbone or demo_config.get("backbone") == backbone))


def source_model(task: str | Task, train_cubes: Sequence[Cube], val_cubes: Sequence[Cube] = (), checkpoint: str = "",
                 backbone: str = "", out: str | Path | None = None, config: TrainConfig | None = None,
                 device: str = "cpu", source: str = "", progress: bool = True) -> Checkpoint:
    """The source-pretrained restorer ``R_theta`` of stage 1, for the band count of ``train_cubes``:

    1. ``checkpoint`` when given (it must match bands, task and ``backbone`` if one is named);
    2. else, when ``train_cubes`` are the embedded synthetic benchmark (the source the demo checkpoints
       were trained on), the committed demo checkpoint of the task, if its backbone is ``backbone``
       (or none is named) and its band count is theirs; a real source (ICVL) never gets it;
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
    if demo.exists() and demo_fits(read_checkpoint_config(demo), train_cubes, backbone):
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
