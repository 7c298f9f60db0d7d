"""Offline ``local-ddpm`` generator: a small pixel-space DDPM trained here, sampled SDEdit-style.

Where no pretrained unCLIP weights can be had, a tiny diffusers ``UNet2DModel`` is trained (DDPM
noise-prediction loss) on random patches of the proxy RGBs mixed with scikit-image's bundled
natural images, then used exactly like the unCLIP sampler's image branch: the proxy is noised to
``t0 = strength * T`` (Eq. 8) and denoised with DDIM (Eq. 6 with the learned noise predictor). The
network has no attention, so it is trained on small patches and applied to whole images of any
size (padded to a multiple of its down-sampling factor). Trained models are cached on disk, keyed
by a hash of the training configuration and the proxy pixels.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from skimage import data as skdata
from skimage.transform import resize as sk_resize
from tqdm.auto import tqdm

from hiralign.cache import load_denoiser, model_folder, save_denoiser
from hiralign.cache import load_or_train as cached
from hiralign.guides.resize import as_rgb_batch, crop, pad_to_multiple
from hiralign.guides.sdedit import noise_to_start, start_timesteps, torch_generator

#: The file that marks a complete cached model folder.
MARKER = "local_ddpm.json"

#: scikit-image's bundled images used as extra natural-image training data (grey ones repeated to RGB).
#: Only images behind the embedded benchmark's SOURCE scenes: its target scenes (chelsea, retina, grass,
#: gravel, immunohistochemistry, hubble_deep_field, moon, cell) must not leak in as clean data.
NATURAL_IMAGES = ("astronaut", "rocket", "coffee", "camera", "coins", "brick")


@dataclass(frozen=True)
class LocalDDPMConfig:
    """Training settings of the local DDPM (defaults: 1-3 CPU minutes on two cores at 64x64)."""

    patch_size: int = 32  # training patch side (px); sampling works on any image size
    block_out_channels: tuple[int, ...] = (16, 32, 64)  # UNet widths, one resolution level each
    layers_per_block: int = 1
    train_steps: int = 600  # optimiser steps
    batch_size: int = 16
    learning_rate: float = 1e-3
    num_train_timesteps: int = 1000  # T of the forward process
    beta_schedule: str = "squaredcos_cap_v2"
    natural_images: bool = True  # mix scikit-image's bundled images into the training patches
    natural_image_size: int = 96  # shorter side (px) the natural images are resized to
    proxy_fraction: float = 0.5  # share of each batch cut from the proxy RGBs
    seed: int = 0

    def __post_init__(self) -> None:
        levels = len(self.block_out_channels)
        if self.patch_size % 2 ** (levels - 1):
            raise ValueError(f"patch_size {self.patch_size} must be divisible by 2**{levels - 1} (UNet levels)")
        if not 0.0 <= self.proxy_fraction <= 1.0:
            raise ValueError(f"proxy_fraction must lie in [0, 1]; got {self.proxy_fraction}")


#: the dataclass of the ``**training`` keywords of :func:`local_ddpm_guides`
TRAINING_CONFIG = LocalDDPMConfig


@dataclass
class LocalDDPM:
    """A trained local DDPM: the noise predictor, its training scheduler and the loss history."""

    unet: UNet2DModel
    scheduler: DDPMScheduler
    config: LocalDDPMConfig
    losses: list[float] = field(default_factory=list)

    @property
    def multiple(self) -> int:
        """Image sides must be divisible by this (the UNet's total down-sampling)."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    def save(self, folder: Path | str) -> Path:
        return save_denoiser(folder, self.unet, self.scheduler, {"config": asdict(self.config), "losses": self.losses}, MARKER)

    @classmethod
    def load(cls, folder: Path | str) -> "LocalDDPM":
        unet, scheduler, meta = load_denoiser(folder, UNet2DModel, MARKER)
        config = dict(meta["config"], block_out_channels=tuple(meta["config"]["block_out_channels"]))
        return cls(unet=unet, scheduler=scheduler, config=LocalDDPMConfig(**config), losses=meta["losses"])


def natural_image_pool(shorter_side: int) -> list[np.ndarray]:
    """scikit-image's bundled images as float32 ``(3, H, W)`` in [0, 1], shorter side resized."""
    pool = []
    for name in NATURAL_IMAGES:
        img = np.asarray(getattr(skdata, name)(), dtype=np.float32) / 255.0
        img = np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img[..., :3]
        scale = shorter_side / min(img.shape[:2])
        shape = (round(img.shape[0] * scale), round(img.shape[1] * scale))
        pool.append(np.moveaxis(sk_resize(img, shape, anti_aliasing=True), -1, 0).astype(np.float32))
    return pool


def random_patches(images: list[np.ndarray], count: int, patch: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` random ``patch x patch`` crops (random image, position and horizontal flip) of
    ``(C, H, W)`` images that share ``C``."""
    out = np.empty((count, images[0].shape[0], patch, patch), dtype=np.float32)
    for i in range(count):
        img = images[rng.integers(len(images))]
        if min(img.shape[1:]) < patch:
            raise ValueError(f"training image of size {img.shape[1:]} is smaller than patch_size {patch}")
        top = rng.integers(img.shape[1] - patch + 1)
        left = rng.integers(img.shape[2] - patch + 1)
        window = img[:, top:top + patch, left:left + patch]
        out[i] = window[:, :, ::-1] if rng.random() < 0.5 else window
    return out


def build_unet(config, channels: int = 3) -> UNet2DModel:
    """A small attention-free UNet2DModel noise predictor for ``channels``-channel images.

    ``config`` gives ``patch_size``, ``block_out_channels`` and ``layers_per_block`` (a
    :class:`LocalDDPMConfig` or another generator's training configuration).
    """
    levels = len(config.block_out_channels)
    return UNet2DModel(
        sample_size=config.patch_size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=tuple(config.block_out_channels),
        layers_per_block=config.layers_per_block,
        down_block_types=("DownBlock2D",) * levels,
        up_block_types=("UpBlock2D",) * levels,
        norm_num_groups=min(8, min(config.block_out_channels)),
    )


def train_noise_predictor(unet: UNet2DModel, scheduler: DDPMScheduler, draw_batch, config, device: str = "cpu",
                          progress: bool = False, desc: str = "ddpm") -> list[float]:
    """DDPM training with the epsilon-prediction loss ``|eps - eps_theta(x_t, t)|^2`` (Ho et al. 2020).

    ``draw_batch()`` returns a float32 ``(batch, C, h, w)`` batch in [0, 1] (mapped to [-1, 1]);
    ``config`` gives ``train_steps``, ``learning_rate``, ``num_train_timesteps`` and ``seed``.
    Returns the loss of every step; ``unet`` is left in eval mode.
    """
    gen = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.AdamW(unet.parameters(), lr=config.learning_rate)
    losses = []
    unet.train()
    for _ in tqdm(range(config.train_steps), disable=not progress, desc=desc):
        x0 = torch.from_numpy(draw_batch()) * 2.0 - 1.0
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, config.num_train_timesteps, (len(x0),), generator=gen)
        xt = scheduler.add_noise(x0, noise, t)
        loss = torch.mean((unet(xt.to(device), t.to(device)).sample - noise.to(device)) ** 2)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    unet.eval()
    return losses


def train_local_ddpm(proxy_rgbs, config: LocalDDPMConfig = LocalDDPMConfig(), device: str = "cpu", progress: bool = False) -> LocalDDPM:
    """Train the local DDPM on proxy patches (+ natural images) with the epsilon-prediction loss."""
    proxies = list(as_rgb_batch(proxy_rgbs))
    natural = natural_image_pool(config.natural_image_size) if config.natural_images else []
    rng = np.random.default_rng(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        unet = build_unet(config).to(device)
    scheduler = DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule)
    n_proxy = round(config.batch_size * config.proxy_fraction) if natural else config.batch_size

    def draw_batch() -> np.ndarray:
        batch = random_patches(proxies, n_proxy, config.patch_size, rng)
        if n_proxy < config.batch_size:
            batch = np.concatenate([batch, random_patches(natural, config.batch_size - n_proxy, config.patch_size, rng)])
        return batch

    losses = train_noise_predictor(unet, scheduler, draw_batch, config, device=device, progress=progress, desc="local-ddpm")
    return LocalDDPM(unet=unet.cpu(), scheduler=scheduler, config=config, losses=losses)


def load_or_train(proxy_rgbs, config: LocalDDPMConfig, cache_dir: Path | str | None = None, device: str = "cpu", progress: bool = False) -> LocalDDPM:
    """The model for these proxies and settings, loaded from ``cache_dir`` (default
    ``$HIRALIGN_CACHE/local-ddpm``, :mod:`hiralign.cache`) under a hash of the settings, the proxy pixels
    and the diffusers/torch versions, or trained there atomically on first use."""
    folder = model_folder("local-ddpm", cache_dir, asdict(config), as_rgb_batch(proxy_rgbs))
    return cached(folder, MARKER, lambda: train_local_ddpm(proxy_rgbs, config, device=device, progress=progress),
                  LocalDDPM.save, LocalDDPM.load)


@torch.no_grad()
def sample_sdedit(model: LocalDDPM, proxy_rgbs, n_guides: int = 3, strength: float = 0.2, steps: int = 50, seed: int = 0, eta: float = 0.0, device: str = "cpu") -> np.ndarray:
    """``(N, G, 3, H, W)`` guides: each proxy noised to ``t0 = strength * T`` (Eq. 8) and DDIM-denoised."""
    proxies = as_rgb_batch(proxy_rgbs)
    sampler = DDIMScheduler.from_config(model.scheduler.config)
    timesteps = start_timesteps(sampler, steps, strength)
    unet = model.unet.to(device).eval()
    guides = np.empty((len(proxies), n_guides) + proxies.shape[1:], dtype=np.float32)
    height, width = proxies.shape[-2:]
    for n, proxy in enumerate(proxies):
        gen = torch_generator(seed, n)
        x0 = pad_to_multiple(torch.from_numpy(proxy)[None] * 2.0 - 1.0, model.multiple).repeat(n_guides, 1, 1, 1)
        x = noise_to_start(sampler, x0, timesteps, torch.randn(x0.shape, generator=gen), strength).to(device)
        for t in timesteps:
            eps = unet(x, t.to(device)).sample
            x = sampler.step(eps, t, x, eta=eta, generator=gen).prev_sample
        guides[n] = crop((x.cpu().clamp(-1, 1) + 1.0) / 2.0, height, width).numpy()
    return guides


def local_ddpm_guides(
    proxy_rgbs,
    n_guides: int = 3,
    seed: int = 0,
    strength: float = 0.2,
    steps: int = 50,
    eta: float = 0.0,
    device: str = "auto",
    cache_dir: Path | str | None = None,
    progress: bool = False,
    **training,
) -> np.ndarray:
    """Train (or load from cache) the local DDPM on these proxies and sample ``n_guides`` each.

    ``training`` holds :class:`LocalDDPMConfig` fields (``train_steps``, ``patch_size``, ...);
    ``device`` ``'auto'`` picks CUDA when present.
    """
    from hiralign.runtime import resolve_device

    device = resolve_device(device)
    unknown = set(training) - set(LocalDDPMConfig.__dataclass_fields__)
    if unknown:
        raise TypeError(f"local-ddpm got unknown parameters {sorted(unknown)}; training fields are {sorted(LocalDDPMConfig.__dataclass_fields__)}")
    if "block_out_channels" in training:
        training["block_out_channels"] = tuple(training["block_out_channels"])
    model = load_or_train(proxy_rgbs, LocalDDPMConfig(**training), cache_dir=cache_dir, device=device, progress=progress)
    return sample_sdedit(model, proxy_rgbs, n_guides=n_guides, strength=strength, steps=steps, seed=seed, eta=eta, device=device)
