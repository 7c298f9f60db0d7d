"""Restoration backbones, a registry by name, plus classical baselines that need no training.

Uniform call
------------
Every restorer is an ``nn.Module`` called as ``model(x, **extra)``:

* ``x`` is the degraded batch ``(N, B, h, w)`` float32 on the [0, 1] scale;
* ``extra`` holds the task's extra inputs (:meth:`hiralign.tasks.Task.extra_inputs`): nothing for
  denoising and super-resolution, ``ref=`` (``(N, 3, H, W)``, an unregistered HR RGB) for
  reference-based SR (``sr-ref``), ``mask=`` (``(N, B, h, w)``, 1 = observed) for the ``general``
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

    register("my-denoiser", "denoise", {"small": {}, "large": {"channels": 64}})(MyDenoiser)

Registered backbones (``names()``)
----------------------------------
* The paper's backbones, faithful to their publications (:mod:`hiralign.restorers.paper`; released
  weights load): ``qrnn3d``, ``t3sc``, ``sert``, ``ssumamba`` (denoise); ``mcnet``, ``sspsr``,
  ``essaformer`` (SR); ``promptir`` (general); ``uafl`` (reference-based SR,
  written from the paper: no code was released). Configurations ``paper`` (the default, the
  published size) and ``tiny`` (same code paths, a few channels: CPU tests and fixture runs).
* CPU-sized stand-ins in their spirit (:mod:`hiralign.restorers.tiny`, the mini profile and the
  demo): ``spectral-cnn`` (denoise default), ``tiny-qrnn3d``, ``tiny-sert`` (denoise);
  ``tiny-sspsr`` (SR default), ``tiny-essa`` (SR); ``tiny-unet`` (general default). Configurations
  ``small`` (the default) and ``large``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from torch import nn

from hiralign.registry import Registry
from hiralign.restorers import plugins
from hiralign.tasks import FAMILIES, Task, get_task


@dataclass(frozen=True)
class Backbone:
    """A registered backbone: ``build(bands=..., [scale=...], **cfg)`` for tasks of ``family``, with
    named configurations (``configs``; the first is the default)."""

    name: str
    family: str
    build: Callable[..., nn.Module]
    configs: dict[str, dict]
    description: str = ""

    @property
    def default_config(self) -> str:
        return next(iter(self.configs))


_REGISTRY: Registry[Backbone] = Registry("backbone")

#: The backbone a task uses when none is named (the CPU-friendly one of each family).
DEFAULTS = {"denoise": "spectral-cnn", "sr": "tiny-sspsr", "sr-ref": "uafl", "general": "tiny-unet"}


def register(name: str, family: str, configs: Mapping[str, Mapping[str, Any]], description: str = "") -> Callable:
    """Decorator registering ``build`` (a class or function) as backbone ``name`` of ``family``
    with its named ``configs`` (keyword sets of ``build``; the first is the default)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown backbone family {family!r}; known: {', '.join(FAMILIES)}")
    if not configs:
        raise ValueError(f"backbone {name!r}: give at least one named configuration")

    def decorate(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        doc = description or (build.__doc__ or "").strip().split("\n")[0]
        _REGISTRY.register(name, Backbone(name, family, build, {k: dict(v) for k, v in configs.items()}, doc))
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


def config_names(name: str) -> list[str]:
    """The named configurations of registered backbone ``name``, the default first."""
    return list(backbone(name).configs)


def resolve_config(name: str, size: str | None = None, **cfg: Any) -> tuple[str, dict]:
    """The name and keywords of configuration ``size`` of backbone ``name`` (None: its default),
    updated by ``cfg``."""
    entry = backbone(name)
    size = size or entry.default_config
    if size not in entry.configs:
        raise ValueError(f"unknown size {size!r} of backbone {name!r}; choose one of {', '.join(entry.configs)}")
    return size, {**entry.configs[size], **cfg}


def get(name: str, bands: int, task: str | Task, size: str | None = None, layout: str = "", multiple: int = 0,
        **cfg: Any) -> nn.Module:
    """Build backbone ``name`` for ``bands`` bands and ``task`` in its named configuration ``size``
    (:func:`config_names`; None: the default, ``paper`` for the faithful backbones, ``small`` for the
    stand-ins), overridden by ``cfg``.

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
    size, config = resolve_config(name, size, **cfg)
    kwargs = {"scale": task.scale} if task.family in ("sr", "sr-ref") else {}
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
    model = get(name, config["bands"], config["task"], config.get("size"), layout=adapter.get("layout", ""),
                multiple=adapter.get("multiple", 0), **config.get("cfg", {}))
    model.build_config["backbone"] = config["backbone"]
    return model


def is_known(name: str) -> bool:
    """A registered backbone, or a name :mod:`~hiralign.restorers.plugins` can resolve (not imported yet)."""
    return name in _REGISTRY or plugins.plugin_target(name) is not None


# Importing the modules registers their backbones.
from hiralign.restorers import denoise_cnn, paper, tiny  # noqa: E402,F401

__all__ = ["Backbone", "DEFAULTS", "backbone", "config_names", "default_backbone", "from_build_config", "get", "is_known",
           "names", "plugins", "register", "resolve_config"]
