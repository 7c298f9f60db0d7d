"""Stage 1 (Section III-A): proxies of the degraded target observations and their proxy RGB.

For every degraded target observation ``y_i`` the source-pretrained restorer ``R_theta`` gives the
proxy HSI ``x_hat_i = R_theta(y_i)`` (Eq. 3), a pseudo-clean anchor that keeps the scene layout;
its proxy RGB stacks the bands nearest 660, 550 and 470 nm (Eq. 4). Inference is tiled with
overlap for cubes larger than ``tile`` (exact for local models, see
:mod:`hiralign.restorers.inference`), so 512 x 512 x 31 cubes run in bounded memory.

The stage writes ``01_proxy.h5`` (``docs/ARTIFACTS.md``): degraded observations, proxies, proxy RGB,
the ``observed`` flags and the degradation info; the clean cubes only where known and only for
evaluation. This module also scores proxies, measures the source-vs-target gap of the source
model, and draws the stage's figures.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from hiralign.data import Cube
from hiralign.metrics import evaluate
from hiralign.restorers.inference import restore
from hiralign.spectral import display_rgb, to_rgb
from hiralign.store import Artifact, RunStore
from hiralign.tasks import Task, get_task
from hiralign.train import Pair, evaluate_pairs, reference_input, validation_pairs

#: Default inference tile (px of the observation); larger cubes are processed tile by tile.
DEFAULT_TILE = 128
STAGE = "01_proxy"


# ----------------------------------------------------------------------------- Eq. 3-4


def degrade_targets(cubes: Sequence[Cube], task: str | Task, seed: int = 0) -> list[Cube]:
    """The degraded observations of ``cubes`` (seed ``seed + i`` for image ``i``); each keeps its
    wavelengths and name and carries the degradation info in ``meta["degradation"]``."""
    task = get_task(task)
    return [task.degrade_cube(cube, seed=seed + i) for i, cube in enumerate(cubes)]


def make_proxies(model: nn.Module, degraded_cubes: Sequence[Cube], task: str | Task, tile: int | None = DEFAULT_TILE,
                 overlap: int | None = None, device: str | torch.device = "cpu", clip: bool = True) -> list[Cube]:
    """Proxy HSIs ``x_hat_i = R_theta(y_i)`` of every degraded observation (Eq. 3).

    ``degraded_cubes`` are :class:`Cube` s whose ``meta["degradation"]`` holds the degradation info
    (as :func:`degrade_targets` makes them); the task's extra inputs (the mask) come from it.
    ``tile`` / ``overlap`` control tiled inference (``tile=None``: whole cubes); ``clip`` clips
    proxies to [0, 1]. Returns cubes with the observations' names and wavelengths.
    """
    task = get_task(task)
    proxies = []
    for cube in degraded_cubes:
        info = cube.meta.get("degradation")
        if task.family == "general" and info is None:
            raise ValueError(f"{cube.name or 'cube'}: task {task.name!r} needs the degradation info (mask) in "
                             "meta['degradation']; degrade with hiralign.degrade.apply or degrade_targets")
        extra = task.extra_inputs(info, cube.shape)
        out = restore(model, cube.data, extra, tile=tile, overlap=overlap, device=device)
        if clip:
            out = np.clip(out, 0.0, 1.0)
        proxies.append(Cube(out, cube.wavelengths, name=cube.name, meta={"stage": STAGE, "task": task.name}))
    return proxies


def proxy_rgb(proxies: Sequence[Cube]) -> np.ndarray:
    """Proxy RGBs ``(N, 3, H, W)``: the bands nearest 660 / 550 / 470 nm, chosen by wavelength (Eq. 4)."""
    return np.stack([to_rgb(p) for p in proxies])


def parse_observed(spec: str, n: int) -> np.ndarray:
    """``"all"`` or comma-separated indices (``"0,2,5"``) -> boolean flags of length ``n``."""
    flags = np.zeros(n, dtype=bool)
    spec = str(spec).strip()
    if spec.lower() == "all":
        flags[:] = True
        return flags
    try:
        indices = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"observed must be 'all' or comma-separated image indices; got {spec!r}") from None
    bad = [i for i in indices if not 0 <= i < n]
    if bad or not indices:
        raise ValueError(f"observed indices {bad or spec!r} are not valid for {n} target images (0..{n - 1})")
    flags[indices] = True
    return flags


# ----------------------------------------------------------------------------- artifact


def stack_info(infos: Sequence[dict]) -> dict[str, Any]:
    """Per-image degradation info stacked over images: arrays of equal shape (``mask`` ->
    ``(N, B, H, W)``, ``sigma`` -> ``(N, B)``, ``scale`` -> ``(N,)``) and strings; ragged
    entries (e.g. stripe column lists) are left out."""
    out: dict[str, Any] = {}
    for key in infos[0]:
        values = [info.get(key) for info in infos]
        if all(isinstance(v, str) for v in values):
            out[key] = list(values)
            continue
        if any(v is None or isinstance(v, (str, dict)) for v in values):
            continue
        try:
            arr = np.asarray(values)
        except ValueError:  # ragged
            continue
        if arr.dtype != object:
            out[key] = arr
    return out


def proxy_tree(degraded: Sequence[Cube], proxies: Sequence[Cube], observed: np.ndarray, checkpoint: Path | str,
               clean: Sequence[Cube] | None = None) -> dict[str, Any]:
    """The ``01_proxy.h5`` content (schema in ``docs/ARTIFACTS.md``). ``clean`` is stored only for
    evaluation, and only when given (known)."""
    if not (len(degraded) == len(proxies) == len(observed)):
        raise ValueError(f"{len(degraded)} observations, {len(proxies)} proxies and {len(observed)} observed flags")
    data: dict[str, Any] = {
        "wavelengths": np.asarray(proxies[0].wavelengths),
        "names": [p.name for p in proxies],
        "observed": np.asarray(observed, dtype=bool),
        "degraded": np.stack([d.data for d in degraded]),
        "proxy": np.stack([p.data for p in proxies]),
        "proxy_rgb": proxy_rgb(proxies),
        "degradation": stack_info([d.meta.get("degradation", {}) for d in degraded]),
        "source_checkpoint": str(checkpoint),
    }
    if clean is not None:
        if len(clean) != len(proxies):
            raise ValueError(f"{len(clean)} clean cubes for {len(proxies)} proxies")
        data["clean"] = np.stack([c.data for c in clean])
    return data


@dataclass
class ProxySet:
    """``01_proxy.h5`` read back: cubes, proxy RGB, observed flags, clean cubes (``None`` if unknown),
    the task and the source checkpoint that made the proxies."""

    degraded: list[Cube]
    proxies: list[Cube]
    rgb: np.ndarray
    observed: np.ndarray
    clean: list[Cube] | None
    degradation: dict
    params: dict
    checkpoint: Path

    @property
    def observed_proxies(self) -> list[Cube]:
        """The proxies of the observed images (the anchors of stage 2)."""
        return [p for p, o in zip(self.proxies, self.observed) if o]

    @property
    def task(self) -> str:
        return str(self.params["task"])


def proxy_set(art: Artifact) -> ProxySet:
    """A verified ``01_proxy.h5`` record as a :class:`ProxySet` (the checkpoint path made absolute)."""
    wl, names = art["wavelengths"], list(art["names"])

    def cubes(key: str) -> list[Cube]:
        return [Cube(a, wl, name=n) for a, n in zip(art[key], names)]

    clean = cubes("clean") if "clean" in art else None
    return ProxySet(cubes("degraded"), cubes("proxy"), art["proxy_rgb"], art["observed"].astype(bool), clean,
                    art["degradation"], art.params, art.path.parent / art["source_checkpoint"])


def check(params: dict) -> None:
    """Parameter checks of stage 1 (no work): task, backbone, checkpoint file and its task, observed, tile."""
    from hiralign import restorers
    from hiralign.stages import require
    from hiralign.tasks import TASKS
    from hiralign.train import check_compatible, read_checkpoint_config
    from hiralign.train.released import is_released

    require("01_proxy", params, "task", lambda v: v in TASKS, f"one of {', '.join(TASKS)}")
    require("01_proxy", params, "backbone", lambda v: not v or restorers.is_known(v),
            f"empty, a registered backbone ({', '.join(restorers.names())}), package.module:factory, file.py:factory "
            f"or an entry point of {restorers.plugins.ENTRY_POINT_GROUP!r}")
    require("01_proxy", params, "backbone_kwargs", _valid_kwargs, "empty or a YAML mapping such as {channels: 16}")
    _check_backbone_config(params)
    require("01_proxy", params, "checkpoint", lambda v: not v or Path(v).expanduser().is_file(), "empty or an existing file")
    if params.get("checkpoint") and is_released(params["checkpoint"]):
        require("01_proxy", params, "backbone", bool, "the network of the released checkpoint (it does not say which)")
    elif params.get("checkpoint") and "task" in params:
        check_compatible(params["checkpoint"], read_checkpoint_config(params["checkpoint"]), None, params["task"])
    require("01_proxy", params, "observed", _valid_observed, "'all' or comma-separated image indices")
    for key in ("tile", "pretrain_epochs"):
        require("01_proxy", params, key, lambda v: v >= 0, ">= 0")
    for key in ("pretrain_batch", "pretrain_patch"):
        require("01_proxy", params, key, lambda v: v >= 1, ">= 1")


def _check_backbone_config(params: dict) -> None:
    """``backbone_config`` names a configuration of the (given, or the task's default) registered backbone."""
    from hiralign import restorers
    from hiralign.stages import require

    backbone = params.get("backbone") or (restorers.default_backbone(params["task"]) if "task" in params else "")
    if backbone in restorers.names():
        configs = restorers.config_names(backbone)
        require("01_proxy", params, "backbone_config", lambda v: not v or v in configs,
                f"empty or a configuration of {backbone!r} ({', '.join(configs)})")
    elif backbone:
        require("01_proxy", params, "backbone_config", lambda v: not v,
                f"empty for the plugged backbone {backbone!r} (pass its keywords in backbone_kwargs)")


def backbone_kwargs(text: str) -> dict[str, Any]:
    """The ``backbone_kwargs`` parameter: a YAML mapping (empty text: no keywords)."""
    import yaml

    value = yaml.safe_load(text) if text and text.strip() else {}
    if not isinstance(value, dict):
        raise ValueError(f"backbone_kwargs must be a YAML mapping such as {{channels: 16}}; got {text!r}")
    return value


def _valid_kwargs(text: str) -> bool:
    try:
        backbone_kwargs(text)
    except Exception:  # yaml.YAMLError or not a mapping
        return False
    return True


def _valid_observed(text: str) -> bool:
    """``observed`` parses for some number of images (the count is known only once 00_data exists)."""
    try:
        parse_observed(text, 1 << 30)
    except ValueError:
        return False
    return True


def compute(stage) -> ProxySet:
    """Stage 1: the source model (given, committed demo, or pretrained here), the proxies (Eq. 3-4), ``01_proxy.h5``."""
    from hiralign.data.stage import benchmark_from_tree
    from hiralign.train import TrainConfig, source_model

    p = stage.params
    splits = benchmark_from_tree(stage.read("00_data").data)
    task = get_task(p["task"])
    source = source_model(task, splits.source_train, splits.source_test, checkpoint=p["checkpoint"], backbone=p["backbone"],
                          backbone_kwargs=backbone_kwargs(p["backbone_kwargs"]), backbone_config=p["backbone_config"],
                          out=stage.run_dir / f"01_source_{task.name}.safetensors",
                          config=TrainConfig(epochs=p["pretrain_epochs"], batch_size=p["pretrain_batch"],
                                             patch_size=p["pretrain_patch"], seed=p["seed"], device=p["device"]),
                          device=p["device"], source=f"source_train of {stage.run_dir}")
    stage.use_file("checkpoint", source.path)
    checkpoint = source.path.resolve()
    if checkpoint.is_relative_to(stage.run_dir.resolve()):  # pretrained here: recorded relative, so a copied run stays valid
        checkpoint = checkpoint.relative_to(stage.run_dir.resolve())
    flags = parse_observed(p["observed"], len(splits.target_observed))
    degraded = degrade_targets(splits.target_observed, task, seed=p["seed"])
    proxies = make_proxies(source.model, degraded, task, tile=p["tile"] or None, device=p["device"])
    stage.write(proxy_tree(degraded, proxies, flags, checkpoint, clean=splits.target_observed),
                attrs={"clean_known": True})
    return load(stage.store)


def load(store: RunStore) -> ProxySet:
    """``01_proxy.h5`` read back (verified)."""
    return proxy_set(store.read(STAGE))


# ----------------------------------------------------------------------------- scores and the gap


def observation_pairs(degraded: Sequence[Cube], clean: Sequence[Cube], task: str | Task) -> list[Pair]:
    """Training-style pairs of degraded observations and their clean cubes (for scoring)."""
    task = get_task(task)
    return [Pair(d.data, c.data, task.extra_inputs(d.meta.get("degradation"), d.shape)) for d, c in zip(degraded, clean)]


def proxy_table(degraded: Sequence[Cube], clean: Sequence[Cube], task: str | Task, observed: np.ndarray,
                restored: dict[str, Sequence[Cube]]) -> list[dict]:
    """One row per image: the input's PSNR and PSNR / SSIM / SAM of each method in ``restored``
    (e.g. ``{"proxy": ..., "baseline": ...}``) against the clean cube, then a mean row."""
    task = get_task(task)
    rows = []
    for i, (d, c) in enumerate(zip(degraded, clean)):
        row: dict[str, Any] = {"image": c.name.split("/")[-1], "observed": bool(observed[i]),
                               "input PSNR": evaluate(reference_input(d.data, task), c.data)["psnr"]}
        for method, cubes in restored.items():
            scores = evaluate(cubes[i].data, c.data)
            row.update({f"{method} PSNR": scores["psnr"], f"{method} SSIM": scores["ssim"],
                        f"{method} SAM": scores["sam"]})
        rows.append(row)
    mean = {"image": "mean", "observed": int(np.sum(observed))}
    mean.update({k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k not in ("image", "observed")})
    return rows + [mean]


def gap_table(model: nn.Module, baseline: nn.Module | None, splits: dict[str, Sequence[Cube]], task: str | Task,
              seed: int = 0, tile: int | None = DEFAULT_TILE, device: str | torch.device = "cpu") -> list[dict]:
    """Source-vs-target gap of the source model: for each split (e.g. ``source_test``,
    ``target_observed``) the input PSNR, the model's PSNR / SSIM / SAM and gain over the input, and
    the classical baseline's PSNR, gain and the model's margin over it (``model - baseline``; the
    baseline needs no training data, so it is a domain-agnostic reference that factors out how
    easy each split's images are). Observations use seeds ``seed + i`` per split. One final row per
    later split holds ``first split - that split`` of every column."""
    task = get_task(task)
    rows = []
    for split, cubes in splits.items():
        pairs = validation_pairs(cubes, task, seed)
        scores = evaluate_pairs(model, pairs, tile=tile, device=device)
        row = {"split": split, "images": len(pairs), "input PSNR": scores["input_psnr"], "model PSNR": scores["psnr"],
               "model SSIM": scores["ssim"], "model SAM": scores["sam"],
               "model gain": scores["psnr"] - scores["input_psnr"]}
        if baseline is not None:
            base = evaluate_pairs(baseline, pairs, tile=None, device="cpu")
            row.update({"baseline PSNR": base["psnr"], "baseline gain": base["psnr"] - base["input_psnr"],
                        "model - baseline": scores["psnr"] - base["psnr"]})
        rows.append(row)
    first = rows[0]
    for other in rows[1:]:
        gap = {"split": f"gap {first['split']} - {other['split']}", "images": ""}
        gap.update({k: first[k] - other[k] for k in first if k not in ("split", "images")})
        rows.append(gap)
    return rows


def markdown_table(rows: Sequence[dict], digits: int = 2) -> str:
    """Rows of dicts as a markdown table (floats with ``digits`` decimals; SSIM with 3)."""
    columns = list(rows[0])

    def cell(key: str, value: Any) -> str:
        if isinstance(value, (float, np.floating)):
            return f"{value:.{3 if 'SSIM' in key else digits}f}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(k, r.get(k, "")) for k in columns) + " |" for r in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- figures


def plot_proxies(degraded: Sequence[Cube], proxies: Sequence[Cube], clean: Sequence[Cube] | None = None,
                 baseline: Sequence[Cube] | None = None, indices: Sequence[int] | None = None):
    """Proxy-RGB renders (Eq. 4) side by side, one row per image: degraded | proxy | baseline | clean."""
    import matplotlib.pyplot as plt

    indices = list(indices if indices is not None else range(min(3, len(proxies))))
    columns = [("degraded", degraded), ("proxy (source model)", proxies)]
    columns += [("classical baseline", baseline)] if baseline is not None else []
    columns += [("clean (evaluation only)", clean)] if clean is not None else []
    fig, axes = plt.subplots(len(indices), len(columns), figsize=(2.6 * len(columns), 2.6 * len(indices)),
                             squeeze=False)
    for r, i in enumerate(indices):
        for c, (title, cubes) in enumerate(columns):
            ax = axes[r, c]
            ax.imshow(display_rgb(to_rgb(cubes[i])), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
            if c == 0:
                ax.set_ylabel(proxies[i].name.split("/")[-1], fontsize=8)
    fig.tight_layout()
    return fig


def plot_spectra(degraded: Cube, proxy: Cube, clean: Cube | None = None, baseline: Cube | None = None,
                 n_pixels: int = 3, seed: int = 0):
    """Spectra at ``n_pixels`` random pixels: degraded (nearest low-resolution pixel for SR),
    proxy, baseline and clean, against wavelength."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    h, w = proxy.height, proxy.width
    scale = h // degraded.height
    fig, axes = plt.subplots(1, n_pixels, figsize=(3.6 * n_pixels, 3.0), squeeze=False)
    wl = proxy.wavelengths
    for ax in axes[0]:
        r, c = int(rng.integers(h)), int(rng.integers(w))
        ax.plot(wl, degraded.data[:, r // scale, c // scale], color="0.6", lw=1, label="degraded")
        if clean is not None:
            ax.plot(wl, clean.data[:, r, c], "k-", lw=2, label="clean")
        if baseline is not None:
            ax.plot(wl, baseline.data[:, r, c], "C1--", lw=1.5, label="baseline")
        ax.plot(wl, proxy.data[:, r, c], "C0-", lw=1.5, label="proxy")
        ax.set_title(f"pixel ({r}, {c})", fontsize=9)
        ax.set_xlabel("wavelength (nm)")
    axes[0, 0].set_ylabel("value")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig
