"""``ubf``: Unmixing before Fusion (Yu, Pan, Wang, Wu, Mei, Ma), at the proxies' scale, on CPU.

The UBF paradigm (their Algorithms 1 and 2) in four steps:

1. **Unmixing net** (their Eq. 3): an encoder ``U`` maps the band-selected three-band image
   ``Y_bs = Psi(Y_HSI)`` (here the Eq. 4 proxy RGB, the bands nearest 660/550/470 nm) to ``k``
   abundance maps through a softmax (non-negative, sum-to-one: ANC and ASC); a bias-free linear
   decoder whose weights are the endmembers ``E_HSI`` (``B x k``) reconstructs the *full* HSI
   (the linear mixing model, their Eq. 1). Loss: MAE + ``alpha`` SAD + ``beta`` endmember total
   variation (their Eq. 4, ``alpha = 0.1``, ``beta = 1e-3``). The decoder starts from VCA
   endmembers of the proxies (:func:`hiralign.unmixing.vca`; ours: the paper starts it at random).
2. **Multi-source abundances** (their Eq. 5): the same ``U`` infers abundances of unpaired natural
   RGB images (scikit-image's bundled pictures behind the embedded benchmark's *source* scenes,
   never its target scenes), which share the endmembers by the paper's assumption.
3. **Fusion-based synthesis** (their Eq. 6): a DDPM (a small diffusers ``UNet2DModel``; the paper
   also uses DDPM) trained on abundance patches of both sources, sampled from pure noise with DDIM.
4. **Linear mixing** (their Eq. 7): ``Y_fusion = E_HSI A_fusion``, the sampled maps first put back
   on the simplex (clipped at 0 and renormalised to sum to one).

Scale (ours, for 2 CPU cores): ``k = 5`` (their Table 2 finds 5 the best trade-off), an encoder of
three 3x3 convolutions (theirs: three residual spectral-attention modules), 32 px training patches.
Unconditional: the ``G`` samples "of" proxy ``n`` are independent draws of the shared model, grouped
per proxy only to keep the stage-2 layout. Trained models are cached on disk like local-ddpm's.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from torch import nn
from tqdm.auto import tqdm

from hiralign.cache import load_denoiser, model_folder, save_denoiser
from hiralign.cache import load_or_train as cached
from hiralign.guides.local_ddpm import build_unet, natural_image_pool, random_patches, train_noise_predictor
from hiralign.guides.resize import crop, pad_to_multiple
from hiralign.guides.sdedit import torch_generator
from hiralign.spectral import rgb_band_indices
from hiralign.unmixing import vca


@dataclass(frozen=True)
class UBFConfig:
    """Training settings of the UBF generator (defaults: about a CPU minute for 8 proxies at 64 px)."""

    n_endmembers: int = 5  # k, the abundance dimension (their Table 2: 5 is the best trade-off)
    unmixing_steps: int = 300  # Adam steps of the unmixing net (Eq. 3)
    unmixing_width: int = 32  # channels of its encoder
    unmixing_lr: float = 1e-3  # (theirs: 1e-4 for 40 epochs on Chikusei)
    sad_weight: float = 0.1  # alpha of Eq. 4 (theirs)
    etv_weight: float = 1e-3  # beta of Eq. 4 (theirs)
    patch_size: int = 32  # DDPM training patch side (px); sampling works on any image size
    block_out_channels: tuple[int, ...] = (16, 32, 64)  # UNet widths, one resolution level each (as local-ddpm)
    layers_per_block: int = 1
    train_steps: int = 600  # DDPM optimiser steps
    batch_size: int = 16
    learning_rate: float = 1e-3
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    natural_images: bool = True  # the multi-source step: abundances of unpaired RGB images
    natural_fraction: float = 0.5  # share of each DDPM batch cut from the RGB abundances
    natural_image_size: int = 96  # shorter side (px) of the natural images
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_endmembers < 2:
            raise ValueError(f"n_endmembers must be >= 2; got {self.n_endmembers}")
        levels = len(self.block_out_channels)
        if self.patch_size % 2 ** (levels - 1):
            raise ValueError(f"patch_size {self.patch_size} must be divisible by 2**{levels - 1} (UNet levels)")
        if not 0.0 <= self.natural_fraction < 1.0:
            raise ValueError(f"natural_fraction must lie in [0, 1); got {self.natural_fraction}")


#: the dataclass of the ``**training`` keywords of :func:`ubf_hsis`
TRAINING_CONFIG = UBFConfig

#: The file that marks a complete cached model folder.
MARKER = "ubf.json"


class UnmixingNet(nn.Module):
    """``U`` of Eq. 3: a three-band image -> ``k`` softmax abundances; decoder = endmembers (Eq. 1)."""

    def __init__(self, endmembers: np.ndarray, width: int = 32):
        super().__init__()
        k = endmembers.shape[1]
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.LeakyReLU(0.1),
            nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.1),
            nn.Conv2d(width, k, 3, padding=1))
        self.endmembers = nn.Parameter(torch.as_tensor(endmembers, dtype=torch.float32))  # (B, k)

    def abundances(self, rgb: torch.Tensor) -> torch.Tensor:
        """``(n, 3, H, W)`` -> ``(n, k, H, W)`` abundances: non-negative, summing to one (softmax)."""
        return torch.softmax(self.encoder(rgb), dim=1)

    def mix(self, abundances: torch.Tensor) -> torch.Tensor:
        """The linear mixing model ``Y = E A`` (Eq. 1 / Eq. 7): ``(n, k, H, W)`` -> ``(n, B, H, W)``."""
        return torch.einsum("bk,nkhw->nbhw", self.endmembers, abundances)


def unmixing_loss(net: UnmixingNet, rgb: torch.Tensor, hsi: torch.Tensor, config: UBFConfig) -> torch.Tensor:
    """Eq. 4: MAE + alpha * SAD of the reconstruction + beta * total variation of the endmembers."""
    recon = net.mix(net.abundances(rgb))
    mae = torch.mean(torch.abs(recon - hsi))
    cos = torch.sum(recon * hsi, dim=1) / (recon.norm(dim=1) * hsi.norm(dim=1) + 1e-8)
    sad = torch.mean(torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6)))
    etv = torch.mean(torch.abs(net.endmembers[1:] - net.endmembers[:-1]))
    return mae + config.sad_weight * sad + config.etv_weight * etv


def proxy_endmembers(proxy_hsi: np.ndarray, k: int, seed: int, max_pixels: int = 20000) -> np.ndarray:
    """VCA endmembers ``(B, k)`` of the proxies' pooled pixels (a seeded subsample of ``max_pixels``)."""
    pixels = np.moveaxis(proxy_hsi, 1, -1).reshape(-1, proxy_hsi.shape[1]).astype(np.float64)
    rng = np.random.default_rng(seed)
    if len(pixels) > max_pixels:
        pixels = pixels[rng.choice(len(pixels), max_pixels, replace=False)]
    return np.clip(vca(pixels, k, seed=seed), 0.0, None)


def train_unmixing_net(proxy_hsi: np.ndarray, wavelengths: np.ndarray, config: UBFConfig, progress: bool = False) -> tuple[UnmixingNet, list[float]]:
    """Algorithm 1: fit ``U`` and ``E_HSI`` on the proxies (Eq. 3-4); returns the net and its losses."""
    idx = list(rgb_band_indices(wavelengths))
    hsi = torch.from_numpy(np.ascontiguousarray(proxy_hsi, dtype=np.float32))
    rgb = hsi[:, idx]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = UnmixingNet(proxy_endmembers(proxy_hsi, config.n_endmembers, config.seed), config.unmixing_width)
    optimiser = torch.optim.Adam(net.parameters(), lr=config.unmixing_lr)
    losses = []
    for _ in tqdm(range(config.unmixing_steps), disable=not progress, desc="ubf unmixing"):
        loss = unmixing_loss(net, rgb, hsi, config)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            net.endmembers.clamp_(min=0.0)  # physical endmembers: non-negative reflectance
        losses.append(loss.item())
    return net.eval(), losses


@torch.no_grad()
def infer_abundances(net: UnmixingNet, rgbs: list[np.ndarray]) -> list[np.ndarray]:
    """Eq. 5: ``(k, H, W)`` abundances of three-band images ``(3, H, W)`` (one at a time, any size)."""
    return [net.abundances(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None])[0].numpy() for x in rgbs]


def natural_rgbs(config: UBFConfig, proxy_rgb_mean: float) -> list[np.ndarray]:
    """The unpaired RGB source: scikit-image pictures scaled to the proxies' mean RGB value (ours: the
    proxies' RGB is reflectance, the pictures are display values)."""
    pool = natural_image_pool(config.natural_image_size)
    return [np.clip(img * (proxy_rgb_mean / max(float(img.mean()), 1e-6)), 0.0, 1.0).astype(np.float32) for img in pool]


@dataclass
class UBFModel:
    """A trained UBF generator: endmembers, the abundance DDPM and both training histories."""

    endmembers: np.ndarray  # (B, k) E_HSI
    unet: UNet2DModel
    scheduler: DDPMScheduler
    config: UBFConfig
    unmixing_losses: list[float]
    losses: list[float]

    @property
    def multiple(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)

    def save(self, folder: Path | str) -> Path:
        meta = {"config": asdict(self.config), "unmixing_losses": self.unmixing_losses, "losses": self.losses}
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "endmembers.npy", self.endmembers)
        return save_denoiser(folder, self.unet, self.scheduler, meta, MARKER)

    @classmethod
    def load(cls, folder: Path | str) -> "UBFModel":
        unet, scheduler, meta = load_denoiser(folder, UNet2DModel, MARKER)
        config = dict(meta["config"], block_out_channels=tuple(meta["config"]["block_out_channels"]))
        return cls(np.load(Path(folder) / "endmembers.npy"), unet, scheduler, UBFConfig(**config),
                   meta["unmixing_losses"], meta["losses"])


def train_ubf(proxy_hsi: np.ndarray, wavelengths: np.ndarray, config: UBFConfig = UBFConfig(), device: str = "cpu",
              progress: bool = False) -> UBFModel:
    """Algorithms 1 and 2 (training): unmixing net, multi-source abundances, abundance DDPM."""
    net, unmixing_losses = train_unmixing_net(proxy_hsi, wavelengths, config, progress)
    hsi_abundances = infer_abundances(net, list(proxy_hsi[:, list(rgb_band_indices(wavelengths))]))
    rgb_mean = float(proxy_hsi[:, list(rgb_band_indices(wavelengths))].mean())
    rgb_abundances = infer_abundances(net, natural_rgbs(config, rgb_mean)) if config.natural_images else []
    n_natural = round(config.batch_size * config.natural_fraction) if rgb_abundances else 0
    rng = np.random.default_rng(config.seed)

    def draw_batch() -> np.ndarray:  # Eq. 6: the generator learns from both sources' abundances
        batch = random_patches(hsi_abundances, config.batch_size - n_natural, config.patch_size, rng)
        if n_natural:
            batch = np.concatenate([batch, random_patches(rgb_abundances, n_natural, config.patch_size, rng)])
        return batch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        unet = build_unet(config, channels=config.n_endmembers).to(device)
    scheduler = DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule)
    losses = train_noise_predictor(unet, scheduler, draw_batch, config, device=device, progress=progress, desc="ubf ddpm")
    endmembers = net.endmembers.detach().numpy().astype(np.float32)
    return UBFModel(endmembers, unet.cpu(), scheduler, config, unmixing_losses, losses)


def to_simplex(abundances: np.ndarray, axis: int = 1) -> np.ndarray:
    """ANC and ASC on sampled maps: clip at 0 and divide by the sum (uniform where all are 0)."""
    a = np.clip(abundances, 0.0, None)
    total = a.sum(axis=axis, keepdims=True)
    k = a.shape[axis]
    return np.where(total > 1e-8, a / np.maximum(total, 1e-8), 1.0 / k).astype(np.float32)


@torch.no_grad()
def sample_abundances(model: UBFModel, count: int, height: int, width: int, steps: int = 50, seed: int = 0,
                      index: int = 0, device: str = "cpu") -> np.ndarray:
    """``(count, k, H, W)`` abundance maps on the simplex, DDIM-sampled from pure noise (Eq. 6)."""
    sampler = DDIMScheduler.from_config(model.scheduler.config)
    sampler.set_timesteps(int(steps))
    gen = torch_generator(seed, index)
    shape = pad_to_multiple(torch.zeros(count, model.config.n_endmembers, height, width), model.multiple).shape
    x = torch.randn(shape, generator=gen).to(device)
    unet = model.unet.to(device).eval()
    for t in sampler.timesteps:
        x = sampler.step(unet(x, t.to(device)).sample, t, x, eta=0.0, generator=gen).prev_sample
    return to_simplex(crop((x.cpu().clamp(-1, 1) + 1.0) / 2.0, height, width).numpy())


def mix(endmembers: np.ndarray, abundances: np.ndarray) -> np.ndarray:
    """Eq. 7: ``Y = E A`` for ``(B, k)`` endmembers and ``(..., k, H, W)`` abundances, clipped to [0, 1]."""
    return np.clip(np.einsum("bk,...khw->...bhw", endmembers, abundances), 0.0, 1.0).astype(np.float32)


def load_or_train(proxy_hsi: np.ndarray, wavelengths: np.ndarray, config: UBFConfig, cache_dir: Path | str | None = None,
                  device: str = "cpu", progress: bool = False) -> UBFModel:
    """The model for these proxies and settings, loaded from ``cache_dir`` (default
    ``$HIRALIGN_CACHE/ubf``, :mod:`hiralign.cache`) under a hash of the settings, the proxies, their wavelengths
    and the diffusers/torch versions, or trained there atomically on first use."""
    folder = model_folder("ubf", cache_dir, asdict(config), np.asarray(proxy_hsi, dtype=np.float32),
                          np.asarray(wavelengths, dtype=np.float64))
    return cached(folder, MARKER, lambda: train_ubf(proxy_hsi, wavelengths, config, device=device, progress=progress),
                  UBFModel.save, UBFModel.load)


def ubf_hsis(proxy_hsi: np.ndarray, wavelengths: np.ndarray, n_generated: int = 3, seed: int = 0, *, steps: int = 50,
             train_steps: int = 600, device: str = "cpu", cache_dir: Path | str | None = None, progress: bool = False,
             **training) -> np.ndarray:
    """``(N, G, B, H, W)`` UBF HSIs: the model trained (or loaded) on the proxies, ``N * G`` samples.

    ``seed`` seeds training (``UBFConfig.seed``) and sampling; ``training`` holds other
    :class:`UBFConfig` fields. ``device`` ``'auto'`` picks CUDA when present.
    """
    from hiralign.runtime import resolve_device

    unknown = set(training) - set(UBFConfig.__dataclass_fields__)
    if unknown:
        raise TypeError(f"ubf got unknown parameters {sorted(unknown)}; training fields are {sorted(UBFConfig.__dataclass_fields__)}")
    if "block_out_channels" in training:
        training["block_out_channels"] = tuple(training["block_out_channels"])
    device = resolve_device(device)
    config = UBFConfig(**{"seed": seed, **training, "train_steps": train_steps})
    cubes = np.asarray(proxy_hsi, dtype=np.float32)
    model = load_or_train(cubes, wavelengths, config, cache_dir=cache_dir, device=device, progress=progress)
    n, _, height, width = cubes.shape
    abundances = np.stack([sample_abundances(model, n_generated, height, width, steps, seed, i, device) for i in range(n)])
    return mix(model.endmembers, abundances)
