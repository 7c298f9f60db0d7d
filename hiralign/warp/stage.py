"""Stage 2b in the run directory: read proxies and guides, warp every pair, write ``03_warp.h5``.

Inputs come from ``01_proxy.h5`` (``proxy``, ``proxy_rgb``, ``wavelengths``, ``names``) and
``02_guides.h5`` (``guides`` (N, G, 3, H, W)); a missing one is an error naming its notebook. Only with
``demo=True`` a demo pair is used instead (:func:`hiralign.warp.demo.demo_proxy` and
:func:`~hiralign.warp.demo.demo_guide`). The artifact follows docs/ARTIFACTS.md: ``hsi``
(N, G, B, H, W), ``rgb`` (N, G, 3, H, W), ``displacement`` (N, G, 2, H, W), groups ``loss_history``
and ``operators`` keyed ``<n>_<g>`` (CSR ``data`` float32, ``indices``, ``indptr``, ``shape``), and
``quality``: the spatial-spectral plausibility of the synthesized HSIs
(:mod:`hiralign.warp.plausibility`).

When ``02_guides.h5`` was made by an HSI generator (``generated_hsi``, :mod:`hiralign.generators`)
nothing is warped: its HSIs are written as ``hsi`` with their ``rgb``, ``wavelengths``, ``names``
and ``quality``, attribute ``warped = False`` and no displacement, loss history or operators.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from hiralign.runtime import resolve_device
from hiralign.spectral import to_rgb
from hiralign.stages import ParameterError, require
from hiralign.store import ArtifactError, RunStore
from hiralign.warp.demo import demo_guide, demo_proxy
from hiralign.warp.params import WarpParams
from hiralign.warp.plausibility import spatial_spectral_plausibility
from hiralign.warp.result import WarpResult
from hiralign.warp.synthesis import spectral_warps


@dataclass
class WarpInputs:
    """Proxies (N, B, H, W), their RGBs (N, 3, H, W), guides (N, G, 3, H, W) and where they came from;
    ``generated_hsi`` (N, G, B, H, W) when an HSI generator made the guides (nothing to warp)."""

    proxy_hsi: np.ndarray
    proxy_rgb: np.ndarray
    guides: np.ndarray
    wavelengths: np.ndarray
    names: list[str]
    source: str
    generated_hsi: np.ndarray | None = None

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
        generated = None if self.generated_hsi is None else self.generated_hsi[:keep_n, :keep_g]
        return WarpInputs(self.proxy_hsi[:keep_n], self.proxy_rgb[:keep_n], self.guides[:keep_n, :keep_g],
                          self.wavelengths, self.names[:keep_n], self.source, generated)


def inputs_of(proxy, guides) -> WarpInputs:
    """The observed proxies of a ``01_proxy.h5`` record and their guides from a ``02_guides.h5`` record.

    Only observed target images are warped: the synthesized branch of Eq. 28 is built from them.
    ``guides`` may hold every 01 image or only the observed ones.
    """
    if guides.attrs.get("demo"):
        raise ArtifactError(f"{guides.path} was made from DEMO proxies (demo=True), not from 01_proxy.h5; "
                            "rerun notebook 02_rgb_guides with demo=False")
    hsi, rgb, g = np.asarray(proxy["proxy"], np.float32), np.asarray(proxy["proxy_rgb"], np.float32), np.asarray(guides["guides"], np.float32)
    generated = np.asarray(guides["generated_hsi"], np.float32) if "generated_hsi" in guides else None
    names = [str(n) for n in proxy["names"]]
    observed = np.asarray(proxy["observed"], bool)
    if g.ndim == 5 and g.shape[0] == hsi.shape[0]:
        g = g[observed]
        generated = None if generated is None else generated[observed]
    hsi, rgb, names = hsi[observed], rgb[observed], [n for n, keep in zip(names, observed) if keep]
    if g.ndim != 5 or g.shape[0] != hsi.shape[0] or g.shape[2] != 3 or g.shape[-2:] != hsi.shape[-2:]:
        raise ArtifactError(f"{guides.path} guides {g.shape} do not match the {hsi.shape[0]} observed proxies {hsi.shape[1:]} "
                            "of 01_proxy.h5 (need (N, G, 3, H, W)); rerun notebook 02_rgb_guides")
    if generated is not None and generated.shape != g.shape[:2] + hsi.shape[1:]:
        raise ArtifactError(f"{guides.path} generated_hsi {generated.shape} does not match its guides {g.shape} and the "
                            f"proxies {hsi.shape[1:]} of 01_proxy.h5; rerun notebook 02_rgb_guides")
    return WarpInputs(hsi, rgb, g, np.asarray(proxy["wavelengths"], np.float64), names, "run directory: 01_proxy.h5 + 02_guides.h5",
                      generated)


def demo_inputs(image_size: int = 64, seed: int = 0, demo_guides: int = 1) -> WarpInputs:
    """A DEMO pair (only with ``demo=True``): a benchmark proxy and ``demo_guide`` transforms of its RGB."""
    cube, source = demo_proxy(image_size, seed)
    rgb = to_rgb(cube)
    guides = np.stack([demo_guide(rgb, seed + i) for i in range(demo_guides)])
    return WarpInputs(cube.data[None], rgb[None], guides[None], cube.wavelengths, [cube.name or "demo"],
                      f"demo pair from the {source}; guides = demo_guide(proxy RGB)")


def warp_all(inputs: WarpInputs, params: dict[str, Any], log: Callable[[str], None] = print) -> dict[tuple[int, int], WarpResult]:
    """``spectral_warps`` over every (proxy n, guide g) pair, batched (``batch_pixels``) and with one
    index per proxy; keyword ``params`` as :class:`WarpParams`."""
    n_proxies, n_guides = inputs.guides.shape[:2]
    keys = [(n, g) for n in range(n_proxies) for g in range(n_guides)]
    proxies = [(inputs.proxy_hsi[n], inputs.proxy_rgb[n]) for n in range(n_proxies)]  # one object per proxy: its index is reused
    pairs = ((*proxies[n], inputs.guides[n, g]) for n, g in keys)
    results = {}
    for (n, g), result in zip(keys, spectral_warps(pairs, **params)):
        results[(n, g)] = result
        d = result.diagnostics
        log(f"pair {n}_{g} ({inputs.names[n]}): {result.timings['total']:.1f} s (optimised in a batch of {d['batch_pairs']}), "
            f"index {d['index']}{' reused' if d['index_reused'] else ''}")
    return results


def artifact_tree(inputs: WarpInputs, results: dict[tuple[int, int], WarpResult]) -> dict[str, Any]:
    """The ``03_warp.h5`` content of docs/ARTIFACTS.md for a rectangular set of results."""
    n_proxies, n_guides = inputs.guides.shape[:2]

    def stack(field: str) -> np.ndarray:
        return np.stack([np.stack([getattr(results[(n, g)], field) for g in range(n_guides)]) for n in range(n_proxies)])

    keys = [f"{n}_{g}" for n in range(n_proxies) for g in range(n_guides)]
    steps = sorted({k for r in results.values() for k in r.timings})
    hsi = stack("hsi")
    return {
        "hsi": hsi,
        "rgb": stack("rgb"),
        "displacement": stack("displacement"),
        "wavelengths": inputs.wavelengths,
        "names": list(inputs.names),
        "loss_history": {key: {t: np.asarray(v) for t, v in results[tuple(map(int, key.split("_")))].loss_history.items()} for key in keys},
        "timings": {s: np.array([[results[(n, g)].timings.get(s, np.nan) for g in range(n_guides)] for n in range(n_proxies)]) for s in steps},
        "index": [results[tuple(map(int, key.split("_")))].diagnostics["index"] for key in keys],
        "operators": {key: results[tuple(map(int, key.split("_")))].operator_arrays() for key in keys},
        "quality": spatial_spectral_plausibility(inputs.proxy_hsi, hsi).tree(),
    }


def passthrough_tree(inputs: WarpInputs) -> dict[str, Any]:
    """The ``03_warp.h5`` content for HSIs an HSI generator made in stage 02: no warp, same quality."""
    hsi = np.ascontiguousarray(inputs.generated_hsi, dtype=np.float32)
    return {"hsi": hsi, "rgb": to_rgb(hsi, inputs.wavelengths), "wavelengths": inputs.wavelengths, "names": list(inputs.names),
            "quality": spatial_spectral_plausibility(inputs.proxy_hsi, hsi).tree()}


#: The :class:`~hiralign.warp.params.WarpParams` fields (the other notebook parameters belong to the stage).
WARP_FIELDS = frozenset(WarpParams.__dataclass_fields__)


def check(params: dict[str, Any]) -> None:
    """Parameter checks of stage 2b (no work): the warp parameters given, through :class:`WarpParams`."""
    try:
        WarpParams(**{k: v for k, v in params.items() if k in WARP_FIELDS})
    except (TypeError, ValueError) as err:
        raise ParameterError(f"03_warp: {err}") from err
    for key in ("max_pairs",):
        require("03_warp", params, key, lambda v: v >= 0, ">= 0")
    if "device" in params:
        resolve_device(params["device"])


@dataclass
class WarpSet:
    """``03_warp.h5`` with the inputs it was made from: ``inputs`` and the artifact content ``data``."""

    inputs: WarpInputs
    data: dict[str, Any]
    demo: bool

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    @property
    def warped(self) -> bool:
        """False when the HSIs came from an HSI generator unwarped (no operators, displacement, losses)."""
        return "operators" in self.data


def stage_inputs(stage) -> WarpInputs:
    p = stage.params
    if p["demo"]:
        return demo_inputs(p["image_size"], p["seed"])
    return inputs_of(stage.read("01_proxy"), stage.read("02_rgb_guides"))


def compute(stage) -> WarpSet:
    """Stage 2b: warp every (observed proxy, guide) pair (or a demo pair with ``demo=True``), write ``03_warp.h5``."""
    p = stage.params
    inputs = stage_inputs(stage).limit(p["max_pairs"])
    if inputs.generated_hsi is not None:
        stage.log(f"02_guides.h5 holds generated HSIs {inputs.generated_hsi.shape}: written unwarped")
        tree = passthrough_tree(inputs)
    else:
        warp_params = {k: v for k, v in p.items() if k in WARP_FIELDS}
        tree = artifact_tree(inputs, warp_all(inputs, warp_params, stage.log))
    stage.write(tree, attrs={"input_source": inputs.source, "demo": inputs.demo, "warped": inputs.generated_hsi is None})
    return WarpSet(inputs, tree, inputs.demo)


def load(store: RunStore) -> WarpSet:
    """``03_warp.h5`` read back (verified), with its inputs re-read from the (current) upstream records."""
    art = store.read("03_warp")
    p = art.params
    if art.attrs.get("demo"):
        inputs = demo_inputs(p["image_size"], p["seed"])
    else:
        inputs = inputs_of(store.read("01_proxy"), store.read("02_guides"))
    return WarpSet(inputs.limit(p["max_pairs"]), art.data, bool(art.attrs.get("demo")))


def operator_from_arrays(arrays: dict[str, np.ndarray]) -> sp.csr_matrix:
    """The CSR operator of one pair from its ``operators/<n>_<g>`` group."""
    return sp.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=tuple(int(v) for v in arrays["shape"]))
