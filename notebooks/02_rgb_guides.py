# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Target-aligned RGB guides (stage 2a)
#
# Each proxy RGB `x` (Eq. 4) gets `G` RGB guides: new appearances of the same scene that the warp
# (notebook 03) turns into new HSIs (paper Sec. III-B.1). The paper's generator is an **improved unCLIP**:
#
# * **Eq. 5** - the CLIP image embedding `E_phi(x)`, noised to `noise_level` in embedding space, is fused
#   with the text embedding of fixed prompts into the condition `c` (noised embedding + noise-level
#   embedding as UNet class labels, prompt through cross-attention);
# * **Eq. 6** - the reverse DDPM/DDIM transitions use the noise predicted under `c`, with
#   classifier-free guidance against the **negative prompt** (and a zero image condition);
# * **Eq. 7** - the CLIP vision encoder is finetuned so blurred images embed like their clean
#   versions (`clip_path` = such an encoder, made by `hiralign.guides.clip_finetune.blur_robust_encoder`);
# * **Eq. 8** - sampling starts SDEdit-style from the proxy latent noised to `t0 = strength * T`.
#
# unCLIP needs the Stable unCLIP weights (`model_path`); without them `generator="unclip"` stops at once
# and says how to provide them. Three offline generators run anywhere: `recompose` (new layouts: a
# dead-leaves occlusion model whose leaves are SLIC regions of the proxy, carried rigidly with their own
# pixels), `local-ddpm` (a small DDPM trained here on proxy patches + scikit-image pictures, sampled with
# the same Eq. 8 start) and `jitter` (flips, rotation, crop-resize, colour jitter). Two neighbouring
# **HSI generators** (Table IX, `hiralign.generators`) learn from the observed proxy HSIs and sample
# whole HSIs, which notebook 03 passes through unwarped: `ubf` (Unmixing before Fusion: a DDPM on
# abundance maps) and `hsigene` (HSIGene-style latent diffusion with a control branch on the proxy RGB);
# their guides are the RGB renders of what they generated. Input: `01_proxy.h5` from `run_dir` (with `demo=True`:
# DEMO proxies, synthetic-benchmark target RGBs lightly blurred as stand-ins). Output: `02_guides.h5`.
# Prompts, `strength`, `noise_level` and `guidance_scale` are not printed in the paper: ours are choices.

# %% tags=["parameters"]
generator: str = "recompose"  # guide generator: unclip (needs weights), recompose (new layouts, CPU default), local-ddpm (trains on CPU), jitter; HSI generators (no warp, Table IX): ubf, hsigene
model_path: str = "stabilityai/stable-diffusion-2-1-unclip"  # unclip: local folder or cached hub id (-unclip or -unclip-small)
clip_path: str = ""  # unclip: folder of a blur-robust CLIP vision encoder (Eq. 7); "" keeps the model's own
n_guides: int = 3  # guides per proxy (paper: 3)
strength: float = 0.2  # SDEdit start step t0 as a fraction of T (Eq. 8): 0 keeps the proxy, 1 starts from noise (our choice; unclip: try 0.4-0.6)
noise_level: int = 100  # unclip: noise on the CLIP image embedding, 0..999 (our choice)
guidance_scale: float = 7.5  # unclip: classifier-free guidance weight; 1 or less disables it and the negative prompt (our choice)
steps: int = 50  # sampler steps of a full run; strength * steps are run (unclip, local-ddpm); ubf, hsigene: every step from pure noise
prompt: str = "a sharp, clean, detailed, high quality photograph"  # unclip: fixed positive prompt (our choice)
negative_prompt: str = "blurry, noisy, low quality, jpeg artifacts, stripes, distorted, oversaturated"  # unclip: fixed negative prompt (our choice)
train_steps: int = 600  # local-ddpm, ubf, hsigene: optimiser steps of the diffusion model (cached per proxies + settings)
seed: int = 0  # seed of every random draw (guides, demo proxies, local-ddpm training)
device: str = "auto"  # torch device for unclip / local-ddpm: auto (cuda if present), cpu or cuda
threads: int = 0  # CPU threads for torch during generation; 0 keeps the library default (every core, one per run under --jobs N)
run_dir: str = "runs/demo"  # run directory (relative: to the project root): reads 01_proxy.h5, writes 02_guides.h5
demo: bool = False  # use DEMO proxies (blurred synthetic targets) instead of 01_proxy.h5; never a silent fallback
image_size: int = 64  # size (px) of the demo proxies (demo only)
n_demo: int = 4  # number of demo proxies (demo only)
force: bool = False  # regenerate even if 02_guides.h5 is current (same parameters and inputs)

# %%
import matplotlib.pyplot as plt

from hiralign.guides.plots import plot_guide_grid, plot_quality
from hiralign.stages import run_stage, stage_parameters

out = run_stage("02_rgb_guides", run_dir, stage_parameters(globals()), force=force)  # unclip without weights stops here
guides = out.guides
print(f"inputs: {out.source}")
print(f"generator {out.generator!r}: guides {guides.shape}, range [{guides.min():.3f}, {guides.max():.3f}]")

# %% [markdown]
# Each row: the proxy RGB, then its guides. Guides should keep the proxy's layout (the warp matches
# them to it) and differ from each other (they are meant to widen the target-domain coverage).

# %%
label = "DEMO proxies (blurred synthetic targets)" if out.demo else "proxies from 01_proxy.h5"
fig = plot_guide_grid(out.proxy_rgb, guides, names=out.names, title=f"{generator} guides - {label}")
plt.show()

# %% [markdown]
# Quality (stored in `02_guides.h5`, reported again by notebook 05): SSIM of each guide to its proxy
# (1 = the proxy's layout; `ssim_unrelated` is its floor, the proxy against itself shifted by half its
# size), mean `1 - SSIM` between the guides of one proxy and across proxies (diversity), and the colour
# distance of all guides to all proxies (sliced 1-Wasserstein in RGB; 0 = the proxies' colours).

# %%
print({k: round(v, 4) for k, v in out.quality.summary().items()})
fig = plot_quality(out.quality, names=[n.split("/")[-1] for n in out.names])
plt.show()
