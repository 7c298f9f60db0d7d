"""Stage 2a in the run directory: read proxy RGBs, generate guides, write ``02_guides.h5``.

Input: ``proxy_rgb`` (N, 3, H, W) of ``01_proxy.h5`` when ``run_dir`` has it; otherwise DEMO
proxies: target-observed scenes of the embedded SYNTHETIC benchmark, rendered to RGB (Eq. 4) and
lightly Gaussian-blurred as stand-ins for restored proxies (labelled as such in the artifact).
Output (docs/ARTIFACTS.md): ``guides`` (N, G, 3, H, W) in [0, 1], ``proxy_rgb``, ``names``, the
measured diversity; attributes ``generator``, ``input_source``, ``demo``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from scipy import ndimage

from hiralign.guides import generate_guides
from hiralign.guides.diversity import guide_diversity
from hiralign.spectral import to_rgb
from hiralign.store import RunStore


@dataclass(frozen=True)
class GuideInputs:
    """Proxy RGBs (N, 3, H, W), their names and where they came from."""

    proxy_rgb: np.ndarray
    names: list[str]
    source: str

    @property
    def demo(self) -> bool:
        return not self.source.startswith("run directory")

    def digest(self) -> str:
        """Hash of the proxy pixels (part of the stage parameters: new proxies -> new guides)."""
        return hashlib.sha256(np.ascontiguousarray(self.proxy_rgb, dtype=np.float32).tobytes()).hexdigest()[:16]


def demo_proxies(image_size: int = 64, n_proxies: int = 4, seed: int = 0, blur_sigma: float = 0.8) -> GuideInputs:
    """Stand-in proxies: clean SYNTHETIC target RGBs blurred by ``blur_sigma`` px (not restorer outputs)."""
    from hiralign.data.synthetic import make_benchmark

    bench = make_benchmark(size=image_size, n_source_train=0, n_source_test=0, n_target_observed=n_proxies, n_target_unobserved=0, seed=seed)
    rgbs = np.stack([to_rgb(cube) for cube in bench.target_observed])
    blurred = ndimage.gaussian_filter(rgbs, sigma=(0, 0, blur_sigma, blur_sigma), mode="nearest")
    source = f"DEMO proxies: synthetic benchmark target RGBs (size {image_size}, seed {seed}) blurred by sigma {blur_sigma} px as stand-ins"
    return GuideInputs(np.clip(blurred, 0.0, 1.0).astype(np.float32), [c.name for c in bench.target_observed], source)


def load_proxies(run_dir: Path | str, image_size: int = 64, n_demo: int = 4, seed: int = 0) -> GuideInputs:
    """``proxy_rgb`` of ``01_proxy.h5`` in ``run_dir``, or :func:`demo_proxies` when it is absent."""
    store = RunStore(run_dir)
    if not store.exists("01_proxy"):
        return demo_proxies(image_size, n_demo, seed)
    art = store.read("01_proxy")
    rgb = np.asarray(art["proxy_rgb"], dtype=np.float32)
    if rgb.ndim != 4 or rgb.shape[1] != 3:
        raise ValueError(f"{store.path('01_proxy')} proxy_rgb has shape {rgb.shape}; expected (N, 3, H, W)")
    names = list(art["names"]) if "names" in art else [f"proxy-{i}" for i in range(len(rgb))]
    return GuideInputs(rgb, names, f"run directory {store.run_dir} (01_proxy.h5)")


def check_available(generator: str, generator_params: dict[str, Any]) -> None:
    """Fail before any work when a generator cannot run here (unCLIP without weights: how-to message)."""
    if generator == "unclip":
        from hiralign.guides.unclip import DEFAULT_MODEL, resolve_model_folder

        resolve_model_folder(generator_params.get("model_path", DEFAULT_MODEL), generator_params.get("allow_download", False))
        clip_path = generator_params.get("clip_path")
        if clip_path and not Path(clip_path).is_dir():
            raise FileNotFoundError(f"clip_path {clip_path} is not a folder (expected a blur-robust encoder saved by clip_finetune)")


def run_stage(
    run_dir: Path | str,
    inputs: GuideInputs,
    generator: str,
    n_guides: int,
    seed: int,
    generator_params: dict[str, Any],
    threads: int = 0,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Generate the guides and write ``02_guides.h5``, or read it back when current; returns its content."""
    store = RunStore(run_dir)
    params = {"generator": generator, "n_guides": int(n_guides), "seed": int(seed), "proxies": inputs.digest(), **generator_params}
    if not force and store.is_current("02_guides", params):
        log(f"{store.path('02_guides')} is current (same parameters): loaded it")
        return store.read("02_guides").data
    guides = generate_guides(inputs.proxy_rgb, generator, n_guides=n_guides, seed=seed, threads=threads, **generator_params)
    diversity = guide_diversity(inputs.proxy_rgb, guides)
    tree = {
        "guides": guides,
        "proxy_rgb": inputs.proxy_rgb,
        "names": list(inputs.names),
        "diversity": {"between_guides": diversity.between_guides, "to_proxy": diversity.to_proxy},
    }
    path = store.write("02_guides", tree, params, attrs={"generator": generator, "input_source": inputs.source, "demo": inputs.demo})
    log(f"wrote {path}")
    return tree
