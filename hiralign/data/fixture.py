"""A FIXTURE dataset root: tiny CAVE, KAIST, ICVL and HSIDwrD trees laid out as the real downloads are.

:func:`write_fixture_root` writes, under one folder, what ``hiralign reproduce --profile paper`` reads
from ``data/`` (docs/datasets.md, "A fixture dataset root"), in the on-disk formats the loaders of
:mod:`hiralign.data.loaders` read, with every scene the project's split files name:

* ``cave/<scene>/<scene>/<scene>_01.png ... _31.png``: 16-bit grayscale PNGs (+ ``<scene>_RGB.bmp``);
* ``kaist/sceneNN.mat``: MATLAB v7.3 (HDF5), ``HSI`` ``(H, W, 31)`` reflectance in [0, 1], 420..720 nm;
* ``icvl/<scene>.mat``: MATLAB v7.3, ``rad`` (radiance, a few thousand), ``bands`` (400..700 nm), ``rgb``;
* ``hsidwrd/gt/<n>.tif``, ``hsidwrd/input50/<n>.tif``: multi-page 16-bit TIFFs of 12-bit values, 34 bands;
* ``models/``: a tiny random Stable unCLIP folder and a "blur-robust" CLIP encoder (optional);
* ``README.md`` and ``fixture.json``: that all of it is a fixture, and how it was made.

The content is NOT the datasets: scenes are ``size`` pixels across, and they are either crops of the
few real scenes of a shared data folder (CAVE balloons / cloth / real_and_fake_apples; the Samson
remote-sensing scene band-averaged to the target grid) or cubes of the embedded SYNTHETIC benchmark
(:mod:`hiralign.data.synthetic`). ICVL and KAIST scenes keep their datasets' aspect ratios, so a
swapped height and width cannot pass unnoticed.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from hiralign.data.loaders import (
    CAVE_WAVELENGTHS,
    HSIDWRD_SCALE,
    ICVL_WAVELENGTHS,
    KAIST_WAVELENGTHS,
    select_cube_variable,
)
from hiralign.errors import UserError

#: Written first into every fixture root; its presence lets a later call replace the root.
MANIFEST = "fixture.json"
#: The first line of the fixture root's README.md.
MARKER = "# FIXTURE dataset root (not the datasets)"
#: Samson (samson_95.mat, variable T): 156 bands over 401..889 nm, taken as evenly spaced.
SAMSON_WAVELENGTHS = np.linspace(401.0, 889.0, 156)
#: Each fixture band averages the source's bands within this many nm of its centre (a 10 nm band).
BAND_HALF_WIDTH = 5.0
#: At most this many crops of Samson per dataset (KAIST: its top half, ICVL: its bottom half).
SAMSON_CROPS = 4
#: Width / height of the KAIST release (2704 x 3376) and height / width of ICVL's (1392 x 1300).
KAIST_ASPECT = 3376 / 2704
ICVL_ASPECT = 1392 / 1300
#: HSIDwrD: 34 bands assumed at 400..730 nm (docs/datasets.md); 12-bit values; exposure ratio 50.
HSIDWRD_WAVELENGTHS = np.arange(400.0, 731.0, 10.0)
HSIDWRD_RATIO = 50
HSIDWRD_READ_NOISE = 1.0  # Gaussian read noise of the short exposure, in 12-bit counts
#: ICVL radiance: a cube in [0, 1] times a per-scene factor drawn from this range.
ICVL_RADIANCE_RANGE = (1500.0, 4000.0)
MODEL_FOLDERS = ("stable-diffusion-2-1-unclip", "clip-blur-robust")
#: Synthetic scenes are tiles of renders about this many pixels across (:func:`synthetic_cubes`).
RENDER_SIDE = 128
_DATASET_SALT = {"cave": 1, "kaist": 2, "icvl": 3, "hsidwrd": 4}


class FixtureError(UserError, ValueError):
    """The fixture root cannot be written where asked (a non-fixture folder, a missing source folder)."""


@dataclass
class Written:
    """What one dataset folder of the fixture holds: scene name -> where its content came from."""

    dataset: str
    sources: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def count(self, prefix: str) -> int:
        return sum(s.startswith(prefix) for s in self.sources.values())


# ----------------------------------------------------------------------------- file formats


def write_mat_v73(path: Path, variables: dict[str, np.ndarray]) -> None:
    """A MATLAB v7.3 MAT-file as MATLAB writes it: HDF5 behind a 512-byte user block whose first 128 bytes
    are MATLAB's header (text, version 0x0200, 'IM'), each variable stored column-major (h5py shows a
    MATLAB ``(H, W, B)`` array as ``(B, W, H)``), tagged with its ``MATLAB_class``, deflate-compressed."""
    import h5py

    classes = {"f8": "double", "f4": "single", "u1": "uint8", "u2": "uint16", "i2": "int16", "u4": "uint32",
               "i4": "int32"}
    with h5py.File(path, "w", userblock_size=512, track_order=False) as f:
        for name, value in variables.items():
            value = np.asarray(value)
            data = value.transpose()  # column-major on disk
            dataset = f.create_dataset(name, data=data, compression="gzip" if value.size >= 64 else None,
                                       compression_opts=3 if value.size >= 64 else None, track_times=False)
            dataset.attrs["MATLAB_class"] = np.bytes_(classes[value.dtype.str[1:]])
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Thu Jan  1 00:00:00 2026 HDF5 schema 1.00 ."
    header = text.ljust(116, b" ") + b" " * 8 + b"\x00\x02" + b"IM"
    with open(path, "r+b") as fh:
        fh.write(header)


def _write_png16(path: Path, band: np.ndarray) -> None:
    from PIL import Image  # Pillow: a 2-D uint16 array is mode "I;16", saved as a 16-bit grayscale PNG

    Image.fromarray(np.ascontiguousarray(band, dtype=np.uint16)).save(path, format="PNG")


def _write_bmp(path: Path, rgb: np.ndarray) -> None:
    import imageio.v3 as iio

    iio.imwrite(path, rgb, extension=".bmp")


def _write_stack_tiff(path: Path, bhw: np.ndarray) -> None:
    """A multi-page TIFF, one uint16 grayscale page per band (no tifffile-specific shape metadata)."""
    import tifffile

    tifffile.imwrite(path, np.ascontiguousarray(bhw, dtype=np.uint16), photometric="minisblack", metadata=None)


def _display_rgb8(bhw: np.ndarray, wavelengths: np.ndarray) -> np.ndarray:
    """An 8-bit ``(H, W, 3)`` picture of a cube (the proxy RGB bands of Eq. 4, gamma 1/2.2)."""
    from hiralign.spectral import to_rgb

    rgb = np.moveaxis(to_rgb(np.asarray(bhw, dtype=np.float32), wavelengths), 0, -1)
    rgb = np.clip(rgb / max(float(np.percentile(rgb, 99.5)), 1e-6), 0.0, 1.0) ** (1 / 2.2)
    return np.round(rgb * 255).astype(np.uint8)


# ----------------------------------------------------------------------------- content


def default_shared_data() -> Path | None:
    """The ``data`` folder of a ``shared`` folder beside the project root, when it exists."""
    from hiralign.store import project_root

    root = project_root(Path(__file__).resolve().parent)
    folder = root.parent / "shared" / "data" if root is not None else None
    return folder if folder is not None and folder.is_dir() else None


def _seed(seed: int, dataset: str) -> int:
    return int(np.random.SeedSequence([int(seed), _DATASET_SALT[dataset]]).generate_state(1)[0])


def synthetic_cubes(domain: str, n: int, height: int, width: int, seed: int, wavelengths: np.ndarray) -> list[np.ndarray]:
    """``n`` SYNTHETIC benchmark cubes ``(B, height, width)`` in [0, 1]: tiles of larger renders of
    :func:`hiralign.data.synthetic.make_domain` (about :data:`RENDER_SIDE` px, k x k tiles each, handed
    out in a seeded order), since rendering costs about the same at 32 and 128 px."""
    from hiralign.data.synthetic import make_domain

    k = max(1, RENDER_SIDE // max(height, width))
    renders = make_domain(domain, -(-n // (k * k)), k * max(height, width), seed, wavelengths) if n else []
    tiles = [c.data[:, r * height:(r + 1) * height, q * width:(q + 1) * width]
             for c in renders for r in range(k) for q in range(k)]
    order = np.random.default_rng(seed).permutation(len(tiles))[:n]
    return [np.ascontiguousarray(tiles[i]) for i in order]


def crop_or_resize(hwb: np.ndarray, height: int, width: int) -> tuple[np.ndarray, str]:
    """The centre ``height`` x ``width`` crop of an ``(H, W, B)`` array, or the whole array resized (linear,
    anti-aliased) when it is smaller; the dtype is kept. Returns the array and what was done."""
    h, w = hwb.shape[:2]
    if h >= height and w >= width:
        top, left = (h - height) // 2, (w - width) // 2
        return hwb[top:top + height, left:left + width], f"centre crop rows {top}..{top + height - 1}, " \
                                                         f"columns {left}..{left + width - 1} of {h}x{w}"
    return _resize(hwb, height, width), f"resized from {h}x{w}"


def _resize(hwb: np.ndarray, height: int, width: int) -> np.ndarray:
    from skimage.transform import resize

    out = resize(hwb.astype(np.float64), (height, width), order=1, anti_aliasing=True, preserve_range=True)
    if hwb.dtype.kind in "ui":
        out = np.clip(np.round(out), 0, np.iinfo(hwb.dtype).max)
    return out.astype(hwb.dtype)


def band_average(hwb: np.ndarray, native: np.ndarray, centres: np.ndarray, half_width: float = BAND_HALF_WIDTH) -> np.ndarray:
    """Resample ``(H, W, K)`` sampled at ``native`` nm to ``centres``: each band is the mean of the native
    bands within ``half_width`` nm of its centre (a box-shaped 10 nm band). Raises if a window is empty."""
    out = []
    for c in centres:
        inside = np.abs(native - c) <= half_width + 1e-9
        if not inside.any():
            raise ValueError(f"no source band within {half_width:g} nm of {c:g} nm "
                             f"(source covers {native[0]:g}..{native[-1]:g} nm)")
        out.append(hwb[..., inside].mean(axis=-1))
    return np.stack(out, axis=-1)


def real_cave_scenes(shared_data: Path | None) -> dict[str, Path]:
    """CAVE scenes of the shared data folder: ``cave_<scene>_256.mat`` -> ``{"<scene>": path}``."""
    if shared_data is None:
        return {}
    return {p.stem[len("cave_"):].rsplit("_", 1)[0]: p for p in sorted(Path(shared_data).glob("cave_*_ms_*.mat"))}


def _read_mat_cube(path: Path, preferred: tuple[str, ...] = ()) -> np.ndarray:
    import scipy.io

    arrays = {k: v for k, v in scipy.io.loadmat(path).items() if isinstance(v, np.ndarray) and not k.startswith("__")}
    return arrays[select_cube_variable(arrays, path, preferred=preferred)]


def samson_halves(shared_data: Path | None) -> tuple[np.ndarray, np.ndarray] | None:
    """Samson ``(H, W, 156)`` reflectance split into its top rows 0..46 and bottom rows 48..94 (disjoint
    pixels: KAIST gets the top, ICVL the bottom), or None without ``samson_95.mat``."""
    if shared_data is None or not (Path(shared_data) / "samson_95.mat").is_file():
        return None
    cube = _read_mat_cube(Path(shared_data) / "samson_95.mat", ("T",)).astype(np.float64)
    half = cube.shape[0] // 2
    return cube[:half], cube[half + 1:]


def samson_crops(half: np.ndarray, height: int, width: int, wavelengths: np.ndarray,
                 where: str) -> list[tuple[np.ndarray, str]]:
    """Up to :data:`SAMSON_CROPS` non-overlapping ``height`` x ``width`` crops of a Samson half (or the half
    resized), band-averaged to ``wavelengths``: ``(H, W, B)`` arrays and their provenance."""
    rows, cols = half.shape[0] // height, half.shape[1] // width
    if rows and cols:
        spots = [(r * height, c * width) for r in range(rows) for c in range(cols)][:SAMSON_CROPS]
        crops = [(half[t:t + height, s:s + width], f"rows {t}..{t + height - 1}, columns {s}..{s + width - 1} of the "
                                                   f"{where}") for t, s in spots]
    else:
        crops = [(_resize(half, height, width), f"the {where} resized to {height}x{width}")]
    return [(band_average(c, SAMSON_WAVELENGTHS, wavelengths), why) for c, why in crops]


def _names(dataset: str) -> list[str]:
    """Every scene of every split file of ``dataset``, in file order, each once."""
    from hiralign.data.splits import get_split, list_splits

    return list(dict.fromkeys(n for split in list_splits(dataset) for n in get_split(dataset, split)))


# ----------------------------------------------------------------------------- one writer per dataset


def write_cave(folder: Path, size: int, seed: int, shared_data: Path | None) -> Written:
    """``<scene>/<scene>/<scene>_NN.png`` (16-bit) + ``<scene>_RGB.bmp`` for all 32 CAVE scenes: real
    shared scenes centre-cropped (resized above 256 px), the others SYNTHETIC target-domain cubes."""
    record, real = Written("cave"), real_cave_scenes(shared_data)
    names = _names("cave")
    synthetic = iter(synthetic_cubes("target", sum(n not in real for n in names), size, size, _seed(seed, "cave"),
                                     CAVE_WAVELENGTHS))
    for name in names:
        if name in real:
            hwb, how = crop_or_resize(_read_mat_cube(real[name], ("Omsi",)).astype(np.uint16), size, size)
            record.sources[name] = f"real CAVE scene {real[name].name}, {how}"
        else:
            hwb = np.round(np.moveaxis(next(synthetic), 0, -1) * 65535.0).astype(np.uint16)
            record.sources[name] = "synthetic benchmark (target domain), values x 65535"
        scene = folder / name / name
        scene.mkdir(parents=True)
        for b in range(hwb.shape[2]):
            _write_png16(scene / f"{name}_{b + 1:02d}.png", hwb[:, :, b])
        _write_bmp(scene / f"{name}_RGB.bmp", _display_rgb8(np.moveaxis(hwb, -1, 0) / 65535.0, CAVE_WAVELENGTHS))
    return record


def write_kaist(folder: Path, size: int, seed: int, shared_data: Path | None) -> Written:
    """``sceneNN.mat`` (v7.3, ``HSI`` ``(H, W, 31)`` double reflectance, 420..720 nm), ``H = size``,
    ``W = size * 3376 / 2704``: Samson top-half crops first, SYNTHETIC target-domain cubes for the rest."""
    record, names = Written("kaist"), _names("kaist")
    height, width = size, int(round(size * KAIST_ASPECT))
    halves = samson_halves(shared_data)
    real = samson_crops(halves[0], height, width, KAIST_WAVELENGTHS, "top half (rows 0..46)") if halves else []
    synthetic = iter(synthetic_cubes("target", len(names) - len(real), height, width, _seed(seed, "kaist"),
                                     KAIST_WAVELENGTHS))
    folder.mkdir(parents=True)
    for i, name in enumerate(names):
        if i < len(real):
            hwb, why = real[i]
            record.sources[name] = f"real Samson scene (samson_95.mat), {why}, band-averaged to 420..720 nm"
        else:
            hwb = np.moveaxis(next(synthetic), 0, -1)
            record.sources[name] = "synthetic benchmark (target domain) at 420..720 nm"
        write_mat_v73(folder / f"{name}.mat", {"HSI": np.clip(hwb, 0.0, 1.0).astype(np.float64)})
    return record


def write_icvl(folder: Path, size: int, seed: int, shared_data: Path | None) -> Written:
    """``<scene>.mat`` (v7.3: ``rad`` double radiance, ``bands`` 1x31, ``rgb`` uint8) for every scene of the
    ICVL split files, ``H = size * 1392 / 1300``, ``W = size``: Samson bottom-half crops first, then
    SYNTHETIC source-domain cubes; radiance = cube x a per-scene factor in :data:`ICVL_RADIANCE_RANGE`."""
    record, names = Written("icvl"), _names("icvl")
    height, width = int(round(size * ICVL_ASPECT)), size
    halves = samson_halves(shared_data)
    real = samson_crops(halves[1], height, width, ICVL_WAVELENGTHS, "bottom half (rows 48..94)") if halves else []
    synthetic = iter(synthetic_cubes("source", len(names) - len(real), height, width, _seed(seed, "icvl"),
                                     ICVL_WAVELENGTHS))
    factors = np.random.default_rng(_seed(seed, "icvl")).uniform(*ICVL_RADIANCE_RANGE, size=len(names))
    folder.mkdir(parents=True)
    for i, name in enumerate(names):
        if i < len(real):
            hwb, why = real[i]
            record.sources[name] = (f"real Samson scene (samson_95.mat), {why}, band-averaged to 400..700 nm "
                                    f"(400 nm: Samson's 401 and 404 nm bands only)")
        else:
            hwb = np.moveaxis(next(synthetic), 0, -1)
            record.sources[name] = "synthetic benchmark (source domain)"
        record.sources[name] += f", x {factors[i]:.0f} and rounded, as radiance"
        rgb = _display_rgb8(np.moveaxis(hwb, -1, 0), ICVL_WAVELENGTHS)
        write_mat_v73(folder / f"{name}.mat", {"rad": np.round(hwb.astype(np.float64) * factors[i]),
                                               "bands": ICVL_WAVELENGTHS.reshape(1, -1), "rgb": rgb})
    return record


def write_hsidwrd(folder: Path, size: int, seed: int, shared_data: Path | None = None) -> Written:
    """``gt/<n>.tif`` and ``input50/<n>.tif`` for n = 1..59: 34-band (400..730 nm assumed) SYNTHETIC target
    cubes as 12-bit counts (x 4095); noisy = Poisson(clean / 50) + Gaussian read noise, quantised."""
    record, names = Written("hsidwrd"), _names("hsidwrd")
    names = sorted(names, key=lambda n: (len(n), n))
    rng = np.random.default_rng(_seed(seed, "hsidwrd"))
    cubes = synthetic_cubes("target", len(names), size, size, _seed(seed, "hsidwrd"), HSIDWRD_WAVELENGTHS)
    for sub in ("gt", f"input{HSIDWRD_RATIO}"):
        (folder / sub).mkdir(parents=True)
    top = HSIDWRD_SCALE - 1
    for name, cube in zip(names, cubes):
        clean = np.round(cube.astype(np.float64) * top)
        noisy = rng.poisson(clean / HSIDWRD_RATIO) + rng.normal(0.0, HSIDWRD_READ_NOISE, clean.shape)
        _write_stack_tiff(folder / "gt" / f"{name}.tif", clean)
        _write_stack_tiff(folder / f"input{HSIDWRD_RATIO}" / f"{name}.tif", np.clip(np.round(noisy), 0, top))
        record.sources[name] = "synthetic benchmark (target domain) at 400..730 nm, x 4095 (12-bit)"
    return record


WRITERS: dict[str, Callable[[Path, int, int, Path | None], Written]] = {
    "cave": write_cave, "kaist": write_kaist, "icvl": write_icvl, "hsidwrd": write_hsidwrd,
}


# ----------------------------------------------------------------------------- the root


def is_fixture_root(root: str | Path) -> bool:
    """Whether ``root`` was written by :func:`write_fixture_root` (it holds the fixture manifest)."""
    manifest = Path(root) / MANIFEST
    try:
        return json.loads(manifest.read_text()).get("fixture") is True
    except (OSError, ValueError, AttributeError):
        return False


def _readme(records: list[Written], manifest: dict) -> str:
    size, seed, shared = manifest["size"], manifest["seed"], manifest["shared_data"]
    by = {r.dataset: r for r in records}
    real_note = (f"real scenes from the shared data folder `{shared}`" if shared else
                 "no shared data folder was given or found, so EVERY scene comes from the synthetic benchmark")
    lines = [
        MARKER, "",
        "Every file under this folder is a **FIXTURE**: tiny (scenes are a few tens of pixels across), partly",
        "SYNTHETIC, partly cropped / resampled real scenes from the public sources named below. It is laid out",
        "exactly as the real downloads are (docs/datasets.md) so that the loaders and `hiralign reproduce",
        "--profile paper` can be exercised end to end, but it is **not** CAVE, KAIST, ICVL or HSIDwrD, and no",
        "result computed on it says anything about them.", "",
        f"Made by `hiralign data make-fixture` (hiralign.data.fixture.write_fixture_root) with size={size},",
        f"seed={seed}; {real_note}. Synthetic cubes come from the embedded benchmark",
        "(hiralign.data.synthetic: real reflectance spectra from colour-science and earthlib on scikit-image",
        "layouts under real illuminants). `fixture.json` lists every scene and where it came from. Real",
        "sources: reduced copies of CAVE scenes (Yasuma et al., Columbia CAVE multispectral image database) and",
        "the Samson unmixing scene (156 bands, 401..889 nm), as found in the shared data folder, whose README",
        "names the public repositories they were taken from.", "",
        "## cave/", "",
        "`<scene>/<scene>/<scene>_01.png ... _31.png` (16-bit grayscale PNG, band 01 = 400 nm ... 31 = 700 nm)",
        f"and `<scene>_RGB.bmp`, for the 32 scenes of the CAVE split files, {size}x{size} px.",
        f"{by['cave'].count('real')} scene(s) are centre crops of reduced copies of real CAVE scenes (Yasuma et al.,",
        f"Columbia CAVE multispectral database); {by['cave'].count('synthetic')} are synthetic (target domain),",
        "values x 65535. The scene names are the real ones; the content of the synthetic ones is not.",
        *_real_lines(by["cave"]), "",
        "## kaist/", "",
        "`sceneNN.mat`, MATLAB v7.3 (HDF5), variable `HSI` (H, W, 31) double reflectance in [0, 1] at",
        f"420..720 nm, {size}x{int(round(size * KAIST_ASPECT))} px (the aspect of the 2704x3376 release).",
        f"{by['kaist'].count('real')} scene(s) are crops of the top half of the Samson remote-sensing scene",
        "(401..889 nm, 156 bands; each 10 nm band = mean of Samson's bands within 5 nm of its centre);",
        f"{by['kaist'].count('synthetic')} are synthetic (target domain). Not Choi et al.'s KAIST scenes.",
        *_real_lines(by["kaist"]), "",
        "## icvl/", "",
        "`<scene>.mat`, MATLAB v7.3 (HDF5) with `rad` (H, W, 31) double radiance (a cube in [0, 1] times a",
        f"per-scene factor of {ICVL_RADIANCE_RANGE[0]:.0f}..{ICVL_RADIANCE_RANGE[1]:.0f}), `bands` (1x31, 400..700 nm)"
        " and `rgb` (H, W, 3) uint8",
        f"(proxy RGB bands), for every scene of the ICVL split files, {int(round(size * ICVL_ASPECT))}x{size} px.",
        f"{by['icvl'].count('real')} scene(s) are crops of the bottom half of Samson (disjoint from KAIST's),",
        "band-averaged to 400..700 nm (Samson starts at 401 nm, so the 400 nm band averages 401 and 404 nm);",
        f"{by['icvl'].count('synthetic')} are synthetic (source domain). Not Arad & Ben-Shahar's ICVL scenes.",
        *_real_lines(by["icvl"]), "",
        "## hsidwrd/", "",
        "`gt/<n>.tif` and `input50/<n>.tif` for n = 1..59: multi-page 16-bit TIFFs (34 bands, H, W), 12-bit",
        f"values, {size}x{size} px. All synthetic (target domain at 400..730 nm, the band centres assumed in",
        "docs/datasets.md): clean = cube x 4095; noisy = Poisson(clean / 50) + Gaussian read noise (1 count),",
        "rounded and clipped to 0..4095. Not Zhang et al.'s HSIDwrD captures.", "",
    ]
    if manifest["models"]:
        lines += ["## models/", "",
                  "`stable-diffusion-2-1-unclip/`: a tiny, randomly initialised Stable unCLIP folder in the layout",
                  "of stabilityai/stable-diffusion-2-1-unclip, and `clip-blur-robust/`: its tiny CLIP image encoder",
                  "after a few steps of the blur-robust finetuning (Eq. 7), written by hiralign.guides.fixture",
                  "(write_tiny_unclip, write_blur_robust_clip; each folder has its own README.md). Random weights:",
                  "not the real models; guides made with them are noise.", ""]
    return "\n".join(lines)


def _real_lines(record: Written) -> list[str]:
    real = [(n, s) for n, s in record.sources.items() if s.startswith("real")]
    return ["", "From real scenes:", *(f"* `{n}`: {s}" for n, s in real)] if real else []


def _prepare(root: Path) -> None:
    """Refuse to write over anything but an empty folder or an earlier fixture root."""
    if root.exists() and not root.is_dir():
        raise FixtureError(f"{root}: exists and is not a folder")
    if root.is_dir() and any(root.iterdir()) and not is_fixture_root(root):
        raise FixtureError(f"{root}: folder is not empty and is not a fixture root (no {MANIFEST}); refusing to "
                           f"write a fixture into it (it may hold real data). Pick an empty or new folder")


def write_fixture_root(root: str | Path, shared_data: str | Path | None = None, size: int = 32, seed: int = 0,
                       models: bool = True, *, progress: bool = True) -> Path:
    """Write a FIXTURE dataset root under ``root`` (see the module docstring) and return it.

    ``shared_data``: a folder holding the real scenes to crop (``cave_<scene>_256.mat``, ``samson_95.mat``);
    ``None``: every scene is synthetic (the CLI defaults to :func:`default_shared_data`). ``size``: the
    side of CAVE and HSIDwrD scenes and the short side of KAIST / ICVL scenes (>= 8). ``models``: also
    write the tiny unCLIP and CLIP folders under ``models/``. ``root`` must be new, empty or an earlier
    fixture root (replaced); the data are written to a sibling temporary folder and renamed into place.
    ``progress`` prints one line per dataset.
    """
    root = Path(root).expanduser().absolute()
    if int(size) < 8:
        raise FixtureError(f"size must be >= 8 pixels, got {size}")
    if int(seed) < 0:
        raise FixtureError(f"seed must be >= 0, got {seed}")
    if shared_data is not None:
        shared_data = Path(shared_data).expanduser().absolute()
        if not shared_data.is_dir():
            raise FixtureError(f"{shared_data}: no such shared data folder")
    _prepare(root)
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if progress else (lambda text: None)
    manifest = {"fixture": True, "size": int(size), "seed": int(seed), "models": bool(models),
                "shared_data": str(shared_data) if shared_data else None, "datasets": {}}
    tmp = root.parent / f".{root.name}.fixture-tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        (tmp / MANIFEST).write_text(json.dumps(manifest))  # marks the folder as a fixture from the start
        records = []
        for dataset, writer in WRITERS.items():
            start = time.perf_counter()
            record = writer(tmp / dataset, int(size), int(seed), shared_data)
            record.seconds = time.perf_counter() - start
            records.append(record)
            manifest["datasets"][dataset] = record.sources
            say(f"fixture {dataset:8s} {len(record.sources):4d} scenes ({record.count('real')} from real scenes, "
                f"{record.count('synthetic')} synthetic) in {record.seconds:.1f} s")
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        (tmp / "README.md").write_text(_readme(records, manifest))
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if models:
        start = time.perf_counter()
        write_fixture_models(root / "models")
        say(f"fixture models   {len(MODEL_FOLDERS)} folders in {time.perf_counter() - start:.1f} s")
    return root


def write_fixture_models(folder: Path) -> None:
    """The tiny unCLIP folder and the blur-robust CLIP encoder made from it (hiralign.guides.fixture)."""
    try:
        from hiralign.guides.fixture import write_blur_robust_clip, write_tiny_unclip
    except ModuleNotFoundError as err:
        if err.name != "hiralign.guides.fixture":
            raise
        raise FixtureError(f"{folder}: hiralign.guides.fixture is not available in this checkout, so no model "
                           f"folders were written (the data are); pass models=False / --no-models") from err
    unclip, clip = (folder / name for name in MODEL_FOLDERS)
    write_tiny_unclip(unclip)
    write_blur_robust_clip(unclip, clip)


__all__ = ["FixtureError", "MANIFEST", "band_average", "default_shared_data", "is_fixture_root",
           "write_fixture_models", "write_fixture_root", "write_mat_v73"]
