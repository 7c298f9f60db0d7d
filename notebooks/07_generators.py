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
# # 07 · Synthesis sources side by side: the warp, UBF and HSIGene-style (Table IX)
#
# HIR-ALIGN's synthesized HSIs come from RGB guides and the spectral warp (notebooks 02-03). Table IX
# compares them with another generator's; `hiralign.generators` has two (docs/generators.md):
# **UBF** (Unmixing before Fusion: a DDPM on abundance maps, mixed with the proxies' endmembers) and
# an **HSIGene-style** latent diffusion model (a spectral VAE and a control branch on the proxy RGB).
# Each source is one run folder made through stage 05 from the same 00/01 stages, e.g.
#
#     hiralign run params/demo.yaml                                                      # the warp (recompose guides)
#     hiralign run params/demo.yaml --set 02_rgb_guides.generator=ubf --run-dir runs/demo-ubf
#     hiralign run params/demo.yaml --set 02_rgb_guides.generator=hsigene --run-dir runs/demo-hsigene
#
# (the three share their 00/01 stages' settings, so their proxies are the same). For each source: the RGB renders (Eq. 4) of its
# HSIs next to the proxy, the spectra at chosen pixels beside the clean target and the proxy, and
# its sPr / sRec against the clean target spectra (HSIGene Eq. 8, measured by notebook 05).

# %% tags=["parameters"]
run_dirs: str = "runs/demo,runs/demo-ubf,runs/demo-hsigene"  # comma-separated run folders (relative: to the project root), one per source
labels: str = "warp,ubf,hsigene"  # comma-separated names of the sources, in the order of run_dirs; empty: the generator names
image: int = 0  # which observed target image to show (index among the observed proxies)
max_hsis: int = 3  # synthesized HSIs shown per source
pixels: str = "16,16;40,40"  # pixels (row,column;row,column) whose spectra are drawn

# %%
import matplotlib.pyplot as plt

from hiralign.generators import compare, plots

views = compare.load_sources([d.strip() for d in run_dirs.split(",")], [s.strip() for s in labels.split(",")] if labels else [])
height, width = views[0].hsi.shape[-2:]
points = compare.parse_pixels(pixels, height, width)
for row in compare.fidelity_rows(views):
    print(row)

# %% [markdown]
# ## RGB renders
# The proxy of the chosen image, then that source's HSIs rendered to RGB. The warp and HSIGene-style
# sources follow the proxy's layout loosely or not at all; UBF is unconditional (its HSIs "of" a proxy
# are independent draws).

# %%
fig = plots.plot_sources_rgb(views, image=image, max_hsis=max_hsis, pixels=points)
plt.show()

# %% [markdown]
# ## Spectra at the marked pixels
# The clean target (black) and the proxy (dashed) at each pixel, with each source's first synthesized
# HSI there. A new layout puts other materials at the same pixel, so the curves need not match; their
# *shapes* should look like target spectra (the warp copies proxy spectra; UBF mixes the learnt
# endmembers; the VAE decodes a latent).

# %%
fig = plots.plot_spectra_at(views, points, image=image)
plt.show()

# %% [markdown]
# ## Spectral fidelity
# sPr: the share of synthesized spectra that fall within the k-NN radius of the clean target spectra
# (realism); sRec: the share of clean target spectra covered by the synthesized ones (coverage).

# %%
fig = plots.plot_fidelity(views)
plt.show()
