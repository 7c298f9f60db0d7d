"""A tiny, randomly initialised Stable unCLIP model folder built from configs (no network).

``write_tiny_unclip(folder)`` writes a CLIP BPE tokenizer (vocab.json + merges.txt) by hand,
builds tiny CLIP text / vision encoders, a UNet2DConditionModel with a ``projection`` class
embedding fed by ``2 * image-embedding`` dims (noised embedding + noise-level embedding), a tiny
AutoencoderKL, the image normaliser and both schedulers, assembles diffusers'
``StableUnCLIPImg2ImgPipeline`` only to ``save_pretrained`` the standard folder layout, and returns
the folder - which tests then load through ``hiralign.guides.unclip.load_unclip``.
Working size: 16 x 16 px (latent 8 x 8, VAE factor 2); CLIP input 32 x 32; embeddings 16-D.
"""
from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableUnCLIPImg2ImgPipeline, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

EMBED_DIM = 16  # CLIP image-embedding (projection) width
TEXT_DIM = 32  # text hidden size = UNet cross-attention width
MAX_TOKENS = 16
#: A few BPE merges so multi-letter tokens exist (each merge's result is in the vocabulary).
MERGES = [("b", "l"), ("bl", "u"), ("n", "o"), ("i", "s"), ("e", "d</w>"), ("h", "i"), ("g", "h</w>")]


def write_tokenizer(folder: Path) -> Path:
    """A minimal CLIP BPE tokenizer: characters (+ word-final forms), merges, special tokens."""
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(string.ascii_lowercase + string.digits + ",.-'!")
    tokens = ["<|startoftext|>", "<|endoftext|>"] + symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in MERGES]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in MERGES) + "\n")
    return folder


def tiny_vision_encoder(seed: int = 0) -> CLIPVisionModelWithProjection:
    """A 2-layer CLIP ViT on 32 x 32 inputs (4 x 4 patches) with a 16-D projected embedding."""
    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=4, projection_dim=EMBED_DIM, num_channels=3,
    )
    return CLIPVisionModelWithProjection(config).eval()


def tiny_image_processor() -> CLIPImageProcessor:
    return CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


def write_tiny_unclip(folder: Path | str, seed: int = 0) -> Path:
    """Build and save the tiny Stable unCLIP folder; returns its path."""
    folder = Path(folder)
    tokenizer_dir = write_tokenizer(folder / "_tokenizer_src")
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, model_max_length=MAX_TOKENS)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MAX_TOKENS, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    ))
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_DIM, attention_head_dim=4, norm_num_groups=16,
        class_embed_type="projection", projection_class_embeddings_input_dim=2 * EMBED_DIM,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=16, sample_size=16,
    )
    pipe = StableUnCLIPImg2ImgPipeline(
        feature_extractor=tiny_image_processor(),
        image_encoder=tiny_vision_encoder(seed + 1),
        image_normalizer=StableUnCLIPImageNormalizer(embedding_dim=EMBED_DIM),
        image_noising_scheduler=DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2"),
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        unet=unet,
        scheduler=DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                prediction_type="v_prediction", clip_sample=False, set_alpha_to_one=False, steps_offset=1),
        vae=vae,
    )
    pipe.save_pretrained(folder / "model")
    return folder / "model"
