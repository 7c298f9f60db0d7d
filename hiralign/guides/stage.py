"""Stage 2a in the run directory: read proxy RGBs, generate guides, write ``02_guides.h5``.

Input: ``proxy_rgb`` (N, 3, H, W) of ``01_proxy.h5`` (a missing record is an error naming notebook 01);
only with ``demo=True`` DEMO proxies instead: target-observed scenes of the embedded SYNTHETIC
benchmark, rendered to RGB (Eq. 4) and lightly Gaussian-blurred as stand-ins for restored proxies
(labelled as such in the artifact).
Output (docs/ARTIFACTS.md): ``guides`` (N, G, 3, H, W) in [0, 1], ``proxy_rgb``, ``names``, the
measured quality (layout similarity, diversity, colour distance); attributes ``generator``, ``input_source``, ``demo``.

An HSI generator (:mod:`hiralign.generators`: ``ubf``, ``hsigene``) learns from the *observed*
proxy HSIs of ``01_proxy.h5`` instead and adds ``generated_hsi`` (N, G, B, H, W) and ``wavelengths``;
its ``guides`` are the Eq. 4 renders of those HSIs, and stage 03 passes them through unwarped.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from hiralign.generators import HSI_GENERATORS, generate_hsis, hsi_generator_parameters
from hiralign.guides import GENERATORS, generate_guides, select_params
from hiralign.guides.quality import GuideQuality, guide_quality
from hiralign.runtime import resolve_device
from hiralign.spectral import to_rgb
from hiralign.stages import ParameterError, require
from hiralign.store import ArtifactError, RunStore


@dataclass(frozen=True)
class GuideInputs:
    """Proxy RGBs (N, 3, H, W), their names and where they came from; the proxy HSIs (N, B, H, W)
    and wavelengths for an HSI generator."""

    proxy_rgb: np.ndarray
    names: list[str]
    source: str
    proxy_hsi: np.ndarray | None = None
    wavelengths: np.ndarray | None = None

    @property
    def demo(self) -> bool:
        return not self.source.startswith("run directory")


def demo_proxies(image_size: int = 64, n_proxies: int = 4, seed: int = 0, blur_sigma: float = 0.8) -> GuideInputs:
    """Stand-in proxies: clean SYNTHETIC target HSIs blurred by ``blur_sigma`` px, and their RGBs
    (Eq. 4; not restorer outputs)."""
    from hiralign.data.synthetic import make_benchmark

    bench = make_benchmark(size=image_size, n_source_train=0, n_source_test=0, n_target_observed=n_proxies, n_target_unobserved=0, seed=seed)
    cubes = np.stack([cube.data for cube in bench.target_observed])
    blurred = np.clip(ndimage.gaussian_filter(cubes, sigma=(0, 0, blur_sigma, blur_sigma), mode="nearest"), 0.0, 1.0).astype(np.float32)
    wavelengths = bench.target_observed[0].wavelengths
    source = f"DEMO proxies: synthetic benchmark target HSIs (size {image_size}, seed {seed}) blurred by sigma {blur_sigma} px as stand-ins"
    return GuideInputs(to_rgb(blurred, wavelengths), [c.name for c in bench.target_observed], source, blurred, np.asarray(wavelengths))


def proxies_of(art) -> GuideInputs:
    """The proxy RGBs of a verified ``01_proxy.h5`` record (every 01 image; 03 picks the observed ones)."""
    rgb = np.asarray(art["proxy_rgb"], dtype=np.float32)
    if rgb.ndim != 4 or rgb.shape[1] != 3:
        raise ArtifactError(f"{art.path} proxy_rgb has shape {rgb.shape}; expected (N, 3, H, W); rerun notebook 01_proxy")
    return GuideInputs(rgb, [str(n) for n in art["names"]], "run directory: 01_proxy.h5")


def observed_proxies_of(art) -> GuideInputs:
    """The observed proxy HSIs and RGBs of a verified ``01_proxy.h5`` record (what an HSI generator
    may learn from: unobserved target images are held out)."""
    observed = np.asarray(art["observed"], bool)
    hsi = np.asarray(art["proxy"], dtype=np.float32)
    if hsi.ndim != 4 or len(observed) != len(hsi) or not observed.any():
        raise ArtifactError(f"{art.path} proxy {hsi.shape} / observed {observed.shape} hold no observed (N, B, H, W) proxies; "
                            "rerun notebook 01_proxy")
    rgb = proxies_of(art).proxy_rgb[observed]
    names = [str(n) for n, keep in zip(art["names"], observed) if keep]
    return GuideInputs(rgb, names, "run directory: 01_proxy.h5 (observed proxies)", hsi[observed],
                       np.asarray(art["wavelengths"], np.float64))


def check_available(generator: str, generator_params: dict[str, Any]) -> None:
    """Fail before any work when a generator cannot run here (unCLIP without weights: how-to message)."""
    if generator == "unclip":
        from hiralign.guides.unclip import DEFAULT_MODEL, resolve_model_folder

        resolve_model_folder(generator_params.get("model_path", DEFAULT_MODEL), generator_params.get("allow_download", False))
        clip_path = generator_params.get("clip_path")
        if clip_path and not Path(clip_path).is_dir():
            raise ParameterError(f"02_rgb_guides: clip_path {clip_path} is not a folder (expected a blur-robust encoder saved by clip_finetune)")


def generator_settings(params: dict[str, Any]) -> dict[str, Any]:
    """The notebook parameters the chosen generator takes (device resolved: ``auto`` -> cuda or cpu)."""
    settings = dict(
        model_path=params["model_path"], clip_path=params["clip_path"] or None, strength=params["strength"],
        noise_level=params["noise_level"], guidance_scale=params["guidance_scale"], steps=params["steps"],
        prompt=params["prompt"], negative_prompt=params["negative_prompt"], train_steps=params["train_steps"],
        device=resolve_device(params["device"]))
    if params["generator"] in HSI_GENERATORS:
        accepted = set(hsi_generator_parameters(params["generator"]))
        return {k: v for k, v in settings.items() if k in accepted}
    return select_params(params["generator"], settings)


def check(params: dict[str, Any]) -> None:
    """Parameter checks of stage 2a (no work): generator, counts, strength, device, unCLIP weights."""
    require("02_rgb_guides", params, "generator", lambda v: v in GENERATORS or v in HSI_GENERATORS,
            f"one of {', '.join(GENERATORS.names() + HSI_GENERATORS.names())}")
    for key in ("n_guides", "steps", "n_demo", "image_size"):
        require("02_rgb_guides", params, key, lambda v: v >= 1, ">= 1")
    require("02_rgb_guides", params, "strength", lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
    if "device" in params:
        resolve_device(params["device"])
    if params.get("generator") == "unclip":
        check_available("unclip", generator_settings(params))


@dataclass(frozen=True)
class GuideSet:
    """``02_guides.h5``: guides (N, G, 3, H, W) of the proxy RGBs (N, 3, H, W), their quality, provenance;
    for an HSI generator also the generated HSIs (N, G, B, H, W) and their wavelengths."""

    guides: np.ndarray
    proxy_rgb: np.ndarray
    names: list[str]
    quality: GuideQuality
    generator: str
    source: str
    demo: bool
    generated_hsi: np.ndarray | None = None
    wavelengths: np.ndarray | None = None

    def tree(self) -> dict[str, Any]:
        tree = {"guides": self.guides, "proxy_rgb": self.proxy_rgb, "names": list(self.names), "quality": self.quality.tree()}
        if self.generated_hsi is not None:
            tree.update(generated_hsi=self.generated_hsi, wavelengths=self.wavelengths)
        return tree


def compute(stage) -> GuideSet:
    """Stage 2a: guides of every proxy RGB of 01_proxy.h5 (or of demo proxies with ``demo=True``);
    an HSI generator's HSIs of the observed proxies and their RGB renders."""
    p = stage.params
    hsi_generator = p["generator"] in HSI_GENERATORS
    if p["demo"]:
        inputs = demo_proxies(p["image_size"], p["n_demo"], p["seed"])
    else:
        proxy = stage.read("01_proxy")
        inputs = observed_proxies_of(proxy) if hsi_generator else proxies_of(proxy)
    generated = None
    if hsi_generator:
        generated = generate_hsis(inputs.proxy_hsi, inputs.wavelengths, p["generator"], n_generated=p["n_guides"], seed=p["seed"],
                                  threads=p["threads"], **generator_settings(p))
        guides = to_rgb(generated, inputs.wavelengths)
    else:
        guides = generate_guides(inputs.proxy_rgb, p["generator"], n_guides=p["n_guides"], seed=p["seed"], threads=p["threads"],
                                 **generator_settings(p))
    result = GuideSet(guides, inputs.proxy_rgb, list(inputs.names), guide_quality(inputs.proxy_rgb, guides, p["seed"]),
                      p["generator"], inputs.source, inputs.demo, generated, inputs.wavelengths if hsi_generator else None)
    stage.write(result.tree(), attrs={"generator": result.generator, "input_source": result.source, "demo": result.demo})
    return result


def load(store: RunStore) -> GuideSet:
    """``02_guides.h5`` read back (verified)."""
    art = store.read("02_guides")
    generated = "generated_hsi" in art
    return GuideSet(art["guides"], art["proxy_rgb"], [str(n) for n in art["names"]], GuideQuality.from_tree(art["quality"]),
                    str(art.attrs["generator"]), str(art.attrs["input_source"]), bool(art.attrs["demo"]),
                    art["generated_hsi"] if generated else None, art["wavelengths"] if generated else None)
