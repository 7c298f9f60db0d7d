"""Tests of the PromptIR re-implementation (:mod:`hiralign.restorers.promptir`).

No reference implementation is installed. The state_dict layout is checked against facts read from
the official code (github.com/va1shn9v/PromptIR, ``net/model.py``, ``PromptIR(decoder=True)``):
the key -> shape table its ``__init__`` builds is written out below by hand, and for the official
configuration the SHA-256 digest of that table, the key count and the exact parameter count were
taken from the official module itself (run once, outside the repository).
"""
from __future__ import annotations

import hashlib

import pytest
import torch
import torch.nn.functional as F

from hiralign.restorers import promptir
from hiralign.restorers.inference import restore_batch
from net_helpers import fit_losses, smooth_cubes

pytestmark = pytest.mark.usefixtures("one_torch_thread")

UNUSED = promptir.UNUSED_PARAMETERS


def tiny(bands: int = 6, **overrides) -> promptir.PromptIR:
    return promptir.build(bands, **{**promptir.TINY_CONFIG, **overrides})


def state_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def official_state_shapes(bands: int, dim: int, num_blocks, num_refinement_blocks: int, heads,
                          ffn_expansion_factor: float, bias: bool, layernorm_type: str, prompt_len: int,
                          prompt_dims, prompt_sizes, encoder_prompt_dims) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the official ``PromptIR(inp_channels=bands, out_channels=bands, decoder=True)``.

    From ``net/model.py``: ``patch_embed.proj`` Conv(bands, dim, 3, bias=False); ``promptK``
    (PromptGenBlock) = ``prompt_param`` (1, len, C_p, s, s), ``linear_layer`` Linear(lin_dim, len),
    ``conv3x3`` Conv(C_p, C_p, 3, bias=False); ``chnl_reduceK`` / ``reduce_noise_channel_K`` 1x1
    convs (unused); ``downX_Y`` / ``upX_Y`` = ``body.0`` 3x3 convs without bias (C -> C/2, C -> 2C);
    TransformerBlock = ``norm{1,2}.body.weight`` (+ ``.bias`` for WithBias), ``attn.temperature``
    (heads, 1, 1), ``attn.qkv`` 1x1 (3C), ``attn.qkv_dwconv`` depthwise 3x3, ``attn.project_out``
    1x1, ``ffn.project_in`` 1x1 (2 int(C gamma)), ``ffn.dwconv`` depthwise 3x3, ``ffn.project_out``;
    1x1/3x3 convs carry ``.bias`` only when ``bias=True``. The official file writes the widths of
    the decoder as ``dim = 48`` literals (``int(dim*2**2)+512``, ``int(dim*2**1)+224``,
    ``int(dim*2**1)+192``, ``Conv2d(320, 256)``...); they are written here in the general form
    ``8 dim + C_p3``, ``4 dim + C_p2``, ``2 dim + 4 dim``, ``C_p3 -> C_e3``, equal at ``dim = 48``.
    """
    c = (dim, 2 * dim, 4 * dim, 8 * dim)
    (p1, p2, p3), (s1, s2, s3), (e1, e2, e3) = prompt_dims, prompt_sizes, encoder_prompt_dims
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name, cin, cout, k=1, groups=1, with_bias=bias):
        shapes[f"{name}.weight"] = (cout, cin // groups, k, k)
        if with_bias:
            shapes[f"{name}.bias"] = (cout,)

    def block(name, width, n_heads):
        hidden = int(width * ffn_expansion_factor)
        for norm in ("norm1", "norm2"):
            shapes[f"{name}.{norm}.body.weight"] = (width,)
            if layernorm_type == "WithBias":
                shapes[f"{name}.{norm}.body.bias"] = (width,)
        shapes[f"{name}.attn.temperature"] = (n_heads, 1, 1)
        conv(f"{name}.attn.qkv", width, 3 * width)
        conv(f"{name}.attn.qkv_dwconv", 3 * width, 3 * width, 3, groups=3 * width)
        conv(f"{name}.attn.project_out", width, width)
        conv(f"{name}.ffn.project_in", width, 2 * hidden)
        conv(f"{name}.ffn.dwconv", 2 * hidden, 2 * hidden, 3, groups=2 * hidden)
        conv(f"{name}.ffn.project_out", hidden, width)

    def stage(name, depth, width, n_heads):
        for i in range(depth):
            block(f"{name}.{i}", width, n_heads)

    def prompt(name, p, s, lin):
        shapes[f"{name}.prompt_param"] = (1, prompt_len, p, s, s)
        shapes[f"{name}.linear_layer.weight"] = (prompt_len, lin)
        shapes[f"{name}.linear_layer.bias"] = (prompt_len,)
        conv(f"{name}.conv3x3", p, p, 3, with_bias=False)

    conv("patch_embed.proj", bands, dim, 3, with_bias=False)
    prompt("prompt1", p1, s1, c[1])
    prompt("prompt2", p2, s2, c[2])
    prompt("prompt3", p3, s3, c[3])
    conv("chnl_reduce1", p1, e1)
    conv("chnl_reduce2", p2, e2)
    conv("chnl_reduce3", p3, e3)
    for level, e in enumerate((e1, e2, e3)):
        conv(f"reduce_noise_channel_{level + 1}", c[level] + e, c[level])
        stage(f"encoder_level{level + 1}", num_blocks[level], c[level], heads[level])
        conv(f"down{level + 1}_{level + 2}.body.0", c[level], c[level] // 2, 3, with_bias=False)
    stage("latent", num_blocks[3], c[3], heads[3])
    conv("up4_3.body.0", c[2], 2 * c[2], 3, with_bias=False)
    conv("reduce_chan_level3", c[1] + c[2], c[2])
    block("noise_level3", c[3] + p3, heads[2])
    conv("reduce_noise_level3", c[3] + p3, c[2])
    stage("decoder_level3", num_blocks[2], c[2], heads[2])
    conv("up3_2.body.0", c[2], 2 * c[2], 3, with_bias=False)
    conv("reduce_chan_level2", c[2], c[1])
    block("noise_level2", c[2] + p2, heads[2])
    conv("reduce_noise_level2", c[2] + p2, c[2])
    stage("decoder_level2", num_blocks[1], c[1], heads[1])
    conv("up2_1.body.0", c[1], 2 * c[1], 3, with_bias=False)
    block("noise_level1", c[1] + p1, heads[2])
    conv("reduce_noise_level1", c[1] + p1, c[1])
    stage("decoder_level1", num_blocks[0], c[1], heads[0])
    stage("refinement", num_refinement_blocks, c[1], heads[0])
    conv("output", c[1], bands, 3)
    return shapes


# ----------------------------------------------------------------------------- size and layout


def test_parameter_count_matches_reported():
    official = promptir.build(3, **promptir.PAPER_CONFIG)  # the official 3-channel model
    count3 = sum(p.numel() for p in official.parameters())
    assert count3 == 35_592_263  # exact count of the official PromptIR(decoder=True)
    assert abs(count3 - promptir.PAPER_PARAMETERS) / promptir.PAPER_PARAMETERS < 0.05
    count31 = sum(p.numel() for p in promptir.build(31, **promptir.PAPER_CONFIG).parameters())
    assert count31 == 35_628_551  # only patch_embed and output grow with the bands
    assert abs(count31 - promptir.PAPER_PARAMETERS) / promptir.PAPER_PARAMETERS < 0.05
    tiny_count = sum(p.numel() for p in tiny(31).parameters())
    assert tiny_count == 83_288 and tiny_count < 100_000


def test_official_configuration_layout_facts():
    """Facts from the official module itself: 548 tensors, no buffers, this digest of the sorted
    ``key:shape`` table, and a few shapes whose widths the official file writes as literals."""
    model = promptir.build(3)
    shapes = state_shapes(model)
    assert len(shapes) == 548 and not list(model.buffers())
    table = "\n".join(f"{k}:{v}" for k, v in sorted(shapes.items()))
    assert hashlib.sha256(table.encode()).hexdigest() == (
        "73f560b8f101a03b87bc0bed8e35138bdf72edc0d6c56dc4bdc2b570c40cace5")
    assert shapes["noise_level3.attn.qkv.weight"] == (2112, 704, 1, 1)
    assert shapes["noise_level2.ffn.project_out.weight"] == (320, 851, 1, 1)
    assert shapes["reduce_chan_level3.weight"] == (192, 288, 1, 1)
    assert shapes["up4_3.body.0.weight"] == (384, 192, 3, 3)
    assert shapes["chnl_reduce3.weight"] == (256, 320, 1, 1)
    assert shapes["prompt1.prompt_param"] == (1, 5, 64, 64, 64)


@pytest.mark.parametrize("bands,config", [(6, promptir.TINY_CONFIG), (3, promptir.PAPER_CONFIG),
                                          (31, promptir.PAPER_CONFIG)])
def test_state_dict_keys_and_shapes_equal_official(bands, config):
    model = promptir.build(bands, **config)
    expected = official_state_shapes(bands, **config)
    assert state_shapes(model) == expected
    torch.manual_seed(0)  # a state_dict in the official layout loads strictly
    model.load_state_dict({k: torch.randn(s) for k, s in expected.items()}, strict=True)


def test_bias_and_biasfree_variants_follow_the_official_layout():
    config = {**promptir.TINY_CONFIG, "bias": True, "layernorm_type": "BiasFree"}
    assert state_shapes(promptir.build(5, **config)) == official_state_shapes(5, **config)


# ----------------------------------------------------------------------------- forward behaviour


def test_forward_backward_tiny():
    torch.manual_seed(0)
    model = tiny(6)
    x = torch.rand(1, 6, 16, 16)
    y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    F.mse_loss(y, torch.rand_like(y)).backward()
    for name, p in model.named_parameters():
        if name.startswith(UNUSED):
            assert p.grad is None, name  # never called, as in the official forward
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_mask_is_accepted_and_ignored_blind_model():
    torch.manual_seed(0)
    model = tiny(6).eval()
    x = torch.rand(2, 6, 16, 24)
    mask = (torch.rand_like(x) > 0.3).float()
    with torch.no_grad():
        assert torch.equal(model(x, mask=mask), model(x))


def test_input_multiple_of_eight_required():
    model = tiny(6)
    assert (model.input_multiple, model.tile_align, model.receptive_radius) == (8, 8, None)
    with torch.no_grad():
        assert model(torch.rand(1, 6, 8, 40)).shape == (1, 6, 8, 40)
        with pytest.raises(ValueError, match="divisible by 8"):
            model(torch.rand(1, 6, 12, 16))


def test_deterministic_no_dropout_or_batchnorm():
    torch.manual_seed(0)
    model = tiny(4)
    x = torch.rand(2, 4, 16, 16)
    with torch.no_grad():
        train_out = model.train()(x)
        assert torch.equal(train_out, model.eval()(x))


def test_layer_norm_variants():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 3, 5) * 3 + 1
    with_bias = promptir.ChannelLayerNorm(6, "WithBias")
    with torch.no_grad():
        with_bias.body.weight.uniform_(0.5, 1.5)
        with_bias.body.bias.uniform_(-0.5, 0.5)
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (6,), with_bias.body.weight, with_bias.body.bias, eps=1e-5)
    torch.testing.assert_close(with_bias(x), expected.permute(0, 3, 1, 2), rtol=0, atol=1e-5)
    bias_free = promptir.ChannelLayerNorm(6, "BiasFree")  # divides by the std but keeps the mean
    y = bias_free(x)
    std = x.var(1, keepdim=True, unbiased=False).add(1e-5).sqrt()
    torch.testing.assert_close(y, x / std, rtol=0, atol=1e-5)
    with pytest.raises(ValueError):
        promptir.ChannelLayerNorm(6, "Other")


def test_prompt_generation_mixes_components_and_resizes():
    """PGM: softmax weights from the pooled features mix the prompt components; the mix is
    bilinearly resized to the feature size and passed through the 3x3 convolution."""
    torch.manual_seed(0)
    block = promptir.PromptGenerationBlock(prompt_dim=3, prompt_len=4, prompt_size=4, feature_dim=5)
    features = torch.randn(2, 5, 8, 6)
    with torch.no_grad():
        prompt = block(features)
        assert prompt.shape == (2, 3, 8, 6)
        weights = F.softmax(block.linear_layer(features.mean(dim=(-2, -1))), dim=1)
        for n in range(2):
            mix = sum(weights[n, i] * block.prompt_param[0, i] for i in range(4))
            expected = block.conv3x3(F.interpolate(mix[None], (8, 6), mode="bilinear", align_corners=False))
            torch.testing.assert_close(prompt[n:n + 1], expected, rtol=0, atol=1e-6)
        # a degradation-dependent prompt: different images get different component weights
        assert (weights[0] - weights[1]).abs().max() > 1e-4


def test_short_training_lowers_inpainting_loss():
    """A tiny all-in-one style problem (random-pixel inpainting plus noise; the mask is passed
    and ignored): 30 Adam steps lower the loss."""
    torch.manual_seed(0)
    bands, size = 4, 16
    clean = smooth_cubes(2, bands, size, frequencies=(3, 2))
    mask = (torch.rand(2, 1, size, size) > 0.3).float().expand(-1, bands, -1, -1)
    degraded = clean * mask + 0.03 * torch.randn_like(clean)
    model = tiny(bands)
    losses = fit_losses(model, degraded, clean, 30, 2e-3, mask=mask)
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


# ----------------------------------------------------------------------------- globality and tiling


def test_every_output_pixel_sees_the_whole_image():
    """Why ``receptive_radius`` is None: changing one corner pixel changes the opposite corner
    (MDTA attends over all pixels; the prompts pool the whole feature map)."""
    torch.manual_seed(0)
    model = tiny(3).eval()
    x = torch.rand(1, 3, 32, 32)
    changed = x.clone()
    changed[..., 0, 0] += 0.5
    with torch.no_grad():
        delta = (model(changed) - model(x)).abs()
    assert delta[..., -1, -1].max() > 0


@pytest.fixture
def tiled_outputs(one_torch_thread):
    torch.manual_seed(0)
    model = tiny(4)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 32), indexing="ij")
    x = (0.5 + 0.3 * torch.sin(5 * xx + 3 * yy) * torch.linspace(0.6, 1, 4).view(4, 1, 1)
         + 0.05 * torch.rand(4, 48, 32))[None]
    full = restore_batch(model, x)
    # tile 32 < 48 rows: tiles [0, 32) and [16, 48) (offsets multiples of tile_align = 8)
    crop = restore_batch(model, x, tile=32, overlap=8)
    window = restore_batch(model, x, tile=32, overlap=8, blend="window")
    return x, full, crop, window


def test_tiling_not_exact_but_window_blend_close(tiled_outputs):
    """PromptIR cannot be tiled exactly: MDTA's channel attention, the prompt weights (global
    average pooling) and the prompt resize all depend on the whole tile, so a tile's output
    differs from the same pixels of the untiled output everywhere. On a statistically homogeneous
    image the tile statistics are close to the image's, so the blended result stays close."""
    x, full, crop, window = tiled_outputs
    correction = (full - x).abs().mean()
    for tiled in (crop, window):
        assert tiled.shape == full.shape and torch.isfinite(tiled).all()
        difference = (tiled - full).abs()
        assert difference.max() > 1e-5  # not exact
        assert difference.mean() < 0.1 * correction  # but close to what the model changes
