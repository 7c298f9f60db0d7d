"""Stage 1: the source-pretrained restorer -- pretraining on the embedded benchmark or ICVL, or a
matching checkpoint (given, committed demo, or from an earlier run). ``hiralign pretrain`` is its
command line (:mod:`hiralign.cli.pretrain`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

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
             backbone: str | None = None, size: str | None = None, out: str | Path | None = None,
             source: str = "", resume: bool = True, progress: bool = True, **cfg: Any) -> TrainResult:
    """Build backbone ``backbone`` (default: the task's CPU default) for the cubes' band count and
    train it on ``train_cubes`` for ``task``; the checkpoint records the source and wavelengths."""
    task = get_task(task)
    model = seeded_backbone(backbone or restorers.default_backbone(task), train_cubes[0].bands, task, config.seed, size, cfg)
    return train(model, train_cubes, task, config, val_cubes=val_cubes, checkpoint=out,
                 meta=source_meta(train_cubes, source), resume=resume, progress=progress)


def seeded_backbone(backbone: str, bands: int, task: Task, seed: int, size: str | None = None,
                    cfg: Mapping[str, Any] | None = None) -> torch.nn.Module:
    """Backbone ``backbone`` (configuration ``size``, keywords ``cfg``) with initial weights drawn from ``seed``."""
    torch.manual_seed(seed)
    return restorers.get(backbone, bands, task, size=size, **dict(cfg or {}))


def source_meta(train_cubes: Sequence[Cube], source: str) -> dict[str, Any]:
    """What a source checkpoint records of its training data: wavelengths and a description."""
    return {"wavelengths": train_cubes[0].wavelengths.tolist(), "source": source}


def _check_backbone(path: Path, config: dict, backbone: str) -> None:
    if backbone and config.get("backbone") != backbone:
        raise CheckpointError(f"checkpoint {path} holds backbone {config.get('backbone')!r}, but backbone "
                              f"{backbone!r} was requested; leave backbone empty or pass a matching checkpoint")


def demo_fits(demo_config: dict, train_cubes: Sequence[Cube], backbone: str = "", size: str = "") -> bool:
    """A committed demo checkpoint stands for the source model only on the data it was trained on: the
    embedded synthetic source, with its band count and the named ``backbone`` and configuration ``size`` (if any)."""
    synthetic = all(c.meta.get("synthetic", False) for c in train_cubes)
    return (synthetic and demo_config.get("bands") == train_cubes[0].bands
            and (not backbone or demo_config.get("backbone") == backbone)
            and (not size or demo_config.get("size") == size))


def released_source(task: Task, bands: int, checkpoint: str | Path, backbone: str, backbone_kwargs: Mapping[str, Any],
                    out: str | Path | None, device: str = "cpu", size: str | None = None) -> Checkpoint:
    """A released checkpoint (:mod:`hiralign.train.released`) loaded into ``backbone`` (configuration
    ``size``, default its first) built for ``bands`` and ``task``; every key must match. Saved at ``out`` as a hiralign checkpoint that
    records the file, its sha256 and the key report, so the later stages read it like any other."""
    from hiralign.store import file_digest
    from hiralign.train.checkpoint import save_checkpoint
    from hiralign.train.released import load_released

    if not backbone:
        raise CheckpointError(f"checkpoint {checkpoint} is not a hiralign checkpoint, so it does not say which network "
                              "it holds: name its backbone (a registered one, or package.module:factory)")
    model = restorers.get(backbone, bands, task, size=size, **backbone_kwargs)
    report = load_released(model, checkpoint)
    meta = {"task": task.name, "bands": bands, "source": f"released checkpoint {Path(checkpoint).name}",
            "released": {"path": str(checkpoint), "sha256": file_digest(checkpoint), "report": report.summary()}}
    if out is None:
        return Checkpoint(model.to(device).eval(), {**model.build_config, **meta}, None)
    save_checkpoint(out, model, meta)
    return load_checkpoint(out, bands, task, device)


def _reusable(out: str | Path | None, model: torch.nn.Module, config: TrainConfig) -> bool:
    """An earlier pretraining at ``out`` of the same network (backbone, configuration, adapter) and training parameters."""
    if out is None or not Path(out).exists():
        return False
    stored, built = read_checkpoint_config(out), model.build_config
    same_net = all(stored.get(k) == built.get(k) for k in ("backbone", "size", "cfg", "adapter", "bands", "task"))
    train_params = {k: v for k, v in stored.get("train", {}).items() if k not in ("device", "val_tile")}
    return same_net and train_params == config.resumable()


def source_model(task: str | Task, train_cubes: Sequence[Cube], val_cubes: Sequence[Cube] = (), checkpoint: str = "",
                 backbone: str = "", out: str | Path | None = None, config: TrainConfig | None = None,
                 device: str = "cpu", source: str = "", progress: bool = True,
                 backbone_kwargs: Mapping[str, Any] | None = None, backbone_config: str = "") -> Checkpoint:
    """The source-pretrained restorer ``R_theta`` of stage 1, for the band count of ``train_cubes``:

    1. ``checkpoint`` when given (it must match bands, task and ``backbone`` if one is named); a
       released checkpoint of another code base (``.pth`` ...) is loaded into ``backbone`` and
       saved at ``out`` (:func:`released_source`);
    2. else, when ``train_cubes`` are the embedded synthetic benchmark (the source the demo checkpoints
       were trained on), the committed demo checkpoint of the task, if its backbone is ``backbone``
       (or none is named) and its band count is theirs; a real source (ICVL) never gets it;
    3. else the checkpoint at ``out`` from an earlier call with the same network and training parameters;
    4. else ``backbone`` (default: the task's CPU default; a registered name or a plugged one,
       :mod:`hiralign.restorers.plugins`, built in its named configuration ``backbone_config``, default its
       first, with ``backbone_kwargs``) pretrained on
       ``train_cubes`` with ``config``, saved at ``out`` (``source`` describes the training data).
    """
    from hiralign.train.released import is_released

    task = get_task(task)
    bands = train_cubes[0].bands
    kwargs = dict(backbone_kwargs or {})
    if checkpoint and is_released(checkpoint):
        return released_source(task, bands, checkpoint, backbone, kwargs, out, device, backbone_config or None)
    if checkpoint:
        loaded = load_checkpoint(checkpoint, bands, task, device)
        _check_backbone(Path(checkpoint), loaded.config, backbone)
        return loaded
    demo = CHECKPOINT_DIR / f"{task.name}.safetensors"
    if not kwargs and demo.exists() and demo_fits(read_checkpoint_config(demo), train_cubes, backbone, backbone_config):
        return load_checkpoint(demo, bands, task, device)
    config = config or TrainConfig(device=device)
    model = seeded_backbone(backbone or restorers.default_backbone(task), bands, task, config.seed, backbone_config or None,
                            kwargs)
    if _reusable(out, model, config):
        return load_checkpoint(out, bands, task, device)
    result = train(model, train_cubes, task, config, val_cubes=val_cubes, checkpoint=out,
                   meta=source_meta(train_cubes, source), progress=progress)
    return Checkpoint(result.model.eval(), read_checkpoint_config(out) if out is not None else {},
                      None if out is None else Path(out))
