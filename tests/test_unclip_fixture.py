"""The real-layout fixture of the Stable unCLIP folder and of the blur-robust CLIP folder (``hiralign.guides.fixture``).

Both folders are built once for the module: a tiny random folder in the layout of
``stabilityai/stable-diffusion-2-1-unclip`` and its blur-robust CLIP folder made by our own Eq. 7
finetuning. They are checked against the facts of the real repository recorded in the fixture
module, then loaded the ways a user's downloaded folders are.
"""
from __future__ import annotations

import hashlib
import inspect
import json

import numpy as np
import pytest
import torch

from hiralign.guides import generate_guides
from hiralign.guides.fixture import (
    EMBED_DIM,
    FIXTURE_FINETUNE,
    REAL_COMPONENTS,
    REAL_FEATURE_EXTRACTOR,
    REAL_HEAD_CHANNELS,
    REAL_IMAGE_ENCODER,
    REAL_IMAGE_NOISING_SCHEDULER_CONFIG,
    REAL_PIPELINE,
    REAL_SCHEDULER_CONFIG,
    REAL_TEXT_ENCODER,
    REAL_TOKENIZER,
    REAL_UNET,
    REAL_VAE,
    SIZE_KEYS,
    TINY_HEAD_CHANNELS,
    write_blur_robust_clip,
    write_tiny_unclip,
)
from hiralign.guides.unclip import load_unclip

#: Files ``save_pretrained`` writes per component: the real repository's fp32 safetensors layout (it also
#: holds ``.bin`` and ``fp16`` copies and the original ``.ckpt`` files, which a download leaves out or ignores).
SAVED_FILES = {
    "feature_extractor": {"preprocessor_config.json"},
    "image_encoder": {"config.json", "model.safetensors"},
    "image_noising_scheduler": {"scheduler_config.json"},
    "image_normalizer": {"config.json", "diffusion_pytorch_model.safetensors"},
    "scheduler": {"scheduler_config.json"},
    "text_encoder": {"config.json", "model.safetensors"},
    "tokenizer": {"merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json"},
    "unet": {"config.json", "diffusion_pytorch_model.safetensors"},
    "vae": {"config.json", "diffusion_pytorch_model.safetensors"},
}
CLIP_FILES = {"config.json", "model.safetensors", "preprocessor_config.json", "blur_finetune.json", "README.md"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared CPU: one thread is fastest
    root = tmp_path_factory.mktemp("models")
    model = write_tiny_unclip(root / "stable-diffusion-2-1-unclip")
    clip = write_blur_robust_clip(model, root / "clip-blur-robust")
    yield model, clip
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model(folders):
    return folders[0]


def read_json(path):
    return json.loads(path.read_text())


def plain(value):
    """Tuples as lists (JSON has no tuples)."""
    return [plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def assert_real_settings(config: dict, real: dict, name: str):
    """Every non-size setting of ``real`` is in ``config`` with the same value."""
    kept = {k for k in real if k not in SIZE_KEYS}
    assert kept, name
    wrong = {k: (config.get(k), real[k]) for k in kept if plain(config.get(k)) != plain(real[k])}
    assert not wrong, f"{name}: settings differ from the real repository's (got, real): {wrong}"


# ----------------------------------------------------------------------------- layout
def test_model_index_names_the_real_pipeline_components_and_classes(model):
    index = read_json(model / "model_index.json")
    assert index["_class_name"] == REAL_PIPELINE
    assert {k: tuple(v) for k, v in index.items() if not k.startswith("_")} == REAL_COMPONENTS


def test_scheduler_configs_carry_every_real_value(model):
    from diffusers import DDPMScheduler, PNDMScheduler

    for sub, real, cls in (("scheduler", REAL_SCHEDULER_CONFIG, PNDMScheduler),
                           ("image_noising_scheduler", REAL_IMAGE_NOISING_SCHEDULER_CONFIG, DDPMScheduler)):
        config = read_json(model / sub / "scheduler_config.json")
        assert {k: config.get(k) for k in real} == real, sub
        # keys the real file lacks are settings newer diffusers versions save, at the class's defaults
        defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()}
        extra = {k: v for k, v in config.items() if k not in real and k != "_diffusers_version"}
        assert all(k in defaults and plain(defaults[k]) == v for k, v in extra.items()), (sub, extra)


def test_folder_holds_the_subfolders_and_files_save_pretrained_writes(model):
    assert {p.name for p in model.iterdir()} == set(REAL_COMPONENTS) | {"model_index.json", "README.md"}
    for sub, names in SAVED_FILES.items():
        assert {p.name for p in (model / sub).iterdir()} == names, sub
    assert "FIXTURE" in (model / "README.md").read_text()


def test_components_keep_the_real_non_size_settings(model):
    unet = read_json(model / "unet" / "config.json")
    assert_real_settings(unet, REAL_UNET, "unet")
    # the size-dependent settings follow the real rules
    assert plain(REAL_UNET["attention_head_dim"]) == [c // REAL_HEAD_CHANNELS for c in REAL_UNET["block_out_channels"]]
    assert unet["attention_head_dim"] == [c // TINY_HEAD_CHANNELS for c in unet["block_out_channels"]]
    embedding = read_json(model / "image_normalizer" / "config.json")["embedding_dim"]
    assert embedding == read_json(model / "image_encoder" / "config.json")["projection_dim"] == EMBED_DIM
    assert unet["projection_class_embeddings_input_dim"] == 2 * embedding
    assert unet["cross_attention_dim"] == read_json(model / "text_encoder" / "config.json")["hidden_size"]
    assert_real_settings(read_json(model / "vae" / "config.json"), REAL_VAE, "vae")
    assert_real_settings(read_json(model / "image_encoder" / "config.json"), REAL_IMAGE_ENCODER, "image_encoder")
    assert_real_settings(read_json(model / "text_encoder" / "config.json"), REAL_TEXT_ENCODER, "text_encoder")
    processor = read_json(model / "feature_extractor" / "preprocessor_config.json")
    assert_real_settings(processor, REAL_FEATURE_EXTRACTOR, "feature_extractor")
    assert processor["image_processor_type"] == "CLIPImageProcessor"
    assert processor["size"] == {"shortest_edge": 32} and processor["crop_size"] == {"height": 32, "width": 32}
    special = read_json(model / "tokenizer" / "special_tokens_map.json")
    assert special == {k: v for k, v in REAL_TOKENIZER.items() if k.endswith("_token")}
    assert read_json(model / "tokenizer" / "tokenizer_config.json")["model_max_length"] == REAL_TOKENIZER["model_max_length"]


def test_same_seed_same_weights(model, tmp_path):
    again = write_tiny_unclip(tmp_path / "again", seed=0)
    digest = lambda path: hashlib.sha256(path.read_bytes()).hexdigest()  # noqa: E731
    for weights in sorted(model.rglob("*.safetensors")):
        assert digest(weights) == digest(again / weights.relative_to(model)), weights


# ----------------------------------------------------------------------------- loading like a downloaded folder
def test_loads_through_our_loader_like_a_downloaded_folder(model):
    c = load_unclip(model, device="cpu")
    assert c.model_size == 64 and c.vae_scale_factor == 8  # latent 8 x 8, four VAE levels as in the real VAE
    assert type(c.scheduler).__name__ == "DDIMScheduler"  # our sampler, built from the real PNDM config
    for key in ("prediction_type", "beta_schedule", "beta_start", "beta_end", "clip_sample", "set_alpha_to_one", "steps_offset"):
        assert c.scheduler.config[key] == REAL_SCHEDULER_CONFIG[key], key
    assert c.image_noising_scheduler.config.beta_schedule == "squaredcos_cap_v2"
    ids = c.tokenizer(["a blurry photo"], padding="max_length", max_length=c.tokenizer.model_max_length).input_ids[0]
    assert len(ids) == 77 and ids[0] == c.tokenizer.bos_token_id and c.tokenizer.eos_token_id in ids
    assert ids[-1] == c.tokenizer.pad_token_id == 0  # "!" is id 0, as in CLIP's vocabulary
    assert type(load_unclip(model, sampler="ddpm", device="cpu").scheduler).__name__ == "DDPMScheduler"


def test_loads_through_diffusers_and_its_own_pipeline_runs(model):
    from diffusers import StableUnCLIPImg2ImgPipeline
    from PIL import Image

    pipe = StableUnCLIPImg2ImgPipeline.from_pretrained(model)
    for name, (_, cls) in REAL_COMPONENTS.items():  # without torchvision the processor is CLIPImageProcessorPil
        assert type(getattr(pipe, name)).__name__.startswith(cls), name
    pipe.set_progress_bar_config(disable=True)
    image = Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8))
    out = pipe(image, prompt="a photo", num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 64, 64, 3) and np.isfinite(out.images).all()


def test_the_unclip_generator_makes_a_guide_in_two_steps(folders):
    model, clip = folders
    proxy = np.random.default_rng(1).random((1, 3, 16, 16)).astype(np.float32)
    kw = dict(n_guides=1, seed=0, model_path=str(model), clip_path=str(clip), steps=2, device="cpu")
    g = generate_guides(proxy, "unclip", **kw)
    assert g.shape == (1, 1, 3, 16, 16) and np.isfinite(g).all() and g.min() >= 0 and g.max() <= 1
    assert np.array_equal(g, generate_guides(proxy, "unclip", **kw))


def test_blur_robust_folder_loads_as_clip_path_and_holds_finetuned_weights(folders):
    model, clip = folders
    assert {p.name for p in clip.iterdir()} == CLIP_FILES and "FIXTURE" in (clip / "README.md").read_text()
    record = read_json(clip / "blur_finetune.json")
    assert record["config"]["steps"] == FIXTURE_FINETUNE["steps"] == len(record["losses"])
    base, swapped = load_unclip(model, device="cpu"), load_unclip(model, clip_path=clip, device="cpu")
    pairs = list(zip(base.image_encoder.named_parameters(), swapped.image_encoder.named_parameters()))
    assert all(na == nb and a.shape == b.shape for (na, a), (nb, b) in pairs)
    assert any(not torch.equal(a, b) for (_, a), (_, b) in pairs)  # Eq. 7 moved the weights
    for part in ("unet", "vae", "text_encoder"):  # the rest of the model is the base folder's
        assert all(torch.equal(a, b) for a, b in zip(getattr(base, part).parameters(), getattr(swapped, part).parameters()))
    assert read_json(clip / "preprocessor_config.json") == read_json(model / "feature_extractor" / "preprocessor_config.json")


def test_a_hub_cache_holding_the_fixture_resolves_the_real_hub_id(model, tmp_path, monkeypatch):
    """The folder also works where a download lands: the Hugging Face cache, found by the repo id, offline."""
    import shutil

    from hiralign.guides.fixture import REAL_REPO

    revision = "0" * 40
    repo_dir = tmp_path / "hub" / f"models--{REAL_REPO.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(revision)
    shutil.copytree(model, repo_dir / "snapshots" / revision)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    c = load_unclip(REAL_REPO, device="cpu")
    assert c.model_size == 64 and c.image_normalizer.config.embedding_dim == EMBED_DIM
