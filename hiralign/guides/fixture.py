"""A real-layout FIXTURE of the two model folders the paper profile loads (tiny, random, not a model).

* :func:`write_tiny_unclip` writes a folder with the layout of the Hugging Face repository
  ``stabilityai/stable-diffusion-2-1-unclip`` (``data/models/stable-diffusion-2-1-unclip``): the same
  ``model_index.json`` (pipeline class, component names, libraries and classes), the same scheduler
  configs, the same component subfolders saved by ``StableUnCLIPImg2ImgPipeline.save_pretrained``,
  and components whose non-size settings are the real ones (block types and levels of the UNet and
  the VAE, ``projection`` class embedding fed by ``2 x`` the image-embedding width, linear
  projections in the transformers, head width rule, activations, CLIP preprocessing, VAE scaling
  factor, tokenizer files and special tokens). Only sizes differ: 64 px working size (latent 8 x 8,
  VAE factor 8 as in the real model), CLIP input 32 px, 16-D image embedding, 32-D text width,
  2 transformer layers, a hand-made BPE vocabulary of 91 tokens. The random VAE's latents are
  rescaled to the real latents' unit variance (:func:`calibrate_latent_scale`), so a strength in
  Eq. 8 mixes signal and noise as it does with the real model.
* :func:`write_blur_robust_clip` makes ``data/models/clip-blur-robust`` from such a folder with
  our own :func:`hiralign.guides.clip_finetune.blur_robust_encoder` (Eq. 7) on a few pictures that
  ship with scikit-image, for a handful of steps.

Weights are random: the guides are noise-like. The folders exist to run every code path that a
downloaded folder goes through (``hiralign.guides.unclip.load_unclip``, diffusers'
``from_pretrained``, ``clip_path=``) on a CPU in seconds. Each folder gets a ``README.md`` saying so.
"""
from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler, PNDMScheduler, StableUnCLIPImg2ImgPipeline, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
from PIL import Image
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from hiralign.guides.clip_finetune import blur_robust_encoder, list_images

REAL_REPO = "stabilityai/stable-diffusion-2-1-unclip"

# ----------------------------------------------------------------------------- facts of the real folder
# Where a fact comes from (public copies of the files; facts only, none of their code is used):
#   [index]  huggingface.co/stabilityai/stable-diffusion-2-1-unclip, main: model_index.json and
#            scheduler/scheduler_config.json, both from commit ee0170f "upload diffusers weights"
#            (707 and 470 bytes; our JSON of these values has exactly those sizes);
#            image_normalizer/config.json (embedding_dim 1024).
#   [yaml]   github.com/Stability-AI/stablediffusion configs/stable-diffusion/v2-1-stable-unclip-h-inference.yaml
#            (the checkpoint's own config: unet, first-stage VAE, noise augmentation), mapped to diffusers
#            names the way diffusers' convert_from_ckpt.py does (head dims = channels // num_head_channels,
#            class_embed_type "projection" with adm_in_channels, DDPMScheduler(timesteps, beta_schedule)).
#   [ddpm]   the image-noising scheduler: [yaml] gives 1000 steps and squaredcos_cap_v2; the other keys are
#            DDPMScheduler's defaults at diffusers 0.15.0.dev0 (the version that wrote the folder); the JSON
#            of these values has the 424 bytes the hub lists for image_noising_scheduler/scheduler_config.json.
#   [vision] the repository's image_encoder/config.json as copied with _name_or_path
#            "stabilityai/stable-diffusion-2-1-unclip" (huggingface.co/ckpt/zero123plus-v1.1 vision_encoder).
#   [sd2]    the SD 2.x text encoder / tokenizer this model was finetuned with (stabilityai/stable-diffusion-2
#            text_encoder/config.json, tokenizer/tokenizer_config.json); not read from the unCLIP repo itself.
#   [clip]   feature_extractor/preprocessor_config.json is CLIPImageProcessor() with its defaults (what the
#            converter writes; that JSON has the 466 bytes the hub lists).
#   [tests]  diffusers tests/pipelines/stable_unclip/test_stable_unclip_img2img.py (upcast_attention=True, as in
#            SD 2.1's unet); the unCLIP repo's unet/config.json (edited in commit c4d145c) was not readable here.

#: model_index.json [index]: the pipeline class ...
REAL_PIPELINE = "StableUnCLIPImg2ImgPipeline"
#: ... and per component subfolder (library, class) [index]. The scheduler is a PNDMScheduler there, not DDIM;
#: hiralign builds its own sampler (DDIM or DDPM) from that config (hiralign.guides.unclip.SAMPLERS).
REAL_COMPONENTS = {
    "feature_extractor": ("transformers", "CLIPImageProcessor"),
    "image_encoder": ("transformers", "CLIPVisionModelWithProjection"),
    "image_noising_scheduler": ("diffusers", "DDPMScheduler"),
    "image_normalizer": ("stable_diffusion", "StableUnCLIPImageNormalizer"),
    "scheduler": ("diffusers", "PNDMScheduler"),
    "text_encoder": ("transformers", "CLIPTextModel"),
    "tokenizer": ("transformers", "CLIPTokenizer"),
    "unet": ("diffusers", "UNet2DConditionModel"),
    "vae": ("diffusers", "AutoencoderKL"),
}
#: scheduler/scheduler_config.json [index] (every key of the file but _diffusers_version). It was written by
#: converting a DDIM config, so it carries DDIM keys (clip_sample, thresholding, ...) that PNDM itself ignores.
REAL_SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "clip_sample_range": 1.0,
    "dynamic_thresholding_ratio": 0.995,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "thresholding": False,
    "trained_betas": None,
}
#: image_noising_scheduler/scheduler_config.json [yaml] + [ddpm].
REAL_IMAGE_NOISING_SCHEDULER_CONFIG = {
    "_class_name": "DDPMScheduler",
    "beta_end": 0.02,
    "beta_schedule": "squaredcos_cap_v2",
    "beta_start": 0.0001,
    "clip_sample": True,
    "clip_sample_range": 1.0,
    "dynamic_thresholding_ratio": 0.995,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "thresholding": False,
    "trained_betas": None,
    "variance_type": "fixed_small",
}
#: The real component settings. Keys in SIZE_KEYS are shrunk in the fixture; every other key is kept.
REAL_UNET = {  # [yaml] via the converter's mapping, upcast_attention [tests]
    "sample_size": 96,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "transformer_layers_per_block": 1,
    "attention_head_dim": (5, 10, 20, 20),  # block channels // 64 (num_head_channels)
    "cross_attention_dim": 1024,
    "use_linear_projection": True,
    "upcast_attention": True,
    "class_embed_type": "projection",
    "projection_class_embeddings_input_dim": 2048,  # 2 x 1024: noised image embedding + noise-level embedding
    "norm_num_groups": 32,
    "act_fn": "silu",
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}
REAL_HEAD_CHANNELS = 64  # [yaml] num_head_channels: attention_head_dim = block channels // this
REAL_VAE = {  # [yaml] first_stage_config + scale_factor
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "sample_size": 768,
    "scaling_factor": 0.18215,
}
REAL_IMAGE_ENCODER = {  # [vision] (OpenCLIP ViT-H/14)
    "hidden_act": "gelu",
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 14,
    "projection_dim": 1024,
    "num_channels": 3,
    "layer_norm_eps": 1e-05,
}
REAL_TEXT_ENCODER = {  # [sd2]; bos/eos/pad ids are those legacy config values (the vocabulary's are 49406/49407)
    "hidden_act": "gelu",
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 23,
    "num_attention_heads": 16,
    "max_position_embeddings": 77,
    "projection_dim": 512,
    "vocab_size": 49408,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
    "layer_norm_eps": 1e-05,
}
REAL_IMAGE_NORMALIZER = {"embedding_dim": 1024}  # [index], = REAL_IMAGE_ENCODER projection_dim
REAL_FEATURE_EXTRACTOR = {  # [clip]
    "size": {"shortest_edge": 224},
    "crop_size": {"height": 224, "width": 224},
    "do_resize": True,
    "do_center_crop": True,
    "do_rescale": True,
    "do_normalize": True,
    "do_convert_rgb": True,
    "resample": 3,  # bicubic
    "rescale_factor": 1 / 255,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}
#: [sd2] tokenizer_config.json / special_tokens_map.json (pad "!": id 0 of CLIP's vocabulary, as OpenCLIP pads with 0;
#: SD 2.x's special_tokens_map.json with these values has the 460 bytes the hub lists for the unCLIP repo's).
REAL_TOKENIZER = {"model_max_length": 77, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                  "unk_token": "<|endoftext|>", "pad_token": "!"}

# ----------------------------------------------------------------------------- the fixture's sizes
EMBED_DIM = 16  # CLIP image-embedding (projection) width; the real one is 1024
TEXT_DIM = 32  # text hidden size = UNet cross-attention width; the real one is 1024
TINY_HEAD_CHANNELS = 16  # attention head width in the UNet (real: 64)
TINY_UNET = {
    **REAL_UNET,
    "sample_size": 8,
    "block_out_channels": (32, 32, 64, 64),
    "attention_head_dim": tuple(c // TINY_HEAD_CHANNELS for c in (32, 32, 64, 64)),
    "cross_attention_dim": TEXT_DIM,
    "projection_class_embeddings_input_dim": 2 * EMBED_DIM,
}
TINY_VAE = {**REAL_VAE, "block_out_channels": (32, 32, 64, 64), "sample_size": 64}
TINY_IMAGE_ENCODER = {**REAL_IMAGE_ENCODER, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                      "num_attention_heads": 4, "image_size": 32, "patch_size": 4, "projection_dim": EMBED_DIM}
TINY_TEXT_ENCODER = {**REAL_TEXT_ENCODER, "hidden_size": TEXT_DIM, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "projection_dim": TEXT_DIM}  # vocab_size: that of the tiny vocabulary
TINY_CLIP_SIZE = 32  # feature extractor shortest edge and crop (real: 224)
#: Settings that are sizes (or a vocabulary) and so differ from the real ones; all others are equal.
SIZE_KEYS = frozenset({
    "sample_size", "block_out_channels", "attention_head_dim", "cross_attention_dim", "projection_class_embeddings_input_dim",
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size", "patch_size",
    "projection_dim", "vocab_size", "embedding_dim", "size", "crop_size",
})
#: BPE merges of the tiny vocabulary (each merge's result is in the vocabulary), so multi-letter tokens exist.
MERGES = [("b", "l"), ("bl", "u"), ("n", "o"), ("i", "s"), ("e", "d</w>"), ("h", "i"), ("g", "h</w>")]
#: Natural pictures bundled with scikit-image (no download) for the blur-robust finetuning.
NATURAL_IMAGES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "camera")
#: Blur-robust finetuning of the fixture: a few seconds on a CPU (Eq. 7; the real run: BlurFinetuneConfig()).
FIXTURE_FINETUNE = {"steps": 4, "batch_size": len(NATURAL_IMAGES), "learning_rate": 1e-4}

README = """# FIXTURE - not a model

This folder is a test fixture written by `hiralign.guides.fixture.{function}` (seed {seed}).
{what}

It is tiny and randomly initialised: it generates noise, not images, and none of its numbers mean
anything. Use it to exercise the code paths a real folder goes through, never for results.
"""
WHAT_UNCLIP = f"""It has the layout of the Hugging Face repository `{REAL_REPO}`: the same
`model_index.json` (pipeline `{REAL_PIPELINE}`, component names and classes), the same scheduler
configs and the same component subfolders as written by diffusers' `save_pretrained`. The components
keep the real non-size settings; their sizes are tiny (64 px working size, 16-D CLIP embedding).
The real folder is several GB; see `hiralign.guides.unclip.weights_howto` for how to get it."""
WHAT_CLIP = """It has the layout of a blur-robust CLIP encoder folder (`data/models/clip-blur-robust`):
it was made by `hiralign.guides.clip_finetune.blur_robust_encoder` (Eq. 7) from the image encoder of
the tiny unCLIP fixture `{base}`, finetuned for {steps} steps on {n} {source}.
Load it with `load_unclip(model_path, clip_path=<this folder>)`."""


def write_readme(folder: Path, function: str, seed: int, what: str) -> Path:
    path = folder / "README.md"
    path.write_text(README.format(function=function, seed=seed, what=what))
    return path


# ----------------------------------------------------------------------------- tiny components
def tiny_vocabulary() -> dict[str, int]:
    """A minimal CLIP BPE vocabulary laid out like CLIP's: "!" first (id 0), the two special tokens last."""
    symbols = list("!" + string.ascii_lowercase + string.digits + ",.-'")
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in MERGES] + ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}


def tiny_tokenizer() -> CLIPTokenizer:
    """The tiny vocabulary with the real tokenizer's special tokens (pad "!") and 77-token length."""
    return CLIPTokenizer(vocab=tiny_vocabulary(), merges=list(MERGES), **REAL_TOKENIZER)


def write_tokenizer_as_real(folder: Path, tokenizer: CLIPTokenizer) -> None:
    """Give ``tokenizer/`` the real repository's files: vocab.json, merges.txt, special_tokens_map.json, tokenizer_config.json.

    transformers >= 5 saves one ``tokenizer.json`` instead of the vocabulary and merges files that the
    real folder (written by transformers 4.2x) holds; a downloaded folder is loaded by converting those,
    so the fixture keeps them and not ``tokenizer.json``.
    """
    (folder / "vocab.json").write_text(json.dumps(tiny_vocabulary()))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in MERGES) + "\n")
    special = {name: getattr(tokenizer, name) for name in ("bos_token", "eos_token", "pad_token", "unk_token")}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2, sort_keys=True) + "\n")
    (folder / "tokenizer.json").unlink(missing_ok=True)


def use_real_class_names(folder: Path) -> None:
    """Name the real classes where this environment saved a substitute.

    Without torchvision, transformers >= 5 builds ``CLIPImageProcessor`` as ``CLIPImageProcessorPil`` and
    ``save_pretrained`` records that name; the real ``model_index.json`` says ``CLIPImageProcessor``, which
    every transformers version loads (as its PIL or torchvision backend).
    """
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index["feature_extractor"] = list(REAL_COMPONENTS["feature_extractor"])
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    processor_path = folder / "feature_extractor" / "preprocessor_config.json"
    processor = json.loads(processor_path.read_text())
    processor["image_processor_type"] = REAL_COMPONENTS["feature_extractor"][1]
    processor_path.write_text(json.dumps(processor, indent=2, sort_keys=True) + "\n")


def tiny_vision_encoder(seed: int = 0) -> CLIPVisionModelWithProjection:
    """A 2-layer CLIP ViT (real activation and norms) on 32 x 32 inputs with a 16-D projected embedding."""
    torch.manual_seed(seed)
    return CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_IMAGE_ENCODER)).eval()


def tiny_image_processor() -> CLIPImageProcessor:
    """The real CLIP preprocessing (bicubic shortest-edge resize, centre crop, CLIP mean/std) at 32 px."""
    real = {k: v for k, v in REAL_FEATURE_EXTRACTOR.items() if k not in SIZE_KEYS}
    return CLIPImageProcessor(size={"shortest_edge": TINY_CLIP_SIZE}, crop_size={"height": TINY_CLIP_SIZE, "width": TINY_CLIP_SIZE}, **real)


def tiny_text_encoder(vocab_size: int, seed: int) -> CLIPTextModel:
    torch.manual_seed(seed)
    return CLIPTextModel(CLIPTextConfig(**{**TINY_TEXT_ENCODER, "vocab_size": vocab_size})).eval()


def tiny_image_normalizer(seed: int) -> StableUnCLIPImageNormalizer:
    """The normaliser with random (not 0 / 1) CLIP statistics, so scaling and unscaling are exercised."""
    normalizer = StableUnCLIPImageNormalizer(embedding_dim=EMBED_DIM)
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        normalizer.mean.copy_(0.1 * torch.randn(normalizer.mean.shape, generator=rng))
        normalizer.std.copy_(0.5 + torch.rand(normalizer.std.shape, generator=rng))
    return normalizer.eval()


def pictures_tensor(side: int, names=NATURAL_IMAGES) -> torch.Tensor:
    """The scikit-image pictures as ``(N, 3, side, side)`` float32 in [0, 1]."""
    arrays = [np.asarray(natural_picture(name, side), dtype=np.float32) / 255.0 for name in names]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def calibrate_latent_scale(vae: AutoencoderKL) -> AutoencoderKL:
    """Scale the random VAE's latents to the real VAE's statistics, leaving its reconstructions unchanged.

    The real ``scaling_factor`` (0.18215) is 1 / the std of the real VAE's latents, so the scaled
    latents have unit variance and Eq. 8's noise at a given strength meets a signal of that size. A
    random VAE's latents are ~100 x smaller; here the latent mean is multiplied by
    ``k = (1 / scaling_factor) / std`` (std over the scikit-image pictures) and the decoder's input
    divided by ``k``.
    """
    x = pictures_tensor(vae.config.sample_size) * 2.0 - 1.0
    k = (1.0 / vae.config.scaling_factor) / float(vae.encode(x).latent_dist.mean.std())
    n = vae.config.latent_channels  # quant_conv gives [mean, logvar]: scale the mean half only
    vae.quant_conv.weight[:n] *= k
    vae.quant_conv.bias[:n] *= k
    vae.post_quant_conv.weight /= k
    return vae


def scheduler_from_real(cls, real: dict):
    """A scheduler of ``cls`` carrying every key of the real config (also those ``cls`` does not take)."""
    values = {k: v for k, v in real.items() if not k.startswith("_")}
    scheduler = cls.from_config(values)
    scheduler.register_to_config(**{k: v for k, v in values.items() if k not in scheduler.config})
    return scheduler


def write_tiny_unclip(folder: Path | str, seed: int = 0) -> Path:
    """Write a tiny random Stable unCLIP img2img folder in the layout of ``stabilityai/stable-diffusion-2-1-unclip``.

    The folder (created if needed) gets ``model_index.json``, the nine component subfolders written
    by ``StableUnCLIPImg2ImgPipeline.save_pretrained`` and a ``README.md`` marking it as a FIXTURE.
    Same ``seed``, same weights. Returns ``folder``.
    """
    folder = Path(folder)
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_UNET)
    torch.manual_seed(seed + 1)
    vae = calibrate_latent_scale(AutoencoderKL(**TINY_VAE))
    pipe = StableUnCLIPImg2ImgPipeline(
        feature_extractor=tiny_image_processor(),
        image_encoder=tiny_vision_encoder(seed + 2),
        image_normalizer=tiny_image_normalizer(seed + 3),
        image_noising_scheduler=scheduler_from_real(DDPMScheduler, REAL_IMAGE_NOISING_SCHEDULER_CONFIG),
        tokenizer=tokenizer,
        text_encoder=tiny_text_encoder(len(tokenizer), seed + 4),
        unet=unet.eval(),
        scheduler=scheduler_from_real(PNDMScheduler, REAL_SCHEDULER_CONFIG),
        vae=vae.eval(),
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    write_tokenizer_as_real(folder / "tokenizer", tokenizer)
    use_real_class_names(folder)
    write_readme(folder, "write_tiny_unclip", seed, WHAT_UNCLIP)
    return folder


# ----------------------------------------------------------------------------- blur-robust CLIP
def natural_picture(name: str, side: int = 64) -> Image.Image:
    """A scikit-image picture, centre square, RGB, ``side`` px."""
    from skimage import data as skdata

    arr = np.asarray(getattr(skdata, name)())
    arr = np.repeat(arr[..., None], 3, -1) if arr.ndim == 2 else arr[..., :3]
    h, w = arr.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    img = Image.fromarray(np.ascontiguousarray(arr[top:top + s, left:left + s]).astype(np.uint8))
    return img.resize((side, side), Image.Resampling.BICUBIC)


def write_natural_images(folder: Path, names=NATURAL_IMAGES, side: int = 64) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        natural_picture(name, side).save(folder / f"{name}.png")
    return folder


def write_blur_robust_clip(unclip_folder: Path | str, out_folder: Path | str, seed: int = 0, images: Path | str | None = None) -> Path:
    """Make the blur-robust CLIP folder of a (fixture) unCLIP folder with our own Eq. 7 finetuning.

    ``images``: a folder of pictures; default the six scikit-image pictures of :data:`NATURAL_IMAGES`
    (written to a temporary folder). The result is what ``blur_robust_encoder`` writes (encoder,
    processor, ``blur_finetune.json``) plus a ``README.md`` marking it as a FIXTURE. Returns ``out_folder``.
    """
    out_folder = Path(out_folder)
    config = {**FIXTURE_FINETUNE, "seed": seed}
    with tempfile.TemporaryDirectory() as scratch:
        image_folder = Path(images) if images is not None else write_natural_images(Path(scratch) / "images")
        n_images = len(list_images(image_folder))
        config["batch_size"] = min(config["batch_size"], n_images)
        blur_robust_encoder(unclip_folder, image_folder, out_folder, device="cpu", progress=False, **config)
    source = f"pictures from {image_folder}" if images is not None else "pictures bundled with scikit-image"
    what = WHAT_CLIP.format(base=Path(unclip_folder).name, steps=config["steps"], n=n_images, source=source)
    write_readme(out_folder, "write_blur_robust_clip", seed, what)
    return out_folder
