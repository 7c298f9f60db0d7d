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
# on the source domain), makes the proxies with tiled inference, writes `01_proxy.h5`, and measures
# how good the proxies are against the clean targets (evaluation only) next to a classical
# subspace low-rank + TV baseline. The last table shows the **source-vs-target gap** of the source
# model: the reason HIR-ALIGN exists.

# %% tags=["parameters"]
task: str = "denoise-gaussian"  # restoration task: denoise-gaussian, denoise-complex, sr-x4, deblur, bandmiss, inpaint
backbone: str = ""  # registered backbone (hiralign.restorers.names()); empty: the checkpoint's, or the task's CPU default
checkpoint: str = ""  # source-model checkpoint (.safetensors); empty: the committed demo checkpoint, else pretrain here
dataset: str = "synthetic"  # used only without 00_data.h5 in run_dir: synthetic (embedded benchmark) or a path to real target scenes
observed: str = "all"  # which target_observed images are observed (anchors for stage 2): all, or indices such as 0,1,2
image_size: int = 64  # image size (px) when the data is built here (no 00_data.h5 in run_dir)
tile: int = 128  # inference tile (px of the observation); larger observations are restored tile by tile with overlap
pretrain_epochs: int = 10  # epochs (50 steps each) if no checkpoint fits and the source model is pretrained here
baseline_iterations: int = 50  # ADMM iterations of the classical subspace low-rank + TV baseline (bicubic for SR)
device: str = "cpu"  # torch device: cpu or cuda
run_dir: str = "runs/demo"  # run directory (relative: to the project root): reads 00_data.h5 if present, writes 01_proxy.h5
seed: int = 0  # seeds the target degradations (image i uses seed + i) and any pretraining
force: bool = False  # recompute even if 01_proxy.h5 exists with the same parameters

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from hiralign import proxy as stage1
from hiralign.data import stage as data_stage
from hiralign.restorers.classical import baseline as classical_baseline
from hiralign.store import RunStore, read_params
from hiralign.tasks import get_task
from hiralign.train import TrainConfig, source_model

store = RunStore(run_dir)
spec = get_task(task)
print(f"task {spec.name}: {spec.description}")

# %% [markdown]
# ## Data
# The source and target splits of stage 00 (`00_data.h5`), or the embedded benchmark built here when
# the run directory has none. Clean target cubes are used **only** to score the proxies.

# %%
if store.exists("00_data"):
    splits = data_stage.read_splits(store)
    print(f"read {store.path('00_data')}")
else:
    splits = data_stage.build_splits(dataset=dataset, kind="", source_path="", image_size=image_size,
                                     n_source_train=24, n_source_test=6, n_target_observed=8,
                                     n_target_unobserved=8, seed=seed)
    print("no 00_data.h5 in run_dir: built the splits here")
data_stage.summary(splits)

# %% [markdown]
# ## Source model $R_\theta$

# %%
source = source_model(spec, splits.source_train, splits.source_test, checkpoint=checkpoint, backbone=backbone,
                      out=store.run_dir / f"01_source_{spec.name}.safetensors",
                      config=TrainConfig(epochs=pretrain_epochs, seed=seed, device=device), device=device,
                      source=f"source_train of {store.run_dir}")
model, model_config = source.model, source.config
print(f"backbone {model_config.get('backbone')} ({model_config.get('size')}), {model_config.get('bands')} bands, "
      f"trained for {model_config.get('task')} on: {model_config.get('source', '?')}")

# %% [markdown]
# ## Proxies (Eq. 3) and proxy RGB (Eq. 4)

# %%
flags = stage1.parse_observed(observed, len(splits.target_observed))
data_source = (read_params(store.path("00_data")) if store.exists("00_data")
               else {"dataset": dataset, "image_size": image_size, "seed": seed})
params = stage1.proxy_params(spec.name, source.path, backbone=model_config.get("backbone"), observed=observed,
                             tile=tile, seed=seed, data=data_source)
degraded = stage1.degrade_targets(splits.target_observed, spec, seed=seed)
if store.is_current("01_proxy", params) and not force:
    proxies = stage1.read_proxy_artifact(store, params).proxies
    print(f"{store.path('01_proxy')} is current: loaded it")
else:
    proxies = stage1.make_proxies(model, degraded, spec, tile=tile, device=device)
    stage1.write_proxy_artifact(store, degraded, proxies, flags, params, clean=splits.target_observed)
    print(f"wrote {store.path('01_proxy')}: {len(proxies)} proxies, {int(flags.sum())} observed")
base_model = classical_baseline(spec) if spec.family == "sr" else classical_baseline(spec, iterations=baseline_iterations)
baseline_out = stage1.make_proxies(base_model, degraded, spec, tile=None)

# %%
fig = stage1.plot_proxies(degraded, proxies, splits.target_observed, baseline_out)
fig.savefig(store.run_dir / "01_proxies.png", dpi=110, bbox_inches="tight")
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
                       spec, seed=seed, tile=tile, device=device)
display(Markdown(stage1.markdown_table(gap)))
