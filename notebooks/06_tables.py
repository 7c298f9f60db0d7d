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
# # 06 · Tables: our numbers beside the paper's
#
# `hiralign reproduce TABLE` runs every experiment of one table of the paper (Section IV, Tables
# I-XI) through notebooks 00..05 and writes `results/<table>.md`, `.csv` and `.json`. This notebook
# renders one of them:
#
# * the table in the paper's layout, each measured value (**ours**: the mean over replicates ± the
#   half-width of its 95% t interval, `--replicates N`) beside the paper's (**paper**), with the paper
#   backbone -> our backbone mapping and the status of every row;
# * bars of every reproduced row, ours above the paper's (e.g. source-only vs adapted per backbone);
# * each **gain** the paper claims (adapted over source-only, mixed over proxy-only, ...), ours paired
#   over the same images and replicates with its 95% intervals and Wilcoxon p, judged *better*, *worse*
#   or *not distinguishable* at 95%, and whether that agrees with the paper's direction, contradicts it,
#   or cannot tell (docs/statistics.md).
#
# Under the `mini` profile the embedded synthetic benchmark stands in for the paper's datasets and
# the models are CPU-sized, so absolute values are not comparable with the paper's; the direction of
# each gain is. With one replicate the intervals cover the test images only, not training randomness.

# %% tags=["parameters"]
table: str = "table6"  # table to render: table1 ... table11 (also 6 or VI)
results_dir: str = "../results"  # folder holding the table files written by hiralign reproduce
metric: str = "psnr"  # metric of the figures: psnr, ssim or sam
save_figures: bool = True  # also write the figures as PNG files next to the results

# %%
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from hiralign import reproduce

results = reproduce.read_results(results_dir, table)
name = results["table"]
print(f"{results['title']}  [profile: {results['profile_label']}; {results.get('replicates', 1)} replicate(s) per experiment]")
display(Markdown(Path(results_dir, f"{name}.md").read_text()))

# %% [markdown]
# ## Measured rows, ours and the paper's
# Grey: source-only (ICVL) rows; blue: adapted (ours); teal: other rows (baselines, ablation settings).
# Error bars on ours: the 95% t interval over replicates (none with one replicate).

# %%
fig = reproduce.plot_rows(results, metric)
if save_figures:
    fig.savefig(Path(results_dir, f"{name}_{metric}.png"), dpi=120, bbox_inches="tight")
plt.show()

# %% [markdown]
# ## Direction of the gains
# Each bar is the improvement of a row over its baseline (PSNR/SSIM up, SAM down); ours carries its
# 95% bootstrap interval over images. Blue: our verdict at 95% agrees with the paper's direction;
# red: it contradicts it (listed below); grey: not distinguishable at 95%, a paper tie, or not measured.

# %%
from collections import Counter


def number(value, spec):
    """``value`` formatted, or a dash where there is none (no interval with one image or replicate)."""
    return "—" if value is None else format(value, spec)


if results["comparisons"]:
    fig = reproduce.plot_gains(results, metric)
    if save_figures:
        fig.savefig(Path(results_dir, f"{name}_{metric}_gains.png"), dpi=120, bbox_inches="tight")
    plt.show()
measured = [c for c in results["comparisons"] if c["our_gain"] is not None]
counts = Counter(c["agreement"] for c in measured)
print(f"{len(measured)} measured gains: " + ", ".join(f"{n} {label}" for label, n in counts.most_common()))
for c in reproduce.disagreements(results):
    print(f"contradicts at 95%  {c['group']}: {c['baseline']} -> {c['row']}, {c['metric'].upper()}: "
          f"paper {c['paper_gain']:+.3f}, ours {c['our_gain']:+.3f} "
          f"[{number(c['gain_low'], '+.3f')}, {number(c['gain_high'], '+.3f')}] over {c['images']} images "
          f"x {c['replicates']} replicate(s), p = {number(c['p_value'], '.3g')}")

# %% [markdown]
# ## Runs
# Every experiment (every replicate, `<experiment>/rep<k>`, with `--replicates N`) ran in its own run
# directory; its executed notebooks are under `<run>/notebooks/`.

# %%
for run in results["runs"]:
    state = "ok" if run["ok"] else f"FAILED: {run['error']}"
    print(f"{run['experiment']:>24s}  {run['seconds']:7.1f} s  ran {len(run['ran'])} stage(s)  {state}")
