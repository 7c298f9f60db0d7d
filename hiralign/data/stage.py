"""Stage 00: assemble the source/target splits and store them as ``00_data.h5`` (+ ``00_split.csv``).

The embedded synthetic benchmark is the default; real scenes (any format :func:`hiralign.data.load`
reads; a relative path is relative to the project root) can stand in for the target (and the source)
domain, cut into ``image_size`` tiles. The observed and unobserved target tiles never share a pixel:
they are distinct tiles, tiles of distinct scenes (``split``, :func:`hiralign.data.tiling.target_tiles`),
or the tiles of the scenes that published split lists name (``split="lists"``,
:func:`hiralign.data.scene_lists.resolve_scene_lists`). Source and target cubes end on one wavelength
grid (``band_grid``, :func:`hiralign.data.band_grids.align_band_grids`).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Callable

import numpy as np

from hiralign.data import loaders
from hiralign.data.band_grids import BAND_GRIDS, align_band_grids, nm_text
from hiralign.data.cube import Cube
from hiralign.data.scene_lists import SCENE_LIST_KEYS, domain_tiles, resolve_scene_lists
from hiralign.data.synthetic import Benchmark, make_benchmark
from hiralign.data.tiling import TILE_SPLIT_MODES, draw_tiles, parse_wavelengths, scene_files, scene_tiles, target_tiles
from hiralign.stages import ParameterError, require
from hiralign.store import RunStore, canonical_params, write_text_atomic

SPLITS = ("source_train", "source_test", "target_observed", "target_unobserved")
#: Values of the ``split`` parameter (:func:`hiralign.data.tiling.target_tiles`; ``lists``: :func:`build_splits`).
SPLIT_MODES = (*TILE_SPLIT_MODES, "lists")
#: The side file listing every image's split and place in its scene (:func:`split_rows`).
SPLIT_FILE = "00_split.csv"
SPLIT_COLUMNS = ("image", "domain", "split", "scene", "top", "left", "size")


def build_splits(dataset: str, kind: str, source_path: str, image_size: int, n_source_train: int,
                 n_source_test: int, n_target_observed: int, n_target_unobserved: int, seed: int,
                 split: str = "auto", *, source_kind: str = "", observed_scenes: str = "", unobserved_scenes: str = "",
                 source_train_scenes: str = "", source_test_scenes: str = "", band_grid: str = "common",
                 wavelengths: str = "", log: Callable[[str], None] = print) -> Benchmark:
    """The four splits: synthetic by default; real target (and source) tiles when paths are given.

    The target split follows ``split`` (:func:`hiralign.data.tiling.target_tiles`, or ``lists``: the
    scenes of ``observed_scenes`` / ``unobserved_scenes``, :func:`hiralign.data.scene_lists.domain_tiles`);
    the mode used is ``params["split"]``. A real source takes the scenes of ``source_train_scenes`` /
    ``source_test_scenes`` when given, else distinct tiles drawn from all its scenes. With a scene
    list, a count of 0 takes every tile of its scenes. ``wavelengths``
    (:func:`hiralign.data.tiling.parse_wavelengths`) goes to the target loader. The grids are then aligned
    (:func:`hiralign.data.band_grids.align_band_grids`); ``params["wavelengths"]`` is the grid of the
    cubes, ``params["scene_lists"]`` the lists used."""
    counts = {"source_train": n_source_train, "source_test": n_source_test,
              "target_observed": n_target_observed, "target_unobserved": n_target_unobserved}
    refs = {"target_observed": observed_scenes, "target_unobserved": unobserved_scenes,
            "source_train": source_train_scenes, "source_test": source_test_scenes}
    lists = resolve_scene_lists(dataset, kind, source_path, source_kind, split, refs)
    wl = parse_wavelengths(wavelengths)
    bench = make_benchmark(image_size, n_source_train, n_source_test, n_target_observed, n_target_unobserved, seed)
    splits = {name: getattr(bench, name) for name in SPLITS}
    params = {**bench.params, "dataset": dataset, "source_path": source_path}
    if dataset != "synthetic":
        if split == "lists":
            splits.update(domain_tiles(dataset, kind, ("target_observed", "target_unobserved"), counts, lists,
                                       image_size, (seed, seed + 1, seed + 1), wl))
            params["split"] = "lists"
        else:
            splits["target_observed"], splits["target_unobserved"], params["split"] = target_tiles(
                dataset, kind, image_size, n_target_observed, n_target_unobserved, split, seed, wavelengths=wl)
    if source_path and any(n in lists for n in ("source_train", "source_test")):
        splits.update(domain_tiles(source_path, source_kind, ("source_train", "source_test"), counts, lists,
                                   image_size, (seed + 2, seed + 3, seed + 1), key="source_path"))
    elif source_path:
        pool = [t for s in scene_tiles(source_path, source_kind, image_size, key="source_path") for t in s]
        source = draw_tiles(pool, n_source_train + n_source_test, seed + 1, source_path)
        splits["source_train"], splits["source_test"] = source[:n_source_train], source[n_source_train:]
    if lists:
        params["scene_lists"] = {n: lst.record() for n, lst in lists.items()}
    splits, grid, record = align_band_grids(splits, band_grid, log)
    params.update(record, wavelengths=[float(w) for w in grid])
    return Benchmark(**splits, params=params)


def is_synthetic(bench: Benchmark) -> bool:
    return any(c.meta.get("synthetic", False) for cubes in bench.splits().values() for c in cubes)


def splits_tree(bench: Benchmark) -> dict:
    """The ``00_data.h5`` content (schema in docs/ARTIFACTS.md): cubes, names and each cube's ``meta`` as JSON."""
    data: dict = {"wavelengths": bench.wavelengths, "benchmark": canonical_params(bench.params)}
    for name, cubes in bench.splits().items():
        group: dict = {"names": [c.name for c in cubes], "meta": [canonical_params(c.meta) for c in cubes]} if cubes else {}
        if cubes:
            group["cubes"] = np.stack([c.data for c in cubes])
        data[name] = group
    return data


def benchmark_from_tree(tree: dict) -> Benchmark:
    """Inverse of :func:`splits_tree`: every cube with its name, wavelengths and metadata."""
    wl = tree["wavelengths"]
    splits = {}
    for name in SPLITS:
        group = tree[name]
        cubes, names, metas = group.get("cubes", np.zeros((0,))), group.get("names", []), group.get("meta", [])
        splits[name] = [Cube(c, wl, name=n, meta=json.loads(m)) for c, n, m in zip(cubes, names, metas)]
    return Benchmark(**splits, params=json.loads(tree["benchmark"]))


def check(params: dict) -> None:
    """Parameter checks of stage 00 (no work): counts, size, choices, the wavelengths, that real scene files
    exist and open, and that every scene the scene lists name exists (all missing ones in one error)."""
    lists_mode = params.get("split") == "lists"
    require("00_data", params, "image_size", lambda v: v >= 1, ">= 1")
    if lists_mode:  # 0: every tile of the observed_scenes
        require("00_data", params, "n_target_observed", lambda v: v >= 0, ">= 0 with split=lists (0: every tile of observed_scenes)")
    else:
        require("00_data", params, "n_target_observed", lambda v: v >= 1, ">= 1")
    for key in ("n_source_train", "n_source_test", "n_target_unobserved"):
        require("00_data", params, key, lambda v: v >= 0, ">= 0")
    require("00_data", params, "split", lambda v: v in SPLIT_MODES, f"one of {', '.join(SPLIT_MODES)}")
    require("00_data", params, "band_grid", lambda v: v in BAND_GRIDS, f"one of {', '.join(BAND_GRIDS)}")
    for key in ("kind", "source_kind"):
        require("00_data", params, key, lambda v: not v or v.lower() in loaders.DATASETS,
                f"empty (guess) or one of {', '.join(loaders.DATASETS)}")
    wavelengths = parse_wavelengths(params.get("wavelengths", ""))
    real_target = bool(params.get("dataset")) and params["dataset"] != "synthetic"
    kind = str(params.get("kind") or "").lower()
    if wavelengths is not None and not real_target:
        raise ParameterError("00_data: wavelengths are given to the loader of real target scenes; the synthetic "
                             "benchmark has its own (leave wavelengths empty or set dataset)")
    if wavelengths is not None and kind == "icvl":
        raise ParameterError("00_data: ICVL files carry their own wavelengths (variable bands); leave wavelengths empty")
    if wavelengths is None and kind == "hsidwrd" and real_target:
        raise ParameterError("00_data: HSIDwrD files store no wavelengths; set wavelengths to one per stored band, "
                             "e.g. 400:730:10 (34 bands; an assumption, see docs/datasets.md, HSIDwrD)")
    if lists_mode or any(params.get(key) for key in SCENE_LIST_KEYS.values()):
        resolve_scene_lists(params.get("dataset", ""), params.get("kind", ""), params.get("source_path", ""),
                            params.get("source_kind", ""), params.get("split", "auto"),
                            {n: params.get(key, "") for n, key in SCENE_LIST_KEYS.items()})
    for key, kind_key in (("dataset", "kind"), ("source_path", "source_kind")):
        if params.get(key) and params[key] != "synthetic":
            for path in scene_files(params[key], key):
                loaders.check_scene(path, params.get(kind_key) or None)  # layout and headers (docs/datasets.md)


def split_rows(bench: Benchmark) -> list[dict]:
    """One row per image of every split (``00_split.csv``): its name, domain, split and place in its
    scene (a synthetic image is a scene of its own, at 0, 0)."""
    rows = []
    for name, cubes in bench.splits().items():
        domain, split = name.split("_")
        for c in cubes:
            rows.append({"image": c.name, "domain": domain, "split": split, "scene": c.meta.get("scene", c.name),
                         "top": c.meta.get("top", 0), "left": c.meta.get("left", 0), "size": c.height})
    return rows


def write_split_file(path: Path, bench: Benchmark) -> Path:
    """Write :func:`split_rows` as CSV to ``path`` (atomically)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SPLIT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(split_rows(bench))
    write_text_atomic(path, buf.getvalue())
    return path


def compute(stage) -> Benchmark:
    """Stage 00: build the four splits, write ``00_split.csv`` and the ``00_data.h5`` record."""
    p = stage.params
    bench = build_splits(dataset=p["dataset"], kind=p["kind"], source_path=p["source_path"], image_size=p["image_size"],
                         n_source_train=p["n_source_train"], n_source_test=p["n_source_test"],
                         n_target_observed=p["n_target_observed"], n_target_unobserved=p["n_target_unobserved"],
                         seed=p["seed"], split=p["split"], source_kind=p.get("source_kind", ""),
                         **{key: p.get(key, "") for key in SCENE_LIST_KEYS.values()},
                         band_grid=p.get("band_grid", "common"), wavelengths=p.get("wavelengths", ""), log=stage.log)
    split_file = write_split_file(stage.run_dir / SPLIT_FILE, bench)
    stage.write(splits_tree(bench), attrs={"synthetic": is_synthetic(bench)}, files=(split_file,))
    return bench


def load(store: RunStore) -> Benchmark:
    """``00_data.h5`` read back (verified) into a :class:`Benchmark`."""
    return benchmark_from_tree(store.read("00_data").data)


def summary(bench: Benchmark) -> None:
    """Print image counts, sizes and wavelength range per split."""
    def origin(cubes: list[Cube], path: str) -> str:
        return "SYNTHETIC embedded benchmark" if any(c.meta.get("synthetic", False) for c in cubes) else f"real ({path})"

    wl = bench.wavelengths
    print(f"target: {origin(bench.target_observed, bench.params.get('dataset', ''))}; "
          f"source: {origin(bench.source_train, bench.params.get('source_path', ''))}; {len(wl)} bands {wl[0]:g}..{wl[-1]:g} nm")
    if "split" in bench.params:
        how = {"scenes": "whole scenes per split", "lists": "the scenes of the scene lists"}.get(
            bench.params["split"], "distinct tiles of any scene")
        print(f"target split: {bench.params['split']} ({how}; observed and unobserved share no pixel)")
    for name, listed in bench.params.get("scene_lists", {}).items():
        print(f"scene list {listed['parameter']}={listed['list']}: {len(listed['scenes'])} {listed['kind']} scenes for {name}")
    if "band_grid" in bench.params:
        grids = bench.params["band_grids"]
        print(f"band grid: target {grids['target']}, source {grids['source']} -> common {grids['common']} "
              f"(dropped: {nm_text(bench.params['bands_dropped'])}; source resampled linearly)")
    for name, cubes in bench.splits().items():
        shape = "x".join(map(str, cubes[0].shape)) if cubes else "-"
        print(f"  {name:>18s}: {len(cubes):3d} images of {shape}")
