"""Degradation operators for hyperspectral restoration tasks, a registry by name.

Every operator turns a clean float cube ``(B, H, W)`` on the [0, 1] scale into a degraded observation
and reports what it did (paper Sec. IV-D: "Degradation simulation"). Operators are seeded through
``numpy.random.default_rng(seed)``: the same seed gives the same output, bit for bit.

Noise constants follow the widely used QRNN3D / HSIR simulation code (see ``docs/architecture.md``,
"Canonical degradation constants"); task constants (bicubic x4, blur radius 15, band-missing ratio
0.3, inpainting ratio 0.9) follow the paper. Outputs are float32 and are NOT clipped to [0, 1]
unless ``clip=True`` is passed (every operator accepts it).

The sparse noises follow HSIR's ``hsir/data/transform/noise.py`` (identical to QRNN3D's
``utility/dataset.py``): ``impulse``, ``stripe`` and ``deadline`` each hit ``floor(B / 3)`` random
bands (``AddNoiseImpulse`` / ``AddNoiseStripe`` / ``AddNoiseDeadline``); ``complex`` is the test-time
mixture (``AddNoiseNoniid`` then ``AddNoiseComplex``); ``complex-train`` is HSIR's complex TRAINING
transform (``complex_loader_train``: non-i.i.d. Gaussian plus at most one sparse noise per sample).

Example::

    noisy = apply("complex", cube, seed=3)   # Cube in -> Cube out
    noisy.meta["degradation"]["sigma"]       # per-band noise sigma for the restorer
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import correlate1d

from hiralign.data import Cube
from hiralign.misalign import Misalignment, misaligned_reference
from hiralign.registry import Registry
from hiralign.spectral import VISIBLE_31, rgb_band_indices

Operator = Callable[..., tuple[np.ndarray, dict]]

_REGISTRY: Registry[Operator] = Registry("degradation")
NAMES: tuple[str, ...] = ()  # the registered names, kept up to date by register()

# QRNN3D / HSIR constants (docs/architecture.md, "Canonical degradation constants").
NONIID_SIGMAS = (10 / 255, 30 / 255, 50 / 255, 70 / 255)  # AddNoiseNoniid([10, 30, 50, 70])
IMPULSE_AMOUNTS = (0.1, 0.3, 0.5, 0.7)  # _AddNoiseImpulse([0.1, 0.3, 0.5, 0.7]), salt-vs-pepper 0.5
COLUMN_FRACTION = (0.05, 0.15)  # _AddNoiseStripe / _AddNoiseDeadline(0.05, 0.15)
STRIPE_MAX_OFFSET = 0.25  # stripe offsets U(0, 1) * 0.5 - 0.25
BAND_FRACTION = 1 / 3  # AddNoiseMixed num_bands=[1/3]: each sparse noise hits floor(B / 3) bands
#: The per-sample choices of ``complex-train``, in the order of HSIR's complex_loader_train.
SPARSE_NOISES = ("none", "impulse", "stripe", "deadline")


@dataclass(frozen=True, eq=False)
class Degraded:
    """A degraded observation: ``data`` float32 and ``info`` (operator name, seed, resolved
    parameters and whatever a restorer needs: ``sigma``, ``scale``, ``mask``, ``kernel`` ...)."""

    data: np.ndarray
    info: dict = field(default_factory=dict)


def register(name: str) -> Callable[[Operator], Operator]:
    """Decorator adding ``op(x, rng, **params) -> (data, info)`` to the registry under ``name``.

    ``x`` is a float32 copy of the clean cube that the operator may modify in place, ``rng`` a
    ``numpy.random.Generator``; ``info`` holds the resolved parameters and what a restorer needs.
    """

    def decorate(op: Operator) -> Operator:
        global NAMES
        if not op.__doc__:
            raise ValueError(f"degradation {name!r} needs a docstring (describe() returns it)")
        _REGISTRY.register(name, op)  # ValueError if the name is taken
        NAMES = tuple(_REGISTRY)
        return op

    return decorate


def _operator(name: str) -> Operator:
    return _REGISTRY.get(name)


def describe(name: str) -> str:
    """The docstring of the operator registered as ``name``."""
    return inspect.cleandoc(_operator(name).__doc__)


def _validate_cube_array(x: Any) -> np.ndarray:
    """Return a float32 copy of ``x`` after checking it is a finite float ``(B, H, W)`` array."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"expected a numpy (B, H, W) array, got {type(x).__name__}")
    if x.ndim != 3:
        raise ValueError(f"a cube must be 3-D (bands, height, width); got shape {x.shape}")
    if min(x.shape) == 0:
        raise ValueError(f"a cube must not be empty; got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"a cube must be float on the [0, 1] scale; got dtype {x.dtype} (convert first)")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"cube has {int(np.size(x) - np.isfinite(x).sum())} NaN/infinite values")
    return x.astype(np.float32, copy=True)


def _check_params(name: str, op: Operator, params: dict) -> None:
    accepted = [p for p in inspect.signature(op).parameters if p not in ("x", "rng")]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"degradation {name!r} got unknown parameter(s) {unknown}; accepts {accepted} and clip")


def degrade(name: str, x: np.ndarray, seed: int = 0, clip: bool = False, **params: Any) -> Degraded:
    """Apply the degradation ``name`` to the clean float cube ``x`` ``(B, H, W)``.

    ``seed`` seeds ``numpy.random.default_rng``; ``clip=True`` clips the result to [0, 1] (off by
    default: noisy observations keep their full range). ``params`` go to the operator
    (see :func:`describe`).
    """
    op = _operator(name)
    _check_params(name, op, params)
    clean = _validate_cube_array(x)
    data, details = op(clean, np.random.default_rng(seed), **params)
    data = np.asarray(data, dtype=np.float32)
    if clip:
        data = np.clip(data, 0.0, 1.0)
    return Degraded(data=data, info={"name": name, "seed": seed, "clip": clip, **details})


def apply(name: str, cube: Cube | np.ndarray, seed: int = 0, **params: Any) -> Cube | np.ndarray:
    """Degrade ``cube`` and return the same class: a :class:`Cube` (wavelengths kept, the info in
    ``meta["degradation"]``) or a numpy array. See :func:`degrade` for the arguments."""
    if isinstance(cube, Cube):
        if "wavelengths" in inspect.signature(_operator(name)).parameters and params.get("wavelengths") is None:
            params["wavelengths"] = cube.wavelengths
        result = degrade(name, cube.data, seed=seed, **params)
        return cube.replace(result.data, meta={"degradation": result.info})
    return degrade(name, cube, seed=seed, **params).data


# ----------------------------------------------------------------------------------------- helpers


def _random_bands(rng: np.random.Generator, n_bands: int) -> np.ndarray:
    """``floor(B / 3)`` distinct bands drawn at random (sorted), as HSIR's ``AddNoiseMixed`` with
    ``num_bands=[1/3]``: the first ``floor(num_band * B)`` entries of a random band permutation."""
    return np.sort(rng.permutation(n_bands)[: int(np.floor(BAND_FRACTION * n_bands))])


def _resolve_bands(bands: Sequence[int] | None, n_bands: int, rng: np.random.Generator) -> np.ndarray:
    """Band indices to corrupt: ``floor(B / 3)`` random bands for ``None``, else the given distinct indices."""
    if bands is None:
        return _random_bands(rng, n_bands)
    idx = np.asarray(bands, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= n_bands):
        raise ValueError(f"band indices {idx.tolist()} out of range for {n_bands} bands")
    if np.unique(idx).size != idx.size:
        raise ValueError(f"band indices must be distinct; got {idx.tolist()}")
    return idx


def _column_count_range(width: int, fraction: tuple[float, float], rounding: Callable[[float], float],
                        what: str) -> tuple[int, int]:
    """HSIR's range ``[low, high)`` of corrupted column counts, ``high`` exclusive (numpy ``randint``):
    ``low = rounding(lo * W)``, ``high = rounding(hi * W)``. HSIR rounds with ``np.floor`` for stripes
    (``_AddNoiseStripe``: 3..8 columns at W = 64) and ``np.ceil`` for deadlines (``_AddNoiseDeadline``:
    4..9 at W = 64); a count of 0 is possible on narrow cubes, an empty range is an error."""
    lo, hi = fraction
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"column_fraction must satisfy 0 <= lo < hi <= 1; got {fraction}")
    low, high = int(rounding(lo * width)), int(rounding(hi * width))
    if high <= low:
        raise ValueError(f"{what}: width {width} is too narrow for column_fraction {fraction}: the column count "
                         f"{rounding.__name__}({lo} W) .. {rounding.__name__}({hi} W) - 1 = {low} .. {high - 1} is "
                         "empty (HSIR's randint range); use a wider cube (W >= 7 for the defaults)")
    return low, high


def _check_sigma(sigma: float, what: str = "sigma") -> float:
    sigma = float(sigma)
    if not (np.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"{what} must be a finite number >= 0; got {sigma}")
    return sigma


def _add_gaussian(x: np.ndarray, rng: np.random.Generator, sigma_per_band: np.ndarray) -> np.ndarray:
    """``x + sigma_b * n``, n ~ N(0, 1) i.i.d. (in place)."""
    x += sigma_per_band.astype(np.float32)[:, None, None] * rng.standard_normal(x.shape, dtype=np.float32)
    return x


def _noniid_sigmas(rng: np.random.Generator, n_bands: int, sigmas: Sequence[float]) -> np.ndarray:
    """One sigma per band, drawn uniformly from the set ``sigmas``."""
    choices = np.asarray([_check_sigma(s) for s in sigmas], dtype=np.float64)
    if choices.size == 0:
        raise ValueError("sigmas must hold at least one value")
    return choices[rng.integers(0, choices.size, n_bands)]


def _add_impulse(x, rng, bands, amounts, salt_vs_pepper) -> dict:
    """Salt-and-pepper (1 / 0) on ``bands``; each band's corrupted fraction drawn from ``amounts``."""
    choices = np.asarray(amounts, dtype=np.float64)
    if choices.size == 0 or choices.min() < 0 or choices.max() > 1:
        raise ValueError(f"impulse amounts must be fractions in [0, 1]; got {choices.tolist()}")
    if not 0.0 <= salt_vs_pepper <= 1.0:
        raise ValueError(f"salt_vs_pepper must be in [0, 1]; got {salt_vs_pepper}")
    band_amounts = choices[rng.integers(0, choices.size, bands.size)]
    for b, amount in zip(bands, band_amounts):
        flipped = rng.random(x.shape[1:]) < amount
        salted = rng.random(x.shape[1:]) < salt_vs_pepper
        x[b][flipped & salted] = 1.0
        x[b][flipped & ~salted] = 0.0
    return {"bands": bands, "band_amounts": band_amounts, "amounts": tuple(amounts),
            "salt_vs_pepper": salt_vs_pepper}


def _random_columns(rng: np.random.Generator, width: int, count_range: tuple[int, int]) -> np.ndarray:
    """A count drawn uniformly from ``[low, high)``, then that many distinct random columns (sorted)."""
    return np.sort(rng.permutation(width)[: rng.integers(*count_range)])


def _add_stripes(x, rng, bands, column_fraction, max_offset) -> dict:
    """On each band of ``bands``, ``floor(0.05 W) .. floor(0.15 W) - 1`` random columns get an additive
    offset U(-m, m) (HSIR subtracts ``U(0, 1) * 0.5 - 0.25``: the same distribution)."""
    max_offset = _check_sigma(max_offset, "max_offset")
    count_range = _column_count_range(x.shape[2], column_fraction, np.floor, "stripe")
    columns, offsets = [], []
    for b in bands:
        cols = _random_columns(rng, x.shape[2], count_range)
        shift = rng.uniform(-max_offset, max_offset, cols.size)
        x[b][:, cols] += shift.astype(np.float32)[None, :]
        columns.append(cols)
        offsets.append(shift)
    return {"bands": bands, "columns": columns, "offsets": offsets, "column_fraction": column_fraction,
            "max_offset": max_offset}


def _add_deadlines(x, rng, bands, column_fraction) -> dict:
    """On each band of ``bands``, ``ceil(0.05 W) .. ceil(0.15 W) - 1`` random columns are set to 0
    (dead detector lines)."""
    count_range = _column_count_range(x.shape[2], column_fraction, np.ceil, "deadline")
    columns = []
    for b in bands:
        cols = _random_columns(rng, x.shape[2], count_range)
        x[b][:, cols] = 0.0
        columns.append(cols)
    return {"bands": bands, "columns": columns, "column_fraction": column_fraction}


def _round_half_up(value: float) -> int:
    return int(np.floor(value + 0.5))


def _check_ratio(ratio: float) -> float:
    ratio = float(ratio)
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1]; got {ratio}")
    return ratio


def _bicubic_resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Per-band bicubic resize (Keys a = -0.5, antialiased when shrinking, as MATLAB ``imresize``)."""
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))[None]
    with torch.no_grad():
        y = F.interpolate(t, size=size, mode="bicubic", align_corners=False, antialias=True)
    return y[0].numpy().astype(np.float32)


def _check_scale(scale: int) -> int:
    if isinstance(scale, bool) or int(scale) != scale or scale < 2:
        raise ValueError(f"scale must be an integer >= 2 (the paper uses 4); got {scale}")
    return int(scale)


def upsample_bicubic(lr: Cube | np.ndarray, scale: int) -> Cube | np.ndarray:
    """Bicubic upsampling by ``scale`` of a low-resolution cube ``(B, h, w) -> (B, h*s, w*s)``: the
    bicubic SR baseline, the same kernel as ``sr-bicubic``. Returns the input's class; not clipped."""
    scale = _check_scale(scale)
    data = lr.data if isinstance(lr, Cube) else _validate_cube_array(lr)
    up = _bicubic_resize(data, (data.shape[1] * scale, data.shape[2] * scale))
    return lr.replace(up) if isinstance(lr, Cube) else up


def gaussian_kernel(radius: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian taps ``exp(-t^2 / 2 sigma^2)``, ``t = -radius .. radius``."""
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (t / sigma) ** 2)
    return taps / taps.sum()


# --------------------------------------------------------------------------------------- operators


@register("gaussian")
def _gaussian(x, rng, sigma: float | None = None, sigma_255: float | None = None):
    """I.i.d. Gaussian noise ``y = x + sigma * n``, n ~ N(0, 1), the same sigma on every band.

    sigma: std on the [0, 1] scale (default 50/255); or sigma_255 on the 8-bit scale (not both).
    info: ``sigma`` per band (B,). Not clipped unless clip=True.
    """
    if sigma is not None and sigma_255 is not None:
        raise ValueError("give sigma (on [0, 1]) or sigma_255 (on [0, 255]), not both")
    if sigma_255 is not None:
        sigma = sigma_255 / 255
    elif sigma is None:
        sigma = 50 / 255  # default noise level 50/255, the middle of QRNN3D's 30/50/70 test levels
    sigma_per_band = np.full(x.shape[0], _check_sigma(sigma))
    return _add_gaussian(x, rng, sigma_per_band), {"sigma": sigma_per_band}


@register("gaussian-noniid")
def _gaussian_noniid(x, rng, sigmas: Sequence[float] = NONIID_SIGMAS):
    """Non-i.i.d. Gaussian noise: band b gets ``sigma_b`` drawn uniformly from ``sigmas``.

    sigmas: candidate stds on the [0, 1] scale, default {10, 30, 50, 70}/255 (QRNN3D AddNoiseNoniid).
    info: ``sigma`` per band (B,), ``sigmas``. Not clipped unless clip=True.
    """
    sigma_per_band = _noniid_sigmas(rng, x.shape[0], sigmas)
    return _add_gaussian(x, rng, sigma_per_band), {"sigma": sigma_per_band, "sigmas": tuple(sigmas)}


@register("impulse")
def _impulse(x, rng, bands: Sequence[int] | None = None, amounts: Sequence[float] = IMPULSE_AMOUNTS,
             salt_vs_pepper: float = 0.5):
    """Salt-and-pepper noise (HSIR AddNoiseImpulse): on each chosen band every pixel is corrupted with
    probability ``amount``, and a corrupted pixel becomes 1 (salt) with probability ``salt_vs_pepper``,
    else 0 (pepper); ``amount`` is drawn per band from ``amounts``.

    bands: indices to corrupt; default ``floor(B / 3)`` bands drawn at random per call (HSIR
    AddNoiseMixed, num_bands 1/3). amounts: default {0.1, 0.3, 0.5, 0.7} (_AddNoiseImpulse).
    salt_vs_pepper: default 0.5. info: ``bands``, ``band_amounts`` (one per corrupted band),
    ``amounts``, ``salt_vs_pepper``.
    """
    return x, _add_impulse(x, rng, _resolve_bands(bands, x.shape[0], rng), amounts, salt_vs_pepper)


@register("stripe")
def _stripe(x, rng, bands: Sequence[int] | None = None, column_fraction: tuple[float, float] = COLUMN_FRACTION,
            max_offset: float = STRIPE_MAX_OFFSET):
    """Stripe noise (HSIR AddNoiseStripe): on each chosen band, ``n`` random columns each get an
    additive constant offset drawn from U(-max_offset, max_offset); ``n`` is drawn per band uniformly
    from ``floor(lo W) .. floor(hi W) - 1`` (numpy ``randint(floor(lo W), floor(hi W))``; 3..8 at W = 64).

    bands: indices to corrupt; default ``floor(B / 3)`` bands drawn at random per call (HSIR
    AddNoiseMixed, num_bands 1/3). column_fraction (lo, hi): (0.05, 0.15), max_offset: 0.25
    (_AddNoiseStripe). info: ``bands``, ``columns`` and ``offsets`` (one array per band).
    Not clipped unless clip=True.
    """
    return x, _add_stripes(x, rng, _resolve_bands(bands, x.shape[0], rng), column_fraction, max_offset)


@register("deadline")
def _deadline(x, rng, bands: Sequence[int] | None = None, column_fraction: tuple[float, float] = COLUMN_FRACTION):
    """Deadline noise (HSIR AddNoiseDeadline): on each chosen band, ``n`` random columns are set to 0;
    ``n`` is drawn per band uniformly from ``ceil(lo W) .. ceil(hi W) - 1`` (numpy
    ``randint(ceil(lo W), ceil(hi W))``; HSIR rounds UP here, unlike stripes: 4..9 at W = 64).

    bands: indices to corrupt; default ``floor(B / 3)`` bands drawn at random per call (HSIR
    AddNoiseMixed, num_bands 1/3). column_fraction (lo, hi): (0.05, 0.15) (_AddNoiseDeadline).
    info: ``bands``, ``columns`` (one array per band).
    """
    return x, _add_deadlines(x, rng, _resolve_bands(bands, x.shape[0], rng), column_fraction)


@register("complex")
def _complex(x, rng, sigmas: Sequence[float] = NONIID_SIGMAS, amounts: Sequence[float] = IMPULSE_AMOUNTS,
             column_fraction: tuple[float, float] = COLUMN_FRACTION, max_offset: float = STRIPE_MAX_OFFSET):
    """Complex (mixture) noise, the TEST-time case: HSIR AddNoiseNoniid followed by AddNoiseComplex:
    non-i.i.d. Gaussian noise on all bands, then stripe, deadline and impulse noise, each on its own
    disjoint set of ``floor(B / 3)`` bands (consecutive thirds of one random band permutation), with
    the column counts of ``stripe`` and ``deadline``. Training uses ``complex-train``.

    Parameters as in ``gaussian-noniid``, ``impulse`` (salt-vs-pepper 0.5), ``stripe`` and ``deadline``.
    info: ``sigma`` per band (B,); ``stripe_bands``/``stripe_columns``/``stripe_offsets``,
    ``deadline_bands``/``deadline_columns``, ``impulse_bands``/``impulse_amounts``.
    Not clipped unless clip=True.
    """
    sigma_per_band = _noniid_sigmas(rng, x.shape[0], sigmas)
    _add_gaussian(x, rng, sigma_per_band)
    third = int(np.floor(BAND_FRACTION * x.shape[0]))
    order = rng.permutation(x.shape[0])
    stripe_bands, deadline_bands, impulse_bands = (np.sort(order[i * third : (i + 1) * third]) for i in range(3))
    stripe = _add_stripes(x, rng, stripe_bands, column_fraction, max_offset)
    deadline = _add_deadlines(x, rng, deadline_bands, column_fraction)
    impulse = _add_impulse(x, rng, impulse_bands, amounts, 0.5)
    return x, {
        "sigma": sigma_per_band, "sigmas": tuple(sigmas),
        "stripe_bands": stripe_bands, "stripe_columns": stripe["columns"], "stripe_offsets": stripe["offsets"],
        "deadline_bands": deadline_bands, "deadline_columns": deadline["columns"],
        "impulse_bands": impulse_bands, "impulse_amounts": impulse["band_amounts"], "amounts": tuple(amounts),
        "column_fraction": column_fraction, "max_offset": max_offset,
    }


@register("complex-train")
def _complex_train(x, rng, sigmas: Sequence[float] = NONIID_SIGMAS, amounts: Sequence[float] = IMPULSE_AMOUNTS,
                   column_fraction: tuple[float, float] = COLUMN_FRACTION, max_offset: float = STRIPE_MAX_OFFSET):
    """Complex noise as HSIR draws it for TRAINING (``complex_loader_train``, also QRNN3D's
    ``hsi_denoising_complex.py``): non-i.i.d. Gaussian noise on all bands, then ONE of
    ``SPARSE_NOISES`` = (none, impulse, stripe, deadline), each with probability 1/4, on ``floor(B / 3)``
    random bands, exactly as the ``impulse`` / ``stripe`` / ``deadline`` operators. HSIR cycles through
    the four in turn (``SequentialSelect``) over a shuffled data set; this seeded operator draws the
    choice per call instead: the same 1/4 frequencies. The test observations use ``complex``.

    Parameters as in ``complex``. info: ``sigma`` per band (B,), ``sparse_noise`` (the choice) and,
    under the key names of ``complex``, the chosen noise's bands and draws (e.g. ``stripe_bands``,
    ``stripe_columns``, ``stripe_offsets``). Not clipped unless clip=True.
    """
    sigma_per_band = _noniid_sigmas(rng, x.shape[0], sigmas)
    _add_gaussian(x, rng, sigma_per_band)
    sparse = SPARSE_NOISES[int(rng.integers(len(SPARSE_NOISES)))]
    info = {"sigma": sigma_per_band, "sigmas": tuple(sigmas), "sparse_noise": sparse, "amounts": tuple(amounts),
            "column_fraction": column_fraction, "max_offset": max_offset}
    if sparse == "impulse":
        impulse = _add_impulse(x, rng, _random_bands(rng, x.shape[0]), amounts, 0.5)
        info.update(impulse_bands=impulse["bands"], impulse_amounts=impulse["band_amounts"])
    elif sparse == "stripe":
        stripe = _add_stripes(x, rng, _random_bands(rng, x.shape[0]), column_fraction, max_offset)
        info.update(stripe_bands=stripe["bands"], stripe_columns=stripe["columns"], stripe_offsets=stripe["offsets"])
    elif sparse == "deadline":
        deadline = _add_deadlines(x, rng, _random_bands(rng, x.shape[0]), column_fraction)
        info.update(deadline_bands=deadline["bands"], deadline_columns=deadline["columns"])
    return x, info


@register("sr-bicubic")
def _sr_bicubic(x, rng, scale: int = 4):
    """Bicubic downsampling by ``scale`` (paper: x4; 2 and 8 are also common): ``(B, H, W) ->
    (B, H/s, W/s)``, per band, with PyTorch's antialiased bicubic (Keys a = -0.5 stretched by
    ``scale``, the MATLAB ``imresize`` convention). H and W must be divisible by ``scale``.

    info: ``scale``, ``hr_shape`` (H, W). Deterministic (uses no randomness). Not clipped unless clip=True.
    """
    scale = _check_scale(scale)
    _, h, w = x.shape
    if h % scale or w % scale:
        raise ValueError(f"sr-bicubic: height {h} and width {w} must be divisible by scale {scale}")
    return _bicubic_resize(x, (h // scale, w // scale)), {"scale": scale, "hr_shape": (h, w)}


@register("sr-ref")
def _sr_ref(x, rng, scale: int = 4, shift: float = 4.0, rotation_deg: float = 1.0, zoom: float = 0.01, elastic: float = 1.0,
            elastic_sigma: float = 8.0, colour: float = 0.0, wavelengths: Sequence[float] | None = None):
    """Reference-based SR with an unregistered HR RGB (UAFL): the observation is ``sr-bicubic``'s
    ``(B, H/s, W/s)`` LR cube; ``info["ref"]`` is the clean cube's Eq. 4 RGB (bands nearest 660 /
    550 / 470 nm of ``wavelengths``, default 400-700 nm in 10 nm steps for 31 bands) resampled
    through a seeded misalignment (:mod:`hiralign.misalign`: a translation of exactly ``shift`` px,
    rotation up to ``rotation_deg``, zoom up to ``zoom``, a smooth elastic field of up to ``elastic``
    px, a colour change up to ``colour``), ``(3, H, W)`` float32.

    info: ``scale``, ``hr_shape``, ``ref``, ``flow`` (``(2, H, W)`` (dx, dy) px with
    ``ref(p) = rgb(p + flow(p))``), ``misalignment`` (``settings`` and what was ``drawn``: the shift
    vector, rotation, zoom, gains and gammas), ``rgb_bands``. All zero settings give a registered reference.
    """
    if wavelengths is None:
        if x.shape[0] != len(VISIBLE_31):
            raise ValueError(f"sr-ref: give the wavelengths of the {x.shape[0]} bands (the default grid has {len(VISIBLE_31)})")
        wavelengths = VISIBLE_31
    if len(wavelengths) != x.shape[0]:
        raise ValueError(f"sr-ref: {len(wavelengths)} wavelengths given for a cube with {x.shape[0]} bands")
    bands = list(rgb_band_indices(wavelengths))
    settings = Misalignment(float(shift), float(rotation_deg), float(zoom), float(elastic), float(elastic_sigma), float(colour))
    lr, info = _sr_bicubic(x, rng, scale=scale)
    ref, flow, drawn = misaligned_reference(x[bands], rng, settings)
    return lr, {**info, "ref": ref, "flow": flow, "rgb_bands": bands,
                "misalignment": {"settings": {k: float(v) for k, v in vars(settings).items()}, "drawn": drawn}}


@register("blur")
def _blur(x, rng, radius: int = 15, sigma: float | None = None, noise_sigma: float = 0.0):
    """Gaussian blur of every band with a ``(2 radius + 1)^2`` kernel, then optional Gaussian noise.

    radius: 15 (paper, deblurring). sigma: kernel std in pixels, default radius / 3 (= 5 px; our
    choice, the paper gives only the radius); taps truncated at the radius and normalised to sum 1.
    Boundary: reflect, half-sample symmetric (``d c b a | a b c d``, scipy.ndimage 'reflect'), which
    preserves each band's mean. noise_sigma: std of added i.i.d. Gaussian noise (default 0).
    info: ``kernel`` (2r+1, 2r+1), ``radius``, ``kernel_sigma``, ``boundary``, ``sigma`` per band.
    """
    if isinstance(radius, bool) or int(radius) != radius or radius < 1:
        raise ValueError(f"radius must be an integer >= 1; got {radius}")
    radius = int(radius)
    kernel_sigma = _check_sigma(radius / 3 if sigma is None else sigma, "sigma")
    if kernel_sigma == 0:
        raise ValueError("blur sigma must be > 0")
    taps = gaussian_kernel(radius, kernel_sigma)
    blurred = correlate1d(x.astype(np.float64), taps, axis=1, mode="reflect")
    blurred = correlate1d(blurred, taps, axis=2, mode="reflect").astype(np.float32)
    sigma_per_band = np.full(x.shape[0], _check_sigma(noise_sigma, "noise_sigma"))
    if noise_sigma > 0:
        _add_gaussian(blurred, rng, sigma_per_band)
    return blurred, {"kernel": np.outer(taps, taps).astype(np.float32), "radius": radius,
                     "kernel_sigma": kernel_sigma, "boundary": "reflect", "sigma": sigma_per_band}


@register("bandmiss")
def _bandmiss(x, rng, ratio: float = 0.3):
    """Band missing: ``round(ratio * B)`` randomly chosen bands are zeroed (paper: ratio 0.3).

    info: ``mask`` (B, H, W) bool, True = observed; ``missing_bands`` (sorted indices); ``ratio``.
    """
    ratio = _check_ratio(ratio)
    missing = np.sort(rng.permutation(x.shape[0])[: _round_half_up(ratio * x.shape[0])])
    mask = np.ones(x.shape, dtype=bool)
    mask[missing] = False
    x[missing] = 0.0
    return x, {"mask": mask, "missing_bands": missing, "ratio": ratio}


@register("inpaint")
def _inpaint(x, rng, ratio: float = 0.9):
    """Inpainting: exactly ``round(ratio * H * W)`` random pixel locations are masked (set to 0) in
    every band, the same spatial mask across bands (paper: ratio 0.9).

    info: ``mask`` (B, H, W) bool, True = observed; ``ratio``.
    """
    ratio = _check_ratio(ratio)
    _, h, w = x.shape
    hidden = rng.permutation(h * w)[: _round_half_up(ratio * h * w)]
    observed = np.ones(h * w, dtype=bool)
    observed[hidden] = False
    mask = np.broadcast_to(observed.reshape(1, h, w), x.shape).copy()
    x[~mask] = 0.0
    return x, {"mask": mask, "ratio": ratio}
