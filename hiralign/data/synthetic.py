"""The embedded default benchmark: SYNTHETIC source and target HSI domains built from real spectra.

Nothing is downloaded. A scene is rendered as

    radiance(x, lambda) = shading(x) * reflectance(x, lambda) * illuminant(lambda),

rescaled so its maximum lies in [0.9, 1.0], where

* the layout is a random crop (with flips) of a natural image bundled with scikit-image, cut into
  SLIC superpixels;
* each superpixel gets a REAL reflectance spectrum (:mod:`hiralign.data.spectra`): one of the few
  materials whose rendered colour is closest to the superpixel's mean colour, mixed with a second
  such material through a smooth random abundance field, so spectra are not piecewise constant;
* the shading is the smoothed image luminance relative to its superpixel mean (spectrally flat);
* the illuminant is a real CIE / ISO spectral power distribution.

The domains differ by construction. SOURCE: man-made colour targets (ColorChecker, RAWtoACES 190,
CIE 2017, NIST CQS) on man-made layouts under daylight (D55, D65, D75). TARGET: earthlib soil,
vegetation, litter, char and urban spectra plus the ColorChecker as overlap, on natural and
microscopy layouts under warm indoor light: incandescent (A), warm fluorescent (FL3.4) and warm
white LEDs (LED-B1, LED-B2). Inside each domain the splits use disjoint images (source train /
test, target observed / unobserved as in the paper's observed-vs-unobserved study). Everything is
labelled synthetic: cube names start with ``"synthetic-"`` and ``meta["synthetic"]`` is True.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from hiralign.cache import cache_root
from hiralign.data.cube import Cube, CubeError
from hiralign.data.spectra import illuminant, load_library
from hiralign.spectral import VISIBLE_31, display_rgb, rgb_band_indices, to_rgb

#: Bumped whenever the rendering changes, so stale cache files are never reused.
FORMAT_VERSION = 1

#: Materials kept per class (e.g. earthlib "bare/soil") so no class swamps the colour matching.
MATERIALS_PER_CLASS = 250
#: A superpixel picks its two materials among this many closest in colour ("closest-ish").
CANDIDATES_PER_REGION = 6
#: Pixels per SLIC superpixel (64 x 64 scene -> about 40 regions).
PIXELS_PER_REGION = 100
#: Relative shading is clipped to this range so near-black image areas cannot blow up.
SHADING_RANGE = (0.2, 3.0)


@dataclass(frozen=True)
class DomainRecipe:
    """What a synthetic domain is made of: layouts, reflectance libraries and illuminants."""

    name: str
    libraries: tuple[str, ...]
    illuminants: tuple[str, ...]
    images: tuple[str, ...]


SOURCE = DomainRecipe(
    name="source",
    libraries=("colorchecker", "rawtoaces190", "cie2017", "nist-cqs"),
    illuminants=("D55", "D65", "D75"),
    images=("astronaut", "rocket", "motorcycle", "camera", "clock", "coins", "coffee", "brick"),
)
TARGET = DomainRecipe(
    name="target",
    libraries=("earthlib", "colorchecker"),
    illuminants=("A", "LED-B1", "LED-B2", "FL3.4"),
    images=("chelsea", "retina", "grass", "gravel", "immunohistochemistry", "hubble_deep_field", "moon", "cell"),
)
RECIPES = {r.name: r for r in (SOURCE, TARGET)}

#: Disjoint layout images per benchmark split.
SPLIT_IMAGES = {
    "source_train": ("astronaut", "rocket", "motorcycle", "camera", "clock", "coins"),
    "source_test": ("coffee", "brick"),
    "target_observed": ("chelsea", "retina", "grass", "gravel"),
    "target_unobserved": ("immunohistochemistry", "hubble_deep_field", "moon", "cell"),
}
SPLIT_DOMAIN = {"source_train": "source", "source_test": "source",
                "target_observed": "target", "target_unobserved": "target"}


#: scikit-image pictures that ship inside the wheel (no download); "motorcycle" is the left stereo view.
BUNDLED_PICTURES = (
    "astronaut", "brick", "camera", "cat", "cell", "chelsea", "clock", "coffee", "coins", "colorwheel",
    "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo", "microaneurysms",
    "moon", "motorcycle", "page", "retina", "rocket", "text",
)


# ----------------------------------------------------------------------------- layouts
def _srgb_to_linear(srgb: np.ndarray) -> np.ndarray:
    """Undo the sRGB transfer curve (IEC 61966-2-1)."""
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


@lru_cache(maxsize=None)
def layout_image(name: str) -> tuple[np.ndarray, bool]:
    """A scikit-image bundled picture as read-only float ``(H, W, 3)`` sRGB in [0, 1], and whether it is grey."""
    from skimage import data

    if name not in BUNDLED_PICTURES:
        raise ValueError(f"unknown layout picture {name!r}; choose from {', '.join(BUNDLED_PICTURES)}")
    picture = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    img = np.asarray(picture, dtype=np.float64)
    img = img / 255.0 if img.max() > 1.0 else img
    grey = img.ndim == 2
    img = np.repeat(img[..., None], 3, axis=2) if grey else img[..., :3]
    img.setflags(write=False)
    return img, grey


def random_view(img: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A random square crop (35-90 % of the short side), resized to ``size`` and randomly flipped."""
    from skimage.transform import resize

    h, w = img.shape[:2]
    side = int(round(rng.uniform(0.35, 0.9) * min(h, w)))
    side = min(max(side, size), h, w)
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    flip_lr, flip_ud = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
    view = resize(img[top : top + side, left : left + side], (size, size), order=1, anti_aliasing=True)
    view = view[:, ::-1] if flip_lr else view
    view = view[::-1] if flip_ud else view
    return np.clip(view, 0.0, 1.0), {"crop": [top, left, side], "flip": [flip_lr, flip_ud]}


def superpixels(view: np.ndarray) -> np.ndarray:
    """SLIC superpixel labels ``(H, W)`` numbered 0..R-1 (about one per ``PIXELS_PER_REGION`` pixels)."""
    from skimage.segmentation import slic

    n_segments = max(4, view.shape[0] * view.shape[1] // PIXELS_PER_REGION)
    labels = slic(view, n_segments=n_segments, compactness=10.0, start_label=0, channel_axis=-1)
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape)


# ----------------------------------------------------------------------------- materials
def _class_of(label: str) -> str:
    """Material class used for balancing: the label without its sample name."""
    return label.rsplit("/", 1)[0]


@lru_cache(maxsize=8)
def material_pool(domain: str, wavelengths: tuple[float, ...]) -> tuple[np.ndarray, tuple[str, ...]]:
    """The domain's reflectances ``(N, B)`` and labels, at most ``MATERIALS_PER_CLASS`` per class
    (evenly spaced through each class, so the pool is deterministic)."""
    spectra, labels = [], []
    for lib in RECIPES[domain].libraries:
        s, lab = load_library(lib, wavelengths)
        classes = np.array([_class_of(x) for x in lab])
        for cls in dict.fromkeys(classes):
            idx = np.flatnonzero(classes == cls)
            idx = idx[np.unique(np.linspace(0, idx.size - 1, min(idx.size, MATERIALS_PER_CLASS)).astype(int))]
            spectra.append(s[idx])
            labels.extend(lab[i] for i in idx)
    pool = np.concatenate(spectra).astype(np.float32)
    pool.setflags(write=False)
    return pool, tuple(labels)


def colour_features(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Chromaticity ``rgb / sum`` and log luminance of linear RGB rows ``(N, 3)``."""
    total = rgb.sum(axis=1, keepdims=True)
    chroma = rgb / np.maximum(total, 1e-6)
    luminance = rgb @ np.array([0.2126, 0.7152, 0.0722])
    return chroma, np.log(np.maximum(luminance, 1e-3))


def assign_materials(region_rgb: np.ndarray, material_rgb: np.ndarray, grey: bool,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two distinct materials per region, drawn among the ``CANDIDATES_PER_REGION`` closest in colour.

    Distance = squared chromaticity difference (ignored for grey pictures, whose regions then get
    materials of any hue) + squared log-luminance difference scaled by 1/4.
    """
    c_reg, l_reg = colour_features(region_rgb)
    c_mat, l_mat = colour_features(material_rgb)
    dist = 0.25 * (l_reg[:, None] - l_mat[None, :]) ** 2
    if not grey:
        dist = dist + ((c_reg[:, None, :] - c_mat[None, :, :]) ** 2).sum(axis=2)
    k = min(CANDIDATES_PER_REGION, material_rgb.shape[0])
    nearest = np.argsort(dist, axis=1, kind="stable")[:, :k]
    picks = np.stack([rng.choice(row, size=min(2, k), replace=False) for row in nearest])
    return picks[:, 0], picks[:, -1]


def smooth_field(size: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth random field in [0, 1] (Gaussian-filtered white noise, correlation ~ size/8)."""
    field = ndimage.gaussian_filter(rng.random((size, size)), sigma=max(size / 8.0, 1.0), mode="wrap")
    return (field - field.min()) / max(float(np.ptp(field)), 1e-12)


def relative_shading(view_linear: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Spectrally flat shading: smoothed luminance over its superpixel mean, clipped to ``SHADING_RANGE``."""
    lum = ndimage.gaussian_filter(view_linear @ np.array([0.2126, 0.7152, 0.0722]), sigma=1.0)
    counts = np.bincount(labels.ravel())
    region_mean = np.bincount(labels.ravel(), weights=lum.ravel()) / counts
    eps = 0.02  # keeps near-black regions from amplifying JPEG noise
    return np.clip((lum + eps) / (region_mean[labels] + eps), *SHADING_RANGE)


# ----------------------------------------------------------------------------- scenes
def render_scene(domain: str, image: str, size: int, rng: np.random.Generator,
                 wavelengths: np.ndarray) -> tuple[np.ndarray, dict]:
    """One synthetic radiance cube ``(B, size, size)`` and its provenance."""
    recipe = RECIPES[domain]
    img, grey = layout_image(image)
    view, where = random_view(img, size, rng)
    linear = _srgb_to_linear(view)
    labels = superpixels(view)
    n_regions = int(labels.max()) + 1
    counts = np.bincount(labels.ravel(), minlength=n_regions)
    region_rgb = np.stack([np.bincount(labels.ravel(), weights=linear[..., c].ravel(), minlength=n_regions)
                           for c in range(3)], axis=1) / counts[:, None]

    pool, pool_labels = material_pool(domain, tuple(float(w) for w in wavelengths))
    first, second = assign_materials(region_rgb, pool[:, list(rgb_band_indices(wavelengths))], grey, rng)
    mix = rng.uniform(0.2, 0.5) * smooth_field(size, rng)
    reflectance = (1.0 - mix[..., None]) * pool[first][labels] + mix[..., None] * pool[second][labels]

    light_name = str(rng.choice(recipe.illuminants))
    radiance = reflectance * relative_shading(linear, labels)[..., None] * illuminant(light_name, wavelengths)
    peak = rng.uniform(0.9, 1.0)
    cube = np.moveaxis(radiance, -1, 0) * (peak / max(float(radiance.max()), 1e-12))
    meta = {
        "synthetic": True,
        "domain": domain,
        "image": image,
        "illuminant": light_name,
        "n_regions": n_regions,
        "materials": sorted({pool_labels[i] for i in np.concatenate([first, second])}),
        **where,
    }
    return np.clip(cube, 0.0, 1.0).astype(np.float32), meta


def make_domain(domain: str, n_images: int, size: int = 64, seed: int = 0,
                wavelengths: Any = VISIBLE_31, images: Sequence[str] | None = None) -> list[Cube]:
    """``n_images`` SYNTHETIC cubes of ``domain`` (``"source"`` or ``"target"``), ``size`` x ``size``.

    Layout pictures cycle through ``images`` (default: all of the domain's). Scene ``i`` depends
    only on ``(seed, domain, i)``, so the output is bit-identical for a given seed.
    """
    if domain not in RECIPES:
        raise ValueError(f"domain must be one of {sorted(RECIPES)}; got {domain!r}")
    if int(n_images) < 0:
        raise ValueError(f"n_images must be >= 0; got {n_images}")
    if int(size) < 8:
        raise ValueError(f"size must be >= 8 pixels; got {size}")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0; got {seed}")
    images = tuple(images) if images is not None else RECIPES[domain].images
    if not images:
        raise ValueError("images must name at least one layout picture")
    wl = np.asarray(wavelengths, dtype=np.float64).reshape(-1)
    salt = sorted(RECIPES).index(domain)
    cubes = []
    for i in range(int(n_images)):
        rng = np.random.default_rng([int(seed), salt, i])
        image = images[i % len(images)]
        data, meta = render_scene(domain, image, int(size), rng, wl)
        cubes.append(Cube(data, wl, name=f"synthetic-{domain}/{image}-{i:03d}",
                          meta={**meta, "seed": int(seed), "index": i}))
    return cubes


# ----------------------------------------------------------------------------- benchmark
@dataclass(frozen=True)
class Benchmark:
    """The embedded SYNTHETIC benchmark: source train/test and target observed/unobserved cubes."""

    source_train: list[Cube]
    source_test: list[Cube]
    target_observed: list[Cube]
    target_unobserved: list[Cube]
    params: dict

    def splits(self) -> dict[str, list[Cube]]:
        """Split name -> cubes, in the order source_train, source_test, target_observed, target_unobserved."""
        return {name: getattr(self, name) for name in SPLIT_IMAGES}

    @property
    def source(self) -> list[Cube]:
        return [*self.source_train, *self.source_test]

    @property
    def target(self) -> list[Cube]:
        return [*self.target_observed, *self.target_unobserved]

    @property
    def wavelengths(self) -> np.ndarray:
        return np.asarray(self.params["wavelengths"], dtype=np.float64)


def benchmark_params(size: int, counts: dict[str, int], seed: int, wavelengths: np.ndarray) -> dict:
    """Everything the benchmark depends on (the cache key), JSON-serialisable."""
    return {
        "format_version": FORMAT_VERSION,
        "size": int(size),
        "counts": {k: int(v) for k, v in counts.items()},
        "seed": int(seed),
        "wavelengths": [float(w) for w in wavelengths],
        "recipes": {k: dataclasses.asdict(r) for k, r in RECIPES.items()},
        "split_images": {k: list(v) for k, v in SPLIT_IMAGES.items()},
    }


def cache_path(params: dict, cache_dir: Path) -> Path:
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / f"synthetic-benchmark-v{FORMAT_VERSION}-{digest}.npz"


def _save(bench: Benchmark, path: Path) -> None:
    """Write ``bench`` as an .npz atomically (temporary file + rename)."""
    arrays: dict[str, np.ndarray] = {"params_json": np.array(json.dumps(bench.params, sort_keys=True))}
    shape = (len(bench.params["wavelengths"]), bench.params["size"], bench.params["size"])
    for split, cubes in bench.splits().items():
        arrays[f"{split}__data"] = np.stack([c.data for c in cubes]) if cubes else np.zeros((0, *shape), np.float32)
        arrays[f"{split}__json"] = np.array(json.dumps([{"name": c.name, "meta": c.meta} for c in cubes]))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _load(path: Path, params: dict) -> Benchmark:
    """Read a cached benchmark, checking that it was made with ``params``."""
    wl = np.asarray(params["wavelengths"], dtype=np.float64)
    with np.load(path, allow_pickle=False) as npz:
        if json.loads(str(npz["params_json"])) != json.loads(json.dumps(params)):
            raise ValueError("cached parameters differ from the requested ones")
        splits = {}
        for split in SPLIT_IMAGES:
            data, info = npz[f"{split}__data"], json.loads(str(npz[f"{split}__json"]))
            if len(info) != params["counts"][split] or data.shape[0] != len(info):
                raise ValueError(f"split {split} has the wrong number of cubes")
            splits[split] = [Cube(d, wl, name=i["name"], meta=i["meta"]) for d, i in zip(data, info)]
    return Benchmark(**splits, params=params)


def generate_benchmark(params: dict) -> Benchmark:
    """Render every split of the benchmark described by ``params``."""
    wl = np.asarray(params["wavelengths"], dtype=np.float64)
    splits = {}
    for k, split in enumerate(SPLIT_IMAGES):
        split_seed = int(np.random.SeedSequence([params["seed"], k]).generate_state(1)[0])
        cubes = make_domain(SPLIT_DOMAIN[split], params["counts"][split], params["size"], split_seed, wl,
                            images=SPLIT_IMAGES[split])
        prefix, part = f"synthetic-{SPLIT_DOMAIN[split]}/", split.split("_", 1)[1]
        splits[split] = [c.replace(name=c.name.replace(prefix, f"{prefix}{part}/"),
                                   meta={"split": split, "benchmark_seed": params["seed"]}) for c in cubes]
    return Benchmark(**splits, params=params)


def make_benchmark(size: int = 64, n_source_train: int = 24, n_source_test: int = 6,
                   n_target_observed: int = 8, n_target_unobserved: int = 8, seed: int = 0,
                   wavelengths: Any = VISIBLE_31, cache_dir: str | os.PathLike | None = None,
                   use_cache: bool = True) -> Benchmark:
    """The embedded SYNTHETIC benchmark, loaded from / saved to an .npz cache.

    The cache file lives in ``cache_dir`` (default :func:`hiralign.cache.cache_root`) and is named by a hash
    of every parameter plus ``FORMAT_VERSION``. An unreadable or mismatching file is regenerated
    with a warning; an unwritable cache directory only warns.
    """
    counts = {"source_train": n_source_train, "source_test": n_source_test,
              "target_observed": n_target_observed, "target_unobserved": n_target_unobserved}
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0; got {seed}")
    for split, n in counts.items():
        if int(n) < 0:
            raise ValueError(f"the number of {split} images must be >= 0; got {n}")
    params = benchmark_params(size, counts, seed, np.asarray(wavelengths, dtype=np.float64).reshape(-1))
    if not use_cache:
        return generate_benchmark(params)
    path = cache_path(params, Path(cache_dir) if cache_dir is not None else cache_root())
    if path.exists():
        try:
            return _load(path, params)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, CubeError) as err:
            warnings.warn(f"regenerating corrupt benchmark cache {path}: {err}", RuntimeWarning, stacklevel=2)
    bench = generate_benchmark(params)
    try:
        _save(bench, path)
    except OSError as err:
        warnings.warn(f"could not write benchmark cache {path}: {err}", RuntimeWarning, stacklevel=2)
    return bench


# ----------------------------------------------------------------------------- domain shift
def _check_same_grid(cubes: Sequence[Cube]) -> np.ndarray:
    if not cubes:
        raise ValueError("need at least one cube")
    wl = cubes[0].wavelengths
    for c in cubes[1:]:
        if c.wavelengths.shape != wl.shape or not np.allclose(c.wavelengths, wl):
            raise ValueError(f"cube {c.name!r} has different wavelengths from {cubes[0].name!r}")
    return wl


def sample_spectra(cubes: Sequence[Cube], n: int, rng: np.random.Generator) -> np.ndarray:
    """``min(n, pixels)`` pixel spectra ``(n, B)`` drawn without replacement, L2-normalised (shape only)."""
    _check_same_grid(cubes)
    sizes = np.array([c.height * c.width for c in cubes])
    picks = np.sort(rng.choice(sizes.sum(), size=min(int(n), int(sizes.sum())), replace=False))
    owner = np.searchsorted(np.cumsum(sizes), picks, side="right")
    offset = picks - np.concatenate([[0], np.cumsum(sizes)[:-1]])[owner]
    x = np.stack([cubes[o].data.reshape(cubes[o].bands, -1)[:, p] for o, p in zip(owner, offset)]).astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def median_bandwidth(x: np.ndarray, rng: np.random.Generator, max_points: int = 1000) -> float:
    """Median heuristic: the median pairwise Euclidean distance (on at most ``max_points`` rows)."""
    sub = x[rng.choice(len(x), size=min(len(x), max_points), replace=False)]
    sq = (sub**2).sum(1)
    d2 = np.clip(sq[:, None] + sq[None, :] - 2.0 * sub @ sub.T, 0.0, None)
    return float(np.sqrt(np.median(d2[np.triu_indices(len(sub), k=1)])))


def mmd2_permutation_test(x: np.ndarray, y: np.ndarray, bandwidth: float, n_permutations: int,
                          rng: np.random.Generator) -> tuple[float, float]:
    """Unbiased RBF-kernel MMD^2 between samples ``x`` and ``y`` and its permutation-test p-value.

    k(u, v) = exp(-|u - v|^2 / (2 bandwidth^2)); the p-value is (1 + #{permuted >= observed}) / (1 + P).
    """
    z = np.concatenate([x, y])
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError(f"MMD needs at least 2 samples per set; got {n} and {m}")
    z = z.astype(np.float32)  # float32 Gram: half the memory and time; sums are taken in float64
    sq = (z**2).sum(1)
    d2 = np.clip(sq[:, None] + sq[None, :] - 2.0 * z @ z.T, 0.0, None)
    gram = np.exp(d2 * np.float32(-0.5 / bandwidth**2))
    labels = np.zeros((n + m, n_permutations + 1), dtype=np.float32)
    labels[:n, 0] = 1.0
    for p in range(1, n_permutations + 1):
        labels[rng.permutation(n + m)[:n], p] = 1.0
    k_in = (gram @ labels).astype(np.float64)            # row sums over the first set
    k_out = gram.sum(1, dtype=np.float64)[:, None] - k_in  # ... and over the second set
    diag = np.diag(gram).astype(np.float64)[:, None]
    first = labels.astype(bool)
    s_xx = (first * k_in).sum(0) - (first * diag).sum(0)
    s_yy = (~first * k_out).sum(0) - (~first * diag).sum(0)
    s_xy = (first * k_out).sum(0)
    mmd2 = s_xx / (n * (n - 1)) + s_yy / (m * (m - 1)) - 2.0 * s_xy / (n * m)
    p_value = (1.0 + np.sum(mmd2[1:] >= mmd2[0])) / (1.0 + n_permutations)
    return float(mmd2[0]), float(p_value)


def mean_spectrum_sam(x: np.ndarray, y: np.ndarray) -> float:
    """Spectral angle (degrees) between the mean spectra of two samples."""
    a, b = x.mean(0), y.mean(0)
    cos = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def domain_shift(a: Sequence[Cube], b: Sequence[Cube], n_samples: int = 2000, seed: int = 0,
                 n_permutations: int = 100, n_splits: int = 5) -> dict:
    """Measured spectral domain shift between cube sets ``a`` and ``b``.

    Pixel spectra (``n_samples`` per set, L2-normalised so only spectral shape counts) are compared
    by an unbiased RBF MMD^2 (median-heuristic bandwidth of the pooled sample) with a permutation
    p-value, and by the spectral angle of the mean spectra. The within-domain baseline applies the
    same measures (same bandwidth) to two halves of ``a``, averaged over ``n_splits`` random splits
    of its cubes: scenes differ from each other, so this baseline is the scale a real shift must beat.
    """
    if len(a) < 2:
        raise ValueError("set a needs at least 2 cubes: its two halves give the within-domain baseline")
    if n_splits < 1:
        raise ValueError(f"n_splits must be >= 1; got {n_splits}")
    _check_same_grid([*a, *b])
    rng = np.random.default_rng(seed)
    x, y = sample_spectra(a, n_samples, rng), sample_spectra(b, n_samples, rng)
    bandwidth = median_bandwidth(np.concatenate([x, y]), rng)
    mmd2, p_value = mmd2_permutation_test(x, y, bandwidth, n_permutations, rng)
    within_mmd2, within_sam = [], []
    for _ in range(n_splits):
        order = rng.permutation(len(a))
        half0, half1 = [a[i] for i in order[: len(a) // 2]], [a[i] for i in order[len(a) // 2 :]]
        x0, x1 = sample_spectra(half0, n_samples, rng), sample_spectra(half1, n_samples, rng)
        within_mmd2.append(mmd2_permutation_test(x0, x1, bandwidth, 0, rng)[0])
        within_sam.append(mean_spectrum_sam(x0, x1))
    return {
        "mmd2": mmd2,
        "p_value": p_value,
        "mmd2_within": float(np.mean(within_mmd2)),
        "mmd2_within_max": float(np.max(within_mmd2)),
        "sam_deg": mean_spectrum_sam(x, y),
        "sam_within_deg": float(np.mean(within_sam)),
        "bandwidth": bandwidth,
        "n_samples": float(len(x)),
        "n_permutations": float(n_permutations),
    }


# ----------------------------------------------------------------------------- figures
def _two_sets(data: Any) -> tuple[list[Cube], list[Cube]]:
    if isinstance(data, Benchmark):
        return data.source, data.target
    a, b = data
    return list(a), list(b)


def plot_domain_shift(data: Any, labels: tuple[str, str] = ("source", "target"), n_samples: int = 1000,
                      seed: int = 0, shift: dict | None = None):
    """Figure: mean +- std of L2-normalised spectra per domain, and a 2-D PCA scatter of sampled
    spectra coloured by domain; the title reports the MMD^2. ``data`` is a :class:`Benchmark`
    (source vs target) or a pair of cube lists. Pass ``shift`` to reuse a :func:`domain_shift` result."""
    import matplotlib.pyplot as plt

    a, b = _two_sets(data)
    wl = _check_same_grid([*a, *b])
    rng = np.random.default_rng(seed)
    x, y = sample_spectra(a, n_samples, rng), sample_spectra(b, n_samples, rng)
    shift = shift or domain_shift(a, b, n_samples=min(n_samples, 500), seed=seed, n_permutations=50)

    fig, (ax_s, ax_p) = plt.subplots(1, 2, figsize=(11, 4))
    z = np.concatenate([x, y])
    centre = z.mean(0)
    axes = np.linalg.svd(z - centre, full_matrices=False)[2][:2]
    for sample, label, colour in ((x, labels[0], "tab:blue"), (y, labels[1], "tab:orange")):
        mean, std = sample.mean(0), sample.std(0)
        ax_s.plot(wl, mean, color=colour, label=label)
        ax_s.fill_between(wl, mean - std, mean + std, color=colour, alpha=0.25)
        proj = (sample - centre) @ axes.T
        ax_p.scatter(proj[:, 0], proj[:, 1], s=3, alpha=0.4, color=colour, label=label)
    ax_s.set(xlabel="wavelength (nm)", ylabel="L2-normalised radiance", title="mean ± std spectrum")
    ax_p.set(xlabel="PC 1", ylabel="PC 2", title="PCA of pixel spectra")
    ax_s.legend()
    ax_p.legend(markerscale=4)
    fig.suptitle(f"SYNTHETIC domains: MMD² {labels[0]}-vs-{labels[1]} = {shift['mmd2']:.3g} "
                 f"(p = {shift['p_value']:.2g}), within {labels[0]} = {shift['mmd2_within']:.3g}")
    fig.tight_layout()
    return fig


def plot_scenes(cubes: Sequence[Cube], n: int = 4, title: str = ""):
    """Figure of the first ``n`` cubes as proxy RGB (Eq. 4 bands), titled with name and illuminant
    (and ``title`` above them all, laid out so it never overlaps the panel titles)."""
    import matplotlib.pyplot as plt

    shown = list(cubes)[: max(int(n), 1)]
    if not shown:
        raise ValueError("no cubes to plot")
    fig, axes = plt.subplots(1, len(shown), figsize=(3 * len(shown), 3.6), squeeze=False, layout="constrained")
    for ax, cube in zip(axes[0], shown):
        ax.imshow(display_rgb(to_rgb(cube)))
        ax.set_title(f"{cube.name}\n{cube.meta.get('illuminant', '')}", fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return fig
