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
# # 03 · Warp-based hyperspectral generation (stage 2b)
#
# Each generated guide RGB brings a new layout; the proxy HSI brings the spectra (paper Sec. III-B.2).
# For every (proxy, guide) pair this notebook
#
# 1. builds patch descriptors of RGB, chroma-normalised RGB and gradients (**Eq. 9**);
# 2. retrieves, for every guide pixel, 16 FAISS seeds among all proxy pixels, expands each seed in a
#    (2r+1)² window and keeps the 16 candidates with the smallest mean absolute descriptor distance
#    (**Eq. 10-13**);
# 3. optimises soft aggregation weights (**Eq. 14-15**) and a per-pixel s×s interpolation kernel
#    (**Eq. 16-17**) with Adam against the guide (**Eq. 19-21**: RGB L1, patch L1, mutual information,
#    SSIM, gradient, TV of the expected-coordinate field of **Eq. 18**, descriptor-distance prior);
# 4. moves the proxy HSI with the *same* weights: the sparse stochastic operator W = S A
#    (**Eq. 22-26**), so every synthesized spectrum is a convex combination of proxy spectra.
#
# Inputs: `01_proxy.h5` and `02_guides.h5` from `run_dir` (a missing one is an error naming its notebook).
# With `demo=True` the notebook warps a demo pair instead: a proxy from the embedded synthetic benchmark
# and a guide that is the proxy RGB flipped, shifted, colour-jittered and slightly blurred
# (`hiralign.warp.demo_guide`). Output: `03_warp.h5`.
# Parameters marked "lost" are numbers the paper's text lost; our choices are measured in docs/warp.md.

# %% tags=["parameters"]
mode: str = "paper"  # paper (Eq. 9-26 as printed) or coherent (smoothed descriptors, propagation, displacement TV; docs/warp.md)
k: int = 16  # FAISS seeds per guide pixel (Eq. 10; paper: 16)
n_candidates: int = 16  # candidates kept per guide pixel (Eq. 13; paper: 16)
radius: int = 1  # seed refinement radius r, window (2r+1)^2 (Eq. 11; lost, our choice)
patch: int = 3  # descriptor patch side p (Eq. 9; lost, our choice)
stencil: int = 3  # interpolation stencil side s (Eq. 16; lost, our choice)
iters: int = 200  # Adam iterations (paper: 200)
lr: float = 0.05  # Adam learning rate (paper: 0.05)
tau: float = 1.0  # aggregation softmax temperature (Eq. 14; paper: 1)
lambda_rgb: float = 1.0  # weight of the RGB L1 term (Eq. 20; lost, our choice)
lambda_patch: float = 0.5  # weight of the unfolded-patch L1 term (Eq. 20; lost, our choice)
lambda_mi: float = 0.05  # weight of the mutual-information term (Eq. 20; lost, our choice)
lambda_ssim: float = 0.2  # weight of the 1 - SSIM term (Eq. 20; lost, our choice)
lambda_grad: float = 0.5  # weight of the gradient L1 term (Eq. 20; lost, our choice)
lambda_tv: float = 0.1  # weight of the coordinate-field TV term (Eq. 20; lost, our choice)
lambda_prior: float = 0.01  # weight of the descriptor-distance prior (Eq. 21; lost, our choice)
match_colours: bool = False  # coherent: map the histogram of each guide channel onto the proxy first; exact for a global gain or gamma, harmful for blur, zoom, new content (ours)
descriptor_sigma: float = 1.0  # coherent: Gaussian smoothing (px) of both RGBs before the descriptors; 0 for none (ours)
propagation_iters: int = 4  # coherent: PatchMatch-style passes spreading neighbours' matches into the candidates (ours)
coherence_margin: float = 0.01  # coherent: a neighbour's shifted match wins ties up to this descriptor distance (ours)
coherence_logit: float = 4.0  # coherent: initial logit bonus of candidates that continue a neighbour's match (ours)
lambda_flow: float = 1.0  # coherent: weight of the displacement TV, in place of the coordinate TV (ours)
index: str = "auto"  # retrieval index: flat (exact), ivf (PCA + IVF + exact re-rank), hnsw, auto
device: str = "cpu"  # torch device: cpu or cuda
threads: int = 1  # CPU threads for torch / faiss during the warp; 0 keeps the library default
run_dir: str = "runs/demo"  # run directory (relative: to the project root): reads 01_proxy.h5 + 02_guides.h5, writes 03_warp.h5
demo: bool = False  # warp a DEMO pair (benchmark proxy + transformed RGB) instead of 01/02; never a silent fallback
image_size: int = 64  # size (px) of the demo pair (demo only)
seed: int = 0  # seed of faiss k-means, MI pixel sampling and the demo guide
max_pairs: int = 0  # warp at most this many (proxy, guide) pairs; 0 warps all
fidelity_case: str = "blur 1 + noise 0.02"  # known-answer case shown at the end (hiralign.warp.known_answers); empty to skip
force: bool = False  # recompute even if 03_warp.h5 is current (same parameters and inputs)

# %%
import matplotlib.pyplot as plt
import numpy as np

from hiralign.stages import run_stage, stage_parameters
from hiralign.warp import plots
from hiralign.warp import stage as warp_stage

warp = run_stage("03_warp", run_dir, stage_parameters(globals()), force=force)
inputs = warp.inputs
print(f"inputs: {inputs.source}")
print(f"{inputs.guides.shape[0]} proxies x {inputs.guides.shape[1]} guides, proxy shape {inputs.proxy_hsi.shape[1:]}")

# %% [markdown]
# ## The first pair
# Timings per step (seconds), the operator's invariants (non-negative, rows sum to one, at most K·s²
# non-zeros per row) and the RGB the operator produces (W times the proxy RGB, Eq. 26) next to the guide.

# %%
w = warp_stage.operator_from_arrays(warp["operators"]["0_0"])
row_sums = np.asarray(w.sum(axis=1)).ravel()
print({step: round(float(seconds[0, 0]), 2) for step, seconds in warp["timings"].items()})
print(f"index: {warp['index'][0]}; operator nnz/row max {np.diff(w.indptr).max()} (bound {n_candidates * stencil ** 2}); "
      f"min weight {w.data.min():.2e}; row sums in [{row_sums.min():.6f}, {row_sums.max():.6f}]")
fig = plots.plot_rgb_triplet(inputs.proxy_rgb[0], inputs.guides[0, 0], warp["rgb"][0, 0], title=inputs.names[0])
plt.show()

# %% [markdown]
# ## Displacement field (Eq. 18) and the optimisation (Eq. 20)
# Displacement = expected proxy coordinate minus guide coordinate. For a left-right flipped guide the
# x component runs linearly across the image; the loss curves show each Eq. 20 term relative to its
# start.

# %%
fig = plots.plot_displacement(warp["displacement"][0, 0])
fig = plots.plot_loss_history(warp["loss_history"]["0_0"])
plt.show()

# %% [markdown]
# ## Spectra
# Every warped spectrum is a convex combination of proxy spectra (a row of W): shown with the proxy
# spectrum of largest weight and the band-wise range of all spectra it mixes.

# %%
fig = plots.plot_spectra(warp["hsi"][0, 0], w, inputs.proxy_hsi[0], inputs.wavelengths, n_pixels=4, seed=seed)
plt.show()

# %% [markdown]
# ## Fidelity on a known answer
# A guide rendered from the first proxy by a transform whose truth is known
# (`hiralign.warp.known_answers`, the cases of `hiralign bench warp-fidelity`): the truth is the proxy
# HSI under the transform's spatial part; photometric changes of the guide (noise, gain ...) are not
# something a convex combination of proxy spectra can or should copy. Warped with this notebook's
# parameters; error and spectral-angle maps against the truth.

# %%
if fidelity_case:
    from hiralign.warp import known_answers, spectral_warp

    case = known_answers.make_case(fidelity_case, inputs.proxy_hsi[0], inputs.wavelengths, seed=seed)
    params = {name: value for name, value in stage_parameters(globals()).items() if name in warp_stage.WARP_FIELDS}
    result = spectral_warp(inputs.proxy_hsi[0], inputs.proxy_rgb[0], case.guide_rgb, **params)
    scores = known_answers.score(result, case)
    fig = plots.plot_known_answer(case, result, scores, inputs.wavelengths)
    plt.show()
