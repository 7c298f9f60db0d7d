"""Stage 00: assemble the source/target splits and store them as ``00_data.h5``.

The embedded synthetic benchmark is the default; real scenes (any format :func:`hiralign.data.load`
reads) can stand in for the target (and the source) domain, cut into ``image_size`` tiles.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hiralign.data.cube import Cube, CubeError
from hiralign.data.loaders import DatasetError, load
from hiralign.data.synthetic import Benchmark, make_benchmark
from hiralign.store import RunStore

SPLITS = ("source_train", "source_test", "target_observed", "target_unobserved")
SCENE_SUFFIXES = {".mat", ".h5", ".hdf5", ".npy", ".npz", ".tif", ".tiff"}


def scene_files(path: Path | str) -> list[Path]:
    """Scenes under ``path``: the file itself, or each scene file / CAVE scene folder inside a folder."""
    path = Path(path)
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
    pool = [t for f in scene_files(path) for t in tiles(load(f, kind=kind or None), size)]
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


def write_splits(store: RunStore, bench: Benchmark, params: dict) -> Path:
    """Write ``00_data.h5`` (schema in docs/ARTIFACTS.md)."""
    data: dict = {"wavelengths": bench.wavelengths}
    for name, cubes in bench.splits().items():
        group: dict = {"names": [c.name for c in cubes]} if cubes else {}
        if cubes:
            group["cubes"] = np.stack([c.data for c in cubes])
        data[name] = group
    return store.write("00_data", data, params, attrs={"synthetic": is_synthetic(bench)})


def read_splits(store: RunStore, params: dict | None = None) -> Benchmark:
    """Read ``00_data.h5`` back into a :class:`Benchmark` (raises if stale against ``params``)."""
    art = store.read("00_data", params)
    wl = art["wavelengths"]
    synthetic = bool(art.attrs.get("synthetic", False))
    splits = {}
    for name in SPLITS:
        group = art[name]
        cubes = group.get("cubes", np.zeros((0,)))
        splits[name] = [Cube(c, wl, name=n, meta={"synthetic": synthetic}) for c, n in zip(cubes, group.get("names", []))]
    return Benchmark(**splits, params={**art.params, "wavelengths": wl.tolist()})


def summary(bench: Benchmark) -> None:
    """Print image counts, sizes and wavelength range per split."""
    label = "SYNTHETIC embedded benchmark" if is_synthetic(bench) else "real data"
    wl = bench.wavelengths
    print(f"{label}; {len(wl)} bands {wl[0]:g}..{wl[-1]:g} nm")
    for name, cubes in bench.splits().items():
        shape = "x".join(map(str, cubes[0].shape)) if cubes else "-"
        print(f"  {name:>18s}: {len(cubes):3d} images of {shape}")
