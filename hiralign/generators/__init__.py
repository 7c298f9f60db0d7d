"""Stage 2 sources that generate whole HSIs, the neighbours HIR-ALIGN is compared with (Table IX).

HIR-ALIGN's synthesized branch makes RGB guides (:mod:`hiralign.guides`) and warps the proxy
spectra onto them (:mod:`hiralign.warp`). The sources here replace both steps: they learn from the
proxy HSIs and sample new HSIs directly.

``generate_hsis(proxy_hsi, wavelengths, generator, n_generated, seed, **params) -> (N, G, B, H, W)``
with

* ``"ubf"`` - Unmixing before Fusion (Yu, Pan et al., "Unmixing before Fusion: A Generalized
  Paradigm for Multi-Source-based Hyperspectral Image Synthesis", Wuhan University, 2024; see
  :mod:`hiralign.generators.ubf`): endmembers and abundances of the proxies, abundances of unpaired
  natural RGB images, a DDPM on abundance maps, and the linear mixing model back to HSIs;
* ``"hsigene"`` - an HSIGene-style latent diffusion model (Pang et al., "HSIGene: A Foundation
  Model for Hyperspectral Image Generation", arXiv:2409.12470; see
  :mod:`hiralign.generators.hsigene`): a spectral VAE, diffusion in its latent and a control
  branch on the proxy RGB and its edges.

Stage 02 (``generator: ubf`` or ``hsigene``) writes the generated HSIs beside their RGB renders
(Eq. 4) in ``02_guides.h5``; stage 03 passes them through unwarped (docs/ARTIFACTS.md), so stages
04 and 05 and the tables read them like warped HSIs. Generators are imported on first use.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

import numpy as np

from hiralign.guides import call_generator, function_parameters
from hiralign.registry import Registry

#: generator name -> "module:function" producing (N, G, B, H, W) HSIs (imported on first use).
HSI_GENERATORS: Registry[str] = Registry("HSI generator")
HSI_GENERATORS.register("ubf", "hiralign.generators.ubf:ubf_hsis")
HSI_GENERATORS.register("hsigene", "hiralign.generators.hsigene:hsigene_hsis")
FIXED_ARGS = ("proxy_hsi", "wavelengths", "n_generated", "seed")


def hsi_generator_function(generator: str) -> Callable[..., np.ndarray]:
    """The function of an HSI generator name (``ValueError`` naming the choices otherwise)."""
    module, name = HSI_GENERATORS.get(generator).split(":")
    return getattr(importlib.import_module(module), name)


def hsi_generator_parameters(generator: str) -> tuple[str, ...]:
    """Keyword parameters an HSI generator accepts besides ``proxy_hsi``, ``wavelengths``,
    ``n_generated`` and ``seed`` (its ``TRAINING_CONFIG`` fields included)."""
    return function_parameters(hsi_generator_function(generator), FIXED_ARGS)


def check_proxy_hsis(proxy_hsi: Any, wavelengths: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(N, B, H, W)`` float32 proxies and ``(B,)`` wavelengths, or ``ValueError`` naming the problem."""
    cubes = np.asarray(proxy_hsi, dtype=np.float32)
    wl = np.asarray(wavelengths, dtype=np.float64).ravel()
    if cubes.ndim != 4:
        raise ValueError(f"proxy HSIs must be (N, B, H, W); got shape {cubes.shape}")
    if len(wl) != cubes.shape[1]:
        raise ValueError(f"{len(wl)} wavelengths given for proxies with {cubes.shape[1]} bands")
    bad = ~np.isfinite(cubes)
    if bad.any():
        n = int(np.flatnonzero(bad.reshape(len(cubes), -1).any(axis=1))[0])
        raise ValueError(f"proxy HSI {n} holds {int(bad[n].sum())} NaN or infinite values")
    return cubes, wl


def generate_hsis(proxy_hsi, wavelengths, generator: str = "ubf", n_generated: int = 3, seed: int = 0, threads: int = 0,
                  **params: Any) -> np.ndarray:
    """``(N, G, B, H, W)`` float32 HSIs in [0, 1] learnt from ``(N, B, H, W)`` proxies.

    ``G = n_generated`` per proxy (for a conditional generator, conditioned on that proxy).
    ``params`` go to the generator (:func:`hsi_generator_parameters`); an unknown one raises
    ``TypeError`` listing the accepted names. ``threads`` > 0 limits torch's CPU threads.
    """
    cubes, wl = check_proxy_hsis(proxy_hsi, wavelengths)
    return call_generator(f"HSI generator {generator!r}", hsi_generator_function(generator), hsi_generator_parameters(generator),
                          (np.clip(cubes, 0.0, 1.0), wl), "n_generated", n_generated, seed, threads, params)
