"""The paper's backbones, faithful to their publications, registered under their own names.

Each module below re-implements one published network with the official state_dict key names, so
released weights load (:func:`hiralign.train.load_released`); ``docs/backbones.md`` gives the
papers, the parameter counts and the CPU forward times. Registered behind the
:class:`~hiralign.restorers.plugins.Plugged` adapter, they take hiralign's uniform call
``model(x, **extra)`` on any ``H, W`` (inputs are padded to the network's ``input_multiple``;
a ``mask`` is dropped for networks that are mask-blind, as PromptIR is). Their weights sit under
``net.`` in the state dict.

Configurations: ``paper`` (the default; the published size) and ``tiny`` (the same code paths with a
few channels and blocks: the CPU tests and the tiny-scale fixture runs).
"""
from __future__ import annotations

from functools import partial
from types import ModuleType

from torch import nn

from hiralign.restorers import essaformer, mcnet, promptir, qrnn3d, register, sert, sspsr, ssumamba, t3sc, uafl
from hiralign.restorers.plugins import Plugged, adapt

#: Registry name -> (task family, module with ``build``, ``PAPER_CONFIG`` and ``TINY_CONFIG``).
FAITHFUL: dict[str, tuple[str, ModuleType]] = {
    "qrnn3d": ("denoise", qrnn3d),
    "t3sc": ("denoise", t3sc),
    "sert": ("denoise", sert),
    "ssumamba": ("denoise", ssumamba),
    "mcnet": ("sr", mcnet),
    "sspsr": ("sr", sspsr),
    "essaformer": ("sr", essaformer),
    "promptir": ("general", promptir),
    "uafl": ("sr-ref", uafl),
}


def build_adapted(module: ModuleType, bands: int, **cfg) -> Plugged:
    """``module.build(bands, **cfg)`` behind the uniform-call adapter (scale, for SR, is in ``cfg``)."""
    net: nn.Module = module.build(bands, **cfg)
    return adapt(net)


def _summary(module: ModuleType) -> str:
    return (module.__doc__ or module.__name__).strip().split("\n")[0].rstrip(".")


for _name, (_family, _module) in FAITHFUL.items():
    register(_name, _family, {"paper": dict(_module.PAPER_CONFIG), "tiny": dict(_module.TINY_CONFIG)},
             description=_summary(_module))(partial(build_adapted, _module))

__all__ = ["FAITHFUL", "build_adapted"]
