"""Restoration backbones, a registry by name, plus classical baselines that need no training.

Uniform call
------------
Every restorer is an ``nn.Module`` called as ``model(x, **extra)``:

* ``x`` is the degraded batch ``(N, B, h, w)`` float32 on the [0, 1] scale;
* ``extra`` holds the task's extra inputs (:meth:`hiralign.tasks.Task.extra_inputs`): nothing for
  denoising and super-resolution, ``mask=`` (``(N, B, h, w)``, 1 = observed) for the ``general``
  family (deblur, band completion, inpainting);
* the result is the restored batch ``(N, B, H, W)``; super-resolution backbones take the
  low-resolution batch and return ``H = h * scale``, with ``scale`` fixed when the model is built.

Optional attributes help inference: ``receptive_radius`` (pixels of input that one output pixel
sees on each side; ``None`` for global models) and ``tile_align`` (tile offsets must be multiples of
it for tiled inference to be exact). Both default to "unknown" for foreign modules.

Plugging in your own model
--------------------------
Any ``nn.Module`` with that call works everywhere a registry model does (training, proxies,
checkpoints via ``load_checkpoint(path, model=...)``)::

    class MyDenoiser(nn.Module):
        def __init__(self, bands):
            super().__init__()
            self.net = nn.Conv2d(bands, bands, 3, padding=1)
        def forward(self, x):
            return x - self.net(x)

    train(MyDenoiser(31), cubes, "denoise-gaussian")
    make_proxies(model, degraded_cubes, "denoise-gaussian")

To make it available by name (``get("my-denoiser", bands, task)``), register a builder taking
``bands`` (and ``scale`` for the ``sr`` family) plus its config keywords::

    register("my-denoiser", "denoise", small={}, large={})(MyDenoiser)

Registered backbones (``names()``): ``spectral-cnn`` (denoise, CPU demo default), ``qrnn3d``,
``sert`` (denoise); ``sspsr`` (SR, CPU default), ``essa`` (SR); ``general-unet`` (general).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from hiralign.registry import Registry
from hiralign.tasks import FAMILIES, Task, get_task

SIZES = ("small", "large")


@dataclass(frozen=True)
class Backbone:
    """A registered backbone: ``build(bands=..., [scale=...], **cfg)`` for tasks of ``family``."""

    name: str
    family: str
    build: Callable[..., nn.Module]
    configs: dict[str, dict]
    description: str = ""


_REGISTRY: Registry[Backbone] = Registry("backbone")

#: The backbone a task uses when none is named (the CPU-friendly one of each family).
DEFAULTS = {"denoise": "spectral-cnn", "sr": "sspsr", "general": "general-unet"}


def register(name: str, family: str, small: dict, large: dict, description: str = "") -> Callable:
    """Decorator registering ``build`` (a class or function) as backbone ``name`` of ``family``
    with its ``small`` and ``large`` configurations."""
    if family not in FAMILIES:
        raise ValueError(f"unknown backbone family {family!r}; known: {', '.join(FAMILIES)}")

    def decorate(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        doc = description or (build.__doc__ or "").strip().split("\n")[0]
        _REGISTRY.register(name, Backbone(name, family, build, {"small": dict(small), "large": dict(large)}, doc))
        return build

    return decorate


def backbone(name: str) -> Backbone:
    """The registry entry ``name``; unknown names list the known ones (a ``ValueError``)."""
    return _REGISTRY.get(name)


def names(task: str | Task | None = None) -> list[str]:
    """Registered backbone names, optionally only those that solve ``task``."""
    if task is None:
        return _REGISTRY.names()
    family = get_task(task).family
    return [n for n, b in _REGISTRY.items() if b.family == family]


def default_backbone(task: str | Task) -> str:
    """The default (CPU-friendly) backbone for ``task``."""
    return DEFAULTS[get_task(task).family]


def resolve_config(name: str, size: str = "small", **cfg: Any) -> dict:
    """The configuration ``size`` of backbone ``name`` updated by ``cfg``."""
    entry = backbone(name)
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {SIZES}")
    return {**entry.configs[size], **cfg}


def get(name: str, bands: int, task: str | Task, size: str = "small", **cfg: Any) -> nn.Module:
    """Build backbone ``name`` for ``bands`` bands and ``task`` in its ``size`` configuration
    (``"small"`` or ``"large"``), overridden by ``cfg``.

    The model records how it was built in ``model.build_config`` (backbone, size, cfg, bands, task,
    scale), which :func:`hiralign.train.save_checkpoint` stores with the weights.
    """
    entry = backbone(name)
    task = get_task(task)
    if entry.family != task.family:
        raise ValueError(
            f"backbone {name!r} is a {entry.family} model and cannot solve task {task.name!r} "
            f"({task.family}); backbones for it: {', '.join(names(task))}"
        )
    if int(bands) < 1:
        raise ValueError(f"bands must be a positive integer; got {bands}")
    config = resolve_config(name, size, **cfg)
    kwargs = {"scale": task.scale} if task.family == "sr" else {}
    model = entry.build(bands=int(bands), **kwargs, **config)
    model.build_config = {
        "backbone": name, "size": size, "cfg": config, "bands": int(bands), "task": task.name, "scale": task.scale,
    }
    return model


# Importing the modules registers their backbones.
from hiralign.restorers import denoise_cnn, qrnn3d, sert  # noqa: E402,F401  (denoise)
from hiralign.restorers import sspsr, essa  # noqa: E402,F401,I001  (super-resolution)
from hiralign.restorers import general  # noqa: E402,F401  (general)

__all__ = ["Backbone", "DEFAULTS", "SIZES", "backbone", "default_backbone", "get", "names", "register",
           "resolve_config"]
