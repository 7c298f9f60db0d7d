"""Improved unCLIP (Section III-B.1): Stable unCLIP image variation with our own sampling loop.

Components are those of diffusers' ``StableUnCLIPImg2ImgPipeline`` (CLIP vision encoder and image
processor, image normaliser + noising scheduler, CLIP tokenizer + text encoder, UNet with a
``projection`` class embedding, sampler, VAE), loaded from a local folder or a cached hub repo;
the pipeline's ``__call__`` is not used. For each proxy RGB ``x`` and guide ``g``:

* ``c_img = E_phi(x)`` - the (optionally blur-robust, Eq. 7) CLIP image embedding; it is scaled by
  the image normaliser, noised to ``noise_level`` by the noising scheduler (one draw per guide) and
  unscaled ("embedding-space noise");
* Eq. 5: the fused condition ``c = F(c_img, c_txt)``: the noised embedding concatenated with the
  sinusoidal embedding of ``noise_level`` enters the UNet as ``class_labels``; the positive
  prompt's text embedding ``c_txt`` enters through cross-attention;
* classifier-free guidance (``guidance_scale > 1``): the unconditional branch gets the NEGATIVE
  prompt's text embedding and an all-zero class label - the "dropped image embedding" Stable
  unCLIP was trained with (and the diffusers pipeline uses); ``eps = eps_u + s (eps_c - eps_u)``;
* Eq. 8: the proxy is VAE-encoded (latent mean), noised to ``t0 = strength * T`` and denoised by
  the sampler (Eq. 6); the latent is decoded and mapped back to the proxy's size. ``strength = 0``
  returns the VAE reconstruction; ``strength = 1`` starts from pure noise (the original unCLIP).

Proxies of any size are scaled (longer side = model size) and reflection-padded to the model's
square working size; guides are cropped and resized back.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from hiralign.errors import UserError
from hiralign.guides.clip_finetune import clip_pixel_values, image_embedding, load_clip_encoder
from hiralign.guides.resize import as_rgb_batch, fit_square, restore
from hiralign.guides.sdedit import check_strength, noise_to_start, start_timesteps, torch_generator
from hiralign.runtime import resolve_device

DEFAULT_MODEL = "stabilityai/stable-diffusion-2-1-unclip"
HUB_MODELS = (DEFAULT_MODEL, "stabilityai/stable-diffusion-2-1-unclip-small")
#: Our fixed prompts (the paper does not print its own; Section III-B.1 "Prompt Guidance").
DEFAULT_PROMPT = "a sharp, clean, detailed, high quality photograph"
DEFAULT_NEGATIVE_PROMPT = "blurry, noisy, low quality, jpeg artifacts, stripes, distorted, oversaturated"
SAMPLERS = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler}
#: Subfolder of a Stable unCLIP model folder -> class loading it.
COMPONENTS = {
    "tokenizer": CLIPTokenizer,
    "text_encoder": CLIPTextModel,
    "feature_extractor": CLIPImageProcessor,
    "image_encoder": CLIPVisionModelWithProjection,
    "image_normalizer": StableUnCLIPImageNormalizer,
    "image_noising_scheduler": DDPMScheduler,
    "unet": UNet2DConditionModel,
    "vae": AutoencoderKL,
    "scheduler": None,  # built from its config by the sampler class chosen (SAMPLERS)
}


class UnclipWeightsError(UserError, FileNotFoundError):
    """The Stable unCLIP weights are not available here; the message says how to provide them."""


def weights_howto(model_path, reason: str) -> str:
    """The error text: why the weights were not found and the three ways to provide them."""
    repo = model_path if isinstance(model_path, str) and model_path in HUB_MODELS else DEFAULT_MODEL
    folder = "/path/to/" + repo.split("/")[-1]
    return (
        f"unCLIP weights not available for model_path={model_path!r}: {reason}.\n"
        "Provide them in one of these ways:\n"
        f"  1. On a machine with internet access download the model folder (several GB):\n"
        f"       pip install -U huggingface_hub\n"
        f"       hf download {repo} --local-dir {folder} --exclude '*.ckpt' '*fp16*'\n"
        f"     (older huggingface_hub: huggingface-cli download ... with the same arguments), copy the folder\n"
        f"     here and pass model_path={folder}  (notebook: papermill ... -p generator unclip -p model_path {folder}).\n"
        f"  2. Point HF_HOME at a Hugging Face cache that already holds {repo}\n"
        f"     (searched now: {hub_cache_dir()}/models--{repo.replace('/', '--')}; HF_HUB_CACHE overrides $HF_HOME/hub).\n"
        f"  3. On a connected machine pass allow_download=True to fetch {repo} into that cache.\n"
        "Optionally add clip_path=/path/to/blur_robust_clip (see hiralign.guides.clip_finetune.blur_robust_encoder).\n"
        "Without weights use generator='local-ddpm' or generator='jitter'."
    )


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache as the environment says NOW (``HF_HUB_CACHE``, else ``$HF_HOME/hub``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    return Path(os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))).expanduser() / "hub"


def check_model_folder(folder: Path, model_path) -> Path:
    """``folder`` if it holds every Stable unCLIP component subfolder, else :class:`UnclipWeightsError`."""
    missing = [name for name in COMPONENTS if not (folder / name).is_dir()]
    if missing:
        raise UnclipWeightsError(weights_howto(model_path, f"folder {folder} lacks the component subfolders {missing}"))
    return folder


def is_hub_id(model_path: str) -> bool:
    """``owner/name`` (not an absolute, relative or home path)."""
    return model_path.count("/") == 1 and not model_path.startswith((".", "/", "~")) and all(model_path.split("/"))


def resolve_model_folder(model_path: str | Path | None, allow_download: bool = False) -> Path:
    """The local folder holding the model: ``model_path`` itself, or the hub cache snapshot of it.

    Never touches the network unless ``allow_download``; fails at once with :func:`weights_howto`.
    """
    if model_path is None or str(model_path).strip() == "":
        raise UnclipWeightsError(weights_howto(model_path, "no model_path given"))
    path = Path(str(model_path)).expanduser()
    if path.is_dir():
        return check_model_folder(path, model_path)
    if not is_hub_id(str(model_path)):
        raise UnclipWeightsError(weights_howto(model_path, f"{path} is not a folder"))
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot = snapshot_download(str(model_path), cache_dir=hub_cache_dir(), local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        if not allow_download:
            reason = f"it is not in the local Hugging Face cache {hub_cache_dir()} and allow_download=False"
            raise UnclipWeightsError(weights_howto(model_path, reason)) from None
        snapshot = snapshot_download(
            str(model_path),
            cache_dir=hub_cache_dir(),
            allow_patterns=["model_index.json"] + [f"{name}/*" for name in COMPONENTS],
            ignore_patterns=["*.ckpt", "*fp16*", "*.msgpack", "*.onnx*"],
        )
    return check_model_folder(Path(snapshot), model_path)


@dataclass
class UnclipComponents:
    """The Stable unCLIP parts our sampling loop uses."""

    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    feature_extractor: CLIPImageProcessor
    image_encoder: CLIPVisionModelWithProjection
    image_normalizer: StableUnCLIPImageNormalizer
    image_noising_scheduler: DDPMScheduler
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    scheduler: DDIMScheduler | DDPMScheduler

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def model_size(self) -> int:
        """The square image side the UNet was trained for (latent sample size x VAE factor)."""
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    def to(self, device: str | torch.device, dtype: torch.dtype = torch.float32) -> "UnclipComponents":
        for module in (self.text_encoder, self.image_encoder, self.unet, self.vae):
            module.to(device).eval().requires_grad_(False)
            if module.dtype != dtype:
                module.to(dtype)
        self.image_normalizer.to(device, dtype)
        return self


def load_unclip(
    model_path: str | Path | None = DEFAULT_MODEL,
    clip_path: str | Path | None = None,
    sampler: str = "ddim",
    device: str = "cpu",
    dtype: str = "float32",
    allow_download: bool = False,
) -> UnclipComponents:
    """Load Stable unCLIP from a folder or cached hub id; ``clip_path`` swaps in a finetuned encoder."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {sorted(SAMPLERS)}")
    folder = resolve_model_folder(model_path, allow_download=allow_download)
    parts = {name: cls.from_pretrained(folder, subfolder=name) for name, cls in COMPONENTS.items() if cls is not None}
    parts["scheduler"] = SAMPLERS[sampler].from_config(SAMPLERS[sampler].load_config(folder, subfolder="scheduler"))
    if clip_path:
        parts["image_encoder"], parts["feature_extractor"] = load_clip_encoder(clip_path)
        got, want = parts["image_encoder"].config.projection_dim, parts["image_normalizer"].config.embedding_dim
        if got != want:
            raise ValueError(f"encoder in {clip_path} embeds to {got} dims but {folder} expects {want} (another CLIP model?)")
    return UnclipComponents(**parts).to(resolve_device(device), getattr(torch, dtype))


@torch.no_grad()
def encode_text(c: UnclipComponents, prompts: list[str]) -> torch.Tensor:
    """``c_txt``: the text encoder's last hidden states of the padded prompts, ``(N, L, D)``."""
    tokens = c.tokenizer(prompts, padding="max_length", max_length=c.tokenizer.model_max_length, truncation=True, return_tensors="pt")
    return c.text_encoder(tokens.input_ids.to(c.device))[0]


def noise_level_embedding(c: UnclipComponents, noise_level: int, count: int) -> torch.Tensor:
    """Sinusoidal embedding of ``noise_level`` (the same width as the image embedding)."""
    levels = torch.full((count,), int(noise_level), device=c.device)
    width = c.image_normalizer.config.embedding_dim
    return get_timestep_embedding(levels, width, flip_sin_to_cos=True, downscale_freq_shift=0).to(c.dtype)


@torch.no_grad()
def noised_image_condition(c: UnclipComponents, embeds: torch.Tensor, noise_level: int, generator: torch.Generator) -> torch.Tensor:
    """Eq. 5 fusion input: ``[unscale(q(scale(E_phi(x)), noise_level)), emb(noise_level)]``, ``(N, 2E)``."""
    levels = torch.full((len(embeds),), int(noise_level), device=c.device)
    noise = torch.randn(embeds.shape, generator=generator).to(c.device, embeds.dtype)
    scaled = c.image_normalizer.scale(embeds)
    noised = c.image_normalizer.unscale(c.image_noising_scheduler.add_noise(scaled, noise, levels))
    return torch.cat([noised, noise_level_embedding(c, noise_level, len(embeds))], dim=1)


@torch.no_grad()
def encode_latents(c: UnclipComponents, rgb: torch.Tensor) -> torch.Tensor:
    """``z0``: VAE latent mean of ``(N, 3, S, S)`` RGB in [0, 1], times the VAE scaling factor."""
    posterior = c.vae.encode(rgb.to(c.device, c.dtype) * 2.0 - 1.0).latent_dist
    return posterior.mode() * c.vae.config.scaling_factor


@torch.no_grad()
def decode_latents(c: UnclipComponents, latents: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] (float32) from latents."""
    image = c.vae.decode(latents / c.vae.config.scaling_factor).sample
    return ((image.float() + 1.0) / 2.0).clamp(0.0, 1.0)


def check_sampling_args(c: UnclipComponents, noise_level: int, size: int) -> None:
    top = c.image_noising_scheduler.config.num_train_timesteps
    if not 0 <= int(noise_level) < top:
        raise ValueError(f"noise_level must lie in [0, {top - 1}] (image-noising scheduler steps); got {noise_level}")
    if size % c.vae_scale_factor:
        raise ValueError(f"resolution {size} must be a multiple of the VAE factor {c.vae_scale_factor}")


@torch.no_grad()
def guides_for_proxy(
    c: UnclipComponents,
    proxy: np.ndarray,
    n_guides: int,
    generator: torch.Generator,
    strength: float,
    noise_level: int,
    guidance_scale: float,
    steps: int,
    prompt: str,
    negative_prompt: str,
    size: int,
    eta: float = 0.0,
) -> np.ndarray:
    """``(G, 3, H, W)`` guides of one ``(3, H, W)`` proxy by the improved unCLIP loop."""
    rgb = torch.from_numpy(proxy)[None]
    guided = guidance_scale > 1.0
    # Eq. 5: image side (one embedding-noise draw per guide) and text side of the condition
    embeds = image_embedding(c.image_encoder, clip_pixel_values(rgb.to(c.device, c.dtype), c.feature_extractor))
    class_labels = noised_image_condition(c, embeds.repeat(n_guides, 1), noise_level, generator)
    text = encode_text(c, [prompt] * n_guides)
    if guided:  # unconditional branch: negative prompt + zero ("dropped") image condition
        text = torch.cat([encode_text(c, [negative_prompt] * n_guides), text])
        class_labels = torch.cat([torch.zeros_like(class_labels), class_labels])
    # Eq. 8: SDEdit start from the noised proxy latent
    canvas, placement = fit_square(rgb, size)
    z0 = encode_latents(c, canvas).repeat(n_guides, 1, 1, 1)
    timesteps = start_timesteps(c.scheduler, steps, strength)
    z = noise_to_start(c.scheduler, z0, timesteps, torch.randn(z0.shape, generator=generator).to(c.device, c.dtype), strength)
    step_kwargs = {"eta": eta} if isinstance(c.scheduler, DDIMScheduler) else {}
    for t in timesteps:  # Eq. 6: reverse transitions with the guided noise prediction
        z_in = c.scheduler.scale_model_input(torch.cat([z, z]) if guided else z, t)
        eps = c.unet(z_in, t, encoder_hidden_states=text, class_labels=class_labels).sample
        if guided:
            eps_uncond, eps_cond = eps.chunk(2)
            eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
        z = c.scheduler.step(eps, t, z, generator=generator, **step_kwargs).prev_sample
    guides = restore(decode_latents(c, z).cpu(), placement)
    return guides.clamp(0.0, 1.0).numpy()


def unclip_guides(
    proxy_rgbs,
    n_guides: int = 3,
    seed: int = 0,
    model_path: str | Path | None = DEFAULT_MODEL,
    clip_path: str | Path | None = None,
    strength: float = 0.5,
    noise_level: int = 100,
    guidance_scale: float = 7.5,
    steps: int = 50,
    prompt: str = DEFAULT_PROMPT,
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT,
    resolution: int | None = None,
    sampler: str = "ddim",
    eta: float = 0.0,
    device: str = "auto",
    dtype: str = "float32",
    allow_download: bool = False,
    components: UnclipComponents | None = None,
) -> np.ndarray:
    """``(N, G, 3, H, W)`` improved-unCLIP guides of ``(N, 3, H, W)`` proxy RGBs in [0, 1].

    ``strength`` (0..1) sets the SDEdit start step (Eq. 8; 0 returns the VAE reconstruction),
    ``noise_level`` (0..999) the embedding-space noise, ``guidance_scale`` the classifier-free
    guidance weight (<= 1 disables it and the negative prompt), ``resolution`` the square working
    size (default: the model's own). Pass preloaded ``components`` to skip loading.
    """
    proxies = as_rgb_batch(proxy_rgbs)
    check_strength(strength)
    c = components or load_unclip(model_path, clip_path, sampler=sampler, device=device, dtype=dtype, allow_download=allow_download)
    size = int(resolution or c.model_size)
    check_sampling_args(c, noise_level, size)
    return np.stack([
        guides_for_proxy(c, proxy, n_guides, torch_generator(seed, n), strength, noise_level, guidance_scale, steps, prompt, negative_prompt, size, eta)
        for n, proxy in enumerate(proxies)
    ]).astype(np.float32)

