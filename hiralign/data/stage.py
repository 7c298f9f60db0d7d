"""Stage 00: assemble the source/target splits and store them as ``00_data.h5`` (+ ``00_split.csv``).

The embedded synthetic benchmark is the default; real scenes (any format :func:`hiralign.data.load`
reads; a relative path is relative to the project root) can stand in for the target (and the source)
domain, cut into ``image_size`` tiles. The observed and unobserved target tiles never share a pixel:
they are distinct tiles, or tiles of distinct scenes (``split``, :func:`target_tiles`).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from hiralign.data.cube import Cube, CubeError
from hiralign.data import loaders
from hiralign.data.loaders import DatasetError, variable_names
from hiralign.data.synthetic import Benchmark, make_benchmark
from hiralign.stages import require
from hiralign.store import RunStore, canonical_params, project_path, write_text_atomic

SPLITS = ("source_train", "source_test", "target_observed", "target_unobserved")
SCENE_SUFFIXES = {".mat", ".h5", ".hdf5", ".npy", ".npz", ".tif", ".tiff"}
#: Values of the ``split`` parameter (:func:`target_tiles`).
SPLIT_MODES = ("auto", "tiles", "scenes")
#: The side file listing every image's split and place in its scene (:func:`split_rows`).
SPLIT_FILE = "00_split.csv"
SPLIT_COLUMNS = ("image", "domain", "split", "scene", "top", "left", "size")


def missing_scenes(folder: Path, problem: str, key: str) -> DatasetError:
    """The error for scenes that are not where ``00_data.<key>`` points: names the folder, what belongs
    in it, and how to point elsewhere."""
    return DatasetError(
        f"{problem}. Put the scenes in {folder}: for CAVE the official download's <scene>_ms folders of "
        f"16-bit band PNGs, or .mat files of the scenes; other datasets as docs/datasets.md describes. "
        f"Or point 00_data.{key} elsewhere (hiralign run PARAMS --set 00_data.{key}=PATH; a relative PATH "
        f"is taken from the project root)")


def scene_files(path: Path | str, key: str = "dataset") -> list[Path]:
    """Scenes under ``path`` (relative: to the project root): the file itself, each scene file / CAVE
    scene folder inside a folder, or the files matching a glob pattern in its last part
    (``data/cave/*.mat``). A missing folder or an empty match is a :func:`missing_scenes` error."""
    given, path = str(path), project_path(path)
    if any(c in path.name for c in "*?["):
        if not path.parent.is_dir():
            raise missing_scenes(path.parent, f"{path.parent}: no such folder (00_data.{key} is {given!r})", key)
        matches = sorted(p for p in path.parent.glob(path.name) if p.suffix.lower() in SCENE_SUFFIXES or p.is_dir())
        if not matches:
            raise missing_scenes(path.parent, f"{path}: the pattern matches no scene files ({sorted(SCENE_SUFFIXES)}) "
                                              f"or folders in {path.parent}", key)
        return [m for p in matches for m in scene_files(p, key)]
    if not path.exists():
        folder = path.parent if path.suffix else path
        raise missing_scenes(folder, f"{path}: no such file or folder", key)
    if path.is_file():
        return [path]
    scenes = sorted(p for p in path.iterdir() if p.suffix.lower() in SCENE_SUFFIXES or (p.is_dir() and any(p.rglob("*.png"))))
    if not scenes:
        raise missing_scenes(path, f"{path}: folder holds no scene files ({sorted(SCENE_SUFFIXES)}) or CAVE scene folders", key)
    return scenes


def tiles(cube: Cube, size: int) -> list[Cube]:
    """Non-overlapping ``size`` x ``size`` tiles of a cube (row-major), named ``<scene>@<row>,<col>``,
    their place in ``meta`` (``scene``, ``top``, ``left``)."""
    if cube.height < size or cube.width < size:
        raise CubeError(f"{cube.name}: {cube.height}x{cube.width} is smaller than image_size={size}")
    out = []
    for top in range(0, cube.height - size + 1, size):
        for left in range(0, cube.width - size + 1, size):
            tile = cube.crop(top, left, size, size)
            out.append(tile.replace(name=f"{cube.name}@{top},{left}", meta={"scene": cube.name, "top": top, "left": left}))
    return out


def scene_tiles(path: str, kind: str, size: int, key: str = "dataset") -> list[list[Cube]]:
    """The tiles of every scene under ``path``, one list per scene (marked real: ``meta["synthetic"]`` False)."""
    return [[t.replace(meta={"synthetic": False}) for t in tiles(loaders.load(f, kind=kind or None), size)]
            for f in scene_files(path, key)]


def draw_tiles(pool: list[Cube], n: int, seed: int, where: str) -> list[Cube]:
    """``n`` tiles of ``pool`` drawn seeded, without replacement (``where`` names the pool in the error)."""
    if len(pool) < n:
        size = pool[0].height if pool else 0
        raise DatasetError(f"{where}: only {len(pool)} tiles of {size}x{size} px; {n} are needed")
    order = np.random.default_rng(seed).permutation(len(pool))[:n]
    return [pool[i] for i in order]


def assign_scenes(sizes: list[int], n_observed: int, seed: int) -> tuple[list[int], list[int]]:
    """Scene indices for the observed and the unobserved images: in a seeded order, scenes go to the
    observed split until they hold ``n_observed`` tiles (``sizes``: tiles per scene); the rest are unobserved."""
    order = [int(i) for i in np.random.default_rng(seed).permutation(len(sizes))]
    observed, held = [], 0
    for i in order:
        if held >= n_observed:
            break
        observed.append(i)
        held += sizes[i]
    return observed, order[len(observed):]


def target_tiles(path: str, kind: str, size: int, n_observed: int, n_unobserved: int, split: str,
                 seed: int) -> tuple[list[Cube], list[Cube], str]:
    """Observed and unobserved target tiles from the scenes under ``path``, and the split mode used.

    ``tiles``: distinct non-overlapping tiles drawn from all scenes; ``scenes``: whole scenes per split
    (:func:`assign_scenes`); ``auto``: ``scenes`` when there are 2+ scenes and they can fill both splits.
    The two splits never share a pixel either way.
    """
    if split not in SPLIT_MODES:
        raise ValueError(f"split must be one of {', '.join(SPLIT_MODES)}, got {split!r}")
    scenes = scene_tiles(path, kind, size)
    sizes = [len(s) for s in scenes]
    observed, unobserved = assign_scenes(sizes, n_observed, seed)
    held = sum(sizes[i] for i in observed), sum(sizes[i] for i in unobserved)
    fits = held[0] >= n_observed and held[1] >= n_unobserved
    mode = ("scenes" if len(scenes) >= 2 and fits else "tiles") if split == "auto" else split
    if mode == "tiles":
        drawn = draw_tiles([t for s in scenes for t in s], n_observed + n_unobserved, seed, path)
        return drawn[:n_observed], drawn[n_observed:], mode
    if not fits:
        raise DatasetError(
            f"{path}: split=scenes cannot fill the splits: {len(scenes)} scene(s) of {sizes} tiles of {size}x{size} px; "
            f"the {len(observed)} observed scene(s) hold {held[0]} tiles for {n_observed} observed images, the other "
            f"{len(unobserved)} hold {held[1]} for {n_unobserved} unobserved images (use more scenes, fewer or smaller "
            f"images, or split=tiles)")
    observed_pool = [t for i in observed for t in scenes[i]]
    unobserved_pool = [t for i in unobserved for t in scenes[i]]
    return draw_tiles(observed_pool, n_observed, seed, path), draw_tiles(unobserved_pool, n_unobserved, seed + 1, path), mode


def build_splits(dataset: str, kind: str, source_path: str, image_size: int, n_source_train: int,
                 n_source_test: int, n_target_observed: int, n_target_unobserved: int, seed: int,
                 split: str = "auto") -> Benchmark:
    """The four splits: synthetic by default; real target (and source) tiles when paths are given,
    the target split by ``split`` (:func:`target_tiles`; the mode used is ``params["split"]``)."""
    bench = make_benchmark(image_size, n_source_train, n_source_test, n_target_observed, n_target_unobserved, seed)
    splits = {name: getattr(bench, name) for name in SPLITS}
    params = {**bench.params, "dataset": dataset, "source_path": source_path}
    if dataset != "synthetic":
        splits["target_observed"], splits["target_unobserved"], params["split"] = target_tiles(
            dataset, kind, image_size, n_target_observed, n_target_unobserved, split, seed)
    if source_path:
        pool = [t for s in scene_tiles(source_path, "", image_size, key="source_path") for t in s]
        source = draw_tiles(pool, n_source_train + n_source_test, seed + 1, source_path)
        splits["source_train"], splits["source_test"] = source[:n_source_train], source[n_source_train:]
    grids = {tuple(c.wavelengths) for cubes in splits.values() for c in cubes}
    if len(grids) > 1:
        raise CubeError(f"source and target cubes use different wavelength grids ({len(grids)} grids); resample first")
    return Benchmark(**splits, params=params)


def is_synthetic(bench: Benchmark) -> bool:
    return any(c.meta.get("synthetic", False) for cubes in bench.splits().values() for c in cubes)


def check_header(path: Path) -> None:
    """Open a scene file far enough to know it is readable and holds arrays (no pixel data is read)."""
    suffix = path.suffix.lower()
    try:
        if path.is_dir():
            if not any(path.rglob("*.png")):
                raise DatasetError(f"{path}: CAVE scene folder without band PNGs")
        elif suffix == ".mat":
            if not variable_names(path):
                raise DatasetError(f"{path}: .mat file holds no variables")
        elif suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(path, "r") as f:
                if not list(f.keys()):
                    raise DatasetError(f"{path}: HDF5 file holds no datasets")
        elif suffix in (".npy", ".npz"):
            np.load(path, mmap_mode="r", allow_pickle=False)
        elif suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                tif.series[0].shape
    except DatasetError:
        raise
    except Exception as err:  # every reader has its own error types for a damaged file
        raise DatasetError(f"{path}: corrupt or truncated file ({type(err).__name__}: {err})") from err


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
    """Parameter checks of stage 00 (no work): counts, size, and that real scene files exist and open."""
    for key in ("image_size", "n_target_observed"):
        require("00_data", params, key, lambda v: v >= 1, ">= 1")
    for key in ("n_source_train", "n_source_test", "n_target_unobserved"):
        require("00_data", params, key, lambda v: v >= 0, ">= 0")
    require("00_data", params, "split", lambda v: v in SPLIT_MODES, f"one of {', '.join(SPLIT_MODES)}")
    for key in ("dataset", "source_path"):
        if params.get(key) and params[key] != "synthetic":
            for path in scene_files(params[key], key):
                check_header(path)


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
                         seed=p["seed"], split=p["split"])
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
        how = "whole scenes per split" if bench.params["split"] == "scenes" else "distinct tiles of any scene"
        print(f"target split: {bench.params['split']} ({how}; observed and unobserved share no pixel)")
    for name, cubes in bench.splits().items():
        shape = "x".join(map(str, cubes[0].shape)) if cubes else "-"
        print(f"  {name:>18s}: {len(cubes):3d} images of {shape}")
