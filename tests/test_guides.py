"""Stage 2a (Sec. III-B.1, Eq. 5-8): guide generators, blur-robust CLIP (Eq. 7), stage and notebook.

The unCLIP loop runs end to end on a tiny randomly initialised Stable unCLIP folder in the real
repository's layout, written by ``hiralign.guides.fixture`` and loaded through our own loader (no
network, no real weights).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from skimage import data as skdata
from skimage.transform import resize as sk_resize

from hiralign.guides import generate_guides, generator_parameters, select_params
from hiralign.guides.fixture import EMBED_DIM, tiny_image_processor, tiny_vision_encoder, write_tiny_unclip
from hiralign.guides.jitter import jitter_guides, photometric
from hiralign.guides.quality import guide_quality, unrelated_layout
from hiralign.guides.recompose import dihedral, recompose_guides
from hiralign.guides.resize import as_rgb_batch, fit_square, pad_to_multiple, restore
from hiralign.guides.sdedit import noise_to_start, start_timesteps
from hiralign.metrics import ssim as metrics_ssim

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "02_rgb_guides.ipynb"


def natural_rgb(name: str, size: int) -> np.ndarray:
    """A scikit-image picture as float32 (3, size, size) in [0, 1]."""
    img = np.asarray(getattr(skdata, name)(), dtype=np.float32) / 255.0
    img = np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img[..., :3]
    side = min(img.shape[:2])
    img = sk_resize(img[:side, :side], (size, size), anti_aliasing=True)
    return np.moveaxis(img, -1, 0).astype(np.float32)


@pytest.fixture(scope="module")
def proxies() -> np.ndarray:
    return np.stack([natural_rgb("astronaut", 32), natural_rgb("coffee", 32)])


# ----------------------------------------------------------------------------- resize, SDEdit start
def test_fit_square_then_restore_returns_the_image():
    yy, xx = np.mgrid[0:24, 0:18] / 24.0
    smooth = np.stack([np.sin(2 * yy) * 0.4 + 0.5, xx * 0.8, np.cos(3 * xx * yy) * 0.3 + 0.4])  # 24 x 18
    x = torch.from_numpy(smooth.astype(np.float32))[None]
    canvas, place = fit_square(x, 48)
    assert canvas.shape[-2:] == (48, 48) and (place.scaled_height, place.scaled_width) == (48, 36)
    assert (place.top, place.left) == (0, 6)
    assert torch.allclose(restore(canvas, place), x, atol=0.01)  # up x2 then down x2 (bicubic)
    padded = pad_to_multiple(x, 8)
    assert padded.shape[-2:] == (24, 24) and torch.equal(padded[..., :18], x)


def test_sdedit_start_is_eq8_and_strength_sets_the_number_of_steps():
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(num_train_timesteps=1000)
    assert len(start_timesteps(sched, 50, 0.0)) == 0
    assert len(start_timesteps(sched, 50, 0.3)) == 15
    full = start_timesteps(sched, 50, 1.0)
    assert len(full) == 50 and int(full[0]) == int(sched.timesteps[0])
    with pytest.raises(ValueError, match="strength"):
        start_timesteps(sched, 50, 1.5)
    x0, eps = torch.rand(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    ts = start_timesteps(sched, 50, 0.4)
    abar = torch.cumprod(1.0 - sched.betas, 0)[int(ts[0])]  # independent reference from the betas
    assert torch.allclose(noise_to_start(sched, x0, ts, eps, 0.4), abar.sqrt() * x0 + (1 - abar).sqrt() * eps, atol=1e-6)
    assert torch.equal(noise_to_start(sched, x0, ts[:0], eps, 0.0), x0)
    assert torch.equal(noise_to_start(sched, x0, full, eps, 1.0), eps)  # strength 1: pure noise, as plain sampling


# ----------------------------------------------------------------------------- jitter
def test_jitter_without_any_change_is_the_identity(proxies):
    still = jitter_guides(proxies, n_guides=2, flip_horizontal=False, max_rotation_deg=0, max_zoom=0, max_shift=0,
                          brightness=0, contrast=0, saturation=0, hue=0)
    assert np.allclose(still, proxies[:, None], atol=1e-5)
    assert np.allclose(photometric(proxies[0], 1.0, 1.0, 1.0, hue=1.0), proxies[0], atol=1e-5)  # a full hue turn


def test_jitter_guides_are_seeded_varied_and_keep_the_content(proxies):
    g = generate_guides(proxies, "jitter", n_guides=3, seed=1)
    assert g.shape == (2, 3, 3, 32, 32) and g.dtype == np.float32 and g.min() >= 0 and g.max() <= 1
    assert np.array_equal(g, generate_guides(proxies, "jitter", n_guides=3, seed=1))
    assert not np.array_equal(g, generate_guides(proxies, "jitter", n_guides=3, seed=2))
    div = guide_quality(proxies, g).summary()
    assert div["between_guides"] > 0.05 and div["ssim_to_proxy"] < 0.95


def test_generate_guides_rejects_unknown_generators_and_parameters(proxies):
    with pytest.raises(ValueError, match="unknown guide generator"):
        generate_guides(proxies, "gan")
    with pytest.raises(TypeError, match="does not take"):
        generate_guides(proxies, "jitter", strength=0.3)
    assert select_params("jitter", {"strength": 0.3, "hue": 0.1}) == {"hue": 0.1}
    assert {"strength", "train_steps", "device"} <= set(generator_parameters("local-ddpm"))
    assert {"noise_level", "negative_prompt", "model_path", "clip_path"} <= set(generator_parameters("unclip"))


def test_quality_of_copies_is_known_zero_diversity_full_ssim_zero_colour_distance(proxies):
    copies = np.repeat(proxies[:, None], 3, axis=1)
    q = guide_quality(proxies, copies)
    assert np.allclose(q.between_guides, 0, atol=1e-6) and np.allclose(q.ssim_to_proxy, 1, atol=1e-6)
    assert np.allclose(q.colour_distance_own, 0, atol=1e-12)  # same pixels: same quantiles on every projection
    assert q.colour_distance < 0.01  # all copies vs all proxies (20000 values drawn from each side)
    # across proxies: the guides of different proxies are the proxies themselves
    assert q.across_proxies == pytest.approx(1 - metrics_ssim(proxies[0], proxies[1]), abs=1e-9)
    assert np.allclose(q.ssim_unrelated, [metrics_ssim(unrelated_layout(p), p) for p in proxies])
    noisy = np.clip(copies + np.random.default_rng(0).normal(0, 0.1, copies.shape), 0, 1).astype(np.float32)
    q2 = guide_quality(proxies, noisy)
    assert (q2.between_guides > 0.1).all() and (q2.ssim_to_proxy < 0.95).all()
    assert q2.colour_distance > 5 * max(q.colour_distance, 1e-3)


def test_quality_colour_distance_of_a_colour_shift_is_half_its_length(proxies):
    # sliced W1 of a set against itself shifted by v tends to |v| / 2 in 3-D (mean |<theta, v>| on the sphere)
    shift = np.array([0.06, -0.03, 0.02], np.float32)
    shifted = (proxies + shift[None, :, None, None])[:, None]
    q = guide_quality(proxies, shifted)
    assert q.colour_distance_own == pytest.approx(np.linalg.norm(shift) / 2, rel=0.1)
    assert q.colour_distance == pytest.approx(np.linalg.norm(shift) / 2, rel=0.1)
    assert np.isnan(q.between_guides).all() and q.summary()["between_guides"] != q.summary()["between_guides"]


def test_quality_rejects_mismatched_shapes(proxies):
    with pytest.raises(ValueError, match="do not match"):
        guide_quality(proxies, proxies)


# ----------------------------------------------------------------------------- recompose


def test_recompose_is_seeded_in_range_and_keeps_the_proxy_shape(proxies):
    g = generate_guides(proxies, "recompose", n_guides=3, seed=4)
    assert g.shape == (2, 3, 3, 32, 32) and g.dtype == np.float32 and g.min() >= 0 and g.max() <= 1
    assert np.array_equal(g, generate_guides(proxies, "recompose", n_guides=3, seed=4))
    assert not np.array_equal(g, generate_guides(proxies, "recompose", n_guides=3, seed=5))
    # guide (n, g) depends only on (seed, n, g): more guides leave the first ones unchanged
    assert np.array_equal(g[:, :2], generate_guides(proxies, "recompose", n_guides=2, seed=4))


def test_recompose_without_boundary_blur_holds_only_proxy_pixels_in_new_layouts(cave_crop):
    rgb = np.clip(cave_crop[1], 0, 1).astype(np.float32)[None]
    g = recompose_guides(rgb, n_guides=3, seed=0, boundary_sigma=0.0)
    palette = {tuple(v) for v in rgb[0].reshape(3, -1).T}
    assert all(tuple(v) in palette for v in g.reshape(-1, 3, g.shape[-2] * g.shape[-1]).transpose(0, 2, 1).reshape(-1, 3))
    q = guide_quality(rgb, g)
    assert q.ssim_to_proxy[0] < 0.5 and q.between_guides[0] > 0.5  # new layouts, different from each other
    assert q.colour_distance_own[0] < 0.01
    blurred = recompose_guides(rgb, n_guides=3, seed=0)  # the default anti-aliases the leaf boundaries only
    changed = np.any(blurred != g, axis=2)
    assert 0 < changed.mean() < 0.6


@pytest.mark.parametrize("scene", ["natural", "cave"])
def test_recompose_colours_are_as_target_like_as_jitter(scene, proxies, cave_crop):
    # the issue-10 floor over 3 seeds: the colour distance of all guides to all proxies is no larger
    # than jitter's (which keeps the layout); jitter's photometric changes and recompose's mixed
    # boundary pixels are what each adds
    rgb = proxies if scene == "natural" else np.clip(cave_crop[1], 0, 1).astype(np.float32)[None]
    colour = {gen: np.mean([guide_quality(rgb, generate_guides(rgb, gen, n_guides=3, seed=s)).colour_distance for s in range(3)])
              for gen in ("recompose", "jitter")}
    assert colour["recompose"] <= colour["jitter"], colour


def test_recompose_background_fills_when_there_is_a_single_leaf(proxies):
    g = recompose_guides(proxies, n_guides=1, seed=0, segment_counts=(1,), max_leaves=1, boundary_sigma=0.0)
    # one leaf = the whole proxy under a flip / quarter turn at a random offset, the background elsewhere
    assert g.shape == (2, 1, 3, 32, 32) and np.isfinite(g).all()
    palette = {tuple(v) for v in proxies[0].reshape(3, -1).T}
    assert all(tuple(v) in palette for v in g[0, 0].reshape(3, -1).T)


def test_dihedral_gives_the_eight_symmetries():
    a = np.arange(12.0).reshape(1, 3, 4)
    images = [dihedral(a, k) for k in range(8)]
    assert np.array_equal(images[0], a) and np.array_equal(images[4], a[..., ::-1])
    assert len({x.tobytes() + bytes(x.shape) for x in images}) == 8


def test_recompose_rejects_bad_settings(proxies):
    with pytest.raises(ValueError, match="segment_counts"):
        recompose_guides(proxies, segment_counts=())
    with pytest.raises(ValueError, match="max_leaves"):
        recompose_guides(proxies, max_leaves=0)
    with pytest.raises(TypeError, match="does not take"):
        generate_guides(proxies, "recompose", strength=0.5)


# ----------------------------------------------------------------------------- local DDPM
TINY_DDPM = dict(patch_size=16, block_out_channels=(16, 32), train_steps=60, batch_size=8, natural_image_size=48)


def test_local_ddpm_keeps_layout_varies_and_is_cached(proxies, tmp_path):
    from dataclasses import asdict

    from hiralign.cache import content_key
    from hiralign.guides.local_ddpm import LocalDDPMConfig

    kw = dict(strength=0.2, steps=10, cache_dir=tmp_path, **TINY_DDPM)
    g = generate_guides(proxies, "local-ddpm", n_guides=3, seed=0, **kw)
    assert g.shape == (2, 3, 3, 32, 32) and g.min() >= 0 and g.max() <= 1
    div = guide_quality(proxies, g)
    # stated floor (met by the demo proxies at strength 0.2, measured 0.81-0.85): at strength 0.2 every proxy's
    # guides keep mean SSIM > 0.7 to it, and differ from each other (mean 1 - SSIM > 0.05)
    assert (div.ssim_to_proxy > 0.7).all(), div
    assert (div.between_guides > 0.05).all(), div
    cached = list(tmp_path.iterdir())
    assert [p.name for p in cached] == [content_key(asdict(LocalDDPMConfig(**TINY_DDPM)), as_rgb_batch(proxies))]
    again = generate_guides(proxies, "local-ddpm", n_guides=3, seed=0, **kw)  # loads the cached model
    assert np.array_equal(g, again) and len(list(tmp_path.iterdir())) == 1
    assert content_key(asdict(LocalDDPMConfig(**TINY_DDPM)), as_rgb_batch(proxies[:1])) != cached[0].name
    weaker = generate_guides(proxies, "local-ddpm", n_guides=3, seed=0, **{**kw, "strength": 0.1})  # fewer steps from less noise
    assert guide_quality(proxies, weaker).ssim_to_proxy.mean() > div.ssim_to_proxy.mean()
    assert np.allclose(generate_guides(proxies, "local-ddpm", n_guides=1, seed=0, **{**kw, "strength": 0.0})[:, 0], proxies, atol=1e-6)


# ----------------------------------------------------------------------------- tiny Stable unCLIP
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return write_tiny_unclip(tmp_path_factory.mktemp("unclip"))


@pytest.fixture(scope="module")
def components(tiny_model):
    from hiralign.guides.unclip import load_unclip

    return load_unclip(tiny_model, device="cpu")


def test_tiny_unclip_loads_through_our_loader(components):
    assert components.model_size == 64 and components.unet.config.class_embed_type == "projection"  # latent 8 x VAE 8
    assert components.unet.config.projection_class_embeddings_input_dim == 2 * EMBED_DIM
    assert type(components.scheduler).__name__ == "DDIMScheduler"


def test_unclip_shapes_determinism_and_any_proxy_size(tiny_model, proxies):
    proxy = proxies[:, :, :20, :27]  # not square, not the model size: fitted and mapped back
    kw = dict(model_path=str(tiny_model), steps=6, device="cpu")
    g = generate_guides(proxy, "unclip", n_guides=3, seed=0, **kw)
    assert g.shape == (2, 3, 3, 20, 27) and g.min() >= 0 and g.max() <= 1
    assert np.array_equal(g, generate_guides(proxy, "unclip", n_guides=3, seed=0, **kw))
    assert not np.array_equal(g, generate_guides(proxy, "unclip", n_guides=3, seed=1, **kw))
    assert np.abs(g[:, 0] - g[:, 1]).mean() > 1e-4  # guides of one proxy differ


def test_unclip_strength_zero_is_the_vae_reconstruction(components, proxies):
    from hiralign.guides.unclip import unclip_guides

    proxy = np.stack([natural_rgb(name, components.model_size) for name in ("astronaut", "coffee")])  # no resizing
    g = unclip_guides(proxy, n_guides=2, seed=0, strength=0.0, components=components)
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(proxy)) * 2 - 1
        recon = components.vae.decode(components.vae.encode(x).latent_dist.mean).sample
    expected = ((recon + 1) / 2).clamp(0, 1).numpy()
    assert np.allclose(g[:, 0], expected, atol=1e-5) and np.allclose(g[:, 1], expected, atol=1e-5)


def test_unclip_larger_strength_moves_further_from_the_proxy(components, proxies):
    from hiralign.guides.unclip import unclip_guides

    proxy = proxies[:, :, :16, :16]
    recon = unclip_guides(proxy, n_guides=1, strength=0.0, components=components)

    def distance(strength: float) -> float:
        out = [unclip_guides(proxy, n_guides=2, seed=s, strength=strength, steps=10, components=components) for s in range(3)]
        return float(np.mean([np.abs(o - recon).mean() for o in out]))

    d = [distance(s) for s in (0.2, 0.6, 1.0)]
    assert 0 < d[0] < d[1] < d[2], d


def capture_unet_inputs(components):
    """Record the keyword inputs of every UNet forward call."""
    calls = []
    handle = components.unet.register_forward_pre_hook(lambda mod, args, kwargs: calls.append(kwargs), with_kwargs=True)
    return calls, handle


def test_negative_prompt_and_noise_level_reach_the_unet(components, proxies):
    from diffusers.models.embeddings import get_timestep_embedding

    from hiralign.guides.unclip import unclip_guides

    proxy = proxies[:1, :, :16, :16]
    calls, handle = capture_unet_inputs(components)
    try:
        unclip_guides(proxy, n_guides=2, seed=0, strength=0.5, steps=4, noise_level=0, guidance_scale=5.0,
                      prompt="sharp photo", negative_prompt="blurry noise", components=components)
        low = list(calls)
        calls.clear()
        unclip_guides(proxy, n_guides=2, seed=0, strength=0.5, steps=4, noise_level=700, guidance_scale=5.0,
                      prompt="sharp photo", negative_prompt="blurry noise", components=components)
        high = list(calls)
        calls.clear()
        unclip_guides(proxy, n_guides=2, seed=0, strength=0.5, steps=4, guidance_scale=1.0, components=components)
        unguided = list(calls)
    finally:
        handle.remove()
    assert len(low) == 2  # strength 0.5 of 4 steps
    with torch.no_grad():  # the prompts' embeddings computed independently of our code
        def embed(text):
            ids = components.tokenizer([text], padding="max_length", max_length=components.tokenizer.model_max_length,
                                       truncation=True, return_tensors="pt").input_ids
            return components.text_encoder(ids).last_hidden_state[0]

        negative, positive = embed("blurry noise"), embed("sharp photo")
    states, labels = low[0]["encoder_hidden_states"], low[0]["class_labels"]
    assert states.shape[0] == 4 and labels.shape == (4, 2 * EMBED_DIM)  # [uncond x2, cond x2]
    for i in (0, 1):
        assert torch.allclose(states[i], negative, atol=1e-5)
        assert torch.allclose(states[2 + i], positive, atol=1e-5)
    assert torch.count_nonzero(labels[:2]) == 0  # unconditional branch: zero image condition
    level_part = lambda n: get_timestep_embedding(torch.tensor([n]), EMBED_DIM, flip_sin_to_cos=True, downscale_freq_shift=0)[0]
    assert torch.allclose(labels[2, EMBED_DIM:], level_part(0), atol=1e-6)
    high_labels = high[0]["class_labels"]
    assert torch.allclose(high_labels[2, EMBED_DIM:], level_part(700), atol=1e-6)
    # embedding noise: level 700 moves the image-embedding part much more than level 0
    with torch.no_grad():
        from hiralign.guides.clip_finetune import clip_pixel_values, image_embedding

        clean = image_embedding(components.image_encoder, clip_pixel_values(torch.from_numpy(np.ascontiguousarray(proxy)), components.feature_extractor))[0]
    moved = lambda lab: float((lab[2, :EMBED_DIM] - clean).norm())
    assert moved(labels) < 0.1 * moved(high_labels)
    assert not torch.allclose(high_labels[2, :EMBED_DIM], high_labels[3, :EMBED_DIM])  # one noise draw per guide
    assert unguided[0]["encoder_hidden_states"].shape[0] == 2  # guidance_scale 1: no unconditional branch


def test_unclip_without_weights_fails_at_once_saying_how_to_provide_them(tmp_path, monkeypatch, proxies):
    from hiralign.guides.unclip import UnclipWeightsError

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for model_path in ("stabilityai/stable-diffusion-2-1-unclip", str(tmp_path / "missing"), None):
        with pytest.raises(UnclipWeightsError) as err:
            generate_guides(proxies, "unclip", model_path=model_path)
        message = str(err.value)
        assert "hf download stabilityai/stable-diffusion-2-1-unclip" in message
        assert "model_path=/path/to/" in message and "HF_HOME" in message and "local-ddpm" in message
    (tmp_path / "partial" / "unet").mkdir(parents=True)
    with pytest.raises(UnclipWeightsError, match="lacks the component subfolders"):
        generate_guides(proxies, "unclip", model_path=str(tmp_path / "partial"))


# ----------------------------------------------------------------------------- blur-robust CLIP (Eq. 7)
def test_gaussian_blur_matches_scipy():
    from hiralign.guides.clip_finetune import gaussian_blur

    x = np.random.default_rng(0).random((2, 3, 20, 24)).astype(np.float32)
    for sigma in (1.0, 2.0):
        ours = gaussian_blur(torch.from_numpy(x), sigma).numpy()
        ref = ndimage.gaussian_filter(x, sigma=(0, 0, sigma, sigma), mode="mirror", truncate=3.0)
        assert np.allclose(ours, ref, atol=1e-5)
    assert torch.equal(gaussian_blur(torch.from_numpy(x), 0.0), torch.from_numpy(x))


def test_clip_preprocessing_matches_the_image_processor():
    from hiralign.guides.clip_finetune import clip_pixel_values

    processor = tiny_image_processor()
    img = (natural_rgb("astronaut", 48)[:, :32, :] * 255).round().astype(np.uint8)  # 32 x 48: crop only
    ref = processor(images=np.moveaxis(img, 0, -1), return_tensors="pt").pixel_values
    ours = clip_pixel_values(torch.from_numpy(img.astype(np.float32) / 255)[None], processor)
    assert ours.shape == ref.shape == (1, 3, 32, 32)
    assert torch.allclose(ours, ref, atol=1e-4)


def write_crops(folder: Path, names: list[str], per_image: int, seed: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in names:
        img = natural_rgb(name, 96)
        for k in range(per_image):
            top, left = rng.integers(0, 96 - 48, size=2)
            crop = np.moveaxis(img[:, top:top + 48, left:left + 48], 0, -1)
            Image.fromarray((crop * 255).round().astype(np.uint8)).save(folder / f"{name}-{k}.png")
    return folder


def test_blur_robust_finetuning_lowers_eq7_on_held_out_images(tmp_path):
    from hiralign.guides.clip_finetune import (
        BlurFinetuneConfig, evaluate_blur_alignment, finetune_blur_robust, list_images, load_clip_encoder,
        load_clip_inputs, save_finetuned_encoder,
    )

    train_names = ["astronaut", "rocket", "camera", "brick", "coins", "immunohistochemistry", "hubble_deep_field"]
    train = write_crops(tmp_path / "train", train_names, 10, seed=0)
    held_out = write_crops(tmp_path / "held_out", ["coffee", "chelsea", "grass"], 6, seed=1)  # other pictures
    encoder, processor = tiny_vision_encoder(3), tiny_image_processor()
    config = BlurFinetuneConfig(blur_sigmas=(0.0, 1.0, 2.0, 4.0), steps=100, batch_size=16, learning_rate=5e-5)
    result = finetune_blur_robust(encoder, processor, train, config)
    pixels = load_clip_inputs(list_images(held_out), processor)
    blur_levels = (1.0, 2.0, 4.0)
    before = evaluate_blur_alignment(encoder, encoder, pixels, blur_levels)
    after = evaluate_blur_alignment(result.encoder, encoder, pixels, blur_levels)
    assert after < 0.8 * before, (before, after)  # measured 0.33-0.68 of before over encoder seeds 3-6
    saved = save_finetuned_encoder(result, tmp_path / "clip")
    loaded, _ = load_clip_encoder(saved)
    assert evaluate_blur_alignment(loaded, encoder, pixels, blur_levels) == pytest.approx(after, rel=1e-5)


def test_unclip_swaps_in_the_finetuned_encoder(tiny_model, tmp_path):
    from hiralign.guides.clip_finetune import BlurFinetuneResult, BlurFinetuneConfig, save_finetuned_encoder
    from hiralign.guides.unclip import load_unclip

    other = tiny_vision_encoder(seed=7)
    clip_dir = save_finetuned_encoder(BlurFinetuneResult(other, tiny_image_processor(), BlurFinetuneConfig()), tmp_path / "clip")
    swapped = load_unclip(tiny_model, clip_path=clip_dir, device="cpu")
    for a, b in zip(swapped.image_encoder.parameters(), other.parameters()):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- notebook
def run_notebook(tmp_path: Path, monkeypatch, **params):
    import papermill

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return papermill.execute_notebook(str(NOTEBOOK), str(tmp_path / "out.ipynb"), parameters=params, cwd=str(NOTEBOOK.parent),
                                      kernel_name="python3", progress_bar=False)


@pytest.mark.slow
@pytest.mark.parametrize("generator,extra", [("jitter", {}), ("local-ddpm", {"train_steps": 20, "steps": 10})])
def test_notebook_writes_guides(generator, extra, tmp_path, monkeypatch):
    from hiralign.store import RunStore

    run_dir = tmp_path / "run"
    run_notebook(tmp_path, monkeypatch, generator=generator, run_dir=str(run_dir), demo=True, image_size=32, n_demo=2,
                 n_guides=2, **extra)
    art = RunStore(run_dir).read("02_guides")
    assert art["guides"].shape == (2, 2, 3, 32, 32) and art["proxy_rgb"].shape == (2, 3, 32, 32)
    assert art.attrs["generator"] == generator and art.attrs["demo"]
    assert art["guides"].min() >= 0 and art["guides"].max() <= 1


@pytest.mark.slow
def test_notebook_unclip_without_weights_stops_with_the_howto(tmp_path, monkeypatch):
    import papermill

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(papermill.PapermillExecutionError) as err:
        run_notebook(tmp_path, monkeypatch, generator="unclip", run_dir=str(tmp_path / "run"))
    assert "UnclipWeightsError" in str(err.value) and "hf download" in str(err.value)
    assert not (tmp_path / "run" / "02_guides.h5").exists()
