"""Restorers from outside the registry: any ``nn.Module`` factory, named by an import path or an
entry point, adapted to hiralign's call convention.

Naming a plugged backbone
-------------------------
Wherever a backbone name is accepted (``restorers.get``, the ``backbone`` parameter of 01_proxy,
``hiralign pretrain --backbone``), a name that is not registered may be

* an import path ``package.module:factory`` (``factory`` a class or function; dots after the colon
  reach attributes, ``pkg.mod:Outer.build``);
* a file path ``path/to/models.py:factory`` (relative: to the project root, so every process -- the
  notebook kernels of ``hiralign run`` included -- finds the same file);
* the name of an entry point in the group ``hiralign.backbones`` of an installed distribution
  (``[project.entry-points."hiralign.backbones"] my-net = "my_pkg.nets:MyNet"``).

The factory is called with the keyword arguments ``kwargs`` (``backbone_kwargs`` in params), plus
the band count under the first of :data:`BANDS_ARGS` and the SR scale under the first of
:data:`SCALE_ARGS` that its signature has (unless ``kwargs`` sets them).

Adapters
--------
The built network is wrapped in :class:`Plugged`, which makes it callable as ``model(x, **extra)``
on ``(N, B, H, W)`` batches:

* ``layout``: ``"bchw"`` (the network takes ``(N, B, H, W)``) or ``"b1chw"`` (3-D convolution
  networks such as QRNN3D take ``(N, 1, B, H, W)``); declared by the network's ``hiralign_layout``
  attribute or the ``layout`` argument (the argument wins), default ``"bchw"``;
* ``multiple``: H and W are padded (replicate) to a multiple of it before the call and the output
  is cropped back, so a network with two stride-2 downsamplings runs on 33 x 33 inputs; declared by
  ``input_multiple`` or the argument, default 1;
* extra inputs (the ``mask`` of the general family, the ``ref`` of reference-based SR) are passed
  only to networks whose ``forward`` accepts them, each padded at its own scale (a ``ref`` of
  ``scale`` times the input's size gets ``scale`` times the padding).

The wrapper's ``build_config`` records the factory, its keywords and the adapter, so a checkpoint
saved by :func:`hiralign.train.save_checkpoint` rebuilds the same model in any process that can
import the factory (:func:`hiralign.restorers.from_build_config`).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from hiralign.errors import UserError
from hiralign.restorers.blocks import crop_to, pad_to_multiple

ENTRY_POINT_GROUP = "hiralign.backbones"
LAYOUTS = ("bchw", "b1chw")
#: Factory keywords that receive the band count / the SR scale (the first one the signature has).
BANDS_ARGS = ("bands", "n_bands", "num_bands", "num_band", "n_colors")
SCALE_ARGS = ("scale", "upscale_factor", "upscale", "scale_factor", "n_scale", "sf")


class PluginError(UserError, ValueError):
    """A plugged backbone that cannot be found, built or adapted; the message names it and why."""


def is_import_path(name: str) -> bool:
    """``"pkg.mod:factory"`` or ``"file.py:factory"`` (a colon with text on both sides)."""
    module, sep, attr = name.rpartition(":")
    return bool(sep and module and attr) and not (len(module) == 1 and module.isalpha())  # not a drive letter


def entry_points() -> dict[str, str]:
    """Backbones declared by installed distributions: entry-point name -> ``"pkg.mod:factory"``."""
    return {ep.name: ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def plugin_target(name: str) -> str | None:
    """The import path a plugged backbone ``name`` stands for (itself, or its entry point's), else None."""
    if is_import_path(name):
        return name
    return entry_points().get(name)


def absolute_target(target: str) -> str:
    """``target`` with a file path made absolute (relative: to the project root), so it resolves from any cwd."""
    from hiralign.store import project_path

    module, _, attr = target.rpartition(":")
    return f"{project_path(module)}:{attr}" if module.endswith(".py") else target


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise PluginError(f"backbone module file {path} does not exist")
    module_name = f"hiralign_plugin_{path.stem}_{zlib.crc32(str(path.resolve()).encode()):08x}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[module_name]
        raise
    return module


def resolve_factory(target: str) -> Callable[..., nn.Module]:
    """The object an import path ``module:attr`` (or ``file.py:attr``) names."""
    module_name, _, attr = target.rpartition(":")
    try:
        module = (_import_file(Path(absolute_target(target).rpartition(":")[0])) if module_name.endswith(".py")
                  else importlib.import_module(module_name))
    except ImportError as err:
        raise PluginError(f"backbone {target!r}: cannot import {module_name!r} ({err}); is it installed or on "
                          "PYTHONPATH in this process (and in the notebook kernels)?") from err
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PluginError(f"backbone {target!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise PluginError(f"backbone {target!r} is not callable (a class or a function returning an nn.Module)")
    return obj


#: The extra inputs of hiralign's tasks (hiralign.tasks.Task.extra_inputs).
EXTRA_INPUTS = ("mask", "ref")


def _accepts(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _named_parameter(fn: Callable, candidates: tuple[str, ...]) -> str | None:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None
    return next((c for c in candidates if c in params), None)


def factory_kwargs(factory: Callable, kwargs: Mapping[str, Any], bands: int, scale: int) -> dict[str, Any]:
    """``kwargs`` plus the band count and (for SR, ``scale > 1``) the scale under the factory's own names."""
    out = dict(kwargs)
    bands_arg = _named_parameter(factory, BANDS_ARGS)
    if bands_arg and bands_arg not in out:
        out[bands_arg] = int(bands)
    scale_arg = _named_parameter(factory, SCALE_ARGS)
    if scale > 1:
        if scale_arg is None and not any(k in out for k in SCALE_ARGS):
            raise PluginError(f"{getattr(factory, '__name__', factory)!r} takes none of the scale keywords "
                              f"{', '.join(SCALE_ARGS)}; pass the scale in backbone_kwargs")
        if scale_arg and scale_arg not in out:
            out[scale_arg] = int(scale)
    return out


class Plugged(nn.Module):
    """A foreign network behind hiralign's call ``model(x, **extra)`` on ``(N, B, H, W)`` batches:
    layout conversion, padding to ``multiple`` and extra inputs as the module docstring describes.
    The network is ``self.net``; its parameters appear under ``net.`` in the state dict."""

    def __init__(self, net: nn.Module, layout: str = "bchw", multiple: int = 1):
        super().__init__()
        if layout not in LAYOUTS:
            raise PluginError(f"unknown input layout {layout!r}; use one of {', '.join(LAYOUTS)}")
        if int(multiple) < 1:
            raise PluginError(f"input multiple must be >= 1, got {multiple}")
        self.net, self.layout, self.input_multiple = net, layout, int(multiple)
        self._extra_names = {name for name in EXTRA_INPUTS if _accepts(net.forward, name)}
        radius = getattr(net, "receptive_radius", None)
        self.receptive_radius = radius
        self.tile_align = max(int(getattr(net, "tile_align", 1) or 1), self.input_multiple)

    def forward(self, x: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x, offset = pad_to_multiple(x, self.input_multiple)
        extra = {k: pad_to_multiple(v, self.input_multiple * (v.shape[-1] // w))[0] for k, v in extra.items()
                 if k in self._extra_names}
        y = self.net(x[:, None] if self.layout == "b1chw" else x, **extra)
        if self.layout == "b1chw":
            y = y[:, 0]
        scale = y.shape[-1] // x.shape[-1]
        return crop_to(y, (offset[0] * scale, offset[1] * scale), h * scale, w * scale)


def adapt(net: nn.Module, layout: str = "", multiple: int = 0) -> Plugged:
    """``net`` behind the :class:`Plugged` adapter; empty ``layout`` / zero ``multiple`` take the
    network's declared ``hiralign_layout`` / ``input_multiple`` (else ``bchw`` / 1)."""
    layout = layout or getattr(net, "hiralign_layout", "bchw")
    return Plugged(net, layout, int(multiple or getattr(net, "input_multiple", 1) or 1))


def build_plugged(name: str, bands: int, scale: int = 1, kwargs: Mapping[str, Any] | None = None,
                  layout: str = "", multiple: int = 0) -> Plugged:
    """Build plugged backbone ``name`` (import path, file path or entry-point name) for ``bands``
    bands and ``scale``, wrapped by :func:`adapt`."""
    target = plugin_target(name)
    if target is None:
        raise PluginError(f"backbone {name!r} is neither registered, an import path 'package.module:factory' "
                          f"or 'file.py:factory', nor an entry point of group {ENTRY_POINT_GROUP!r}")
    factory = resolve_factory(target)
    args = factory_kwargs(factory, kwargs or {}, bands, scale)
    try:
        net = factory(**args)
    except TypeError as err:
        raise PluginError(f"backbone {name!r}: {target}(**{args}) failed: {err}") from err
    if not isinstance(net, nn.Module):
        raise PluginError(f"backbone {name!r}: {target} returned {type(net).__name__}, not an nn.Module")
    model = adapt(net, layout, multiple)
    model.build_config = {"backbone": name, "factory": absolute_target(target), "size": "plugged", "cfg": dict(kwargs or {}),
                          "adapter": {"layout": model.layout, "multiple": model.input_multiple}, "bands": int(bands), "scale": int(scale)}
    return model


__all__ = ["BANDS_ARGS", "ENTRY_POINT_GROUP", "LAYOUTS", "Plugged", "PluginError", "SCALE_ARGS", "absolute_target", "adapt",
           "build_plugged", "entry_points", "factory_kwargs", "is_import_path", "plugin_target", "resolve_factory"]
