"""Demo inputs for the warp when no generated guides exist: a transformed proxy RGB as the guide.

A real guide (Sec. III-B.1) is an unCLIP image variation of the proxy RGB; the stand-in here keeps
the scene and changes its geometry and colour: optional left-right flip, a circular shift, a
per-channel gain and gamma jitter, an optional Gaussian blur. It is labelled a demo everywhere.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from hiralign.data.cube import Cube

def demo_guide(rgb: np.ndarray, seed: int = 0, *, flip: bool = True, max_shift: int = 6, jitter: float = 0.1, blur_sigma: float = 0.5) -> np.ndarray:
    """A seeded stand-in guide: ``rgb`` (3, H, W) flipped left-right, circularly shifted by up to
    ``max_shift`` pixels per axis, each channel scaled by a gain in ``[1-jitter, 1+jitter]`` and raised
    to a gamma in ``[1-jitter/2, 1+jitter/2]``, then blurred by ``blur_sigma`` pixels; float32, >= 0."""
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[0] != 3:
        raise ValueError(f"demo_guide needs a (3, H, W) RGB image, got shape {rgb.shape}")
    rng = np.random.default_rng(seed)
    out = rgb[:, :, ::-1] if flip else rgb
    shift = rng.integers(-max_shift, max_shift + 1, size=2) if max_shift else np.zeros(2, dtype=int)
    out = np.roll(out, shift=tuple(int(s) for s in shift), axis=(1, 2))
    peak = float(out.max()) or 1.0
    gains = rng.uniform(1 - jitter, 1 + jitter, size=(3, 1, 1))
    gammas = rng.uniform(1 - jitter / 2, 1 + jitter / 2, size=(3, 1, 1))
    out = peak * gains * np.power(np.clip(out / peak, 0.0, None), gammas)
    if blur_sigma > 0:
        out = ndimage.gaussian_filter(out, sigma=(0, blur_sigma, blur_sigma), mode="nearest")
    return np.ascontiguousarray(np.clip(out, 0.0, None), dtype=np.float32)


def demo_proxy(size: int = 64, seed: int = 0) -> tuple[Cube, str]:
    """A proxy HSI for the demo and where it came from: the first target-observed cube of the embedded
    SYNTHETIC benchmark."""
    from hiralign.data.synthetic import make_benchmark

    bench = make_benchmark(size=size, n_source_train=0, n_source_test=0, n_target_observed=1, n_target_unobserved=0, seed=seed)
    return bench.target_observed[0], "embedded synthetic benchmark"
