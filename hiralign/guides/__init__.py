"""Stage 2a: target-aligned RGB guides from proxy RGBs (Section III-B.1, Eq. 5-8).

``generate_guides(proxy_rgbs, generator, n_guides, seed, **params) -> (N, G, 3, H, W)`` with

* ``"unclip"`` - the improved unCLIP (:mod:`hiralign.guides.unclip`; needs Stable unCLIP weights,
  optionally a blur-robust CLIP encoder from :mod:`hiralign.guides.clip_finetune`, Eq. 7);
* ``"local-ddpm"`` - a small DDPM trained here on CPU, sampled SDEdit-style
  (:mod:`hiralign.guides.local_ddpm`; same ``strength`` meaning as unCLIP);
* ``"jitter"`` - geometric + photometric augmentation (:mod:`hiralign.guides.jitter`);
* ``"recompose"`` - new layouts as dead-leaves recompositions of the proxy's own regions
  (:mod:`hiralign.guides.recompose`).

Generators are imported on first use (unCLIP pulls in transformers).
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable

import numpy as np

from hiralign.guides.resize import as_rgb_batch
from hiralign.registry import Registry
from hiralign.runtime import thread_limit

#: generator name -> "module:function" producing (N, G, 3, H, W) guides (imported on first use).
GENERATORS: Registry[str] = Registry("guide generator")
GENERATORS.register("jitter", "hiralign.guides.jitter:jitter_guides")
GENERATORS.register("local-ddpm", "hiralign.guides.local_ddpm:local_ddpm_guides")
GENERATORS.register("recompose", "hiralign.guides.recompose:recompose_guides")
GENERATORS.register("unclip", "hiralign.guides.unclip:unclip_guides")
FIXED_ARGS = ("proxy_rgbs", "n_guides", "seed")


def generator_function(generator: str) -> Callable[..., np.ndarray]:
    """The guide function of a generator name (``ValueError`` naming the choices otherwise)."""
    module, name = GENERATORS.get(generator).split(":")
    return getattr(importlib.import_module(module), name)


def function_parameters(fn: Callable[..., Any], fixed: tuple[str, ...]) -> tuple[str, ...]:
    """Keyword parameters of a generator function besides its ``fixed`` ones; a ``**training``
    catch-all adds the fields of its module's ``TRAINING_CONFIG`` dataclass."""
    params = inspect.signature(fn).parameters.values()
    names = [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    config = getattr(inspect.getmodule(fn), "TRAINING_CONFIG", None)
    if config is not None and any(p.kind is p.VAR_KEYWORD for p in params):
        names += [n for n in config.__dataclass_fields__ if n not in names]
    return tuple(n for n in names if n not in fixed)


def generator_parameters(generator: str) -> tuple[str, ...]:
    """Keyword parameters a generator accepts besides ``proxy_rgbs``, ``n_guides`` and ``seed``."""
    return function_parameters(generator_function(generator), FIXED_ARGS)


def select_params(generator: str, params: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``params`` that ``generator`` uses (one notebook parameter cell serves all)."""
    accepted = set(generator_parameters(generator))
    return {k: v for k, v in params.items() if k in accepted}


def generate_guides(proxy_rgbs, generator: str = "jitter", n_guides: int = 3, seed: int = 0, threads: int = 0, **params: Any) -> np.ndarray:
    """``(N, G, 3, H, W)`` float32 guides in [0, 1] for ``(N, 3, H, W)`` proxy RGBs (Sec. III-B.1).

    Proxies are clipped to [0, 1] first. ``params`` go to the generator (see
    :func:`generator_parameters`); an unknown one raises ``TypeError`` listing the accepted names.
    ``threads`` > 0 limits torch's CPU threads during the call (on a busy shared CPU one thread is
    often several times faster than two).
    """
    proxies = np.clip(as_rgb_batch(proxy_rgbs), 0.0, 1.0)
    return call_generator(f"generator {generator!r}", generator_function(generator), generator_parameters(generator),
                          (proxies,), "n_guides", n_guides, seed, threads, params)


def call_generator(label: str, fn: Callable[..., np.ndarray], accepted: tuple[str, ...], inputs: tuple[np.ndarray, ...],
                   count_name: str, count: int, seed: int, threads: int, params: dict[str, Any]) -> np.ndarray:
    """``fn(*inputs, count_name=count, seed=seed, **params)`` under ``threads`` CPU threads, checked
    to take only ``accepted`` params and to return ``(N, count, ...)`` for ``(N, ...)`` ``inputs[0]``,
    as contiguous float32 (the one calling convention of guide and HSI generators)."""
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise TypeError(f"{label} does not take {unknown}; it accepts {sorted(accepted)}")
    if int(count) < 1:
        raise ValueError(f"{count_name} must be >= 1; got {count}")
    with thread_limit(int(threads)):
        out = fn(*inputs, **{count_name: int(count)}, seed=int(seed), **params)
    expected = (inputs[0].shape[0], int(count)) + inputs[0].shape[1:]
    if out.shape != expected:
        raise RuntimeError(f"{label} returned shape {out.shape}, expected {expected}")
    return np.ascontiguousarray(out, dtype=np.float32)
