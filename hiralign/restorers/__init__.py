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
checkpoints via ``load_checkpoint(path, model=...)``, ``finetune(..., model=...)``)::

    class MyDenoiser(nn.Module):
        def __init__(self, bands):
            super().__init__()
            self.net = nn.Conv2d(bands, bands, 3, padding=1)
        def forward(self, x):
            return x - self.net(x)

    train(MyDenoiser(31), cubes, "denoise-gaussian")
    make_proxies(model, degraded_cubes, "denoise-gaussian")

To use it by name in every process (parameter files, the notebook kernels of ``hiralign run``),
name its factory by import path -- ``get("my_pkg.nets:MyDenoiser", bands, task, **kwargs)`` or
``backbone: models.py:MyDenoiser`` in params -- or declare an entry point of the group
``hiralign.backbones``. The adapter of :mod:`hiralign.restorers.plugins` takes networks in the
``(N, 1, B, H, W)`` layout of 3-D convolution networks, pads inputs to the network's multiple, and
hands the band count and SR scale to the factory under its own keyword names; checkpoints record
the factory, so they reload anywhere. Released weights of other code bases (``.pth`` ...) load
with :func:`hiralign.train.load_released`. A builder can also be registered under a short name::

    register("my-denoiser", "denoise", small={}, large={})(MyDenoiser)

Registered backbones (``names()``): ``spectral-cnn`` (denoise, CPU demo default), ``qrnn3d``,
``sert`` (denoise); ``sspsr`` (SR, CPU default), ``essa`` (SR); ``general-unet`` (general).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from hiralign.registry import Registry
from hiralign.restorers import plugins
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


def get(name: str, bands: int, task: str | Task, size: str = "small", layout: str = "", multiple: int = 0,
        **cfg: Any) -> nn.Module:
    """Build backbone ``name`` for ``bands`` bands and ``task`` in its ``size`` configuration
    (``"small"`` or ``"large"``), overridden by ``cfg``.

    A name that is not registered may be an import path, a file path or an entry point
    (:mod:`hiralign.restorers.plugins`): its factory gets ``cfg`` as keywords and the network is
    wrapped in the adapter given by ``layout`` / ``multiple`` (``size`` does not apply).

    The model records how it was built in ``model.build_config`` (backbone, size, cfg, bands, task,
    scale; the factory and adapter of a plugged one), which :func:`hiralign.train.save_checkpoint`
    stores with the weights and :func:`from_build_config` rebuilds from.
    """
    task = get_task(task)
    if int(bands) < 1:
        raise ValueError(f"bands must be a positive integer; got {bands}")
    if name not in _REGISTRY and plugins.plugin_target(name) is not None:
        model = plugins.build_plugged(name, int(bands), task.scale, cfg, layout, multiple)
        model.build_config["task"] = task.name
        return model
    entry = backbone(name)
    if layout or multiple:
        raise plugins.PluginError(f"layout / multiple adapt plugged backbones; {name!r} is registered and declares its own")
    if entry.family != task.family:
        raise ValueError(
            f"backbone {name!r} is a {entry.family} model and cannot solve task {task.name!r} "
            f"({task.family}); backbones for it: {', '.join(names(task))}"
        )
    config = resolve_config(name, size, **cfg)
    kwargs = {"scale": task.scale} if task.family == "sr" else {}
    model = entry.build(bands=int(bands), **kwargs, **config)
    model.build_config = {
        "backbone": name, "size": size, "cfg": config, "bands": int(bands), "task": task.name, "scale": task.scale,
    }
    return model


def from_build_config(config: dict) -> nn.Module:
    """The (untrained) model a stored ``build_config`` describes: a registry backbone, or a plugged
    one through its recorded factory (an absolute path for a file factory) and adapter."""
    adapter = config.get("adapter", {})
    name = config.get("factory") or config["backbone"]
    model = get(name, config["bands"], config["task"], config.get("size", "small"), layout=adapter.get("layout", ""),
                multiple=adapter.get("multiple", 0), **config.get("cfg", {}))
    model.build_config["backbone"] = config["backbone"]
    return model


def is_known(name: str) -> bool:
    """A registered backbone, or a name :mod:`~hiralign.restorers.plugins` can resolve (not imported yet)."""
    return name in _REGISTRY or plugins.plugin_target(name) is not None


# Importing the modules registers their backbones.
from hiralign.restorers import denoise_cnn, tiny  # noqa: E402,F401

__all__ = ["Backbone", "DEFAULTS", "SIZES", "backbone", "default_backbone", "from_build_config", "get", "is_known",
           "names", "plugins", "register", "resolve_config"]
