"""Stage 00: assemble the source/target splits and store them as ``00_data.h5``.

The embedded synthetic benchmark is the default; real scenes (any format :func:`hiralign.data.load`
reads) can stand in for the target (and the source) domain, cut into ``image_size`` tiles.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hiralign.data.cube import Cube, CubeError
from hiralign.data import loaders
from hiralign.data.loaders import DatasetError, variable_names
from hiralign.data.synthetic import Benchmark, make_benchmark
from hiralign.stages import require
from hiralign.store import RunStore, canonical_params

SPLITS = ("source_train", "source_test", "target_observed", "target_unobserved")
SCENE_SUFFIXES = {".mat", ".h5", ".hdf5", ".npy", ".npz", ".tif", ".tiff"}


def scene_files(path: Path | str) -> list[Path]:
    """Scenes under ``path``: the file itself, each scene file / CAVE scene folder inside a folder, or
    the files matching a glob pattern in its last part (``data/cave/*.mat``)."""
    path = Path(path)
    if any(c in path.name for c in "*?["):
        matches = sorted(p for p in path.parent.glob(path.name) if p.suffix.lower() in SCENE_SUFFIXES or p.is_dir())
        if not matches:
            raise DatasetError(f"{path}: the pattern matches no scene files ({sorted(SCENE_SUFFIXES)}) or folders")
        return [m for p in matches for m in scene_files(p)]
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder (see docs/datasets.md for where to put datasets)")
    if path.is_file():
        return [path]
    scenes = sorted(p for p in path.iterdir() if p.suffix.lower() in SCENE_SUFFIXES or (p.is_dir() and any(p.rglob("*.png"))))
    if not scenes:
        raise DatasetError(f"{path}: folder holds no scene files ({sorted(SCENE_SUFFIXES)}) or CAVE scene folders")
    return scenes


def tiles(cube: Cube, size: int) -> list[Cube]:
    """Non-overlapping ``size`` x ``size`` tiles of a cube (row-major), named ``<scene>@<row>,<col>``."""
    if cube.height < size or cube.width < size:
        raise CubeError(f"{cube.name}: {cube.height}x{cube.width} is smaller than image_size={size}")
    out = []
    for top in range(0, cube.height - size + 1, size):
        for left in range(0, cube.width - size + 1, size):
            tile = cube.crop(top, left, size, size)
            out.append(tile.replace(name=f"{cube.name}@{top},{left}"))
    return out


def real_tiles(path: str, kind: str, size: int, n: int, seed: int) -> list[Cube]:
    """``n`` tiles drawn (seeded, without replacement) from every scene under ``path``."""
    pool = [t for f in scene_files(path) for t in tiles(loaders.load(f, kind=kind or None), size)]
    if len(pool) < n:
        raise DatasetError(f"{path}: only {len(pool)} tiles of {size}x{size} px; {n} are needed")
    order = np.random.default_rng(seed).permutation(len(pool))[:n]
    return [pool[i].replace(meta={"synthetic": False}) for i in order]


def build_splits(dataset: str, kind: str, source_path: str, image_size: int, n_source_train: int,
                 n_source_test: int, n_target_observed: int, n_target_unobserved: int, seed: int) -> Benchmark:
    """The four splits: synthetic by default; real target (and source) tiles when paths are given."""
    bench = make_benchmark(image_size, n_source_train, n_source_test, n_target_observed, n_target_unobserved, seed)
    splits = {name: getattr(bench, name) for name in SPLITS}
    if dataset != "synthetic":
        target = real_tiles(dataset, kind, image_size, n_target_observed + n_target_unobserved, seed)
        splits["target_observed"], splits["target_unobserved"] = target[:n_target_observed], target[n_target_observed:]
    if source_path:
        source = real_tiles(source_path, "", image_size, n_source_train + n_source_test, seed + 1)
        splits["source_train"], splits["source_test"] = source[:n_source_train], source[n_source_train:]
    grids = {tuple(c.wavelengths) for cubes in splits.values() for c in cubes}
    if len(grids) > 1:
        raise CubeError(f"source and target cubes use different wavelength grids ({len(grids)} grids); resample first")
    params = {**bench.params, "dataset": dataset, "source_path": source_path}
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
    for key in ("dataset", "source_path"):
        if params.get(key) and params[key] != "synthetic":
            for path in scene_files(params[key]):
                check_header(path)


def compute(stage) -> Benchmark:
    """Stage 00: build the four splits and write ``00_data.h5``."""
    p = stage.params
    bench = build_splits(dataset=p["dataset"], kind=p["kind"], source_path=p["source_path"], image_size=p["image_size"],
                         n_source_train=p["n_source_train"], n_source_test=p["n_source_test"],
                         n_target_observed=p["n_target_observed"], n_target_unobserved=p["n_target_unobserved"],
                         seed=p["seed"])
    stage.write(splits_tree(bench), attrs={"synthetic": is_synthetic(bench)})
    return bench


def load(store: RunStore) -> Benchmark:
    """``00_data.h5`` read back (verified) into a :class:`Benchmark`."""
    return benchmark_from_tree(store.read("00_data").data)


def summary(bench: Benchmark) -> None:
    """Print image counts, sizes and wavelength range per split."""
    label = "SYNTHETIC embedded benchmark" if is_synthetic(bench) else "real data"
    wl = bench.wavelengths
    print(f"{label}; {len(wl)} bands {wl[0]:g}..{wl[-1]:g} nm")
    for name, cubes in bench.splits().items():
        shape = "x".join(map(str, cubes[0].shape)) if cubes else "-"
        print(f"  {name:>18s}: {len(cubes):3d} images of {shape}")
