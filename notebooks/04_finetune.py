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
# # 04 · Aligned supervised finetuning (stage 3)
#
# The proxies and the synthesized HSIs become supervised training pairs for the source-pretrained
# restorer (paper Sec. III-C). Every pair is *aligned*: its degraded input is the task operator
# applied to its own target.
#
# * proxy branch (**Eq. 27**): each observed proxy HSI, degraded by the task operator;
# * synthesized branch (**Eq. 28**): each warped HSI of stage 2, degraded the same way;
# * finetuning set (**Eq. 29**): their union at the synthesis ratio `ratio` (generated : proxy, Table VII)
#   or one branch only (`composition`, Table VI); degradations are re-drawn every epoch, seeded by
#   (seed, epoch, pair index);
# * objective (**Eq. 30**): the backbone's supervised loss, starting from the source checkpoint.
#
# Besides the main run (`adapted`) the notebook can train comparison runs (`compare`, e.g. proxy-only)
# and the clean-target upper bound of Table XI (`upper_bound`: clean observed HSIs replace the proxies).
# Per epoch, a run with P observed images and ratio r holds P proxy pairs and round(r·P) synthesized
# pairs (`hiralign.finetune` documents the exact rule); every run gets the same number of optimiser steps.
#
# Inputs from `run_dir`: `01_proxy.h5` (proxies, observations, the source checkpoint's path) and
# `03_warp.h5` (synthesized HSIs). Outputs: `04_model.safetensors` (+ `04_model_<method>.safetensors`
# for comparison runs) and `04_finetune.h5` (training curves). Without those inputs the notebook stops
# and names the notebook that makes them.

# %% tags=["parameters"]
run_dir: str = "runs/demo"  # run directory (relative: to the project root): reads 01_proxy.h5 + 03_warp.h5, writes 04_model*.safetensors + 04_finetune.h5
task: str = ""  # restoration task; empty: the task of 01_proxy.h5 (a different one is an error)
backbone: str = ""  # expected backbone of the source checkpoint; empty: whatever it holds
checkpoint: str = ""  # source checkpoint (.safetensors); empty: the one 01_proxy used
composition: str = "mixed"  # training set of the main run: mixed (HIR-ALIGN), proxy, generated, clean (Table VI)
ratio: str = "3:1"  # synthesis ratio generated:proxy (Table VII: 1:1, 2:1, 3:1, 5:1, 10:1)
compare: str = "proxy"  # extra compositions trained for comparison, comma-separated (empty: none)
upper_bound: bool = False  # also finetune on the clean observed target HSIs (Table XI upper bound)
epochs: int = 8  # finetuning epochs
steps_per_epoch: int = 20  # optimiser steps per epoch (same for every composition)
batch: int = 8  # patches per step
patch: int = 32  # clean-patch side in pixels (a multiple of the SR scale)
lr: float = 5e-4  # AdamW learning rate, cosine-decayed to lr/100 (our choice: 1/4 of pretraining)
loss: str = "l1"  # supervised loss: l1, l2, charbonnier
validation: str = "clean"  # curve data: clean (target observations vs clean; monitor only, never steers training), proxy (no clean data), none
device: str = "cpu"  # torch device: cpu, cuda or auto
threads: int = 0  # torch CPU threads (0: library default; 1 is fastest on a busy machine)
seed: int = 0  # seeds pairs (degradations), patches and torch
force: bool = False  # retrain even if 04_finetune.h5 is current (same parameters, inputs and checkpoints)

# %%
import matplotlib.pyplot as plt

from hiralign import finetune as ft
from hiralign import report
from hiralign.stages import run_stage, stage_parameters
from hiralign.train import reference_input

stage = run_stage("04_finetune", run_dir, stage_parameters(globals()), force=force)
print(f"{len(stage.inputs.proxies)} observed target images, "
      f"{0 if stage.inputs.synthesized is None else stage.inputs.synthesized.shape[1]} synthesized HSIs each")
for method, counts in stage.counts.items():
    print(f"{method:>14s} ({stage.compositions[method]}): pairs per epoch {counts}")

# %% [markdown]
# ## Aligned pairs
# The first pair of each branch in epoch 0: the target (proxy or synthesized HSI) and its degraded
# input (bicubic-upsampled for SR), rendered as proxy RGB (Eq. 4).

# %%
pairs = stage.pairs()
shown = {}
for label, pair in ft.branch_examples(pairs, epoch=0).items():
    shown[f"{label} target"] = pair.clean
    shown[f"{label} input"] = reference_input(pair.degraded, pairs.task)
fig = report.show_crops(shown, stage.inputs.wavelengths)
plt.show()

# %% [markdown]
# ## Training curves
# Loss per epoch and the validation scores (epoch 0 = the source model before finetuning).

# %%
fig = report.plot_training_curves(stage.curves, keys=[k for k in ("loss", "psnr", "ssim", "sam") if k in next(iter(stage.curves.values()))])
plt.show()
print(report.Table.from_records("curves", ft.curves_table(stage.curves)).to_markdown())
