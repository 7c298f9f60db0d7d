"""``hsigene`` generator: a small HSIGene-style latent diffusion model trained here (Pang et al., HSIGene).

HSIGene (Sec. 3.2) is a latent diffusion model with a ControlNet: a KL autoencoder maps an HSI
``x`` to a latent ``z`` (``first_stage_model``), a UNet predicts the noise added to ``z`` (Eq. 1-3)
and a ControlNet encoder turns local conditions (HED, sketch, segmentation, MLSD) and global ones
(CLIP content, text) into residuals that enter the UNet through zero-initialised convolutions.
Sampling is DDIM (Eq. 2). The training set is enlarged by spatial super-resolution (Sec. 3.3):
HSIs are upscaled x2/x4 with a two-stage SR (RGB bands first, then RGB-guided HSI SR) and cropped.

Here everything is CPU-sized and trained on the proxies themselves:

1. :class:`SpectralVAE` - our implementation of the LDM ``AutoencoderKL`` layout (same module
   names as the official ``first_stage_model``, so :func:`load_official_checkpoint` can fill it),
   ``B`` bands -> ``latent_channels`` at ``1/2**(len(vae_mult)-1)`` of the side, KL-regularised,
   trained with L1 + spectral-angle + KL losses.
2. A diffusers ``UNet2DConditionModel`` noise predictor and a control branch taking the local
   condition at image resolution - proxy RGB (3 ch, Eq. 4 bands) + Sobel soft edges (1 ch, the HED
   analogue) - strided down to the latent size. Default ``control="concat"``: a small
   :class:`ControlEncoder` whose features are concatenated to the noisy latent (learns within the
   few hundred CPU steps we can afford); ``control="controlnet"``: a real diffusers
   ``ControlNetModel`` with zero-initialised output convolutions, as in the paper, which needs far
   more steps to start steering (zero convs). The global condition (mean/std of the RGB, a stand-in
   for HSIGene's CLIP content vector) enters both as a projected class embedding added to the time
   embedding. No attention in UNet/ControlNet, so training on patches transfers to any image size.
3. Training pool = proxies + their x2/x4 super-resolutions (:func:`super_resolve_hsi`: bicubic,
   RGB detail sharpening, RGB-guided per-pixel gain that keeps every spectrum's angle), cropped at
   random (Sec. 3.3 / 4.1.1 at small scale); conditions are dropped (zeroed) with probability
   ``condition_dropout`` so unconditional generation is also learnt (Fig. 2a).
4. :func:`sample_hsigene`: for each proxy, ``G`` latents from pure noise, DDIM-denoised under the
   proxy's conditions, decoded by the VAE and clamped to [0, 1].

Trained models are cached on disk keyed by a hash of the configuration, wavelengths and pixels.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ControlNetModel, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from hiralign.cache import load_denoiser, model_folder, save_denoiser
from hiralign.cache import load_or_train as cached
from hiralign.guides.resize import crop, pad_to_multiple, resize
from hiralign.guides.sdedit import torch_generator
from hiralign.spectral import rgb_band_indices, to_rgb

#: channels of the local condition: proxy RGB (3) + soft edges (1)
LOCAL_CHANNELS = 4
#: length of the global condition vector: per-channel mean and std of the RGB
GLOBAL_DIM = 6
#: width of the (unused) cross-attention context diffusers' conditional UNet insists on
CONTEXT_DIM = 8
#: The file that marks a complete cached model folder.
MARKER = "hsigene.json"


@dataclass(frozen=True)
class HSIGeneConfig:
    """Training settings of the small HSIGene (defaults: ~1-2 CPU minutes on two cores, N=8, 64x64)."""

    patch_size: int = 32  # training crop side (px); capped by the smallest proxy side
    # spectral VAE (LDM AutoencoderKL layout; official: ch 64, mult (1, 2, 4), 4 blocks, z 96, embed 4)
    vae_channels: int = 16  # ``ch``
    vae_mult: tuple[int, ...] = (1, 2)  # ``ch_mult``; latent side = image side / 2**(len - 1)
    vae_res_blocks: int = 1  # ``num_res_blocks``
    vae_attn_levels: tuple[int, ...] = ()  # levels with attention blocks (the middle always has one)
    z_channels: int = 8  # ``z_channels`` (encoder output before ``quant_conv``)
    latent_channels: int = 4  # ``embed_dim``: channels the diffusion model works on
    vae_norm_groups: int = 8  # GroupNorm groups (official: 32)
    vae_steps: int = 600
    vae_learning_rate: float = 3e-3
    kl_weight: float = 1e-5
    sam_weight: float = 0.1  # weight of the spectral-angle term (radians) in the VAE loss
    # latent diffusion + control branch
    block_out_channels: tuple[int, ...] = (32, 64)  # UNet / ControlNet widths, one level each
    layers_per_block: int = 1
    control: str = "concat"  # "concat": control features concatenated to the UNet input; "controlnet": diffusers ControlNet
    control_channels: int = 16  # width of the control encoder / ControlNet conditioning embedding
    train_steps: int = 400  # diffusion optimiser steps
    batch_size: int = 16
    learning_rate: float = 1e-3
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4  # linear schedule of the official config (linear_start / linear_end)
    beta_end: float = 0.02
    condition_dropout: float = 0.1
    # super-resolution-based augmentation
    sr_scales: tuple[int, ...] = (2, 4)
    sr_sharpen: float = 0.6  # strength of the RGB detail enhancement (stage 1)
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.vae_mult or not self.block_out_channels:
            raise ValueError("vae_mult and block_out_channels need at least one level each")
        widths = [self.vae_channels * m for m in self.vae_mult] + [self.control_channels, *self.block_out_channels]
        if any(w % self.vae_norm_groups for w in widths[:len(self.vae_mult)]):
            raise ValueError(f"VAE widths {widths[:len(self.vae_mult)]} must be divisible by vae_norm_groups {self.vae_norm_groups}")
        if any(w % 8 for w in self.block_out_channels):
            raise ValueError(f"block_out_channels {self.block_out_channels} must be multiples of 8 (GroupNorm groups)")
        if any(not 0 <= level < len(self.vae_mult) for level in self.vae_attn_levels):
            raise ValueError(f"vae_attn_levels {self.vae_attn_levels} must index vae_mult levels 0..{len(self.vae_mult) - 1}")
        if any(s < 2 for s in self.sr_scales):
            raise ValueError(f"sr_scales must be integers >= 2; got {self.sr_scales}")
        if not 0.0 <= self.condition_dropout < 1.0:
            raise ValueError(f"condition_dropout must lie in [0, 1); got {self.condition_dropout}")
        if self.control not in ("concat", "controlnet"):
            raise ValueError(f"control must be 'concat' or 'controlnet'; got {self.control!r}")
        if self.patch_size % self.multiple:
            raise ValueError(f"patch_size {self.patch_size} must be divisible by {self.multiple} (VAE x UNet down-sampling)")

    @property
    def vae_factor(self) -> int:
        """Latent side = image side / this."""
        return 2 ** (len(self.vae_mult) - 1)

    @property
    def multiple(self) -> int:
        """Image sides are padded to a multiple of this (VAE and UNet down-sampling together)."""
        return self.vae_factor * 2 ** (len(self.block_out_channels) - 1)


#: the dataclass of the ``**training`` keywords of :func:`hsigene_hsis`
TRAINING_CONFIG = HSIGeneConfig
_TUPLE_FIELDS = ("vae_mult", "vae_attn_levels", "block_out_channels", "sr_scales")


# --------------------------------------------------------------------------------------------
# 1. Spectral VAE in the LDM AutoencoderKL module layout
# --------------------------------------------------------------------------------------------

class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice with a 1x1 ``nin_shortcut`` when the width changes."""

    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in, eps=1e-6)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, c_out, eps=1e-6)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        if c_in != c_out:
            self.nin_shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class _AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1 ``q``/``k``/``v``/``proj_out`` convolutions."""

    def __init__(self, c: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, c, eps=1e-6)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (m(y).flatten(2).transpose(1, 2) for m in (self.q, self.k, self.v))  # (n, hw, c)
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj_out(out.transpose(1, 2).reshape(n, c, h, w))


class _Downsample(nn.Module):
    """Stride-2 3x3 convolution after zero padding of one pixel at the bottom/right."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class _Upsample(nn.Module):
    """Nearest-neighbour x2 followed by a 3x3 convolution."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _level(blocks: list[nn.Module], attn: list[nn.Module]) -> nn.Module:
    level = nn.Module()
    level.block = nn.ModuleList(blocks)
    level.attn = nn.ModuleList(attn)
    return level


def _middle(c: int, groups: int) -> nn.Module:
    mid = nn.Module()
    mid.block_1, mid.attn_1, mid.block_2 = _ResBlock(c, c, groups), _AttnBlock(c, groups), _ResBlock(c, c, groups)
    return mid


def _run_middle(mid: nn.Module, h: torch.Tensor) -> torch.Tensor:
    return mid.block_2(mid.attn_1(mid.block_1(h)))


class _Encoder(nn.Module):
    def __init__(self, bands: int, ch: int, mult: tuple[int, ...], n_blocks: int, attn_levels: tuple[int, ...], z: int, groups: int):
        super().__init__()
        self.conv_in = nn.Conv2d(bands, ch, 3, padding=1)
        self.down = nn.ModuleList()
        c_in = ch
        for i, m in enumerate(mult):
            blocks, attn = [], []
            for _ in range(n_blocks):
                blocks.append(_ResBlock(c_in, ch * m, groups))
                c_in = ch * m
                if i in attn_levels:
                    attn.append(_AttnBlock(c_in, groups))
            level = _level(blocks, attn)
            if i < len(mult) - 1:
                level.downsample = _Downsample(c_in)
            self.down.append(level)
        self.mid = _middle(c_in, groups)
        self.norm_out = nn.GroupNorm(groups, c_in, eps=1e-6)
        self.conv_out = nn.Conv2d(c_in, 2 * z, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn):
                    h = level.attn[j](h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        return self.conv_out(F.silu(self.norm_out(_run_middle(self.mid, h))))


class _Decoder(nn.Module):
    def __init__(self, bands: int, ch: int, mult: tuple[int, ...], n_blocks: int, attn_levels: tuple[int, ...], z: int, groups: int):
        super().__init__()
        c_in = ch * mult[-1]
        self.conv_in = nn.Conv2d(z, c_in, 3, padding=1)
        self.mid = _middle(c_in, groups)
        levels = []
        for i in reversed(range(len(mult))):  # coarsest first; stored finest-first like the LDM
            blocks, attn = [], []
            for _ in range(n_blocks + 1):
                blocks.append(_ResBlock(c_in, ch * mult[i], groups))
                c_in = ch * mult[i]
                if i in attn_levels:
                    attn.append(_AttnBlock(c_in, groups))
            level = _level(blocks, attn)
            if i > 0:
                level.upsample = _Upsample(c_in)
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = nn.GroupNorm(groups, c_in, eps=1e-6)
        self.conv_out = nn.Conv2d(c_in, bands, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = _run_middle(self.mid, self.conv_in(z))
        for level in reversed(self.up):
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn):
                    h = level.attn[j](h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class SpectralVAE(nn.Module):
    """KL autoencoder ``(n, B, H, W)`` in [-1, 1] <-> ``(n, latent_channels, H/f, W/f)``.

    Module names follow the LDM ``AutoencoderKL`` (``encoder``/``decoder``/``quant_conv``/
    ``post_quant_conv``; ``down.i.block.j.norm1`` ...), the layout of HSIGene's ``first_stage_model``.
    """

    def __init__(self, bands: int, ch: int = 32, mult: tuple[int, ...] = (1, 2), n_blocks: int = 1,
                 attn_levels: tuple[int, ...] = (), z_channels: int = 8, latent_channels: int = 4, groups: int = 8):
        super().__init__()
        self.hparams = dict(bands=bands, ch=ch, mult=tuple(mult), n_blocks=n_blocks, attn_levels=tuple(attn_levels),
                            z_channels=z_channels, latent_channels=latent_channels, groups=groups)
        self.encoder = _Encoder(bands, ch, tuple(mult), n_blocks, tuple(attn_levels), z_channels, groups)
        self.decoder = _Decoder(bands, ch, tuple(mult), n_blocks, tuple(attn_levels), z_channels, groups)
        self.quant_conv = nn.Conv2d(2 * z_channels, 2 * latent_channels, 1)
        self.post_quant_conv = nn.Conv2d(latent_channels, z_channels, 1)

    @classmethod
    def from_config(cls, bands: int, config: HSIGeneConfig) -> "SpectralVAE":
        return cls(bands, config.vae_channels, config.vae_mult, config.vae_res_blocks, config.vae_attn_levels,
                   config.z_channels, config.latent_channels, config.vae_norm_groups)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance (clamped to [-30, 20] as in the LDM)."""
        mean, logvar = self.quant_conv(self.encoder(x)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Unclamped reconstruction in (about) [-1, 1]."""
        return self.decoder(self.post_quant_conv(z))


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)), summed over latent elements, averaged over the batch."""
    return 0.5 * torch.sum(mean ** 2 + logvar.exp() - 1.0 - logvar) / len(mean)


def spectral_angle(a: torch.Tensor, b: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Per-pixel angle (radians) between the spectra of ``a`` and ``b`` along ``dim``."""
    cos = F.cosine_similarity(a, b, dim=dim, eps=1e-8)
    return torch.acos(cos.clamp(-1 + 1e-7, 1 - 1e-7))


# --------------------------------------------------------------------------------------------
# conditions and the super-resolution augmentation
# --------------------------------------------------------------------------------------------

def soft_edges(rgb: torch.Tensor) -> torch.Tensor:
    """``(n, 1, H, W)`` Sobel gradient magnitude of the luminance, scaled by each image's 99th
    percentile (floored at 0.05) and clipped to [0, 1]: a cheap stand-in for HED soft edges."""
    luma = (0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2])[:, None]
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
    kernel = torch.stack([kx, kx.T])[:, None].to(rgb)
    grad = F.conv2d(F.pad(luma, (1, 1, 1, 1), mode="replicate"), kernel)
    mag = grad.pow(2).sum(1, keepdim=True).sqrt()
    scale = torch.quantile(mag.flatten(1), 0.99, dim=1).clamp_min(0.05)
    return (mag / scale[:, None, None, None]).clamp(0.0, 1.0)


def conditions(hsi: torch.Tensor, wavelengths) -> tuple[torch.Tensor, torch.Tensor]:
    """Local ``(n, 4, H, W)`` (proxy RGB of Eq. 4 + soft edges) and global ``(n, 6)`` (RGB mean, std)."""
    rgb = to_rgb(hsi, wavelengths)
    local = torch.cat([rgb, soft_edges(rgb)], dim=1)
    return local, torch.cat([rgb.mean((2, 3)), rgb.std((2, 3))], dim=1)


def _blur(x: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
    kernel = (k[:, None] * k[None]).to(x)[None, None].repeat(x.shape[1], 1, 1, 1)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), kernel, groups=x.shape[1])


def super_resolve_hsi(hsi: torch.Tensor, scale: int, wavelengths, sharpen: float = 0.6) -> torch.Tensor:
    """Two-stage x``scale`` super-resolution of ``(n, B, H, W)`` HSIs in [0, 1] (HSIGene Fig. 4, small).

    Stage 1 (DSRNet's role): the RGB bands are upsampled bicubically and their detail enhanced by
    unsharp masking. Stage 2 (RGAN's role, RGB-guided HSI SR): the bicubically upsampled HSI is
    multiplied per pixel by the luminance gain the enhanced RGB gained over the plain one. A
    per-pixel scalar gain leaves every spectrum's angle unchanged - the paper's requirement that
    augmentation keeps the spectral distribution of real HSIs.
    """
    height, width = hsi.shape[-2:]
    up = resize(hsi, height * scale, width * scale).clamp(0.0, 1.0)
    rgb = to_rgb(up, wavelengths)
    enhanced = (rgb + sharpen * (rgb - _blur(rgb))).clamp(0.0, 1.0)
    gain = (enhanced.mean(1, keepdim=True) + 1e-3) / (rgb.mean(1, keepdim=True) + 1e-3)
    return (up * gain.clamp(0.5, 2.0)).clamp(0.0, 1.0)


def augmentation_pool(proxies: torch.Tensor, config: HSIGeneConfig, wavelengths) -> list[torch.Tensor]:
    """The proxies and their super-resolved copies at every ``sr_scales`` factor, one ``(B, h, w)`` each."""
    pool = list(proxies)
    for scale in config.sr_scales:
        pool.extend(super_resolve_hsi(proxies, scale, wavelengths, config.sr_sharpen))
    return pool


def random_crops(pool: list[torch.Tensor], count: int, patch: int, rng: np.random.Generator) -> torch.Tensor:
    """``count`` random crops (random pool image, position, horizontal flip) of side ``patch``."""
    out = []
    for _ in range(count):
        img = pool[rng.integers(len(pool))]
        top = rng.integers(img.shape[1] - patch + 1)
        left = rng.integers(img.shape[2] - patch + 1)
        window = img[:, top:top + patch, left:left + patch]
        out.append(window.flip(-1) if rng.random() < 0.5 else window)
    return torch.stack(out)


# --------------------------------------------------------------------------------------------
# the model: VAE + UNet + ControlNet
# --------------------------------------------------------------------------------------------

class ControlEncoder(nn.Module):
    """The ``concat`` control branch: local condition at image resolution -> ``control_channels``
    features at latent resolution (3x3 conv, then one stride-2 conv per VAE level), concatenated
    to the noisy latent at the UNet input."""

    def __init__(self, channels: int, vae_factor: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(LOCAL_CHANNELS, channels, 3, padding=1), nn.SiLU()]
        for _ in range(int(math.log2(vae_factor))):
            layers += [nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.SiLU()]
        layers.append(nn.Conv2d(channels, channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, local: torch.Tensor) -> torch.Tensor:
        return self.net(local)


def build_denoiser(config: HSIGeneConfig) -> tuple[UNet2DConditionModel, nn.Module]:
    """Attention-free diffusers UNet with a projected global embedding, and its control branch
    (a :class:`ControlEncoder` or a diffusers ControlNet with zero-initialised output convs)."""
    levels = len(config.block_out_channels)
    concat = config.control == "concat"
    unet = UNet2DConditionModel(
        sample_size=config.patch_size // config.vae_factor,
        in_channels=config.latent_channels + (config.control_channels if concat else 0),
        out_channels=config.latent_channels,
        down_block_types=("DownBlock2D",) * levels,
        up_block_types=("UpBlock2D",) * levels,
        mid_block_type="UNetMidBlock2D",
        block_out_channels=tuple(config.block_out_channels),
        layers_per_block=config.layers_per_block,
        norm_num_groups=8,
        cross_attention_dim=CONTEXT_DIM,
        class_embed_type="projection",
        projection_class_embeddings_input_dim=GLOBAL_DIM,
    )
    if concat:
        return unet, ControlEncoder(config.control_channels, config.vae_factor)
    embedding = tuple(config.control_channels * 2 ** i for i in range(len(config.vae_mult)))  # strides by vae_factor
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=embedding, conditioning_channels=LOCAL_CHANNELS)
    return unet, controlnet


@dataclass
class HSIGene:
    """A trained small HSIGene: VAE, UNet, control branch, training scheduler and loss histories."""

    vae: SpectralVAE
    unet: UNet2DConditionModel
    controlnet: nn.Module  # ControlEncoder ("concat") or ControlNetModel ("controlnet")
    scheduler: DDPMScheduler
    config: HSIGeneConfig
    wavelengths: tuple[float, ...]
    scale_factor: float = 1.0  # latents are multiplied by this before diffusion (LDM scale_by_std)
    vae_losses: list[float] = field(default_factory=list)  # L1 + sam_weight * SAM per VAE step
    losses: list[float] = field(default_factory=list)  # epsilon-prediction loss per diffusion step

    def parameter_counts(self) -> dict[str, int]:
        return {name: sum(p.numel() for p in getattr(self, name).parameters()) for name in ("vae", "unet", "controlnet")}

    def predict_noise(self, z: torch.Tensor, t: torch.Tensor, local: torch.Tensor, global_: torch.Tensor,
                      conditioning_scale: float = 1.0) -> torch.Tensor:
        context = z.new_zeros(len(z), 1, CONTEXT_DIM)
        if self.config.control == "concat":
            ctrl = conditioning_scale * self.controlnet(local)
            return self.unet(torch.cat([z, ctrl], dim=1), t, encoder_hidden_states=context, class_labels=global_).sample
        down, mid = self.controlnet(z, t, encoder_hidden_states=context, controlnet_cond=local,
                                    conditioning_scale=conditioning_scale, class_labels=global_, return_dict=False)
        return self.unet(z, t, encoder_hidden_states=context, class_labels=global_,
                         down_block_additional_residuals=down, mid_block_additional_residual=mid).sample

    def save(self, folder: Path | str) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file(self.vae.state_dict(), str(folder / "vae.safetensors"))
        if self.config.control == "concat":
            save_file(self.controlnet.state_dict(), str(folder / "control.safetensors"))
        else:
            self.controlnet.save_pretrained(folder / "controlnet")
        meta = {"config": asdict(self.config), "wavelengths": list(self.wavelengths), "scale_factor": self.scale_factor,
                "vae_losses": self.vae_losses, "losses": self.losses, "vae": self.vae.hparams}
        return save_denoiser(folder, self.unet, self.scheduler, meta, MARKER)

    @classmethod
    def load(cls, folder: Path | str) -> "HSIGene":
        folder = Path(folder)
        unet, scheduler, meta = load_denoiser(folder, UNet2DConditionModel, MARKER)
        config = _make_config(meta["config"])
        vae = SpectralVAE(**meta["vae"])
        vae.load_state_dict(load_file(str(folder / "vae.safetensors")))
        if config.control == "concat":
            control = ControlEncoder(config.control_channels, config.vae_factor)
            control.load_state_dict(load_file(str(folder / "control.safetensors")))
        else:
            control = ControlNetModel.from_pretrained(folder / "controlnet")
        return cls(
            vae=vae.eval(),
            unet=unet.eval(),
            controlnet=control.eval(),
            scheduler=scheduler,
            config=config,
            wavelengths=tuple(meta["wavelengths"]),
            scale_factor=meta["scale_factor"],
            vae_losses=meta["vae_losses"],
            losses=meta["losses"],
        )


def _make_config(values: dict) -> HSIGeneConfig:
    values = dict(values)
    for name in _TUPLE_FIELDS:
        if name in values:
            values[name] = tuple(values[name])
    return HSIGeneConfig(**values)


def train_vae(vae: SpectralVAE, draw_batch, config: HSIGeneConfig, device: str = "cpu", progress: bool = False) -> list[float]:
    """Stage 1: L1 + ``sam_weight`` * spectral angle + ``kl_weight`` * KL on ``draw_batch()`` crops
    (``(n, B, p, p)`` in [0, 1]). Returns the reconstruction loss (L1 + weighted SAM) per step."""
    gen = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.AdamW(vae.parameters(), lr=config.vae_learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(1, config.vae_steps))
    losses = []
    vae.train()
    for _ in tqdm(range(config.vae_steps), disable=not progress, desc="hsigene vae"):
        x = (draw_batch() * 2.0 - 1.0).to(device)
        mean, logvar = vae.encode(x)
        z = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=gen).to(device)
        rec = vae.decode(z)
        recon = (rec - x).abs().mean() + config.sam_weight * spectral_angle(rec + 1.0, x + 1.0).mean()
        loss = recon + config.kl_weight * kl_divergence(mean, logvar)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(recon.item())
    vae.eval()
    return losses


def train_hsigene(proxy_hsi: np.ndarray, wavelengths: np.ndarray, config: HSIGeneConfig = HSIGeneConfig(),
                  device: str = "cpu", progress: bool = False) -> HSIGene:
    """Train VAE then UNet + ControlNet (Eq. 3) on SR-augmented random crops of the proxies."""
    proxies = torch.from_numpy(np.ascontiguousarray(proxy_hsi, dtype=np.float32))
    wavelengths = np.asarray(wavelengths, dtype=np.float64)
    pool = augmentation_pool(proxies, config, wavelengths)
    smallest = min(proxies.shape[-2:])
    patch = min(config.patch_size, smallest // config.multiple * config.multiple)
    if patch < config.multiple:
        raise ValueError(f"proxy images of size {tuple(proxies.shape[-2:])} are smaller than the model's down-sampling factor {config.multiple}")
    rng = np.random.default_rng(config.seed)

    def draw_batch() -> torch.Tensor:
        return random_crops(pool, config.batch_size, patch, rng)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        vae = SpectralVAE.from_config(proxies.shape[1], config).to(device)
        unet, controlnet = build_denoiser(config)
    vae_losses = train_vae(vae, draw_batch, config, device=device, progress=progress)
    for p in vae.parameters():
        p.requires_grad_(False)

    with torch.no_grad():  # LDM "scale_by_std": unit-variance latents for the diffusion model
        probe = torch.cat([vae.encode(draw_batch().to(device) * 2.0 - 1.0)[0] for _ in range(4)])
        scale_factor = float(1.0 / probe.std().clamp_min(1e-6))

    scheduler = DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule="linear",
                              beta_start=config.beta_start, beta_end=config.beta_end,
                              clip_sample=False)  # latents are unit-variance, not in [-1, 1]
    model = HSIGene(vae=vae.cpu(), unet=unet.to(device), controlnet=controlnet.to(device), scheduler=scheduler,
                    config=config, wavelengths=tuple(float(w) for w in wavelengths), scale_factor=scale_factor,
                    vae_losses=vae_losses)
    vae.to(device)
    gen = torch.Generator().manual_seed(config.seed + 1)
    params = list(unet.parameters()) + list(controlnet.parameters())
    optimiser = torch.optim.AdamW(params, lr=config.learning_rate)
    unet.train()
    controlnet.train()
    for _ in tqdm(range(config.train_steps), disable=not progress, desc="hsigene ldm"):
        crops = draw_batch()
        local, global_ = conditions(crops, wavelengths)
        keep = (torch.rand(len(crops), generator=gen) >= config.condition_dropout).float()
        local, global_ = local * keep[:, None, None, None], global_ * keep[:, None]
        with torch.no_grad():
            mean, logvar = vae.encode(crops.to(device) * 2.0 - 1.0)
            z0 = (mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=gen).to(device)) * scale_factor
        noise = torch.randn(z0.shape, generator=gen).to(device)
        t = torch.randint(0, config.num_train_timesteps, (len(z0),), generator=gen).to(device)
        eps = model.predict_noise(scheduler.add_noise(z0, noise, t), t, local.to(device), global_.to(device))
        loss = torch.mean((eps - noise) ** 2)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        model.losses.append(loss.item())
    model.unet, model.controlnet, model.vae = unet.cpu().eval(), controlnet.cpu().eval(), vae.cpu().eval()
    return model


# --------------------------------------------------------------------------------------------
# caching
# --------------------------------------------------------------------------------------------

def load_or_train(proxy_hsi: np.ndarray, wavelengths: np.ndarray, config: HSIGeneConfig, cache_dir: Path | str | None = None,
                  device: str = "cpu", progress: bool = False) -> HSIGene:
    """The model for these proxies and settings, loaded from ``cache_dir`` (default
    ``$HIRALIGN_CACHE/hsigene``, :mod:`hiralign.cache`) under a hash of the settings, the proxies, their wavelengths
    and the diffusers/torch versions, or trained there atomically on first use."""
    folder = model_folder("hsigene", cache_dir, asdict(config), np.asarray(proxy_hsi, dtype=np.float32),
                          np.asarray(wavelengths, dtype=np.float64))
    return cached(folder, MARKER, lambda: train_hsigene(proxy_hsi, wavelengths, config, device=device, progress=progress),
                  HSIGene.save, HSIGene.load)


# --------------------------------------------------------------------------------------------
# sampling and the public entry point
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def sample_hsigene(model: HSIGene, proxy_hsi: np.ndarray, n_generated: int = 3, steps: int = 50, seed: int = 0,
                   eta: float = 0.0, conditioning_scale: float = 1.0, guidance_scale: float = 1.0, device: str = "cpu",
                   progress: bool = False) -> np.ndarray:
    """``(N, G, B, H, W)``: per proxy, ``G`` latents from pure noise DDIM-denoised (Eq. 2) under the
    proxy's RGB + edge (local) and RGB-statistics (global) conditions, decoded and clamped to [0, 1].

    ``guidance_scale`` > 1 applies classifier-free guidance against the zeroed (dropped) conditions.
    """
    proxies = torch.from_numpy(np.ascontiguousarray(proxy_hsi, dtype=np.float32))
    wavelengths = np.asarray(model.wavelengths, dtype=np.float64)
    sampler = DDIMScheduler.from_config(model.scheduler.config, clip_sample=False)
    sampler.set_timesteps(steps)
    vae, unet, controlnet = model.vae.to(device), model.unet.to(device), model.controlnet.to(device)
    height, width = proxies.shape[-2:]
    f = model.config.vae_factor
    out = np.empty((len(proxies), n_generated) + tuple(proxies.shape[1:]), dtype=np.float32)
    for n in tqdm(range(len(proxies)), disable=not progress, desc="hsigene sample"):
        gen = torch_generator(seed, n)
        local, global_ = conditions(pad_to_multiple(proxies[n:n + 1], model.config.multiple), wavelengths)
        local, global_ = local.repeat(n_generated, 1, 1, 1).to(device), global_.repeat(n_generated, 1).to(device)
        z = torch.randn((n_generated, model.config.latent_channels, local.shape[-2] // f, local.shape[-1] // f), generator=gen)
        z = z.to(device) * sampler.init_noise_sigma
        for t in sampler.timesteps:
            tt = t.to(device).expand(n_generated)
            eps = model.predict_noise(z, tt, local, global_, conditioning_scale)
            if guidance_scale != 1.0:
                eps_null = model.predict_noise(z, tt, torch.zeros_like(local), torch.zeros_like(global_), conditioning_scale)
                eps = eps_null + guidance_scale * (eps - eps_null)
            z = sampler.step(eps, t, z, eta=eta, generator=gen).prev_sample
        hsi = (vae.decode(z / model.scale_factor).clamp(-1.0, 1.0) + 1.0) / 2.0
        out[n] = crop(hsi.cpu(), height, width).numpy()
    model.vae, model.unet, model.controlnet = vae.cpu(), unet.cpu(), controlnet.cpu()
    return out


def check_inputs(proxy_hsi, wavelengths, n_generated: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated float32 ``(N, B, H, W)`` proxies and float64 wavelengths, or ``ValueError`` naming the problem."""
    arr = np.asarray(proxy_hsi, dtype=np.float32)
    if arr.ndim != 4:
        raise ValueError(f"hsigene: proxy_hsi must be (N, B, H, W); got shape {arr.shape} (ndim {arr.ndim})")
    if min(arr.shape) < 1:
        raise ValueError(f"hsigene: proxy_hsi has an empty axis: shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"hsigene: proxy_hsi contains {int((~np.isfinite(arr)).sum())} NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-4 or hi > 1.0 + 1e-4:
        raise ValueError(f"hsigene: proxy_hsi values must lie in [0, 1]; got [{lo:.4g}, {hi:.4g}]")
    wl = np.asarray(wavelengths, dtype=np.float64)
    if wl.ndim != 1 or len(wl) != arr.shape[1]:
        raise ValueError(f"hsigene: wavelengths must be 1-D with one entry per band ({arr.shape[1]}); got shape {wl.shape}")
    if not np.isfinite(wl).all():
        raise ValueError("hsigene: wavelengths contain NaN or infinite values")
    rgb_band_indices(wl)  # ValueError when the cube has no bands near 660/550/470 nm (Eq. 4)
    if n_generated < 1 or steps < 1:
        raise ValueError(f"hsigene: n_generated and steps must be >= 1; got {n_generated}, {steps}")
    return np.clip(arr, 0.0, 1.0), wl


def hsigene_hsis(proxy_hsi: np.ndarray, wavelengths: np.ndarray, n_generated: int = 3, seed: int = 0, *,
                 steps: int = 50, train_steps: int = 400, device: str = "cpu", cache_dir=None, progress: bool = False,
                 **training) -> np.ndarray:
    """(N, G, B, H, W) float32 HSIs in [0, 1]: G generated per proxy, conditioned on proxy n's RGB + edges.

    Trains (or loads from ``cache_dir``, default ``$HIRALIGN_CACHE/hsigene``) the small HSIGene on the
    proxies and their super-resolved crops; ``training`` holds other :class:`HSIGeneConfig` fields.
    ``device`` ``'auto'`` picks CUDA when present.
    """
    arr, wl = check_inputs(proxy_hsi, wavelengths, n_generated, steps)
    unknown = set(training) - set(HSIGeneConfig.__dataclass_fields__)
    if unknown:
        raise TypeError(f"hsigene got unknown parameters {sorted(unknown)}; training fields are {sorted(HSIGeneConfig.__dataclass_fields__)}")
    from hiralign.runtime import resolve_device

    device = resolve_device(device)
    config = _make_config({**training, "train_steps": train_steps})
    model = load_or_train(arr, wl, config, cache_dir=cache_dir, device=device, progress=progress)
    return sample_hsigene(model, arr, n_generated=n_generated, steps=steps, seed=seed, device=device, progress=progress)


# --------------------------------------------------------------------------------------------
# diagnostics
# --------------------------------------------------------------------------------------------

def sample_statistics(samples: np.ndarray, proxy_hsi: np.ndarray, wavelengths: np.ndarray) -> dict[str, float]:
    """How samples ``(N, G, B, H, W)`` relate to their conditioning proxies ``(N, B, H, W)``.

    ``sam_deg``: mean per-pixel spectral angle (degrees) sample vs proxy; ``layout_corr``: mean
    Pearson correlation of the RGB luminance maps; ``mae``: mean absolute difference (0 = copy);
    ``diversity``: mean absolute difference between samples of the same proxy.
    """
    s = torch.from_numpy(np.asarray(samples, dtype=np.float32))
    p = torch.from_numpy(np.asarray(proxy_hsi, dtype=np.float32))[:, None].expand_as(s)
    idx = list(rgb_band_indices(np.asarray(wavelengths, dtype=float)))
    sam = torch.rad2deg(spectral_angle(s + 1e-6, p + 1e-6, dim=2)).mean()
    luma_s, luma_p = s[:, :, idx].mean(2).flatten(2), p[:, :, idx].mean(2).flatten(2)
    cs, cp = luma_s - luma_s.mean(-1, keepdim=True), luma_p - luma_p.mean(-1, keepdim=True)
    corr = (cs * cp).sum(-1) / (cs.norm(dim=-1) * cp.norm(dim=-1) + 1e-8)
    diversity = (s[:, :, None] - s[:, None]).abs().mean((-3, -2, -1))
    g = s.shape[1]
    div = float(diversity.sum((1, 2)).mean() / max(1, g * (g - 1)))
    return {"sam_deg": float(sam), "layout_corr": float(corr.mean()), "mae": float((s - p).abs().mean()), "diversity": div}


# --------------------------------------------------------------------------------------------
# official checkpoint (github.com/LiPang/HSIGene, checkpoints/last.ckpt, configs/inference.yaml)
# --------------------------------------------------------------------------------------------

#: top-level key groups of the official CRSControlNet state dict and whether we can hold them
OFFICIAL_GROUPS = {
    "first_stage_model.": "AutoencoderKL (48 bands, ch 64, mult 1-2-4, 4 res blocks, z 96, embed 4): mapped onto SpectralVAE",
    "model.diffusion_model.": "LocalControlUNetModel (SD-1.x UNet, 320 ch, cross-attention 768): not mapped",
    "local_adapter.": "Uni-ControlNet LocalAdapter (18 local channels, FDN injection): not mapped",
    "global_content_adapter.": "CLIP image-embedding adapter: not mapped",
    "global_text_adapter.": "CLIP text-embedding adapter: not mapped",
    "metadata_emb.": "metadata embedding: not mapped",
    "cond_stage_model.": "frozen CLIP text encoder: not mapped",
    "model_ema.": "EMA copy of the UNet: not mapped",
}
#: diffusion schedule buffers of the LDM, compared with our DDPM scheduler when present
SCHEDULE_BUFFERS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "scale_factor")


@dataclass
class OfficialCheckpoint:
    """What :func:`load_official_checkpoint` found: key groups, the mapped VAE and what was left."""

    groups: dict[str, dict[str, int]]  # prefix -> {"tensors": ..., "parameters": ...}
    vae: SpectralVAE | None  # the first_stage_model weights in our VAE, None if absent
    vae_hparams: dict | None
    scale_factor: float | None
    schedule: dict[str, float]  # beta_start / beta_end / timesteps read from ``betas``
    unmapped: dict[str, str]  # prefix -> why it is not held
    other_keys: list[str]  # keys outside every known group

    def report(self) -> str:
        lines = [f"{prefix:<26} {g['tensors']:>5} tensors {g['parameters']:>12,d} values  {OFFICIAL_GROUPS.get(prefix, '')}"
                 for prefix, g in self.groups.items()]
        if self.vae_hparams:
            lines.append(f"VAE mapped: {self.vae_hparams}")
        if self.other_keys:
            lines.append(f"{len(self.other_keys)} other keys: {self.other_keys[:8]}")
        return "\n".join(lines)


def read_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a torch ``.ckpt``/``.pth`` (Lightning ``state_dict`` unwrapped).

    Pickled checkpoints are read with ``weights_only=True``; a Lightning checkpoint that needs more
    should be re-saved as ``{"state_dict": ...}`` or safetensors first.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"official HSIGene checkpoint {path} not found; download last.ckpt (see docs/hsigene.md)")
    if path.suffix.lower() == ".safetensors":
        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle with non-tensor objects
        raise ValueError(f"{path}: cannot be read with weights_only=True ({err}); re-save its state_dict as safetensors") from err
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state dict of tensors")
    return state


def _official_vae_hparams(vae_sd: dict[str, torch.Tensor]) -> dict:
    """SpectralVAE arguments read off the shapes and key names of an AutoencoderKL state dict."""
    def levels(prefix: str) -> list[int]:
        return sorted({int(k.split(".")[2]) for k in vae_sd if k.startswith(prefix)})

    try:
        conv_in = vae_sd["encoder.conv_in.weight"]
        ch, bands = conv_in.shape[:2]
        mult = tuple(int(vae_sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) // ch for i in levels("encoder.down."))
        n_blocks = len({k.split(".")[4] for k in vae_sd if k.startswith("encoder.down.0.block.")})
        attn = tuple(i for i in levels("encoder.down.") if any(k.startswith(f"encoder.down.{i}.attn.") for k in vae_sd))
        z_channels = int(vae_sd["decoder.conv_in.weight"].shape[1])
        latent = int(vae_sd["post_quant_conv.weight"].shape[1])
    except KeyError as err:
        raise ValueError(f"first_stage_model lacks the AutoencoderKL key {err}; not the HSIGene/LDM layout") from err
    groups = math.gcd(32, ch)  # the LDM's Normalize uses 32 groups (needs ch divisible by 32)
    return dict(bands=int(bands), ch=int(ch), mult=mult, n_blocks=n_blocks, attn_levels=attn,
                z_channels=z_channels, latent_channels=latent, groups=groups)


def load_official_checkpoint(path: Path | str, map_vae: bool = True) -> OfficialCheckpoint:
    """Inspect an official HSIGene checkpoint and map what our architecture can hold.

    Maps: ``first_stage_model.*`` (the 48-band AutoencoderKL) onto a :class:`SpectralVAE` built
    with the sizes read off the tensors, every key and shape checked (``ValueError`` names the
    first missing, unexpected or mis-shaped key); ``scale_factor`` and the linear beta schedule.
    Does not map: the SD-1.x UNet, the Uni-ControlNet local adapter, the CLIP adapters and text
    encoder - their architectures (320-channel UNet with cross-attention, FDN injection) are not
    ours; they are only counted in :attr:`OfficialCheckpoint.groups`.
    """
    state = read_state_dict(path)
    groups: dict[str, dict[str, int]] = {}
    other = []
    for key, tensor in state.items():
        prefix = next((p for p in OFFICIAL_GROUPS if key.startswith(p)), None)
        if prefix is None:
            prefix = "schedule buffers" if key in SCHEDULE_BUFFERS or key.startswith(("sqrt_", "log_", "posterior_", "lvlb")) else None
        if prefix is None:
            other.append(key)
            continue
        g = groups.setdefault(prefix, {"tensors": 0, "parameters": 0})
        g["tensors"] += 1
        g["parameters"] += tensor.numel()

    vae = hparams = None
    vae_sd = {k[len("first_stage_model."):]: v for k, v in state.items() if k.startswith("first_stage_model.")}
    if vae_sd and map_vae:
        hparams = _official_vae_hparams(vae_sd)
        vae = SpectralVAE(**hparams)
        ours = vae.state_dict()
        missing = sorted(set(ours) - set(vae_sd))
        unexpected = sorted(set(vae_sd) - set(ours))
        if missing or unexpected:
            raise ValueError(f"{path}: first_stage_model does not match the AutoencoderKL layout: "
                             f"missing {missing[:5]}, unexpected {unexpected[:5]}")
        for key, tensor in ours.items():
            if tuple(vae_sd[key].shape) != tuple(tensor.shape):
                raise ValueError(f"{path}: first_stage_model.{key} has shape {tuple(vae_sd[key].shape)}; expected {tuple(tensor.shape)}")
        vae.load_state_dict({k: v.float() for k, v in vae_sd.items()})
        vae.eval()

    schedule = {}
    if "betas" in state:
        betas = state["betas"].double()
        schedule = {"timesteps": len(betas), "beta_start": float(betas[0]), "beta_end": float(betas[-1])}
    scale = float(state["scale_factor"]) if "scale_factor" in state else None
    unmapped = {p: OFFICIAL_GROUPS[p] for p in groups if p in OFFICIAL_GROUPS and p != "first_stage_model."}
    return OfficialCheckpoint(groups=groups, vae=vae, vae_hparams=hparams, scale_factor=scale, schedule=schedule,
                              unmapped=unmapped, other_keys=other)
