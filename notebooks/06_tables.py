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
# * the table in the paper's layout, each measured value (**ours**) beside the paper's (**paper**),
#   with the paper backbone -> our backbone mapping and the status of every row;
# * bars of every reproduced row, ours above the paper's (e.g. source-only vs adapted per backbone);
# * the **direction of each gain** the paper claims (adapted over source-only, mixed over proxy-only,
#   ...), ours beside the paper's, with every disagreement highlighted.
#
# Under the `mini` profile the embedded synthetic benchmark stands in for the paper's datasets and
# the models are CPU-sized, so absolute values are not comparable with the paper's; the direction of
# each gain is.

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
print(f"{results['title']}  [profile: {results['profile_label']}]")
display(Markdown(Path(results_dir, f"{name}.md").read_text()))

# %% [markdown]
# ## Measured rows, ours and the paper's
# Grey: source-only (ICVL) rows; blue: adapted (ours); teal: other rows (baselines, ablation settings).

# %%
fig = reproduce.plot_rows(results, metric)
if save_figures:
    fig.savefig(Path(results_dir, f"{name}_{metric}.png"), dpi=120, bbox_inches="tight")
plt.show()

# %% [markdown]
# ## Direction of the gains
# Each bar is the improvement of a row over its baseline (PSNR/SSIM up, SAM down). Red bars and the
# list below mark the gains whose direction in our runs differs from the paper's.

# %%
if results["comparisons"]:
    fig = reproduce.plot_gains(results, metric)
    if save_figures:
        fig.savefig(Path(results_dir, f"{name}_{metric}_gains.png"), dpi=120, bbox_inches="tight")
    plt.show()
against = reproduce.disagreements(results)
measured = [c for c in results["comparisons"] if c["our_gain"] is not None]
print(f"{len(measured) - len(against)} of {len(measured)} measured gains point the paper's way")
for c in against:
    print(f"DISAGREES  {c['group']}: {c['baseline']} -> {c['row']}, {c['metric'].upper()}: "
          f"paper {c['paper_gain']:+.3f}, ours {c['our_gain']:+.3f}")

# %% [markdown]
# ## Runs
# Every experiment ran in its own run directory; its executed notebooks are under `<run>/notebooks/`.

# %%
for run in results["runs"]:
    state = "ok" if run["ok"] else f"FAILED: {run['error']}"
    print(f"{run['experiment']:>24s}  {run['seconds']:7.1f} s  ran {len(run['ran'])} stage(s)  {state}")
