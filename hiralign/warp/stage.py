"""Stage 2b in the run directory: read proxies and guides, warp every pair, write ``03_warp.h5``.

Inputs come from ``01_proxy.h5`` (``proxy``, ``proxy_rgb``, ``wavelengths``, ``names``) and
``02_guides.h5`` (``guides`` (N, G, 3, H, W)) when both exist; otherwise from a demo pair
(:func:`hiralign.warp.demo.demo_proxy` and :func:`~hiralign.warp.demo.demo_guide`). The artifact follows docs/ARTIFACTS.md: ``hsi``
(N, G, B, H, W), ``rgb`` (N, G, 3, H, W), ``displacement`` (N, G, 2, H, W), groups ``loss_history``
and ``operators`` keyed ``<n>_<g>`` (CSR ``data`` float32, ``indices``, ``indptr``, ``shape``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from hiralign.store import RunStore
from hiralign.spectral import to_rgb
from hiralign.warp.demo import demo_guide, demo_proxy
from hiralign.warp.result import WarpResult
from hiralign.warp.synthesis import spectral_warp


@dataclass
class WarpInputs:
    """Proxies (N, B, H, W), their RGBs (N, 3, H, W), guides (N, G, 3, H, W) and where they came from."""

    proxy_hsi: np.ndarray
    proxy_rgb: np.ndarray
    guides: np.ndarray
    wavelengths: np.ndarray
    names: list[str]
    source: str

    @property
    def demo(self) -> bool:
        return not self.source.startswith("run directory")

    def limit(self, max_pairs: int) -> "WarpInputs":
        """The first proxies / guides so that at most ``max_pairs`` pairs remain (0 = all), kept rectangular."""
        n, g = self.guides.shape[:2]
        if max_pairs <= 0 or max_pairs >= n * g:
            return self
        keep_g = min(g, max_pairs)
        keep_n = max(1, min(n, max_pairs // keep_g))
        return WarpInputs(self.proxy_hsi[:keep_n], self.proxy_rgb[:keep_n], self.guides[:keep_n, :keep_g],
                          self.wavelengths, self.names[:keep_n], self.source)


def load_inputs(run_dir: Path | str, image_size: int = 64, seed: int = 0, demo_guides: int = 1) -> WarpInputs:
    """Proxies and guides from ``run_dir`` if it has 01_proxy.h5 and 02_guides.h5, else a demo pair.

    Only observed target images are warped (``observed`` of 01_proxy.h5): the synthesized branch of
    Eq. 28 is built from them. ``guides`` may hold every 01 image or only the observed ones.
    """
    store = RunStore(run_dir)
    if store.exists("01_proxy") and store.exists("02_guides"):
        proxy, guides = store.read("01_proxy"), store.read("02_guides")
        hsi, rgb, g = np.asarray(proxy["proxy"], np.float32), np.asarray(proxy["proxy_rgb"], np.float32), np.asarray(guides["guides"], np.float32)
        names = [str(n) for n in proxy["names"]] if "names" in proxy else [f"proxy-{i}" for i in range(hsi.shape[0])]
        observed = np.asarray(proxy["observed"], bool) if "observed" in proxy else np.ones(hsi.shape[0], bool)
        if not observed.any():
            observed = np.ones(hsi.shape[0], bool)
        if g.ndim == 5 and g.shape[0] == hsi.shape[0]:
            g = g[observed]
        hsi, rgb, names = hsi[observed], rgb[observed], [n for n, keep in zip(names, observed) if keep]
        if g.ndim != 5 or g.shape[0] != hsi.shape[0] or g.shape[2] != 3 or g.shape[-2:] != hsi.shape[-2:]:
            raise ValueError(f"02_guides.h5 guides {g.shape} do not match the {hsi.shape[0]} observed proxies {hsi.shape[1:]} "
                             "of 01_proxy.h5 (need (N, G, 3, H, W))")
        return WarpInputs(hsi, rgb, g, np.asarray(proxy["wavelengths"], np.float64), names, f"run directory {store.run_dir}")
    cube, source = demo_proxy(image_size, seed)
    rgb = to_rgb(cube)
    guides = np.stack([demo_guide(rgb, seed + i) for i in range(demo_guides)])
    return WarpInputs(cube.data[None], rgb[None], guides[None], cube.wavelengths, [cube.name or "demo"],
                      f"demo pair from the {source}; guides = demo_guide(proxy RGB)")


def warp_all(inputs: WarpInputs, params: dict[str, Any], log: Callable[[str], None] = print) -> dict[tuple[int, int], WarpResult]:
    """``spectral_warp`` for every (proxy n, guide g) pair; keyword ``params`` as :class:`WarpParams`."""
    results = {}
    n_proxies, n_guides = inputs.guides.shape[:2]
    for n in range(n_proxies):
        for g in range(n_guides):
            result = spectral_warp(inputs.proxy_hsi[n], inputs.proxy_rgb[n], inputs.guides[n, g], **params)
            results[(n, g)] = result
            log(f"pair {n}_{g} ({inputs.names[n]}): {result.timings['total']:.1f} s, index {result.diagnostics['index']}")
    return results


def artifact_tree(inputs: WarpInputs, results: dict[tuple[int, int], WarpResult]) -> dict[str, Any]:
    """The ``03_warp.h5`` content of docs/ARTIFACTS.md for a rectangular set of results."""
    n_proxies, n_guides = inputs.guides.shape[:2]

    def stack(field: str) -> np.ndarray:
        return np.stack([np.stack([getattr(results[(n, g)], field) for g in range(n_guides)]) for n in range(n_proxies)])

    keys = [f"{n}_{g}" for n in range(n_proxies) for g in range(n_guides)]
    steps = sorted({k for r in results.values() for k in r.timings})
    return {
        "hsi": stack("hsi"),
        "rgb": stack("rgb"),
        "displacement": stack("displacement"),
        "wavelengths": inputs.wavelengths,
        "names": list(inputs.names),
        "loss_history": {key: {t: np.asarray(v) for t, v in results[tuple(map(int, key.split("_")))].loss_history.items()} for key in keys},
        "timings": {s: np.array([[results[(n, g)].timings.get(s, np.nan) for g in range(n_guides)] for n in range(n_proxies)]) for s in steps},
        "index": [results[tuple(map(int, key.split("_")))].diagnostics["index"] for key in keys],
        "operators": {key: results[tuple(map(int, key.split("_")))].operator_arrays() for key in keys},
    }


def run_stage(run_dir: Path | str, inputs: WarpInputs, warp_params: dict[str, Any], params: dict[str, Any],
              force: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Warp all pairs and write ``03_warp.h5``, or read it back when it is current; returns its content."""
    store = RunStore(run_dir)
    if not force and store.is_current("03_warp", params):
        log(f"{store.path('03_warp')} is current (same parameters): loaded it")
        return store.read("03_warp").data
    tree = artifact_tree(inputs, warp_all(inputs, warp_params, log))
    path = store.write("03_warp", tree, params, attrs={"input_source": inputs.source, "demo": inputs.demo})
    log(f"wrote {path}")
    return tree


def operator_from_arrays(arrays: dict[str, np.ndarray]) -> sp.csr_matrix:
    """The CSR operator of one pair from its ``operators/<n>_<g>`` group."""
    return sp.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=tuple(int(v) for v in arrays["shape"]))
