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
# # 01 · Proxy generation (stage 1)
#
# A restorer $R_\theta$ pretrained on the **source** domain is applied to every degraded **target**
# observation $y_i$ to obtain a proxy HSI (paper Section III-A, Eq. 3):
#
# $$\hat x_i = R_\theta(y_i)$$
#
# The proxy is not expected to be clean; it is a pseudo-clean anchor that keeps the scene layout and
# the dominant spatial-spectral structure. Its **proxy RGB** stacks the bands nearest 660, 550 and
# 470 nm, chosen by wavelength (Eq. 4): $\hat r_i = [\hat x_i^{(660)}, \hat x_i^{(550)}, \hat x_i^{(470)}]$.
#
# This notebook loads the source model (the committed demo checkpoint by default, or pretrains one
# on the source domain of `00_data.h5`), makes the proxies with tiled inference, writes `01_proxy.h5`, and measures
# how good the proxies are against the clean targets (evaluation only) next to a classical
# subspace low-rank + TV baseline. The last table shows the **source-vs-target gap** of the source
# model: the reason HIR-ALIGN exists.

# %% tags=["parameters"]
task: str = "denoise-gaussian"  # restoration task: denoise-gaussian, denoise-complex, sr-x4, sr-ref-x4 or sr-ref-x8 (an unregistered HR RGB reference, UAFL), deblur, bandmiss, inpaint
backbone: str = ""  # registered backbone (hiralign.restorers.names()) or a plugged one, package.module:factory or file.py:factory; empty: the checkpoint's, or the task's CPU default
backbone_kwargs: str = ""  # YAML mapping of backbone keywords, e.g. {channels: 16}; for a plugged one also layout (bchw or b1chw) and multiple
backbone_config: str = ""  # named configuration of a registered backbone: paper or tiny (faithful ones), small or large (stand-ins); empty: its first
checkpoint: str = ""  # source-model checkpoint: a hiralign .safetensors, or a released .pth/.pt/.ckpt of backbone; empty: the committed demo checkpoint for the synthetic source, else pretrain here
observed: str = "all"  # which target_observed images are observed (anchors for stage 2): all, or indices such as 0,1,2
tile: int = 128  # inference tile (px of the observation); larger observations are restored tile by tile with overlap (0: whole images)
pretrain_epochs: int = 10  # epochs (50 steps each) if no checkpoint fits and the source model is pretrained here
pretrain_batch: int = 16  # patches per pretraining step
pretrain_patch: int = 32  # side of the clean pretraining patches (px; a multiple of the SR scale)
baseline_iterations: int = 50  # ADMM iterations of the classical subspace low-rank + TV baseline (bicubic for SR)
device: str = "cpu"  # torch device: cpu, cuda or auto
run_dir: str = "runs/demo"  # run directory (relative: to the project root): reads 00_data.h5, writes 01_proxy.h5
seed: int = 0  # seeds the target degradations (image i uses seed + i) and any pretraining
force: bool = False  # recompute even if 01_proxy.h5 is current (same parameters and inputs)

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from hiralign import proxy as stage1
from hiralign.data import stage as data_stage
from hiralign.restorers.classical import baseline as classical_baseline
from hiralign.stages import run_stage, stage_parameters
from hiralign.store import RunStore, resolve_run_dir
from hiralign.tasks import get_task
from hiralign.train import load_checkpoint

spec = get_task(task)
print(f"task {spec.name}: {spec.description}")

# %% [markdown]
# ## Source model $R_\theta$, proxies (Eq. 3) and proxy RGB (Eq. 4)
# The source model is `checkpoint`, else the committed demo checkpoint of the task, else a backbone
# pretrained here on the `source_train` split of `00_data.h5`. It restores every degraded target
# observation; the clean target cubes of `00_data.h5` are stored next to the proxies **only** to
# score them.

# %%
result = run_stage("01_proxy", run_dir, stage_parameters(globals()), force=force)
splits = data_stage.load(RunStore(run_dir))
source = load_checkpoint(result.checkpoint, bands=splits.wavelengths.size, task=spec, device=device)
model, model_config = source.model, source.config
print(f"backbone {model_config.get('backbone')} ({model_config.get('size')}), {model_config.get('bands')} bands, "
      f"trained for {model_config.get('task')} on: {model_config.get('source', '?')}")
print(f"{len(result.proxies)} proxies, {int(result.observed.sum())} observed")
proxies, flags = result.proxies, result.observed
degraded = stage1.degrade_targets(splits.target_observed, spec, seed=seed)  # the stored observations, with their masks
base_model = classical_baseline(spec) if spec.scale > 1 else classical_baseline(spec, iterations=baseline_iterations)
baseline_out = stage1.make_proxies(base_model, degraded, spec, tile=None)

# %%
fig = stage1.plot_proxies(degraded, proxies, splits.target_observed, baseline_out)
fig.savefig(resolve_run_dir(run_dir) / "01_proxies.png", dpi=110, bbox_inches="tight")
plt.show()

# %% [markdown]
# Spectra at random pixels of the first target image: degraded, proxy, baseline and clean.

# %%
fig = stage1.plot_spectra(degraded[0], proxies[0], splits.target_observed[0], baseline_out[0], seed=seed)
plt.show()

# %% [markdown]
# ## Proxy quality on the target (evaluation only)
# PSNR (dB), SSIM and SAM (degrees) against the clean target cubes, for the source model's proxies and
# the classical baseline. "input" scores the observation itself (bicubic-upsampled for SR).

# %%
rows = stage1.proxy_table(degraded, splits.target_observed, spec, flags,
                          {"proxy": proxies, "baseline": baseline_out})
display(Markdown(stage1.markdown_table(rows)))

# %% [markdown]
# ## Source-vs-target gap
# The same source model and baseline on source-domain test images and on the target images, each
# degraded the same way; "gain" is PSNR over the input. Absolute PSNRs also depend on how easy each
# split's images are, so the telling column is **model - baseline**: the classical baseline uses no
# training data, and a learned model that beats it on the source but falls behind it on the target
# shows the domain gap that stages 2-3 close. The last row is source minus target.

# %%
gap = stage1.gap_table(model, base_model, {"source_test": splits.source_test, "target_observed": splits.target_observed},
                       spec, seed=seed, tile=tile or None, device=device)
display(Markdown(stage1.markdown_table(gap)))
