"""The on-disk cache of what hiralign trains or builds once and reuses.

Models learnt on a run's proxies (the ``local-ddpm`` guide generator, the ``ubf`` and ``hsigene``
HSI generators) and the embedded benchmark live under one root, ``$HIRALIGN_CACHE`` or
``~/.cache/hiralign``. A model's folder is named by :func:`content_key`, a hash of everything its
training depends on, so a change of setting or of proxy pixels trains anew and an unchanged one is
loaded; :func:`load_or_train` writes a new entry atomically, so two processes training the same
model never leave a half-written folder behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

Model = TypeVar("Model")


def cache_root() -> Path:
    """``$HIRALIGN_CACHE`` if set, else ``~/.cache/hiralign``."""
    return Path(os.environ.get("HIRALIGN_CACHE") or Path.home() / ".cache" / "hiralign")


def content_key(settings: dict, *arrays: np.ndarray) -> str:
    """20 hex digits hashing ``settings`` (JSON), the diffusers and torch versions and each array's
    shape, dtype and bytes (callers pass arrays in the dtype their training reads)."""
    import diffusers
    import torch

    digest = hashlib.sha256()
    digest.update(json.dumps(settings, sort_keys=True).encode())
    digest.update(f"diffusers {diffusers.__version__} torch {torch.__version__}".encode())
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.shape} {array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:20]


def model_folder(kind: str, cache_dir: Path | str | None, settings: dict, *arrays: np.ndarray) -> Path:
    """``cache_dir / content_key(settings, *arrays)``; ``cache_dir`` defaults to ``cache_root() / kind``."""
    return Path(cache_dir or cache_root() / kind) / content_key(settings, *arrays)


def load_or_train(folder: Path, marker: str, train: Callable[[], Model], save: Callable[[Model, Path], Path],
                  load: Callable[[Path], Model]) -> Model:
    """The model cached in ``folder`` (complete once ``folder / marker`` exists), else ``train()``'s,
    saved by ``save(model, path)`` into a temporary sibling that is renamed into place."""
    folder = Path(folder)
    if (folder / marker).exists():
        return load(folder)
    model = train()
    tmp = save(model, folder.with_name(f"{folder.name}.tmp{os.getpid()}"))
    if folder.exists():  # another process cached the same model meanwhile
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, folder)  # atomic: a half-written cache entry is never visible
    return model


def save_denoiser(folder: Path, unet, scheduler, meta: dict, marker: str) -> Path:
    """A diffusers noise predictor and its scheduler in their ``save_pretrained`` layouts beside
    ``marker`` (JSON ``meta``), written last so that it marks a complete folder."""
    folder = Path(folder)
    unet.save_pretrained(folder / "unet")
    scheduler.save_pretrained(folder / "scheduler")
    (folder / marker).write_text(json.dumps(meta))
    return folder


def load_denoiser(folder: Path, unet_class, marker: str) -> tuple:
    """``(unet, DDPMScheduler, meta)`` written by :func:`save_denoiser`."""
    import diffusers

    folder = Path(folder)
    meta = json.loads((folder / marker).read_text())
    return unet_class.from_pretrained(folder / "unet"), diffusers.DDPMScheduler.from_pretrained(folder / "scheduler"), meta
