"""Checkpoints: safetensors weights whose header holds the JSON config (backbone, cfg, bands, task,
wavelengths, training parameters, metrics, history), plus the committed demo checkpoints."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import hiralign
from hiralign import restorers
from hiralign.errors import UserError
from hiralign.tasks import Task, get_task

#: Folder of the committed demo checkpoints (see its README.md for the regenerate commands).
CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / "checkpoints"
CHECKPOINT_FORMAT = "hiralign-checkpoint/1"


class CheckpointError(UserError, ValueError):
    """A checkpoint is unreadable or was made for other data (bands / task); the message names both."""


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
    state = unshared(model.state_dict())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(state, str(tmp), metadata={"hiralign": json.dumps(full, default=_json_default)})
    os.replace(tmp, path)
    return path


def unshared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` on the CPU with every tensor in memory of its own. safetensors refuses tensors that
    share memory, as the entries of a network reaching one module by two names do (the official
    SSUMamba's decoder holds its encoder); each alias is stored as a copy, and loading fills every
    name with the same values."""
    seen: set[int] = set()
    out = {}
    for key, value in state.items():
        value = value.detach().cpu()
        pointer = value.untyped_storage().data_ptr()
        out[key] = value.clone() if pointer in seen else value.contiguous()
        seen.add(pointer)
    return out


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

    The model is rebuilt by :func:`hiralign.restorers.from_build_config` (a registry backbone, or a
    plugged one through its recorded factory), or ``model`` (e.g. a module built outside hiralign)
    receives the weights.
    """
    path = Path(path)
    config = read_checkpoint_config(path)
    check_compatible(path, config, bands, task)
    if model is None:
        if "backbone" not in config:
            raise CheckpointError(f"checkpoint {path} holds a model built outside the registry; pass model=")
        model = restorers.from_build_config(config)
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
