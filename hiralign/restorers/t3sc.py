"""T3SC: a Trainable Spectral-Spatial Sparse Coding model for hyperspectral image denoising.

Re-implementation of Théo Bodrito, Alexandre Zouaoui, Jocelyn Chanussot, Julien Mairal, "A Trainable
Spectral-Spatial Sparse Coding Model for Hyperspectral Image Restoration", NeurIPS 2021,
arXiv:2111.09708, written from the paper; constants, layout and state_dict key names follow the
official repository (github.com/inria-thoth/T3SC: ``t3sc/models/multilayer.py``,
``t3sc/models/layers/*.py`` and the model configuration ``t3sc/config/model/t3sc.yaml``), which the
HSIR toolbox ships unchanged as ``hsir.model.t3sc``, so released checkpoints load with ``strict=True``.

Architecture (paper Sec. 3 and Fig. 1)
--------------------------------------
T3SC is an unrolled sparse-coding model, not a generic CNN. Every layer encodes its input ``x``
(``c`` channels) as a convolutional sparse code ``alpha`` over ``m`` atoms (the stride is 1, so
every ``p x p`` patch position has a code) and decodes it back:

* **Low-rank spectral-spatial atoms** (paper Sec. 3, "low-rank" dictionaries): an atom is a
  ``c x p^2`` matrix of rank ``r``, stored as a spectral factor ``(m, c, r)`` times a spatial factor
  ``(m, r, p^2)``. A layer has three such dictionaries, all untied: the encoder ``C``, the synthesis
  dictionary ``D`` used inside the iterations and the reconstruction dictionary ``W``.
* **Unrolled ISTA** (paper Sec. 3, trainable sparse coding in the LISTA style): with
  ``A = C^T x`` (a valid correlation), ``alpha_0 = S_0(A)`` and for ``k = 1 .. K-1``
  ``alpha_k = S_k(A + alpha_{k-1} - C^T D alpha_{k-1})``, where ``D alpha`` is the transposed
  convolution (the overlapping patches summed back) and ``S_k(u) = sign(u) max(|u| - lambda_k, 0)``
  the soft threshold with learned thresholds (``lbda_mode``: ``S``/``M`` one set for all iterations
  or one per iteration, ``G``/``C`` one value for all atoms or one per atom; the paper uses ``MC``).
* **Decoding**: ``x_hat = W alpha`` summed back over the overlapping patches and divided by the
  number of patches covering each pixel (patch averaging).
* **Centering**: ``input_centering`` subtracts the per-band mean over the whole image before
  encoding and adds it back after decoding; ``patch_centering`` encodes every patch with its
  per-channel mean removed (the encoder filters are zero-mean) and adds the patch means back before
  averaging. As in the official code, only the initial correlation ``A`` uses the centered filters;
  the residual term ``C^T D alpha`` uses the raw ``C``.
* **Two layers** (paper Sec. 3, Fig. 1): the first layer is purely spectral (``1 x 1`` patches,
  64 atoms of rank 1, 12 iterations, input centering) -- a sensor-specific spectral decomposition
  -- and the second codes the 64-channel map of the first with ``5 x 5`` spectral-spatial atoms
  (1024 atoms of rank 3, 5 iterations, patch centering). The network encodes through the layers in
  order and decodes in reverse order.
* **Noise-adaptive sparse coding** (paper Sec. 3, optional, ``beta=1``; the official README
  recommends it for band-dependent and stripe noise): a small CNN estimates a weight
  ``beta_b in (0, 1)`` per band from a central ``56 x 56`` crop of each band; the data term is
  weighted by ``beta`` (``A = C^T (beta x)``, residual ``C^T (beta D alpha)``).
* **Self-supervised training** (paper Sec. 3, optional, layer ``ssl=1``): the bands listed in
  ``ssl_idx`` get weight 0 in the data term, so the model must predict them from the others.

Call convention
---------------
``model(x)`` with ``x`` of shape ``(N, B, H, W)`` returns the denoised ``(N, B, H, W)`` -- the
official ``MultilayerModel.forward(x)`` default path (HSIR builds it with ``use_2dconv = True``,
``bandwise = False``: a 2-D model that takes all bands at once, mirrored here as class attributes).
Of the official keyword arguments, ``ssl_idx`` (bands hidden from the data term, only read by
layers built with ``ssl=1``) is supported; ``sigmas`` and ``img_id`` are accepted and ignored, as
in the official code. The official ``mode="encode"/"decode"`` kept the centering statistics as
hidden module state between two calls; here :meth:`T3SC.encode` returns them explicitly and
:meth:`T3SC.decode` takes them back. Any ``H, W`` at least the largest patch side work
(``input_multiple = 1``; no padding: encoding is a valid correlation, decoding its transpose); with
``beta=1`` the crop needs ``H, W >= 56`` as in the official code.

Tiling
------
Every layer is local: an output pixel of a layer with ``p x p`` patches and ``K`` iterations sees
``K (p - 1)`` input pixels on each side (the initial correlation and the decoding together reach
``p - 1`` pixels on each side, every further iteration another ``p - 1``), so the stack sees
``local_radius = sum_l K_l (p_l - 1)`` pixels (20 for the paper configuration); all shifts
commute with it (``tile_align = 1``). But the paper configuration's input centering subtracts the
*image-wide* band means, and the soft thresholds make the output depend on them; the noise
estimator (``beta=1``) also looks at the central crop of the whole input. Tiled inference is
therefore not exact for those configurations (``receptive_radius = None``; use ``blend="window"``
with ``overlap >= local_radius``); for configurations without input centering and without the
noise estimator, ``receptive_radius = local_radius`` and crop-and-stitch tiling is exact.

Deviations from the official code
---------------------------------
* The per-layer configuration is a sequence of dicts (see :data:`PAPER_CONFIG`); the official
  nested ``{"l0": {"name": "LowRankSCLayer", "params": {...}}}`` form is accepted too (see
  :func:`layers_from_official`). The yaml keys ``tied`` and ``init_method`` are accepted and ignored
  (the official code ignores them too: ``C``, ``D``, ``W`` are always separate, Kaiming-uniform
  initialised); ``stride`` must be 1 (the official code ignores the value and always uses 1).
* The patch-mean and divider kernels are non-persistent buffers (the official code keeps plain
  tensor attributes created on CUDA when available); neither is in the state dict.
* No hidden state: the official layers store ``input_means``, ``means`` and ``divider`` on the
  module during ``forward``; here they are local values (same arithmetic, same outputs).
* A layer built with ``ssl=1`` called without ``ssl_idx`` raises a ``ValueError`` (the official
  code fails with an ``AttributeError`` on ``None``).
* ``ckpt`` loading in the constructor, the model-level ``ssl``/``n_ssl`` options (read only by the
  training loop to draw the hidden bands) and the Lightning training loop (``BaseModel``: optimiser,
  block inference, metrics) are not part of the network and are not reproduced.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: The official model configuration (``t3sc/config/model/t3sc.yaml``, ``model.beta=0``,
#: ``data.ssl=0``) for 31 bands: a spectral layer (1x1, 64 atoms, rank 1, 12 iterations, input
#: centering) and a spectral-spatial layer (5x5, 1024 atoms, rank 3, 5 iterations, patch centering).
PAPER_CONFIG: dict = dict(layers=(
    dict(patch_side=1, stride=1, K=12, rank=1, code_size=64, input_centering=True, patch_centering=False,
         lbda_init=1e-3, lbda_mode="MC", beta=0, ssl=0),
    dict(patch_side=5, stride=1, K=5, rank=3, code_size=1024, input_centering=False, patch_centering=True,
         lbda_init=1e-3, lbda_mode="MC", beta=0, ssl=0),
))
#: Noise-adaptive variant (official ``model.beta=1``: the README's setting for band-dependent and
#: stripe noise): the first layer weights its data term with estimated per-band noise levels.
NOISE_ADAPTIVE_CONFIG: dict = dict(layers=(dict(PAPER_CONFIG["layers"][0], beta=1), PAPER_CONFIG["layers"][1]))
#: A very small configuration for CPU tests (4,120 parameters at 31 bands).
TINY_CONFIG: dict = dict(layers=(
    dict(patch_side=1, stride=1, K=3, rank=1, code_size=8, input_centering=True, patch_centering=False,
         lbda_init=1e-3, lbda_mode="MC"),
    dict(patch_side=3, stride=1, K=2, rank=2, code_size=32, input_centering=False, patch_centering=True,
         lbda_init=1e-3, lbda_mode="MC"),
))
#: Parameters of T3SC for 31 bands: 0.83 M -- the size reported for T3SC in the experiments of the
#: T3SC paper (Sec. 4, parameter-count comparison of the learned denoisers) and listed again as
#: 0.83 M in the "Params (M)" column of SERT's comparison table (Li et al., CVPR 2023, Table 1). The
#: paper PDF was not available offline to re-check the table number; the official README states no
#: count. The exact count of PAPER_CONFIG here (= the official MultilayerModel built from
#: ``t3sc.yaml``) is 832,256: 3 x (64*31*1 + 64*1*1) + 12*64 for the first layer and
#: 3 x (1024*64*3 + 1024*3*25) + 5*1024 for the second.
PAPER_PARAMETERS = 830_000

SOFT_THRESHOLD_MODES = ("SG", "SC", "MG", "MC")
#: Options of the official layer configuration that the official code accepts and ignores.
_IGNORED_OPTIONS = ("tied", "init_method")


def soft_threshold(u: torch.Tensor, lbda: torch.Tensor) -> torch.Tensor:
    """Proximal operator of ``lbda * ||.||_1``: ``sign(u) max(|u| - lbda, 0)``, written as
    ``relu(u - lbda) - relu(-u - lbda)``."""
    return F.relu(u - lbda) - F.relu(-u - lbda)


class SoftThresholding(nn.Module):
    """Learned thresholds of the unrolled ISTA (key ``lbda``).

    ``mode`` has two letters: ``S`` one set shared by all iterations / ``M`` one set per iteration
    (a ``ParameterList`` of ``K``); ``G`` one threshold for all atoms / ``C`` one per atom.
    """

    def __init__(self, mode: str, lbda_init: float, code_size: int, K: int):
        super().__init__()
        if mode not in SOFT_THRESHOLD_MODES:
            raise ValueError(f"soft-thresholding mode {mode!r} not in {SOFT_THRESHOLD_MODES}")
        self.mode = mode
        shape = (1, code_size, 1, 1) if mode[1] == "C" else (1, 1, 1, 1)
        if mode[0] == "M":
            self.lbda = nn.ParameterList([nn.Parameter(torch.full(shape, float(lbda_init))) for _ in range(K)])
        else:
            self.lbda = nn.Parameter(torch.full(shape, float(lbda_init)))

    def forward(self, u: torch.Tensor, k: int) -> torch.Tensor:
        """``S_k(u)`` for iteration ``k``."""
        return soft_threshold(u, self.lbda[k] if self.mode[0] == "M" else self.lbda)


def noise_level_estimator() -> nn.Sequential:
    """Per-band noise estimator of the noise-adaptive sparse coding (official ``beta_estimator``):
    on a ``1 x 56 x 56`` band, conv5/2 -> ReLU -> maxpool2 -> conv3/2 -> ReLU -> maxpool2 -> conv3
    -> sigmoid gives one value in (0, 1); the band's data-term weight is ``1 -`` that value."""
    return nn.Sequential(
        nn.Conv2d(1, 64, kernel_size=5, stride=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, kernel_size=3, stride=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(128, 1, kernel_size=3, stride=1), nn.Sigmoid(),
    )


def low_rank_dictionary(atoms: int, channels: int, rank: int, patch_side: int) -> nn.ParameterList:
    """``[spectral (atoms, channels, rank), spatial (atoms, rank, patch_side**2)]`` factors,
    Kaiming-uniform initialised (``a = sqrt(5)``, the default of ``nn.Conv2d``) as officially."""
    factors = []
    for shape in ((atoms, channels, rank), (atoms, rank, patch_side ** 2)):
        tensor = torch.empty(shape)
        nn.init.kaiming_uniform_(tensor, a=math.sqrt(5))
        factors.append(nn.Parameter(tensor))
    return nn.ParameterList(factors)


class LowRankSparseCodingLayer(nn.Module):
    """One T3SC layer: convolutional sparse coding of ``in_channels`` maps over ``code_size``
    low-rank ``patch_side x patch_side`` atoms by ``K`` unrolled ISTA steps, and its decoding
    (official ``LowRankSCLayer``; keys ``C.{0,1}``, ``D.{0,1}``, ``W.{0,1}``, ``thresholds.lbda``
    and, with ``beta``, ``beta_estimator``)."""

    def __init__(self, in_channels: int, code_size: int, patch_side: int, K: int, rank: int,
                 patch_centering: bool = False, lbda_init: float = 1e-3, lbda_mode: str = "MC",
                 input_centering: bool = False, beta: int = 0, ssl: int = 0, stride: int = 1, **ignored):
        super().__init__()
        unknown = set(ignored) - set(_IGNORED_OPTIONS)
        if unknown:
            raise TypeError(f"unknown T3SC layer options {sorted(unknown)}")
        if stride != 1:
            raise ValueError("T3SC codes every patch position (stride 1); the official code ignores other strides")
        if patch_centering and patch_side == 1:
            raise ValueError("patch centering with 1x1 patches would code null patches")
        self.in_channels, self.code_size = in_channels, code_size
        self.patch_side, self.K, self.rank = patch_side, K, rank
        self.input_centering, self.patch_centering = bool(input_centering), bool(patch_centering)
        self.beta, self.ssl = bool(beta), bool(ssl)
        self.C = low_rank_dictionary(code_size, in_channels, rank, patch_side)  # encoder (analysis)
        self.D = low_rank_dictionary(code_size, in_channels, rank, patch_side)  # synthesis inside ISTA
        self.W = low_rank_dictionary(code_size, in_channels, rank, patch_side)  # final reconstruction
        self.thresholds = SoftThresholding(lbda_mode, lbda_init, code_size, K)
        if self.beta:
            self.beta_estimator = noise_level_estimator()
        # Patch-mean filter (per channel) and patch-count kernel: fixed, not in the official state dict.
        self.register_buffer("patch_mean_kernel", torch.full((in_channels, 1, patch_side, patch_side),
                                                             1.0 / patch_side ** 2), persistent=False)
        self.register_buffer("patch_count_kernel", torch.ones(1, 1, patch_side, patch_side), persistent=False)

    def atoms(self, factors: nn.ParameterList) -> torch.Tensor:
        """The rank-``r`` atoms ``spectral @ spatial`` as ``(code_size, in_channels, p, p)`` filters."""
        p = self.patch_side
        return (factors[0] @ factors[1]).view(self.code_size, self.in_channels, p, p)

    def band_weights(self, x: torch.Tensor, ssl_idx: torch.Tensor | None) -> torch.Tensor | None:
        """Per-band data-term weights ``(N, c, 1, 1)``: ``1 - estimated noise`` with ``beta``,
        0 on the self-supervised bands ``ssl_idx`` with ``ssl``; ``None`` when all are 1."""
        if not (self.beta or self.ssl):
            return None
        n, c, h, w = x.shape
        if self.beta:  # noise-adaptive sparse coding: estimate on the central crop of every band
            block = min(56, h)
            top, left = (h - block) // 2, (w - block) // 2
            crop = x[:, :, top:top + block, left:left + block].reshape(n * c, 1, block, block)
            weights = (1 - self.beta_estimator(crop)).view(n, c, 1, 1)
        else:
            weights = torch.ones(n, c, 1, 1, device=x.device, dtype=x.dtype)
        if self.ssl:  # self-supervised bands are left out of the data term
            if ssl_idx is None:
                raise ValueError("this layer was built with ssl=1: pass ssl_idx (the bands to predict)")
            mask = torch.ones_like(weights)
            mask[:, ssl_idx.long()] = 0.0
            weights = weights * mask
        return weights

    def encode(self, x: torch.Tensor, ssl_idx: torch.Tensor | None = None):
        """Sparse code of ``x`` and the statistics the decoding needs: ``(alpha, (image_means,
        patch_means))`` (``None`` where that centering is off)."""
        image_means = x.mean(dim=(2, 3), keepdim=True) if self.input_centering else None
        if image_means is not None:
            x = x - image_means
        weights = self.band_weights(x, ssl_idx)
        if weights is not None:
            x = x * weights
        C, D = self.atoms(self.C), self.atoms(self.D)
        patch_means = None
        if self.patch_centering:  # code zero-mean patches: zero-mean encoder filters
            A = F.conv2d(x, C - C.mean(dim=(2, 3), keepdim=True))
            patch_means = F.conv2d(x, self.patch_mean_kernel, groups=self.in_channels)
        else:
            A = F.conv2d(x, C)
        alpha = self.thresholds(A, 0)
        for k in range(1, self.K):  # unrolled ISTA: alpha <- S_k(A + alpha - C^T (weights * D alpha))
            reconstruction = F.conv_transpose2d(alpha, D)
            if weights is not None:
                reconstruction = reconstruction * weights
            alpha = self.thresholds(A + alpha - F.conv2d(reconstruction, C), k)
        return alpha, (image_means, patch_means)

    def decode(self, alpha: torch.Tensor, stats) -> torch.Tensor:
        """``W alpha`` (plus the patch means) averaged over the overlapping patches, plus the image
        means."""
        image_means, patch_means = stats
        x = F.conv_transpose2d(alpha, self.atoms(self.W))
        if patch_means is not None:
            x = x + F.conv_transpose2d(patch_means, self.patch_mean_kernel * self.patch_side ** 2,
                                       groups=self.in_channels)
        ones = torch.ones(1, 1, *alpha.shape[-2:], device=alpha.device, dtype=alpha.dtype)
        x = x / F.conv_transpose2d(ones, self.patch_count_kernel)  # patches covering each pixel
        if image_means is not None:
            x = x + image_means
        return x

    def forward(self, x: torch.Tensor, ssl_idx: torch.Tensor | None = None) -> torch.Tensor:
        alpha, stats = self.encode(x, ssl_idx)
        return self.decode(alpha, stats)

    @property
    def radius(self) -> int:
        """Input pixels on each side that one output pixel of this layer sees: ``K (p - 1)``."""
        return self.K * (self.patch_side - 1)


def layers_from_official(layers: Mapping) -> tuple[dict, ...]:
    """Official ``{"l0": {"name": "LowRankSCLayer", "params": {...}}, "l1": ...}`` -> per-layer dicts."""
    out = []
    for i in range(len(layers)):
        spec = layers[f"l{i}"]
        if spec.get("name", "LowRankSCLayer") != "LowRankSCLayer":
            raise ValueError(f"unknown T3SC layer type {spec['name']!r}")
        out.append(dict(spec["params"]))
    return tuple(out)


class T3SC(nn.Module):
    """Trainable spectral-spatial sparse coding network: ``(N, B, H, W)`` noisy cube -> denoised cube
    (official ``MultilayerModel``; keys ``layers.{i}.*``)."""

    receptive_radius = None  # image-wide input centering in the paper configuration; see the module docstring
    tile_align = 1
    input_multiple = 1  # valid correlations and their transposes: any H, W >= the patch sides
    use_2dconv = True  # as HSIR sets after construction: a 2-D model on (N, B, H, W)
    bandwise = False  # all bands at once, not band by band

    def __init__(self, channels: int = 31, layers: Sequence[Mapping] | Mapping = PAPER_CONFIG["layers"]):
        super().__init__()
        if isinstance(layers, Mapping):
            layers = layers_from_official(layers)
        self.channels = channels
        stack, in_channels = [], channels
        for params in layers:
            params = dict(params)
            params.pop("in_channels", None)
            layer = LowRankSparseCodingLayer(in_channels=in_channels, **params)
            stack.append(layer)
            in_channels = layer.code_size
        self.layers = nn.ModuleList(stack)
        self.local_radius = sum(layer.radius for layer in self.layers)
        if not any(layer.input_centering or layer.beta for layer in self.layers):
            self.receptive_radius = self.local_radius  # every layer is local: tiling is exact

    def encode(self, x: torch.Tensor, ssl_idx: torch.Tensor | None = None):
        """Codes of the last layer and the per-layer decoding statistics."""
        x = x.float()
        stats = []
        for layer in self.layers:
            x, layer_stats = layer.encode(x, ssl_idx)
            stats.append(layer_stats)
        return x, stats

    def decode(self, alpha: torch.Tensor, stats) -> torch.Tensor:
        """Decode through the layers in reverse order."""
        for layer, layer_stats in zip(reversed(self.layers), reversed(stats)):
            alpha = layer.decode(alpha, layer_stats)
        return alpha

    def forward(self, x: torch.Tensor, ssl_idx: torch.Tensor | None = None, sigmas=None, img_id=None) -> torch.Tensor:
        """Denoise ``x`` ``(N, B, H, W)``; ``ssl_idx``: bands hidden from the data term (layers built
        with ``ssl=1`` only); ``sigmas``, ``img_id``: ignored, as in the official forward."""
        alpha, stats = self.encode(x, ssl_idx)
        return self.decode(alpha, stats)


def build(bands: int, **cfg) -> T3SC:
    """T3SC for ``bands`` spectral bands; ``cfg`` as in :data:`PAPER_CONFIG` (default: the paper's)."""
    return T3SC(channels=bands, **{**PAPER_CONFIG, **cfg})
