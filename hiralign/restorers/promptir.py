"""PromptIR: prompting for all-in-one blind image restoration.

Re-implementation of Vaishnav Potlapalli, Syed Waqas Zamir, Salman Khan, Fahad Shahbaz Khan,
"PromptIR: Prompting for All-in-One Blind Image Restoration", NeurIPS 2023, arXiv:2306.13090,
written from the paper; the layer layout, constants and state_dict key names follow the official
repository (github.com/va1shn9v/PromptIR, ``net/model.py``, built as ``PromptIR(decoder=True)`` in
its ``train.py`` / ``test.py`` / ``demo.py``), so the released checkpoint loads with ``strict=True``
(after stripping the Lightning wrapper's ``net.`` prefix). HIR-ALIGN (Table VIII) uses PromptIR as a
general-purpose backbone on 31-band HSIs: ``build(bands)`` sets the input and output channels (the
official model has 3) to the band count; nothing else changes.

Architecture (paper Sec. 3, Fig. 2)
-----------------------------------
A Restormer backbone (Zamir et al., CVPR 2022) with prompt blocks in its decoder:

* **Embedding**: a 3x3 convolution (no bias) lifts the ``B`` bands to ``C = dim`` features.
* **Encoder**: four levels of transformer blocks with ``C, 2C, 4C, 8C`` channels (the last is the
  latent level), joined by downsampling = 3x3 convolution halving the channels + pixel-unshuffle(2).
* **Transformer block** (pre-norm, residual): ``x + MDTA(LN(x))`` then ``x + GDFN(LN(x))``, LN
  over channels at every pixel (with or without bias).

  - MDTA, multi-Dconv head *transposed* attention (Restormer Sec. 3.1): ``q, k, v`` by a 1x1 and a
    depthwise 3x3 convolution; per head, ``q`` and ``k`` are L2-normalised over all pixels and the
    attention map is the ``c x c`` channel Gram matrix scaled by a learned temperature, softmaxed,
    applied to ``v``; a 1x1 projection. Attention is global over the image, linear in its size.
  - GDFN, gated-Dconv feed-forward (Restormer Sec. 3.2): 1x1 expansion to ``2 * int(gamma C)``,
    depthwise 3x3, ``GELU(x1) * x2`` gating, 1x1 projection back.

* **Decoder**: at each of the three decoder levels (latent, level 3, level 2 features) a *prompt
  block* (paper Sec. 3.1) adapts the features to the unknown degradation:

  - prompt generation module (PGM): global-average-pool the features ``F`` to a vector, a linear
    layer + softmax gives weights ``w`` over ``N = prompt_len`` learned prompt components
    ``P_c`` (``prompt_len x C_p x s x s``); the prompt is ``Conv3x3(resize(sum_c w_c P_c))``,
    bilinearly resized to the features' ``H x W``;
  - prompt interaction module (PIM): concatenate ``[F, prompt]`` along channels, one transformer
    block on the concatenation, a 1x1 convolution back to the decoder width.

  Then upsampling (3x3 convolution doubling the channels + pixel-shuffle(2)), concatenation with
  the encoder skip, a 1x1 channel reduction (except at level 1) and the decoder transformer blocks.
* **Refinement** blocks at full resolution, a 3x3 output convolution and the global residual
  ``out = conv(features) + input``.

Channel bookkeeping of the official code
----------------------------------------
The official ``__init__`` writes several widths as literals that are right only for ``dim = 48``
(e.g. ``int(dim*2**2) + 512`` for ``8 dim + 320``). Here they are derived from ``dim`` and
``prompt_dims`` so that small configurations work; for ``dim = 48`` and the default prompts every
shape equals the official one. Where the official code fixes a width that the forward never
checks (the decoder latent is reduced to ``4 dim`` before the first upsampling, so ``up4_3`` maps
``4 dim -> 2 dim`` rather than Restormer's ``8 dim -> 4 dim``) this layout is kept as is.

The official model also builds six 1x1 convolutions that its forward never calls
(``chnl_reduce{1,2,3}``: ``prompt_dims[i] -> encoder_prompt_dims[i]`` and
``reduce_noise_channel_{1,2,3}``: ``C_i + encoder_prompt_dims[i] -> C_i``, left over from an encoder
prompt variant). They are kept -- unused, so they get no gradient -- because they are in the released
state_dict and in the reported parameter count.

Degradation mask
----------------
PromptIR is a *blind* restorer: it sees only the degraded image and infers the degradation from it
(that is the point of the prompts). hiralign's general family passes ``mask=`` (1 = observed);
:meth:`PromptIR.forward` accepts it and ignores it, which is the faithful behaviour.

Input size and tiling
---------------------
Three pixel-unshuffle downsamplings: ``H`` and ``W`` must be multiples of 8 (``input_multiple =
8``; the forward does not pad, like the official one, and hiralign pads inputs to the multiple;
the official ``demo.py`` reflect-pads to 8 too). Tiled inference cannot be exact
(``receptive_radius = None``): MDTA attends over all pixels of its input, the PGM pools the whole
feature map, and the prompt is resized to the input's size, so every output pixel depends on the
whole tile. ``tile_align = 8`` keeps tiles on the pixel-unshuffle grid; use ``blend="window"``.

Deviations from the official code
---------------------------------
* Only the prompt-decoder model (``decoder=True``, the one trained and released) is offered. The
  official ``decoder=False`` variant cannot run: its ``up4_3`` expects ``4 dim`` channels but gets
  the ``8 dim`` latent.
* The widths written as ``dim = 48`` literals are derived (see above); identical at ``dim = 48``.
* The unused ``noise_emb`` argument of the official forward is replaced by the ignored ``mask``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Official configuration (``net/model.py`` defaults with ``decoder=True``); ``build(31)`` gives the
#: HIR-ALIGN 31-band model, identical except for the input/output convolutions.
PAPER_CONFIG: dict = {"dim": 48, "num_blocks": (4, 6, 6, 8), "num_refinement_blocks": 4, "heads": (1, 2, 4, 8),
                      "ffn_expansion_factor": 2.66, "bias": False, "layernorm_type": "WithBias", "prompt_len": 5,
                      "prompt_dims": (64, 128, 320), "prompt_sizes": (64, 32, 16),
                      "encoder_prompt_dims": (64, 128, 256)}
#: A very small configuration for CPU tests (83,288 parameters at 31 bands; inputs >= 8 x 8).
TINY_CONFIG: dict = {"dim": 4, "num_blocks": (1, 1, 1, 1), "num_refinement_blocks": 1, "heads": (1, 1, 2, 2),
                     "ffn_expansion_factor": 2.66, "bias": False, "layernorm_type": "WithBias", "prompt_len": 3,
                     "prompt_dims": (4, 8, 8), "prompt_sizes": (8, 4, 2), "encoder_prompt_dims": (4, 8, 8)}
#: Parameters of the official 3-channel PromptIR: 35.59 M. This is the figure given for PromptIR in
#: the all-in-one restoration literature (e.g. the complexity comparison of Dudhane et al., "Dynamic
#: Pre-training: Towards Efficient and Scalable All-in-One Image Restoration", arXiv:2404.02154, by
#: the same group); the table of the PromptIR paper itself could not be consulted when this was
#: written. Counting the parameters of ``PromptIR(decoder=True)`` in the official ``net/model.py``
#: gives exactly 35,592,263 (3 bands), i.e. 35.59 M; ``build(31)`` has 35,628,551.
PAPER_PARAMETERS = 35_590_000
#: State-dict prefixes the official forward never calls -- left over from an encoder-prompt variant;
#: they exist so the released checkpoints load, and get no gradient (``PromptIR.unused_parameters``).
UNUSED_PARAMETERS = ("chnl_reduce1.", "chnl_reduce2.", "chnl_reduce3.", "reduce_noise_channel_1.",
                     "reduce_noise_channel_2.", "reduce_noise_channel_3.")


class _LayerNormParameters(nn.Module):
    """Layer normalisation over the last axis with a gain (and, ``with_bias``, a shift).

    ``WithBias``: ``(x - mean) / sqrt(var + 1e-5) * weight + bias``; ``BiasFree`` keeps the mean:
    ``x / sqrt(var + 1e-5) * weight`` (the variance is still taken about the mean)."""

    def __init__(self, dim: int, with_bias: bool):
        super().__init__()
        self.with_bias = with_bias
        self.weight = nn.Parameter(torch.ones(dim))
        if with_bias:
            self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.var(-1, keepdim=True, unbiased=False)
        if self.with_bias:
            return (x - x.mean(-1, keepdim=True)) / torch.sqrt(var + 1e-5) * self.weight + self.bias
        return x / torch.sqrt(var + 1e-5) * self.weight


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of every pixel of an ``(N, C, H, W)`` map."""

    def __init__(self, dim: int, layernorm_type: str = "WithBias"):
        super().__init__()
        if layernorm_type not in ("WithBias", "BiasFree"):
            raise ValueError(f"layernorm_type must be 'WithBias' or 'BiasFree', not {layernorm_type!r}")
        self.body = _LayerNormParameters(dim, layernorm_type == "WithBias")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class TransposedAttention(nn.Module):
    """MDTA (Restormer Sec. 3.1): multi-head attention across *channels*, over all pixels.

    Per head, ``softmax(temperature * q_hat k_hat^T) v`` with ``q_hat, k_hat`` the L2-normalised
    (over pixels) ``c x HW`` queries/keys -- a ``c x c`` attention map, so the cost is linear in
    the image size and every output pixel sees the whole image."""

    def __init__(self, dim: int, heads: int, bias: bool):
        super().__init__()
        if dim % heads:
            raise ValueError(f"MDTA channels ({dim}) must be divisible by heads ({heads})")
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(3 * dim, 3 * dim, 3, padding=1, groups=3 * dim, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = (t.reshape(n, self.heads, c // self.heads, h * w)
                   for t in self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attention = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        return self.project_out((attention @ v).reshape(n, c, h, w))


class GatedDconvFeedForward(nn.Module):
    """GDFN (Restormer Sec. 3.2): ``W_out (GELU(x1) * x2)`` with ``[x1, x2] = DWConv3x3(W_in x)``."""

    def __init__(self, dim: int, expansion: float, bias: bool):
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, 2 * hidden, 1, bias=bias)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)


class TransformerBlock(nn.Module):
    """Restormer block: ``x + MDTA(LN(x))``, then ``x + GDFN(LN(x))``."""

    def __init__(self, dim: int, heads: int, expansion: float, bias: bool, layernorm_type: str):
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim, layernorm_type)
        self.attn = TransposedAttention(dim, heads, bias)
        self.norm2 = ChannelLayerNorm(dim, layernorm_type)
        self.ffn = GatedDconvFeedForward(dim, expansion, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def transformer_stage(depth: int, dim: int, heads: int, expansion: float, bias: bool,
                      layernorm_type: str) -> nn.Sequential:
    return nn.Sequential(*[TransformerBlock(dim, heads, expansion, bias, layernorm_type) for _ in range(depth)])


class PatchEmbedding(nn.Module):
    """Overlapped patch embedding: a 3x3 convolution without bias, ``bands -> dim``."""

    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Downsample(nn.Module):
    """``C -> 2C`` channels at half resolution: 3x3 conv to ``C/2``, pixel-unshuffle(2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """``C -> C/2`` channels at double resolution: 3x3 conv to ``2C``, pixel-shuffle(2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, 2 * channels, 3, padding=1, bias=False), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class PromptGenerationBlock(nn.Module):
    """PGM (paper Sec. 3.1): an input-conditioned prompt from ``prompt_len`` learned components.

    ``w = softmax(Linear(GAP(F)))`` over the components ``P_c`` (``C_p x s x s`` each); the prompt
    is ``Conv3x3(bilinear_resize(sum_c w_c P_c, H x W))``, one per sample."""

    def __init__(self, prompt_dim: int, prompt_len: int, prompt_size: int, feature_dim: int):
        super().__init__()
        self.prompt_param = nn.Parameter(torch.rand(1, prompt_len, prompt_dim, prompt_size, prompt_size))
        self.linear_layer = nn.Linear(feature_dim, prompt_len)
        self.conv3x3 = nn.Conv2d(prompt_dim, prompt_dim, 3, padding=1, bias=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        weights = F.softmax(self.linear_layer(features.mean(dim=(-2, -1))), dim=1)  # (N, prompt_len)
        prompt = torch.einsum("nl,lchw->nchw", weights, self.prompt_param[0])
        prompt = F.interpolate(prompt, features.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv3x3(prompt)


class PromptIR(nn.Module):
    """PromptIR with prompt blocks in the decoder: ``(N, B, H, W)`` degraded -> restored cube.

    ``inp_channels`` / ``out_channels`` are the bands (equal: the output adds the input). See the
    module docstring for the layout and the derived channel widths."""

    receptive_radius = None  # MDTA and the prompt pooling are global over the (tile) image
    tile_align = 8  # three pixel-unshuffle(2) downsamplings
    input_multiple = 8
    unused_parameters = UNUSED_PARAMETERS

    def __init__(self, inp_channels: int = 3, out_channels: int | None = None, dim: int = 48,
                 num_blocks=(4, 6, 6, 8), num_refinement_blocks: int = 4, heads=(1, 2, 4, 8),
                 ffn_expansion_factor: float = 2.66, bias: bool = False, layernorm_type: str = "WithBias",
                 prompt_len: int = 5, prompt_dims=(64, 128, 320), prompt_sizes=(64, 32, 16),
                 encoder_prompt_dims=(64, 128, 256)):
        super().__init__()
        out_channels = inp_channels if out_channels is None else out_channels
        if out_channels != inp_channels:
            raise ValueError("PromptIR adds its input to the output: out_channels must equal inp_channels")
        if len(num_blocks) != 4 or len(heads) != 4:
            raise ValueError("num_blocks and heads need one entry per level (4)")
        if dim % 2:
            raise ValueError(f"dim ({dim}) must be even (downsampling halves the channels)")
        c1, c2, c3, c4 = dim, 2 * dim, 4 * dim, 8 * dim
        p1, p2, p3 = prompt_dims
        s1, s2, s3 = prompt_sizes
        e1, e2, e3 = encoder_prompt_dims

        def stage(depth, width, n_heads):
            return transformer_stage(depth, width, n_heads, ffn_expansion_factor, bias, layernorm_type)

        def block(width):  # the prompt-interaction transformer blocks all use the level-3 head count
            return TransformerBlock(width, heads[2], ffn_expansion_factor, bias, layernorm_type)

        def conv1x1(cin, cout):
            return nn.Conv2d(cin, cout, 1, bias=bias)

        self.patch_embed = PatchEmbedding(inp_channels, dim)
        # prompt generation modules (Sec. 3.1), on the level-2, level-3 and latent decoder features
        self.prompt1 = PromptGenerationBlock(p1, prompt_len, s1, c2)
        self.prompt2 = PromptGenerationBlock(p2, prompt_len, s2, c3)
        self.prompt3 = PromptGenerationBlock(p3, prompt_len, s3, c4)
        # built but never called by the official forward (kept for the state_dict; see docstring)
        self.chnl_reduce1 = conv1x1(p1, e1)
        self.chnl_reduce2 = conv1x1(p2, e2)
        self.chnl_reduce3 = conv1x1(p3, e3)

        self.reduce_noise_channel_1 = conv1x1(c1 + e1, c1)  # unused
        self.encoder_level1 = stage(num_blocks[0], c1, heads[0])
        self.down1_2 = Downsample(c1)
        self.reduce_noise_channel_2 = conv1x1(c2 + e2, c2)  # unused
        self.encoder_level2 = stage(num_blocks[1], c2, heads[1])
        self.down2_3 = Downsample(c2)
        self.reduce_noise_channel_3 = conv1x1(c3 + e3, c3)  # unused
        self.encoder_level3 = stage(num_blocks[2], c3, heads[2])
        self.down3_4 = Downsample(c3)
        self.latent = stage(num_blocks[3], c4, heads[3])

        # decoder level 3: prompt interaction on the latent (-> 4C), up to 2C, skip, reduce to 4C
        self.up4_3 = Upsample(c3)
        self.reduce_chan_level3 = conv1x1(c2 + c3, c3)
        self.noise_level3 = block(c4 + p3)
        self.reduce_noise_level3 = conv1x1(c4 + p3, c3)
        self.decoder_level3 = stage(num_blocks[2], c3, heads[2])

        # decoder level 2: prompt interaction (-> 4C), up to 2C, skip, reduce to 2C
        self.up3_2 = Upsample(c3)
        self.reduce_chan_level2 = conv1x1(c3, c2)
        self.noise_level2 = block(c3 + p2)
        self.reduce_noise_level2 = conv1x1(c3 + p2, c3)
        self.decoder_level2 = stage(num_blocks[1], c2, heads[1])

        # decoder level 1: prompt interaction (-> 2C), up to C, skip (no reduction: 2C channels)
        self.up2_1 = Upsample(c2)
        self.noise_level1 = block(c2 + p1)
        self.reduce_noise_level1 = conv1x1(c2 + p1, c2)
        self.decoder_level1 = stage(num_blocks[0], c2, heads[0])

        self.refinement = stage(num_refinement_blocks, c2, heads[0])
        self.output = nn.Conv2d(c2, out_channels, 3, padding=1, bias=bias)

    @staticmethod
    def prompt_interaction(features: torch.Tensor, generate: PromptGenerationBlock, transformer: TransformerBlock,
                           reduce: nn.Conv2d) -> torch.Tensor:
        """PIM (paper Sec. 3.1): ``Conv1x1(Transformer([F, PGM(F)]))``."""
        return reduce(transformer(torch.cat([features, generate(features)], dim=1)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``(N, B, H, W)`` with ``H, W`` multiples of 8. ``mask`` is accepted for hiralign's
        general family and ignored: PromptIR is blind (see the module docstring)."""
        h, w = x.shape[-2:]
        if h % self.input_multiple or w % self.input_multiple:
            raise ValueError(f"PromptIR needs H and W divisible by {self.input_multiple}; got {h} x {w} "
                             "(pad the input, as hiralign's inference does)")
        enc1 = self.encoder_level1(self.patch_embed(x))
        enc2 = self.encoder_level2(self.down1_2(enc1))
        enc3 = self.encoder_level3(self.down2_3(enc2))
        latent = self.latent(self.down3_4(enc3))

        latent = self.prompt_interaction(latent, self.prompt3, self.noise_level3, self.reduce_noise_level3)
        dec3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], dim=1)))

        dec3 = self.prompt_interaction(dec3, self.prompt2, self.noise_level2, self.reduce_noise_level2)
        dec2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], dim=1)))

        dec2 = self.prompt_interaction(dec2, self.prompt1, self.noise_level1, self.reduce_noise_level1)
        dec1 = self.decoder_level1(torch.cat([self.up2_1(dec2), enc1], dim=1))

        return self.output(self.refinement(dec1)) + x


def build(bands: int, **cfg) -> PromptIR:
    """PromptIR for ``bands`` spectral bands (input and output); ``cfg`` as in :data:`PAPER_CONFIG`
    (defaults: the official configuration)."""
    return PromptIR(inp_channels=bands, out_channels=bands, **{**PAPER_CONFIG, **cfg})
