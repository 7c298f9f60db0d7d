"""The reference networks of the HSIR toolbox (``hsir==0.1.1`` on PyPI, installed by ``make test`` with
``pip install --no-deps``), imported for output-equivalence tests of our own implementations.

``import hsir`` fails without its training dependencies (torchlight, timm, streamlit ...), and its
model packages import ``sync_batchnorm`` and ``pytorch_lightning``. :func:`hsir_model` imports one
model package (e.g. ``"qrnn3d"``, ``"t3sc"``, ``"sr.mcnet"``) from the wheel's files without running
``hsir/__init__.py`` or ``hsir/model/__init__.py``, with minimal stand-ins for those two imports:
``SynchronizedBatchNorm{2,3}d`` computes exactly ``nn.BatchNorm{2,3}d`` on one device (its only
difference is the cross-GPU reduction), and the Lightning module base class is ``nn.Module`` (only
the training loop lives in it). ``sys.modules`` is restored afterwards; the module objects stay usable.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import sys
import types
from pathlib import Path

import pytest
from torch import nn

HSIR_VERSION = "0.1.1"


def _stub(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


def _package(name: str, path: Path) -> types.ModuleType:
    """An empty package ``name`` whose submodules are looked up in ``path`` (its ``__init__`` is not run)."""
    module = types.ModuleType(name)
    module.__path__ = [str(path)]
    module.__package__ = name
    return module


def hsir_root() -> Path:
    """The installed ``hsir`` package folder; skips the calling test when hsir 0.1.1 is absent."""
    try:
        dist = importlib.metadata.distribution("hsir")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"hsir=={HSIR_VERSION} is not installed (pip install --no-deps hsir=={HSIR_VERSION})")
    if dist.version != HSIR_VERSION:
        pytest.skip(f"reference tests pin hsir {HSIR_VERSION}; found {dist.version}")
    return Path(dist.locate_file("hsir"))


def hsir_model(name: str) -> types.ModuleType:
    """``hsir.model.<name>`` imported from the installed wheel (module docstring)."""
    root = hsir_root()
    stubs = {
        "hsir": _package("hsir", root),
        "hsir.model": _package("hsir.model", root / "model"),
        "sync_batchnorm": _stub("sync_batchnorm", SynchronizedBatchNorm2d=nn.BatchNorm2d,
                                SynchronizedBatchNorm3d=nn.BatchNorm3d),
        "pytorch_lightning": _stub("pytorch_lightning", LightningModule=nn.Module),
    }
    saved = {key: mod for key, mod in sys.modules.items() if key == "hsir" or key.startswith("hsir.")
             or key in stubs}
    try:
        for key in saved:
            del sys.modules[key]
        sys.modules.update(stubs)
        return importlib.import_module(f"hsir.model.{name}")
    finally:
        for key in [k for k in sys.modules if k == "hsir" or k.startswith("hsir.") or k in stubs]:
            del sys.modules[key]
        sys.modules.update(saved)
