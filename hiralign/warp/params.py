"""Parameters of the warp-based hyperspectral generation (paper IV-D) and input validation.

Defaults follow IV-D where the paper states a number (16 seeds, 16 candidates, gradient weight 0.5,
chroma weight 0.25, temperature 1, 200 Adam iterations at lr 0.05). Where the paper's text lost the
number (patch size, refinement radius, stencil size, loss weights) the value here is OUR choice; each
such field says so in its comment and ``docs/warp.md`` reports its measured effect.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from hiralign.errors import UserError

#: Retrieval index choices (see :mod:`hiralign.warp.retrieval`).
INDEX_KINDS = ("auto", "flat", "ivf", "hnsw")
#: ``paper``: Eq. 9-26 as printed. ``coherent``: the same pipeline and operator, with a guide model (noise-adaptive
#: descriptors, the proxy blurred like the guide, tone curves; :mod:`hiralign.warp.guide_model`), coherence-aware
#: candidate selection (:mod:`hiralign.warp.coherence`) and the displacement curvature in place of the
#: coordinate TV (docs/warp.md).
MODES = ("paper", "coherent")


class WarpInputError(UserError, ValueError):
    """The proxy HSI, proxy RGB or guide RGB handed to the warp are malformed or mismatched."""


@dataclass(frozen=True)
class WarpParams:
    """Every knob of Eq. 9-26. Construct with keywords; invalid values raise ``ValueError``."""

    mode: str = "coherent"  # "coherent" (the knobs marked "coherent" below; better on every known-answer case, docs/warp.md) or "paper" (Eq. 9-26 as printed)
    # Descriptors (Eq. 9)
    patch: int = 3  # patch side p; LOST in the paper's text, our choice (odd; 3 beat 5 and 7, docs/warp.md)
    w_chroma: float = 0.25  # chroma channel weight (IV-D)
    w_grad: float = 0.5  # gradient channel weight (IV-D)
    eps: float = 1e-6  # chroma normalisation epsilon (Eq. 9)
    normalise_intensity: bool = True  # scale both RGBs by one common factor (99th pct -> 1) before Eq. 9/20
    match_colours: bool = True  # coherent: fit per-channel tone curves (gain, gamma) of the guide onto the proxy, kept only if they match better (ours)
    tone_margin: float = 0.1  # coherent: the tone curves must lower the median nearest-descriptor distance by more than this fraction (ours)
    max_guide_blur: float = 2.0  # coherent: the proxy copy blurred by 0, 1, ... up to this (px) nearest the guide is matched (ours)
    model_samples: int = 512  # coherent: guide pixels whose nearest-descriptor distances choose blur and tone curves (ours)
    noise_reference: float = 0.005  # coherent: a guide whose noise beyond the proxy's (per unit intensity) reaches this is matched as noisy (ours)
    noisy_patch: int = 5  # coherent: patch side p of the descriptors of a noisy guide (ours)
    descriptor_sigma: float = 1.0  # coherent: Gaussian smoothing (px) of a noisy guide (and of the proxy copies) before Eq. 9 (ours)
    # Retrieval (Eq. 10-13)
    k: int = 16  # FAISS seeds per guide pixel (IV-D)
    radius: int = 1  # seed refinement radius r, window (2r+1)^2; LOST, our choice
    n_candidates: int = 16  # candidates kept after Eq. 12-13 (IV-D)
    index: str = "auto"  # "flat" exact | "ivf" (PCA + IVF-Flat + exact re-rank) | "hnsw" | "auto"
    auto_exact_max_pixels: int = 32768  # "auto" uses the exact index up to this many pixels
    pca_dim: int = 32  # PCA dimension for the approximate indexes (0 = no PCA)
    ivf_nlist: int = 0  # IVF lists; 0 = about 4 sqrt(N)
    ivf_nprobe: int = 8  # IVF lists probed per query
    refine_factor: int = 2  # approximate shortlist = refine_factor * k, re-ranked with exact L2
    kmeans_iters: int = 10  # k-means iterations training the IVF coarse quantizer
    hnsw_m: int = 32  # HNSW graph degree
    hnsw_ef_search: int = 64  # HNSW search breadth
    query_chunk: int = 8192  # guide pixels per chunk in retrieval and scoring (bounds memory)
    batch_pixels: int = 131072  # spectral_warps: consecutive pairs of one size are optimised together up to this many guide pixels in all (ours; 0 = one pair at a time)
    coherence_iters: int = 3  # coherent: passes of confidence -> prior displacement -> proposals -> coherence-aware ranking (ours)
    coherence_sigma: float = 2.0  # coherent: Gaussian scale (px) of the prior displacement's normalised convolution (ours)
    coherence_radius: int = 1  # coherent: a candidate within this many px of the prior agrees with it; window of proposals (ours)
    coherence_discount: float = 0.25  # coherent: an agreeing candidate ranks as if its Eq. 12 distance were / (1 + this) (ours)
    coherence_logit: float = 4.0  # coherent: initial logit bonus of candidates that agree with the prior (ours)
    # Transport (Eq. 14-18)
    stencil: int = 3  # interpolation stencil side s; LOST, our choice (odd)
    tau: float = 1.0  # softmax temperature (IV-D)
    init_sharpness: float = 8.0  # initial aggregation logits = -init_sharpness * normalised distance (ours)
    init_centre_logit: float = 4.0  # initial interpolation logit of the centre offset, others 0 (ours)
    # Optimisation (Eq. 19-21)
    iters: int = 200  # Adam iterations (IV-D)
    lr: float = 0.05  # Adam learning rate (IV-D)
    lambda_rgb: float = 1.0  # RGB L1 weight; LOST, our choice
    lambda_patch: float = 0.5  # unfolded-patch L1 weight; LOST, our choice
    lambda_mi: float = 0.05  # mutual-information loss weight; LOST, our choice
    lambda_ssim: float = 0.2  # 1 - SSIM weight; LOST, our choice
    lambda_grad: float = 0.5  # gradient L1 weight; LOST, our choice
    lambda_tv: float = 0.1  # TV of the normalised coordinate field weight (paper mode); LOST, our choice
    lambda_flow: float = 1.0  # coherent: weight of the displacement curvature (zero for affine maps) for a noisy guide, in place of the coordinate TV; falls with the square of a cleaner guide's noise (ours)
    lambda_prior: float = 0.01  # descriptor-distance prior (Eq. 21) weight; LOST, our choice
    loss_patch: int = 5  # patch side of the unfolded-patch L1 (ours)
    mi_bins: int = 32  # Parzen histogram bins of the MI loss (ours)
    mi_samples: int = 4096  # pixels sampled per iteration for the MI loss (ours; 0 = all pixels)
    ssim_window: int = 11  # Gaussian SSIM window side
    ssim_sigma: float = 1.5  # Gaussian SSIM window sigma
    # Execution
    device: str = "cpu"  # torch device: "cpu", "cuda[:n]" or "auto" (cuda when present)
    threads: int = 0  # torch / faiss CPU threads during the call (0 = leave the libraries' setting: every core, or OMP_NUM_THREADS); see docs/warp.md
    seed: int = 0  # seeds faiss k-means, HNSW, PCA sampling and the MI pixel sampling
    recall_queries: int = 0  # > 0: measure recall@k of the index used vs exact on this many queries

    def __post_init__(self) -> None:
        for name in ("patch", "noisy_patch", "stencil", "loss_patch", "ssim_window"):
            value = getattr(self, name)
            if value < 1 or value % 2 == 0:
                raise ValueError(f"{name} must be a positive odd integer, got {value}")
        if self.mi_bins < 2:
            raise ValueError(f"mi_bins must be >= 2, got {self.mi_bins}")
        for name in ("k", "n_candidates", "query_chunk", "ivf_nprobe", "refine_factor", "kmeans_iters", "hnsw_m", "hnsw_ef_search"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("radius", "iters", "pca_dim", "ivf_nlist", "mi_samples", "threads", "recall_queries", "auto_exact_max_pixels", "batch_pixels"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("w_chroma", "w_grad", "init_sharpness", "init_centre_logit", *self.loss_weight_names()):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        for name in ("eps", "tau", "lr", "ssim_sigma"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        if self.iters and not any(getattr(self, name) > 0 for name in self.loss_weight_names()):
            raise ValueError("every Eq. 20 weight (lambda_*) is zero: nothing to optimise; set iters=0 for retrieval only")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        for name in ("coherence_iters", "coherence_radius", "model_samples"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("descriptor_sigma", "tone_margin", "noise_reference", "max_guide_blur", "coherence_sigma", "coherence_discount", "coherence_logit"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if self.index not in INDEX_KINDS:
            raise ValueError(f"index must be one of {INDEX_KINDS}, got {self.index!r}")
        pool = self.k * (2 * self.radius + 1) ** 2
        if self.n_candidates > pool:
            raise ValueError(
                f"n_candidates={self.n_candidates} exceeds the candidate pool k*(2r+1)^2={pool} "
                f"(k={self.k}, radius={self.radius})"
            )
        if not (self.device in ("cpu", "auto") or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'cpu', 'cuda[:n]' or 'auto', got {self.device!r}")

    @staticmethod
    def loss_weight_names() -> tuple[str, ...]:
        """Names of the seven Eq. 20 weights, in the paper's order, then the coherent mode's displacement TV."""
        return ("lambda_rgb", "lambda_patch", "lambda_mi", "lambda_ssim", "lambda_grad", "lambda_tv", "lambda_prior", "lambda_flow")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "WarpParams":
        """Build from keywords, naming any unknown key (typos must not be silently ignored)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown warp parameter(s) {unknown}; valid names: {sorted(known)}")
        return cls(**kwargs)

    @property
    def coherent(self) -> bool:
        return self.mode == "coherent"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_float_array(obj: Any, name: str) -> np.ndarray:
    try:
        import torch

        if isinstance(obj, torch.Tensor):
            obj = obj.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    arr = np.asarray(obj)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise WarpInputError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise WarpInputError(f"{name} contains {int(bad.sum())} NaN/infinite values")
    return arr


def validate_inputs(proxy_hsi: Any, proxy_rgb: Any, guide_rgb: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return float32 ``(B,H,W)``, ``(3,H,W)``, ``(3,H,W)`` arrays after checking shapes and values.

    ``proxy_hsi`` may be a :class:`~hiralign.data.Cube` or an array. All three must share (H, W):
    the operator maps the guide lattice onto the proxy lattice of the same size (Sec. III-B.2).
    """
    from hiralign.data.cube import Cube

    if isinstance(proxy_hsi, Cube):
        proxy_hsi = proxy_hsi.data
    hsi = _as_float_array(proxy_hsi, "proxy_hsi")
    prgb = _as_float_array(proxy_rgb, "proxy_rgb")
    grgb = _as_float_array(guide_rgb, "guide_rgb")
    if hsi.ndim != 3:
        raise WarpInputError(f"proxy_hsi must be (B, H, W); got shape {hsi.shape}")
    for name, rgb in (("proxy_rgb", prgb), ("guide_rgb", grgb)):
        if rgb.ndim != 3 or rgb.shape[0] != 3:
            raise WarpInputError(f"{name} must be a 3-channel (3, H, W) image; got shape {rgb.shape}")
    sizes = {"proxy_hsi": hsi.shape[1:], "proxy_rgb": prgb.shape[1:], "guide_rgb": grgb.shape[1:]}
    if len(set(sizes.values())) != 1:
        raise WarpInputError(f"spatial sizes differ: {', '.join(f'{k} {v[0]}x{v[1]}' for k, v in sizes.items())}")
    if min(hsi.shape) == 0:
        raise WarpInputError(f"proxy_hsi is empty: shape {hsi.shape}")
    return hsi, prgb, grgb
