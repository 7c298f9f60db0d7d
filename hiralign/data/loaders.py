"""Loaders for the real datasets' on-disk formats (CAVE, ICVL, KAIST, HSIDwrD, generic arrays).

Every loader returns a :class:`~hiralign.data.Cube`: float32 ``(B, H, W)`` nominally in [0, 1], wavelengths
in nm, ``name`` = scene name and ``meta`` with the source path and how the stored values were scaled.

Array orders on disk, and how they are read here:

* MATLAB v5 ``.mat`` (``scipy.io.loadmat``) gives arrays in MATLAB order, e.g. ``(H, W, B)``.
* MATLAB v7.3 ``.mat`` is HDF5 written column-major: ``h5py`` shows every array with its axes
  reversed, so a MATLAB ``(H, W, B)`` cube reads as ``(B, W, H)``. :func:`read_variables` reverses
  the axes back, so both ``.mat`` flavours give the same MATLAB-order arrays.
* ``.h5``/``.hdf5``, ``.npy``, ``.npz`` and ``.tif`` are read as stored (C order).

Failures raise :class:`DatasetError` (a ``ValueError``) whose message starts with the file's path;
malformed values (NaN, bad wavelengths) raise :class:`~hiralign.data.CubeError`, also naming the file.
"""
from __future__ import annotations

import re
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np
import scipy.io
from scipy.io.matlab import MatReadError

from hiralign.data.cube import Cube, CubeError
from hiralign.errors import UserError
from hiralign.registry import Registry

CAVE_WAVELENGTHS = np.arange(400.0, 701.0, 10.0)  # band 01 = 400 nm ... band 31 = 700 nm
ICVL_WAVELENGTHS = np.arange(400.0, 701.0, 10.0)  # used only when a file lacks its `bands` variable
KAIST_WAVELENGTHS = np.arange(420.0, 721.0, 10.0)  # Choi et al. 2017: 31 bands, 420..720 nm
HSIDWRD_DROP_BANDS = (0, 11, 22)  # channels the paper removes as corrupted in the ground truth (Sec. IV-F)
HSIDWRD_SCALE = 4096.0  # 12-bit sensor values stored in 16-bit TIFFs; the authors' loader divides by 4096
WAVELENGTH_KEYS = ("wavelengths", "wavelength", "bands", "wl")
DATASETS = ("cave", "icvl", "kaist", "hsidwrd", "generic")

_READ_ERRORS = (OSError, ValueError, TypeError, KeyError, EOFError, zlib.error, MatReadError)
_CAVE_BAND_PNG = re.compile(r"^(?P<scene>.+)_(?P<band>\d{1,3})\.png$", re.IGNORECASE)
_NOISY_FOLDER = re.compile(r"^input(?P<ratio>\d+)$", re.IGNORECASE)


class DatasetError(UserError, ValueError):
    """A dataset file is missing, unreadable, or does not hold the expected cube."""


#: Loader functions by dataset kind (one per entry of :data:`DATASETS`); :func:`load` dispatches on it.
_LOADERS: Registry = Registry("dataset kind", error=DatasetError)


# ----------------------------------------------------------------------------- reading files


def _existing(path: str | Path, kind: str = "file") -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetError(f"{path}: no such {kind}")
    return path


def _is_matlab_hdf5(path: Path) -> bool:
    try:
        return h5py.is_hdf5(path)
    except OSError as err:
        raise DatasetError(f"{path}: cannot be opened ({err})") from err


def _numeric(array: np.ndarray) -> bool:
    return array.dtype.kind in "biuf"


def _read_mat_v5(path: Path) -> dict[str, np.ndarray]:
    contents = scipy.io.loadmat(path)
    return {k: v for k, v in contents.items() if not k.startswith("__") and isinstance(v, np.ndarray) and _numeric(v)}


def _read_mat_v73(path: Path) -> dict[str, np.ndarray]:
    """Top-level numeric arrays of a v7.3 MAT file, axes reversed back to MATLAB order."""
    arrays = {}
    with h5py.File(path, "r") as f:
        for name, item in f.items():
            if not isinstance(item, h5py.Dataset) or not _numeric(item):
                continue
            matlab_class = item.attrs.get("MATLAB_class", b"double")
            if isinstance(matlab_class, bytes):
                matlab_class = matlab_class.decode()
            if matlab_class in ("char", "cell", "struct", "logical") or item.attrs.get("MATLAB_empty", 0):
                continue
            arrays[name] = np.asarray(item[()]).transpose()  # column-major on disk -> MATLAB order
    return arrays


def _read_hdf5(path: Path) -> dict[str, np.ndarray]:
    """Every numeric dataset of an HDF5 file, keyed by its full path (leading '/' dropped), as stored."""
    arrays = {}
    with h5py.File(path, "r") as f:
        def visit(name: str, item: Any) -> None:
            if isinstance(item, h5py.Dataset) and _numeric(item):
                arrays[name] = np.asarray(item[()])

        f.visititems(visit)
    return arrays


def _read_numpy(path: Path) -> dict[str, np.ndarray]:
    if path.suffix.lower() == ".npy":
        return {"data": np.load(path, allow_pickle=False)}
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _read_tiff(path: Path) -> dict[str, np.ndarray]:
    import tifffile  # installed with scikit-image

    return {"data": tifffile.imread(path)}


def read_variables(path: str | Path) -> dict[str, np.ndarray]:
    """All numeric arrays stored in ``path`` (``.mat`` v5/v7.3, ``.h5``/``.hdf5``, ``.npy``, ``.npz``, ``.tif``).

    ``.mat`` arrays come back in MATLAB order whichever the version (see the module docstring);
    a ``.npy`` or ``.tif`` file gives one array named ``"data"``.
    """
    path = _existing(path)
    suffix = path.suffix.lower()
    readers = {".mat": None, ".h5": _read_hdf5, ".hdf5": _read_hdf5, ".npy": _read_numpy,
               ".npz": _read_numpy, ".tif": _read_tiff, ".tiff": _read_tiff}
    if suffix not in readers:
        raise DatasetError(f"{path}: unsupported file type {suffix!r}; expected one of {sorted(readers)}")
    reader = readers[suffix] or (_read_mat_v73 if _is_matlab_hdf5(path) else _read_mat_v5)
    try:
        return reader(path)
    except NotImplementedError as err:  # scipy's answer to an HDF5 file it did not recognise
        raise DatasetError(f"{path}: MATLAB v7.3 file that is not valid HDF5 ({err})") from err
    except _READ_ERRORS as err:
        raise DatasetError(f"{path}: corrupt or truncated {suffix} file ({type(err).__name__}: {err})") from err


def variable_names(path: str | Path) -> list[str]:
    """Names of the variables in a ``.mat`` file without loading their data (v5 and v7.3)."""
    path = _existing(path)
    try:
        if _is_matlab_hdf5(path):
            with h5py.File(path, "r") as f:
                return list(f.keys())
        return [name for name, _, _ in scipy.io.whosmat(path)]
    except _READ_ERRORS as err:
        raise DatasetError(f"{path}: corrupt or truncated file ({type(err).__name__}: {err})") from err


# ----------------------------------------------------------------------------- choosing and shaping arrays


def _describe(arrays: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{k!r} {v.shape}" for k, v in arrays.items()) or "none"


def select_cube_variable(arrays: dict[str, np.ndarray], path: Path, variable: str | None = None,
                         preferred: Sequence[str] = ()) -> str:
    """The name of the 3-D array holding the cube: ``variable`` if given, else a preferred name, else the only one."""
    if variable is not None:
        if variable not in arrays:
            raise DatasetError(f"{path}: no variable {variable!r}; numeric variables: {_describe(arrays)}")
        if arrays[variable].ndim != 3:
            raise DatasetError(f"{path}: variable {variable!r} has shape {arrays[variable].shape}, not 3-D")
        return variable
    for name in preferred:
        if name in arrays and arrays[name].ndim == 3:
            return name
    candidates = [k for k, v in arrays.items() if v.ndim == 3 and k.lower() not in WAVELENGTH_KEYS]
    if not candidates:
        raise DatasetError(f"{path}: no 3-D variable to read as a cube; numeric variables: {_describe(arrays)}")
    if len(candidates) > 1:
        raise DatasetError(
            f"{path}: several candidate 3-D variables {candidates}; choose one with variable=..."
        )
    return candidates[0]


def find_wavelengths(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, str] | None:
    """A 1-D wavelength vector stored as ``wavelengths``/``bands``/``wl`` (any case), with its name."""
    for key in WAVELENGTH_KEYS:
        for name, value in arrays.items():
            if name.split("/")[-1].lower() == key and sum(d > 1 for d in value.shape) <= 1:
                return np.asarray(value, dtype=np.float64).reshape(-1), name
    return None


def to_band_first(array: np.ndarray, layout: str, path: Path,
                  band_counts: Sequence[int] = ()) -> tuple[np.ndarray, str]:
    """``(B, H, W)`` view of a 3-D array stored as ``"BHW"`` or ``"HWB"``; ``"auto"`` decides which.

    ``auto`` picks the first or last axis whose length is one of ``band_counts`` (the number of
    wavelengths); with no counts, the axis strictly shorter than the other two. Returns the array and
    the layout used.
    """
    shape = array.shape
    if layout == "auto":
        if band_counts:
            axes = [ax for ax in (0, 2) if shape[ax] in band_counts]
            why = f"no first or last axis of length {' or '.join(map(str, band_counts))} to match the wavelengths"
        else:
            axes = [ax for ax in (0, 2) if shape[ax] < min(s for i, s in enumerate(shape) if i != ax)]
            why = "the band axis cannot be guessed (no first or last axis shorter than the others)"
        if not axes:
            raise DatasetError(f"{path}: array of shape {shape}: {why}; pass layout='BHW' or 'HWB'"
                               + (" or the right wavelengths" if band_counts else ""))
        if len(axes) > 1:
            raise DatasetError(f"{path}: array of shape {shape} is ambiguous (both end axes could hold the "
                               f"bands); pass layout='BHW' or 'HWB'")
        layout = "BHW" if axes[0] == 0 else "HWB"
    if layout == "BHW":
        return array, layout
    if layout == "HWB":
        return np.moveaxis(array, 2, 0), layout
    raise DatasetError(f"{path}: unknown layout {layout!r}; use 'auto', 'BHW' or 'HWB'")


def to_unit_range(array: np.ndarray, scale: str | float, path: Path) -> tuple[np.ndarray, float, str]:
    """``array / divisor`` as float32, with the divisor and a sentence saying how it was chosen.

    ``scale``: ``"auto"`` (integers / their dtype maximum, floats kept when within [0, 1] and divided
    by their maximum otherwise), ``"max"`` (divide by the maximum), or a number to divide by.
    """
    if isinstance(scale, str) and scale not in ("auto", "max"):
        raise DatasetError(f"{path}: unknown scale {scale!r}; use 'auto', 'max' or a number")
    if scale == "auto" and array.dtype.kind in "biu":
        divisor = float(np.iinfo(array.dtype).max) if array.dtype.kind != "b" else 1.0
        how = f"{array.dtype} values divided by the dtype maximum {divisor:g}"
    elif scale in ("auto", "max"):
        peak = float(np.nanmax(array)) if array.size else 0.0
        if scale == "auto" and peak <= 1.0:
            divisor, how = 1.0, "float values kept as stored (already within [0, 1])"
        elif not np.isfinite(peak) or peak <= 0:
            raise DatasetError(f"{path}: cannot normalise by the maximum, which is {peak:g}")
        else:
            divisor, how = peak, f"divided by the cube maximum {peak:g}"
    else:
        divisor = float(scale)
        if not np.isfinite(divisor) or divisor <= 0:
            raise DatasetError(f"{path}: scale must be a positive number, got {scale!r}")
        how = f"divided by {divisor:g}"
    return array.astype(np.float32, copy=False) / np.float32(divisor), divisor, how


def _band_count_error(path: Path, bands: int, wavelengths: np.ndarray) -> DatasetError:
    return DatasetError(f"{path}: the cube has {bands} bands but {wavelengths.size} wavelengths were given")


def _cube(data: np.ndarray, wavelengths: Any, name: str, meta: dict, path: Path) -> Cube:
    wavelengths = np.asarray(wavelengths, dtype=np.float64).reshape(-1)
    if wavelengths.size != data.shape[0]:
        raise _band_count_error(path, data.shape[0], wavelengths)
    try:
        return Cube(np.ascontiguousarray(data), wavelengths, name=name, meta=meta)
    except CubeError as err:
        raise CubeError(f"{path}: {err}") from err


def _default_wavelengths(dataset: str, bands: int, default: np.ndarray, path: Path) -> np.ndarray:
    if bands != default.size:
        raise DatasetError(
            f"{path}: {dataset} files normally have {default.size} bands ({default[0]:g}..{default[-1]:g} nm) "
            f"but this one has {bands}; pass wavelengths=[...] (nm, one per band)"
        )
    return default


# ----------------------------------------------------------------------------- CAVE


def _cave_band_pngs(folder: Path) -> list[tuple[int, Path]]:
    """``(band number, png)`` of the one scene found in ``folder`` or its sub-folders (the zip nests
    twice), sorted; neither the count nor the numbering is checked here."""
    groups: dict[Path, list[tuple[int, Path]]] = {}
    for png in folder.rglob("*.png"):
        match = _CAVE_BAND_PNG.match(png.name)
        if match and not png.name.startswith("._") and "__MACOSX" not in png.parts:
            groups.setdefault(png.parent, []).append((int(match["band"]), png))
    if not groups:
        raise DatasetError(f"{folder}: no CAVE band images (<scene>_01.png ... <scene>_31.png) "
                           f"in it or its sub-folders")
    if len(groups) > 1:
        names = sorted(str(p.relative_to(folder)) for p in groups)
        raise DatasetError(f"{folder}: band images of several folders found ({names}); point to one scene")
    (files,) = groups.values()
    return sorted(files)


def _cave_band_files(folder: Path) -> list[tuple[int, Path]]:
    """``(band index, png)`` of the one scene in ``folder``, numbered 1..N without gaps."""
    files = _cave_band_pngs(folder)
    indices = [band for band, _ in files]
    expected = list(range(1, len(files) + 1))
    if indices != expected:
        missing = sorted(set(range(1, max(indices) + 1)) - set(indices))
        raise DatasetError(f"{folder}: CAVE band images are not numbered 1..N without gaps (missing {missing}, "
                           f"duplicates {sorted({i for i in indices if indices.count(i) > 1})})")
    return files


def _read_cave_png(png: Path) -> tuple[np.ndarray, bool]:
    """One band in [0, 1] and whether the file had several channels (only the first is kept)."""
    import imageio.v3 as iio

    try:
        image = iio.imread(png)
    except (OSError, ValueError, SyntaxError) as err:
        raise DatasetError(f"{png}: unreadable PNG ({err})") from err
    multichannel = image.ndim == 3
    if multichannel:
        image = image[..., 0]
    if image.dtype.kind not in "ui":
        raise DatasetError(f"{png}: expected an 8- or 16-bit integer PNG, got dtype {image.dtype}")
    return image.astype(np.float32) / np.float32(np.iinfo(image.dtype).max), multichannel


def _load_cave_folder(folder: Path, wavelengths: Any) -> Cube:
    files = _cave_band_files(folder)
    bands, multichannel = [], []
    for index, png in files:
        band, several = _read_cave_png(png)
        if bands and band.shape != bands[0].shape:
            raise DatasetError(f"{png}: band {index} is {band.shape}, band 1 is {bands[0].shape}")
        bands.append(band)
        if several:
            multichannel.append(index)
    scene = files[0][1].parent.name
    if multichannel:
        warnings.warn(f"CAVE scene {scene}: {len(multichannel)} band PNG(s) have several channels "
                      f"(e.g. RGBA); the first channel was used", UserWarning, stacklevel=3)
    data = np.stack(bands)
    wl = _default_wavelengths("CAVE", data.shape[0], CAVE_WAVELENGTHS, folder) if wavelengths is None else wavelengths
    meta = {
        "dataset": "cave", "source": str(files[0][1].parent), "format": "png-per-band",
        "scaling": "each PNG divided by its dtype maximum (65535 for 16-bit, 255 for 8-bit)",
        "multichannel_bands": multichannel,
    }
    if multichannel:
        meta["note"] = "multi-channel band PNGs (CAVE RGBA quirk): only the first channel was kept"
    return _cube(data, wl, scene, meta, folder)


def _load_reflectance_mat(path: Path, dataset: str, grid: np.ndarray, preferred: tuple[str, ...],
                          wavelengths: Any, variable: str | None) -> Cube:
    """A reflectance ``.mat`` (v5 or v7.3) of a dataset whose default band grid is ``grid``."""
    arrays = read_variables(path)
    name = select_cube_variable(arrays, path, variable, preferred=preferred)
    counts = (grid.size,) if wavelengths is None else (np.size(wavelengths),)
    data, layout = to_band_first(arrays[name], "auto", path, counts)
    data, divisor, how = to_unit_range(data, "auto", path)
    wl = _default_wavelengths(dataset, data.shape[0], grid, path) if wavelengths is None else wavelengths
    meta = {"dataset": dataset.lower(), "source": str(path), "format": "mat", "variable": name,
            "layout_on_disk": layout, "scale": divisor, "scaling": how}
    return _cube(data, wl, path.stem, meta, path)


@_LOADERS.register("cave")
def load_cave(path: str | Path, wavelengths: Sequence[float] | None = None, variable: str | None = None) -> Cube:
    """A CAVE scene: its folder of band PNGs (or one of those PNGs), or a ``.mat`` copy.

    Folder: ``<scene>_01.png`` ... ``<scene>_31.png`` (band 01 = 400 nm, 31 = 700 nm), 16-bit grayscale,
    found in the folder or its sub-folders (the official zip nests ``balloons_ms/balloons_ms/``).
    Each PNG is divided by its dtype maximum. PNGs with several channels (the "watercolors" scene is
    stored as 8-bit RGBA) keep their first channel; a warning and ``meta["multichannel_bands"]`` say so.
    ``.mat``: variable ``Omsi`` or the single 3-D variable, ``(H, W, B)``; integers are divided by their
    dtype maximum (uint16 -> /65535), floats within [0, 1] kept.
    """
    path = _existing(path, "CAVE scene folder or file")
    if path.is_file() and path.suffix.lower() == ".png":
        path = path.parent
    if path.is_dir():
        return _load_cave_folder(path, wavelengths)
    if path.suffix.lower() == ".mat":
        return _load_reflectance_mat(path, "CAVE", CAVE_WAVELENGTHS, ("Omsi",), wavelengths, variable)
    raise DatasetError(f"{path}: a CAVE scene is a folder of band PNGs or a .mat file")


# ----------------------------------------------------------------------------- ICVL


@_LOADERS.register("icvl")
def load_icvl(path: str | Path, variable: str | None = None, normalize: str = "max") -> Cube:
    """An ICVL (Arad & Ben-Shahar 2016) ``.mat`` scene: radiance ``rad`` and wavelengths ``bands``.

    The released files are MATLAB v7.3 (HDF5); ``rad`` is a MATLAB ``(H, W, 31)`` array, which h5py
    shows transposed as ``(31, W, H)`` -- reversing the axes gives ``(H, W, B)``, then band-first
    ``(B, H, W)``, so pixel ``(r, c)`` of band ``b`` is MATLAB ``rad(r+1, c+1, b+1)``. ``bands`` holds
    the 31 wavelengths (400..700 nm); a file without it gets 400..700 nm at 10 nm (noted in ``meta``).
    ``variable`` picks another cube (e.g. ``"gt"`` in QRNN3D's prepared test files); default ``rad``.
    Radiance is not in [0, 1]: ``normalize="max"`` divides by the cube maximum, ``"minmax"`` maps
    [min, max] to [0, 1] (QRNN3D's per-image normalisation); ``meta`` keeps the offset and scale.
    """
    path = _existing(path)
    arrays = read_variables(path)
    name = select_cube_variable(arrays, path, variable, preferred=("rad",))
    found = find_wavelengths(arrays)
    if found is not None:
        wl, wl_source = found
    else:
        wl, wl_source = None, "default 400..700 nm at 10 nm (file has no `bands` variable)"
    counts = (wl.size,) if wl is not None else (ICVL_WAVELENGTHS.size,)
    data, layout = to_band_first(arrays[name], "auto", path, counts)
    if wl is None:
        wl = _default_wavelengths("ICVL", data.shape[0], ICVL_WAVELENGTHS, path)
    data = data.astype(np.float32)
    if normalize == "max":
        offset = 0.0
        data, scale, how = to_unit_range(data, "max", path)
    elif normalize == "minmax":
        offset = float(np.nanmin(data))
        data, scale, how = to_unit_range(data - np.float32(offset), "max", path)
        how = f"minus the cube minimum {offset:g}, then {how}"
    else:
        raise DatasetError(f"{path}: unknown normalize {normalize!r}; use 'max' or 'minmax'")
    meta = {"dataset": "icvl", "source": str(path), "format": "mat", "variable": name,
            "layout_on_disk": layout, "wavelengths_from": wl_source, "normalize": normalize,
            "offset": offset, "scale": scale, "scaling": f"radiance {how}"}
    return _cube(data, wl, path.stem, meta, path)


# ----------------------------------------------------------------------------- KAIST


@_LOADERS.register("kaist")
def load_kaist(path: str | Path, wavelengths: Sequence[float] | None = None, variable: str | None = None) -> Cube:
    """A KAIST (Choi et al. 2017) scene ``.mat``, MATLAB v5 or v7.3: variable ``HSI`` ``(H, W, 31)``.

    Reflectance floats in [0, 1] are kept; integers are divided by their dtype maximum. Without
    ``wavelengths`` a 31-band cube gets 420..720 nm at 10 nm; other band counts (e.g. 28-band CASSI
    conversions) must pass their wavelengths.
    """
    return _load_reflectance_mat(_existing(path), "KAIST", KAIST_WAVELENGTHS, ("HSI", "hsi"), wavelengths, variable)


# ----------------------------------------------------------------------------- HSIDwrD


def _hsidwrd_role(path: Path, ratio: float | None) -> tuple[str, float]:
    """``("noisy", N)`` for a file in an ``input<N>`` folder, ``("clean", 1)`` in ``gt``; ``ratio`` overrides N."""
    folder = path.parent.name
    match = _NOISY_FOLDER.match(folder)
    if match:
        return "noisy", float(match["ratio"]) if ratio is None else float(ratio)
    role = "clean" if folder.lower() == "gt" else "unknown"
    return role, 1.0 if ratio is None else float(ratio)


def _drop_bands(data: np.ndarray, wl: np.ndarray, drop: Sequence[int], path: Path) -> tuple[np.ndarray, np.ndarray]:
    stored = data.shape[0]
    bad = [b for b in drop if not 0 <= b < stored]
    if bad:
        raise DatasetError(f"{path}: drop_bands {bad} outside the {stored} stored bands")
    keep = np.setdiff1d(np.arange(stored), np.asarray(drop, dtype=int))
    if wl.size == stored:
        wl = wl[keep]
    elif wl.size != keep.size:
        raise DatasetError(f"{path}: {wl.size} wavelengths given, but the file has {stored} bands "
                           f"({keep.size} after dropping {list(drop)}); give one per stored or per kept band")
    return data[keep], wl


@_LOADERS.register("hsidwrd")
def load_hsidwrd(path: str | Path, wavelengths: Sequence[float] | None = None, *,
                 drop_bands: Sequence[int] = HSIDWRD_DROP_BANDS, ratio: float | None = None,
                 scale: str | float | None = None, variable: str | None = None, layout: str = "auto",
                 clip: bool = True) -> Cube:
    """One HSIDwrD (Zhang et al., real paired noisy/clean HSI denoising data) cube.

    The public release (layout confirmed from the authors' loader, github.com/ColinTaoZhang/HSIDwRD)
    is ``<root>/gt/<n>.tif`` (long-exposure clean) and ``<root>/input<ratio>/<n>.tif`` (short-exposure
    noisy, ratio 50), multi-page 16-bit TIFFs ``(bands, H, W)`` of 12-bit values. As in that loader,
    integers are divided by 4096 and a noisy cube from an ``input<N>`` folder is multiplied by N (or by
    ``ratio``) to match the clean exposure; ``clip`` then clips to [0, 1] (``meta`` records the clipped
    fraction). A ``.mat`` copy is accepted too: choose the cube with ``variable=`` when it holds both
    noisy and clean arrays (no official ``.mat`` variable names could be confirmed).

    ``drop_bands`` removes the channels the paper finds corrupted in the ground truth (0, 11, 22).
    The files carry no wavelengths, so ``wavelengths`` is required: one per stored band (the dropped
    ones are removed with their bands) or one per kept band.
    """
    path = _existing(path)
    if wavelengths is None:
        raise DatasetError(f"{path}: HSIDwrD files store no wavelengths; pass wavelengths=[...] in nm, one per "
                           f"stored band (or per band kept after drop_bands={tuple(drop_bands)}); see docs/datasets.md")
    wl = np.asarray(wavelengths, dtype=np.float64).reshape(-1)
    arrays = read_variables(path)
    name = select_cube_variable(arrays, path, variable)
    raw = arrays[name]
    data, used_layout = to_band_first(raw, layout, path, (wl.size, wl.size + len(drop_bands)))
    if scale is None:
        scale = HSIDWRD_SCALE if raw.dtype.kind in "iu" else "auto"
    data, divisor, how = to_unit_range(data, scale, path)
    data, wl = _drop_bands(data, wl, drop_bands, path)
    role, factor = _hsidwrd_role(path, ratio)
    if factor != 1.0:
        data = data * np.float32(factor)
        how += f", times the exposure ratio {factor:g}"
    clipped = float(np.mean((data < 0) | (data > 1))) if clip else 0.0
    if clip:
        data = np.clip(data, 0.0, 1.0)
    meta = {"dataset": "hsidwrd", "source": str(path), "format": path.suffix.lower().lstrip("."), "variable": name,
            "role": role, "ratio": factor, "layout_on_disk": used_layout, "scale": divisor, "scaling": how,
            "dropped_bands": list(drop_bands), "clipped_fraction": clipped}
    return _cube(data, wl, path.stem, meta, path)


def load_hsidwrd_pair(root: str | Path, scene: str | int, wavelengths: Sequence[float] | None = None, *,
                      ratio: int = 50, **kw: Any) -> tuple[Cube, Cube]:
    """``(noisy, clean)`` cubes of one HSIDwrD scene: ``root/input<ratio>/<scene>.tif`` and ``root/gt/<scene>.tif``."""
    root = _existing(root, "HSIDwrD root folder")
    file = f"{Path(str(scene)).stem}.tif"
    clean = load_hsidwrd(root / "gt" / file, wavelengths, **kw)
    noisy = load_hsidwrd(root / f"input{ratio}" / file, wavelengths, ratio=ratio, **kw)
    if noisy.shape != clean.shape:
        raise DatasetError(f"{root}: scene {scene}: noisy {noisy.shape} and clean {clean.shape} differ in shape")
    return noisy, clean


# ----------------------------------------------------------------------------- generic files


@_LOADERS.register("generic")
def load_generic(path: str | Path, wavelengths: Sequence[float] | None = None, variable: str | None = None,
                 layout: str = "auto", scale: str | float = "auto") -> Cube:
    """A cube from ``.mat`` (v5/v7.3), ``.h5``/``.hdf5``, ``.npy``, ``.npz`` or ``.tif``.

    The cube is ``variable`` or the file's single 3-D array (``.npy``/``.tif``: the array itself).
    Wavelengths (nm) are ``wavelengths`` if given, else a 1-D ``wavelengths``/``bands``/``wl``
    variable in the file. ``layout`` is ``"BHW"``, ``"HWB"`` or ``"auto"`` (the end axis whose length
    equals the number of wavelengths). ``scale`` as in :func:`to_unit_range` (default: integers / dtype
    maximum, floats in [0, 1] kept, other floats / their maximum).
    """
    path = _existing(path)
    arrays = read_variables(path)
    name = select_cube_variable(arrays, path, variable)
    if wavelengths is not None:
        wl, wl_source = np.asarray(wavelengths, dtype=np.float64).reshape(-1), "argument"
    else:
        found = find_wavelengths({k: v for k, v in arrays.items() if k != name})
        if found is None:
            raise DatasetError(
                f"{path}: no wavelengths in the file (looked for a 1-D variable named one of {list(WAVELENGTH_KEYS)}); "
                f"pass them, e.g. load_generic(path, wavelengths=numpy.arange(400, 701, 10))"
            )
        wl, wl_source = found
    data, used_layout = to_band_first(arrays[name], layout, path, (wl.size,))
    if data.shape[0] != wl.size:
        raise _band_count_error(path, data.shape[0], wl)
    data, divisor, how = to_unit_range(data, scale, path)
    meta = {"dataset": "generic", "source": str(path), "format": path.suffix.lower().lstrip("."), "variable": name,
            "layout_on_disk": used_layout, "wavelengths_from": wl_source, "scale": divisor, "scaling": how}
    return _cube(data, wl, path.stem, meta, path)


# ----------------------------------------------------------------------------- dispatch


def guess_kind(path: str | Path) -> str:
    """The dataset a path most likely belongs to, from its type, folder names and ``.mat`` variables."""
    path = _existing(path)
    suffix = path.suffix.lower()
    if path.is_dir() or suffix == ".png":
        return "cave"
    if suffix in (".tif", ".tiff") and (path.parent.name.lower() == "gt" or _NOISY_FOLDER.match(path.parent.name)):
        return "hsidwrd"
    if suffix == ".mat":
        names = set(variable_names(path))
        for variable, kind in (("Omsi", "cave"), ("rad", "icvl"), ("HSI", "kaist")):
            if variable in names:
                return kind
        parts = [p.lower() for p in path.parts]
        for kind in ("cave", "icvl", "kaist", "hsidwrd"):
            if any(kind in p for p in parts):
                return kind
    return "generic"


def load(path: str | Path, kind: str | None = None, **kw: Any) -> Cube:
    """Load ``path`` with the loader of ``kind`` (one of :data:`DATASETS`), guessed from the path if ``None``."""
    kind = guess_kind(path) if kind is None else kind.lower()
    return _LOADERS.get(kind, where=str(path))(path, **kw)


def scene_path(dataset: str, root: str | Path, scene: str) -> Path:
    """Where a scene named in a split file lies under the dataset root (layouts in docs/datasets.md)."""
    root = Path(root).expanduser()
    candidates = {
        "cave": [root / scene, root / f"{scene}.mat"],
        "icvl": [root / f"{scene}.mat"],
        "kaist": [root / f"{scene}.mat"],
        "hsidwrd": [root / "gt" / f"{scene}.tif"],
    }
    if dataset not in candidates:
        raise DatasetError(f"{root}: unknown dataset {dataset!r}; use one of {sorted(candidates)}")
    for candidate in candidates[dataset]:
        if candidate.exists():
            return candidate
    raise DatasetError(f"{root}: scene {scene!r} of {dataset} not found (looked for "
                       f"{', '.join(str(c) for c in candidates[dataset])})")


def load_scene(dataset: str, root: str | Path, scene: str, **kw: Any) -> Cube:
    """Load the scene named ``scene`` (as in the split files) of ``dataset`` stored under ``root``."""
    return load(scene_path(dataset, root, scene), kind=dataset, **kw)


# ----------------------------------------------------------------------------- layout checks (no pixel data)

#: The cube variable each dataset's ``.mat`` files are expected to hold (the loaders prefer these names;
#: failing them, a file's single 3-D numeric variable is read, so :func:`check_scene` accepts that too).
EXPECTED_VARIABLES = {"cave": ("Omsi",), "icvl": ("rad",), "kaist": ("HSI", "hsi")}
CAVE_BANDS = 31
#: The dataset folders :func:`check_dataset_root` looks for under a root (layouts in docs/datasets.md).
DATASET_FOLDERS = ("cave", "kaist", "icvl", "hsidwrd")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_PNG_COLOURS = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale+alpha", 6: "RGBA"}
_MAT_COMPRESSED = 15  # miCOMPRESSED: a zlib-compressed element, not padded to 8 bytes


def _png_header(png: Path) -> tuple[int, int, int, int]:
    """``(width, height, bit depth, colour type)`` from a PNG's IHDR chunk; checks that the file ends
    with its IEND chunk (a truncated PNG does not). Reads 45 bytes."""
    size = png.stat().st_size
    with open(png, "rb") as fh:
        head = fh.read(33)
        fh.seek(max(size - len(_PNG_IEND), 0))
        tail = fh.read()
    if head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR" or len(head) < 26:
        raise DatasetError(f"{png}: not a PNG file (no PNG signature and IHDR header)")
    if tail != _PNG_IEND:
        raise DatasetError(f"{png}: corrupt or truncated PNG ({size} bytes, does not end with its IEND chunk)")
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    return width, height, depth, colour


def _check_cave_folder(folder: Path) -> None:
    """31 band PNGs numbered 01..31 in one folder, each 16-bit grayscale (or 8-bit RGB/RGBA, the
    documented "watercolors" quirk), all of one size, none truncated."""
    files = _cave_band_pngs(folder)
    where = files[0][1].parent
    bands = [b for b, _ in files]
    missing = sorted(set(range(1, CAVE_BANDS + 1)) - set(bands))
    extra = sorted(set(bands) - set(range(1, CAVE_BANDS + 1)))
    twice = sorted({b for b in bands if bands.count(b) > 1})
    if missing or extra or twice:
        parts = [f"missing band(s) {missing}" if missing else "", f"unexpected band number(s) {extra}" if extra else "",
                 f"band(s) {twice} stored twice" if twice else ""]
        raise DatasetError(f"{where}: CAVE scene folder holds {len(files)} band PNGs, not {CAVE_BANDS} "
                           f"(<scene>_01.png ... <scene>_31.png, 400..700 nm): {'; '.join(p for p in parts if p)}")
    first = None
    for band, png in files:
        width, height, depth, colour = _png_header(png)
        quirk = depth == 8 and colour in (2, 6)
        if not (depth == 16 and colour == 0) and not quirk:
            raise DatasetError(f"{png}: band PNG is {depth}-bit {_PNG_COLOURS.get(colour, f'colour type {colour}')}; "
                               f"CAVE band images are 16-bit grayscale (8-bit RGB/RGBA is accepted as the "
                               f"documented watercolors quirk, docs/datasets.md)")
        if first is None:
            first = (width, height, files[0][1])
        elif (width, height) != first[:2]:
            raise DatasetError(f"{png}: band {band} is {height}x{width} px, band 1 ({first[2].name}) "
                               f"is {first[1]}x{first[0]} px")


def _mat_v5_length_check(path: Path) -> None:
    """Walk the top-level elements of a MATLAB v5 file (tags only): a truncated file has an element that
    runs past its end."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        header = fh.read(128)
        if len(header) < 128 or header[126:128] not in (b"IM", b"MI"):
            return  # MATLAB v4 (no header) or not a MAT file; scipy's reader says which
        order = "<" if header[126:128] == b"IM" else ">"
        offset, index = 128, 0
        while size - offset >= 8:
            fh.seek(offset)
            mdtype, nbytes = struct.unpack(order + "II", fh.read(8))
            if mdtype >> 16:  # small data element: tag and data in 8 bytes
                offset += 8
                continue
            end = offset + 8 + nbytes
            if mdtype != _MAT_COMPRESSED and nbytes % 8:
                end += 8 - nbytes % 8
            if end > size and (mdtype == _MAT_COMPRESSED or offset + 8 + nbytes > size):
                raise DatasetError(f"{path}: corrupt or truncated .mat file (element {index + 1} at byte {offset} "
                                   f"needs {nbytes} bytes, the file ends at byte {size})")
            offset, index = end, index + 1


def mat_variables(path: str | Path) -> list[tuple[str, tuple[int, ...], str]]:
    """``(name, shape in MATLAB order, MATLAB class)`` of each variable of a ``.mat`` file (v5 or v7.3),
    read from the headers only; a truncated or corrupt file raises :class:`DatasetError`."""
    path = _existing(path)
    try:
        if _is_matlab_hdf5(path):
            found = []
            with h5py.File(path, "r") as f:
                for name, item in f.items():
                    if name.startswith("#"):  # '#refs#', '#subsystem#': MATLAB's internal groups
                        continue
                    cls = item.attrs.get("MATLAB_class", b"double" if isinstance(item, h5py.Dataset) else b"struct")
                    cls = cls.decode() if isinstance(cls, bytes) else str(cls)
                    shape = tuple(reversed(item.shape)) if isinstance(item, h5py.Dataset) else ()
                    if isinstance(item, h5py.Dataset) and item.attrs.get("MATLAB_empty", 0):
                        shape = (0,)
                    found.append((name, shape, cls))
            return found
        _mat_v5_length_check(path)
        return [(name, tuple(shape), cls) for name, shape, cls in scipy.io.whosmat(path)]
    except DatasetError:
        raise
    except (*_READ_ERRORS, struct.error, NotImplementedError) as err:
        raise DatasetError(f"{path}: corrupt or truncated .mat file ({type(err).__name__}: {err})") from err


_NUMERIC_CLASSES = {"double", "single", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"}


def _describe_variables(found: list[tuple[str, tuple[int, ...], str]]) -> str:
    return ", ".join(f"{n!r} ({'x'.join(map(str, s)) or '-'} {c})" for n, s, c in found) or "none"


def _check_mat(path: Path, kind: str) -> None:
    """The variables of a scene ``.mat`` (headers only): the cube variable of ``kind`` (or, failing it, the
    single 3-D numeric variable the loader falls back to) with the expected number of bands on an end axis."""
    found = mat_variables(path)
    if not found:
        raise DatasetError(f"{path}: .mat file holds no variables")
    cubes = {n: s for n, s, c in found if len(s) == 3 and c in _NUMERIC_CLASSES and n.lower() not in WAVELENGTH_KEYS}
    expected = EXPECTED_VARIABLES.get(kind, ())
    bands = None  # the band count a cube of this kind must have (None: any, wavelengths are given when loading)
    if kind in ("cave", "kaist"):
        bands = CAVE_BANDS
    elif kind == "icvl":
        wl = [s for n, s, _ in found if n.lower() in WAVELENGTH_KEYS and sum(d > 1 for d in s) <= 1]
        bands = int(np.prod(wl[0])) if wl else ICVL_WAVELENGTHS.size
    name = next((n for n in expected if n in cubes), None)
    fits = lambda shape: bands is None or bands in (shape[0], shape[2])  # noqa: E731
    if name is None:
        fallback = next(iter(cubes)) if len(cubes) == 1 else None
        if fallback is None or not fits(cubes[fallback]):
            want = (f"no {kind.upper()} variable {' or '.join(repr(n) for n in expected)} (nor a single 3-D array of "
                    f"{bands} bands, which the loader would read instead)") if expected else \
                "no single 3-D numeric variable to read as the cube"
            several = f"; several 3-D candidates {sorted(cubes)}: pass variable=... when loading" if len(cubes) > 1 else ""
            raise DatasetError(f"{path}: {want}{several}; variables found: {_describe_variables(found)}")
        name = fallback
    if not fits(cubes[name]):
        raise DatasetError(f"{path}: variable {name!r} is {'x'.join(map(str, cubes[name]))}: no first or last axis "
                           f"of {bands} bands ({kind.upper()} scenes hold {bands}; other band counts need "
                           f"wavelengths=[...] when loading)")


def _check_tiff(path: Path, kind: str) -> None:
    """A TIFF that opens, whose pages' data lie inside the file; for HSIDwrD a multi-page 16-bit
    ``(bands, H, W)`` stack of one page size."""
    import tifffile

    size = path.stat().st_size
    with tifffile.TiffFile(path) as tif:
        pages = list(tif.pages)
        if not pages:
            raise DatasetError(f"{path}: TIFF holds no pages")
        fmt, fh = tif.tiff, tif.filehandle  # the last IFD's link to a next one: 0 unless pages went unread
        fh.seek(pages[-1].offset)
        (tags,) = struct.unpack(fmt.tagnoformat, fh.read(fmt.tagnosize))
        fh.seek(pages[-1].offset + fmt.tagnosize + tags * fmt.tagsize)
        link = fh.read(fmt.offsetsize)
        following = struct.unpack(fmt.offsetformat, link)[0] if len(link) == fmt.offsetsize else size
        if following:
            raise DatasetError(f"{path}: corrupt or truncated TIFF (page {len(pages)} links to a next page at byte "
                               f"{following}, which cannot be read; the file has {size} bytes)")
        for i, page in enumerate(pages):
            ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts)]
            if ends and max(ends) > size:
                raise DatasetError(f"{path}: corrupt or truncated TIFF (page {i + 1} of {len(pages)} needs bytes up "
                                   f"to {max(ends)}, the file has {size})")
        if kind == "hsidwrd":
            first = pages[0]
            if len(pages) < 2 or first.ndim != 2:
                raise DatasetError(f"{path}: HSIDwrD cubes are multi-page TIFFs, one grayscale page per band; this "
                                   f"one has {len(pages)} page(s) of shape {first.shape}")
            for i, page in enumerate(pages):
                if page.dtype != np.uint16 or page.shape != first.shape:
                    raise DatasetError(f"{path}: page {i + 1} is {page.dtype} {page.shape}; HSIDwrD pages are "
                                       f"16-bit (uint16) {first.shape} like page 1")


def check_scene(path: Path, kind: str | None = None) -> None:
    """Check that one scene is laid out as its dataset's loader expects, reading headers only.

    ``kind`` (``"cave"``, ``"icvl"``, ``"kaist"``, ``"hsidwrd"``, ``"generic"``; ``None`` or ``""``:
    guessed as :func:`guess_kind` does). Raises :class:`DatasetError` whose message starts with the
    offending file's path (rules in docs/datasets.md):

    * CAVE folder: exactly 31 band PNGs ``<scene>_01.png`` ... ``_31.png`` in one folder (the missing
      band numbers are named), each 16-bit grayscale or 8-bit RGB/RGBA (the watercolors quirk),
      one size, not truncated (the PNG ends with its IEND chunk);
    * ``.mat``: the kind's cube variable (CAVE ``Omsi``, ICVL ``rad``, KAIST ``HSI``) or else a single
      3-D numeric variable, with 31 bands (ICVL: as many as ``bands``) on an end axis; the error
      lists the variables found; a truncated v5 file or unreadable v7.3 (HDF5) file is reported;
    * ``.tif``: every page's data inside the file; for HSIDwrD a multi-page 16-bit stack;
    * ``.h5``/``.hdf5``, ``.npy``, ``.npz``: open and hold arrays.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    kind = (kind or "").lower() or guess_kind(path)
    if kind not in DATASETS:
        raise DatasetError(f"{path}: unknown dataset kind {kind!r}; known: {', '.join(DATASETS)}")
    suffix = path.suffix.lower()
    try:
        if path.is_dir() or suffix == ".png":
            if kind != "cave":
                raise DatasetError(f"{path}: a folder or PNG is a scene only for CAVE, not {kind}")
            _check_cave_folder(path.parent if path.is_file() else path)
        elif suffix == ".mat":
            _check_mat(path, kind)
        elif suffix in (".tif", ".tiff"):
            _check_tiff(path, kind)
        elif suffix in (".h5", ".hdf5"):
            with h5py.File(path, "r") as f:
                if not list(f.keys()):
                    raise DatasetError(f"{path}: HDF5 file holds no datasets")
        elif suffix == ".npy":
            np.load(path, mmap_mode="r", allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                if not npz.files:
                    raise DatasetError(f"{path}: .npz file holds no arrays")
        else:
            raise DatasetError(f"{path}: unsupported scene file type {suffix!r}")
    except DatasetError:
        raise
    except Exception as err:  # every reader has its own error types for a damaged file
        raise DatasetError(f"{path}: corrupt or truncated file ({type(err).__name__}: {err})") from err


def _root_scene_paths(dataset: str, folder: Path) -> list[tuple[str, Path]]:
    """``(kind, path)`` of every scene of ``dataset``'s split files under ``folder``, missing ones too."""
    from hiralign.data.splits import get_split, list_splits

    names = list(dict.fromkeys(n for split in list_splits(dataset) for n in get_split(dataset, split)))
    if dataset == "cave":  # the scene folder, else a .mat copy; the folder is what a missing scene names
        return [("cave", folder / f"{n}.mat" if (folder / f"{n}.mat").exists() and not (folder / n).exists()
                 else folder / n) for n in names]
    if dataset == "hsidwrd":
        noisy = sorted(p for p in folder.iterdir() if p.is_dir() and _NOISY_FOLDER.match(p.name)) or [folder / "input50"]
        return [("hsidwrd", sub / f"{n}.tif") for n in names for sub in (folder / "gt", *noisy)]
    return [(dataset, folder / f"{n}.mat") for n in names]


def check_dataset_root(root: str | Path, complete: bool = True, max_listed: int = 10) -> None:
    """Check every dataset folder present under ``root`` (``cave``, ``kaist``, ``icvl``, ``hsidwrd``)
    with :func:`check_scene`; with ``complete`` every scene their split files name must be there
    (HSIDwrD: in ``gt/`` and in each ``input<N>/``). Raises one :class:`DatasetError`: the first problem
    (starting with its file's path), then up to ``max_listed`` more, one per line."""
    root = _existing(root, "dataset root folder")
    present = [d for d in DATASET_FOLDERS if (root / d).is_dir()]
    if not present:
        raise DatasetError(f"{root}: no dataset folder ({', '.join(DATASET_FOLDERS)}) in it; docs/datasets.md "
                           f"describes the layouts")
    problems: list[str] = []
    for dataset in present:
        folder = root / dataset
        for kind, path in _root_scene_paths(dataset, folder):
            if not path.exists():
                if complete:
                    problems.append(f"{path}: missing {dataset} scene (named in hiralign/data/splits/{dataset}_*.txt)")
                continue
            try:
                check_scene(path, kind)
            except DatasetError as err:
                problems.append(str(err))
    if problems:
        more = problems[1:max_listed + 1]
        rest = len(problems) - 1 - len(more)
        text = problems[0] + "".join(f"\n  also: {p}" for p in more) + (f"\n  ... and {rest} more" if rest > 0 else "")
        raise DatasetError(text)
