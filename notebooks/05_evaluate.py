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
# # 05 · Evaluation: source-only vs adapted on the target domain
#
# Every model restores the same stored degraded target observations (`01_proxy.h5`) and is scored
# against the clean target HSIs, which are used here and nowhere in training (paper Sec. IV-C):
#
# * **source-only** (the source checkpoint that made the proxies) vs **adapted** (HIR-ALIGN, stage 3)
#   vs the comparison runs of notebook 04 (e.g. proxy-only, Table VI) and the clean-target
#   **upper-bound** (Table XI) when it was trained; `input` is the observation itself;
# * on the **observed**, **unobserved** and **total** target splits (Table X);
# * PSNR / SSIM / SAM per image and their means with 95% intervals; `d_*` = difference to source-only;
# * **paired comparisons** adapted - source-only and adapted - proxy-only (bootstrap interval, Wilcoxon
#   p, verdict better / worse / not distinguishable at 95%);
# * **sPr / sRec** (HSIGene Eq. 8, k = 10) of the synthesized HSIs of stage 2 against the clean target
#   spectra, beside the proxies and the clean observed images as references;
# * **stage-2 quality**: the guides' layout similarity to their proxies, their diversity and colour
#   distance (from `02_guides.h5`), and how the synthesized spectra change between neighbouring pixels
#   compared with the proxies (from `03_warp.h5`).
#
# Inputs from `run_dir`: `01_proxy.h5`, `04_model*.safetensors` (`04_finetune.h5`), and `03_warp.h5`
# / `00_data.h5` for the spectral table when present. Outputs: `05_metrics.json`, `.md`, `.csv`
# (+ `05_metrics_per_image.csv`, `05_metrics_paired.csv`, `05_metrics_spectral_fidelity.csv`), each with
# provenance, and the
# `05_evaluate.h5` record (the restorations the figures show), so a reloaded evaluation shows exactly
# what a fresh one does.

# %% tags=["parameters"]
run_dir: str = "runs/demo"  # run directory (relative: to the project root): reads 01_proxy.h5, 03_warp.h5, 04_model*; writes 05_metrics.*
device: str = "cpu"  # torch device for inference: cpu, cuda or auto
threads: int = 0  # torch CPU threads (0: library default; 1 is fastest on a busy machine)
seed: int = 0  # seed of the sPr/sRec spectra sampling and of random figure pixels
tile: int = 128  # inference tile size in observation pixels (0: whole images)
include_input: bool = True  # add the degraded input (bicubic-upsampled for SR) as a baseline row
spectral_samples: int = 5000  # spectra drawn per set for sPr/sRec (0: all; the paper uses 100000)
k: int = 10  # k-th neighbour radius of sPr/sRec (HSIGene: 10)
image: int = -1  # target image shown in the figures; -1: the first unobserved image
pixels: str = ""  # pixels for the spectra plot as row,col pairs separated by semicolons; empty: 3 random pixels
crop: int = 32  # side of the centre crop shown in the image figures (0: whole image)
metric: str = "psnr"  # metric of the per-image bar chart: psnr, ssim, sam
force: bool = False  # re-evaluate even if 05_evaluate.h5 is current (same parameters and inputs)

# %%
import matplotlib.pyplot as plt

from hiralign import report
from hiralign.stages import run_stage, stage_parameters

evaluation = run_stage("05_evaluate", run_dir, stage_parameters(globals()), force=force)
print(evaluation.markdown())

# %% [markdown]
# ## Paired comparisons: does HIR-ALIGN beat source-only and proxy-only?
# Each model restores the same observations, so the comparison is paired: per image the difference
# adapted minus baseline, its mean with a 95% bootstrap interval over the images (thick), the 95% t
# interval over replicates when there are several (thin), and the Wilcoxon signed-rank p in the table
# above. A filled marker is a difference distinguishable from zero at 95% (`docs/statistics.md`); one
# run covers only the test images, not the training randomness.

# %%
tables = {t.name: t for t in evaluation.tables}
if "paired" in tables:
    fig = report.plot_paired(tables["paired"].records())
    plt.show()
else:
    print("no paired comparison: this run has no adapted model beside source-only / proxy-only")

# %% [markdown]
# ## Over replicates
# When this run is one replicate of `hiralign run PARAMS --replicates N` (its run_dir is `.../rep<k>`),
# the same tables over every replicate evaluated so far, computed now from their `05_metrics.json`
# (`hiralign run` writes them to `replicates.md` beside the replicates when all have finished).

# %%
from hiralign.replicates import aggregate, evaluated_replicates

replicates = evaluated_replicates(run_dir)
if len(replicates) >= 2:
    over, _ = aggregate(replicates, seed=seed)
    print("\n".join(t.to_markdown() for t in over))
    fig = report.plot_paired(next(t for t in over if t.name == "paired").records())
    plt.show()
else:
    print("a single run: no replicates beside it (hiralign run PARAMS --replicates 3)")

# %% [markdown]
# ## Stage 2: new layouts, target colours, plausible spectra?
# Left: SSIM of the guides to their proxy (dashed: the floor of an unrelated layout with the same
# statistics) and `1 - SSIM` between guides. Right: the distribution of the spectral angle between
# neighbouring pixels, synthesized HSIs against the proxies (a warp that scrambles spectra inside
# regions moves mass to larger angles).

# %%
if evaluation.histograms:
    fig = report.plot_stage2_quality(evaluation.table("stage2_quality").records()[0], evaluation.histograms)
    plt.show()
else:
    print("no stage-2 quality: this run has no 02_guides.h5 + 03_warp.h5 made from its proxies")

# %% [markdown]
# ## Per image
# The chosen metric for every target image and method (observed and unobserved images interleaved).

# %%
fig = report.plot_per_image_bars(evaluation.table("per_image").records(), metric=metric)
plt.show()

# %% [markdown]
# ## Restorations, spectra and errors
# One target image (by default the first *unobserved* one: it took no part in adaptation): clean,
# input and each model's restoration as proxy RGB (Eq. 4), spectra at a few pixels, and per-pixel
# mean absolute error maps on one colour scale.

# %%
i = evaluation.image_index(image)
panels = evaluation.panels(i)
split = "observed" if evaluation.observed[i] else "unobserved"
print(f"image {i}: {evaluation.names[i]} ({split})")
box = report.centre_box(*panels["clean"].shape[1:], crop)
fig = report.show_crops(panels, evaluation.wavelengths, box=box)
plt.show()

# %%
points = report.parse_pixels(pixels, *panels["clean"].shape[1:], seed=seed)
fig = report.plot_spectra(panels, evaluation.wavelengths, points)
plt.show()

# %%
errors = {m: c for m, c in panels.items() if m != "clean"}
fig = report.plot_error_maps(errors, panels["clean"], box=box)
plt.show()

# %% [markdown]
# ## The guide ablation (every run of `hiralign sweep params/sweeps/guide-diversity.yaml`)
# Not this run: HIR-ALIGN minus proxy-only PSNR on the held-out images for five offline generators,
# on the synthetic benchmark and on real CAVE scenes, mean over 3 seeds with its 95% t interval, against
# the guides' diversity (`results/guide-diversity.md`, `docs/guides.md`).

# %%
from hiralign.sweep import REPO_ROOT, plot_sweep, read_sweep_results

ablation = REPO_ROOT / "results" / "guide-diversity.json"
if ablation.exists():
    rows, measure, title = read_sweep_results(ablation)
    fig = plot_sweep(rows, measure, title)
    plt.show()
else:
    print(f"{ablation} not found: run hiralign sweep params/sweeps/guide-diversity.yaml")

