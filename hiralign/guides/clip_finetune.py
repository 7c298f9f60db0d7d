"""The CLIP vision encoder ``E_phi`` of unCLIP: preprocessing, image embedding, blur-robust finetuning.

Eq. 7: the encoder is finetuned so that the embedding of a Gaussian-blurred image lands on the
embedding the *frozen* original encoder gives the clean image,

    L = E_{x, sigma} || E_phi(blur_sigma(x)) - E_phi0(x) ||_2^2 ,

averaged over a batch of images from any folder of RGB pictures (COCO 2017 in the paper) and over
blur levels ``sigma`` drawn from a fixed list. A level of 0 (the default list contains one) keeps
clean images where the original encoder put them, so the conditioning of sharp proxies is not
disturbed. Blur is applied at the encoder's input resolution, ``sigma`` in input pixels.
The embedding is the projected ``image_embeds`` of ``CLIPVisionModelWithProjection`` - the vector
Stable unCLIP conditions on.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

from hiralign.guides.resize import resize

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
FINETUNE_INFO = "blur_finetune.json"


def clip_input_size(processor: CLIPImageProcessor) -> tuple[int, int, int]:
    """(shortest-edge resize target, crop height, crop width) from the processor's config.

    Sizes may be plain ints, dicts or transformers' ``SizeDict`` (all answer ``.get``).
    """

    def field(size, key):
        return size if isinstance(size, int) else size.get(key)

    crop_h, crop_w = field(processor.crop_size, "height"), field(processor.crop_size, "width")
    edge = field(processor.size, "shortest_edge") or min(field(processor.size, "height"), field(processor.size, "width"))
    return int(edge), int(crop_h), int(crop_w)


def clip_pixel_values(rgb: torch.Tensor, processor: CLIPImageProcessor) -> torch.Tensor:
    """CLIP input from ``(N, 3, H, W)`` RGB in [0, 1]: shortest-edge resize, centre crop, normalise.

    The same steps as ``CLIPImageProcessor`` but in torch, batched, on any device.
    """
    edge, ch, cw = clip_input_size(processor)
    height, width = rgb.shape[-2:]
    scale = edge / min(height, width)
    x = resize(rgb, max(ch, round(height * scale)), max(cw, round(width * scale)))
    top, left = (x.shape[-2] - ch) // 2, (x.shape[-1] - cw) // 2
    x = x[..., top:top + ch, left:left + cw]
    mean = torch.tensor(processor.image_mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def image_embedding(encoder: CLIPVisionModelWithProjection, pixel_values: torch.Tensor) -> torch.Tensor:
    """``E_phi(x)``: the projected CLIP image embedding, ``(N, projection_dim)``."""
    return encoder(pixel_values=pixel_values.to(encoder.dtype)).image_embeds


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(N, C, H, W)`` (kernel radius 3 sigma, reflected borders)."""
    if sigma <= 0:
        return x
    radius = max(1, math.ceil(3.0 * sigma))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def list_images(folder: Path | str) -> list[Path]:
    """Image files (png/jpg/bmp/tif/webp) under ``folder``, recursively, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {folder}")
    return paths


def load_rgb(path: Path | str) -> torch.Tensor:
    """An image file as float32 ``(3, H, W)`` in [0, 1]."""
    with Image.open(path) as img:
        arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(arr, -1, 0)))


def load_clip_inputs(paths: list[Path], processor: CLIPImageProcessor, flips: np.ndarray | None = None) -> torch.Tensor:
    """CLIP inputs ``(N, 3, h, w)`` of image files, optionally horizontally flipped per image."""
    batch = []
    for i, path in enumerate(paths):
        x = clip_pixel_values(load_rgb(path)[None], processor)
        batch.append(x.flip(-1) if flips is not None and flips[i] else x)
    return torch.cat(batch)


def blur_alignment_loss(encoder, target_embeds: torch.Tensor, pixel_values: torch.Tensor, sigmas) -> torch.Tensor:
    """Eq. 7: mean over the batch of ``||E_phi(blur_sigma_i(x_i)) - E_phi0(x_i)||^2`` (one sigma per image)."""
    sigmas = np.broadcast_to(np.asarray(sigmas, dtype=np.float64), (len(pixel_values),))
    blurred = torch.cat([gaussian_blur(pixel_values[i:i + 1], float(s)) for i, s in enumerate(sigmas)])
    return ((image_embedding(encoder, blurred) - target_embeds) ** 2).sum(dim=-1).mean()


@torch.no_grad()
def evaluate_blur_alignment(encoder, frozen, pixel_values: torch.Tensor, sigmas) -> float:
    """Eq. 7 on fixed images, averaged over every blur level in ``sigmas`` (e.g. held-out images)."""
    targets = image_embedding(frozen, pixel_values)
    return float(np.mean([blur_alignment_loss(encoder, targets, pixel_values, s).item() for s in sigmas]))


@dataclass(frozen=True)
class BlurFinetuneConfig:
    """Settings of the blur-robust finetuning (the paper gives none; these are our choices)."""

    blur_sigmas: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0)  # Gaussian sigmas in encoder-input pixels
    steps: int = 2000
    batch_size: int = 16
    learning_rate: float = 1e-5
    weight_decay: float = 0.0
    seed: int = 0


@dataclass
class BlurFinetuneResult:
    """The finetuned encoder, its processor, the config used and the per-step training losses."""

    encoder: CLIPVisionModelWithProjection
    processor: CLIPImageProcessor
    config: BlurFinetuneConfig
    losses: list[float] = field(default_factory=list)


def finetune_blur_robust(
    encoder: CLIPVisionModelWithProjection,
    processor: CLIPImageProcessor,
    images: Path | str | list[Path],
    config: BlurFinetuneConfig = BlurFinetuneConfig(),
    device: str = "cpu",
    progress: bool = False,
) -> BlurFinetuneResult:
    """Finetune a copy of ``encoder`` on the images of a folder (or a list of files) by Eq. 7."""
    paths = list_images(images) if isinstance(images, (str, Path)) else [Path(p) for p in images]
    rng = np.random.default_rng(config.seed)
    frozen = copy.deepcopy(encoder).to(device).eval().requires_grad_(False)
    student = copy.deepcopy(encoder).to(device).train().requires_grad_(True)
    optimiser = torch.optim.AdamW(student.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    losses = []
    for _ in tqdm(range(config.steps), disable=not progress, desc="blur-robust CLIP"):
        chosen = rng.choice(len(paths), size=min(config.batch_size, len(paths)), replace=False)
        pixels = load_clip_inputs([paths[i] for i in chosen], processor, flips=rng.random(len(chosen)) < 0.5).to(device)
        with torch.no_grad():
            targets = image_embedding(frozen, pixels)
        sigmas = rng.choice(np.asarray(config.blur_sigmas, dtype=np.float64), size=len(chosen))
        loss = blur_alignment_loss(student, targets, pixels, sigmas)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return BlurFinetuneResult(encoder=student.eval().requires_grad_(False), processor=processor, config=config, losses=losses)


def save_finetuned_encoder(result: BlurFinetuneResult, folder: Path | str) -> Path:
    """Save encoder + processor (``save_pretrained``) and the finetuning record to ``folder``."""
    folder = Path(folder)
    result.encoder.save_pretrained(folder)
    result.processor.save_pretrained(folder)
    (folder / FINETUNE_INFO).write_text(json.dumps({"config": asdict(result.config), "losses": result.losses}))
    return folder


def load_clip_encoder(folder: Path | str) -> tuple[CLIPVisionModelWithProjection, CLIPImageProcessor]:
    """A CLIP vision encoder and its processor from a finetuned folder or an unCLIP model folder.

    Accepts the folder written by :func:`save_finetuned_encoder` (both in one place) or a Stable
    unCLIP folder (``image_encoder/`` + ``feature_extractor/`` subfolders).
    """
    folder = Path(folder)
    model_dir = folder / "image_encoder" if (folder / "image_encoder").is_dir() else folder
    proc_dir = folder / "feature_extractor" if (folder / "feature_extractor").is_dir() else folder
    if not (model_dir / "config.json").exists():
        raise FileNotFoundError(f"no CLIP vision encoder (config.json) in {model_dir}")
    return CLIPVisionModelWithProjection.from_pretrained(model_dir), CLIPImageProcessor.from_pretrained(proc_dir)


def blur_robust_encoder(base: Path | str, image_folder: Path | str, out_folder: Path | str, device: str = "cpu", progress: bool = True, **config) -> BlurFinetuneResult:
    """Load ``base`` (unCLIP folder or encoder folder), finetune on ``image_folder`` by Eq. 7, save to ``out_folder``.

    Pass ``clip_path=out_folder`` to the unCLIP generator to use the result.
    """
    encoder, processor = load_clip_encoder(base)
    if "blur_sigmas" in config:
        config["blur_sigmas"] = tuple(config["blur_sigmas"])
    result = finetune_blur_robust(encoder, processor, image_folder, BlurFinetuneConfig(**config), device=device, progress=progress)
    save_finetuned_encoder(result, out_folder)
    return result
