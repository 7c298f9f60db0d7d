"""Real scenes cut into tiles: the scene files under a path, their non-overlapping ``image_size`` tiles,
seeded draws of tiles, and the observed / unobserved target tiles of the ``split`` modes ``tiles``,
``scenes`` and ``auto`` (:func:`target_tiles`), which never share a pixel. Also the ``wavelengths``
parameter (:func:`parse_wavelengths`) that the scene loaders are given.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hiralign.data import loaders
from hiralign.data.cube import Cube, CubeError
from hiralign.data.loaders import DatasetError
from hiralign.stages import ParameterError
from hiralign.store import project_path

SCENE_SUFFIXES = {".mat", ".h5", ".hdf5", ".npy", ".npz", ".tif", ".tiff"}
#: The ``split`` modes :func:`target_tiles` implements (:data:`hiralign.data.stage.SPLIT_MODES` adds ``lists``).
TILE_SPLIT_MODES = ("auto", "tiles", "scenes")


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


def parse_wavelengths(text: str) -> np.ndarray | None:
    """The ``wavelengths`` parameter in nm: ``"start:stop:step"`` (stop included: ``400:730:10`` is 34
    bands) or a comma list (``"410, 420, 430"``); ``None`` when empty. A bad value is a ParameterError."""
    text = str(text or "").strip()
    if not text:
        return None
    try:
        if ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            if not step > 0 or stop < start:
                raise ValueError
            wl = start + step * np.arange(int(np.floor((stop - start) / step + 1e-9)) + 1)
        else:
            wl = np.array([float(v) for v in text.split(",")])
    except ValueError:
        raise ParameterError(f"00_data: wavelengths must be start:stop:step in nm (stop included, e.g. 400:730:10) "
                             f"or a comma list of nm, got {text!r}") from None
    if not np.all(np.isfinite(wl)) or np.any(np.diff(wl) <= 0):
        raise ParameterError(f"00_data: wavelengths must be finite and strictly increasing, got {text!r}")
    return wl


def load_cube(path: Path, kind: str = "", wavelengths: np.ndarray | None = None) -> Cube:
    """One scene with the loader of ``kind`` (empty: guessed), given ``wavelengths`` when not ``None``
    (every loader but ICVL's takes them; ICVL files carry their own ``bands``)."""
    kind = kind or loaders.guess_kind(path)
    if wavelengths is None:
        return loaders.load(path, kind=kind)
    if kind == "icvl":
        raise DatasetError(f"{path}: ICVL files carry their own wavelengths (variable bands); leave 00_data.wavelengths empty")
    return loaders.load(path, kind=kind, wavelengths=wavelengths)


def real_tiles(cube: Cube, size: int) -> list[Cube]:
    """:func:`tiles` of a real scene, marked real (``meta["synthetic"]`` False)."""
    return [t.replace(meta={"synthetic": False}) for t in tiles(cube, size)]


def scene_tiles(path: str, kind: str, size: int, key: str = "dataset", wavelengths: np.ndarray | None = None,
                exclude: frozenset[Path] = frozenset()) -> list[list[Cube]]:
    """The tiles of every scene under ``path`` but those in ``exclude``, one list per scene (marked real)."""
    return [real_tiles(load_cube(f, kind, wavelengths), size) for f in scene_files(path, key) if f.resolve() not in exclude]


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
                 seed: int, wavelengths: np.ndarray | None = None) -> tuple[list[Cube], list[Cube], str]:
    """Observed and unobserved target tiles from the scenes under ``path``, and the split mode used.

    ``tiles``: distinct non-overlapping tiles drawn from all scenes; ``scenes``: whole scenes per split
    (:func:`assign_scenes`); ``auto``: ``scenes`` when there are 2+ scenes and they can fill both splits.
    The two splits never share a pixel either way. (``lists``: :func:`hiralign.data.stage.build_splits` with
    :func:`hiralign.data.scene_lists.listed_tiles`.)
    """
    if split not in TILE_SPLIT_MODES:
        raise ValueError(f"split must be one of auto, tiles, scenes here (split=lists: build_splits), got {split!r}")
    scenes = scene_tiles(path, kind, size, wavelengths=wavelengths)
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
