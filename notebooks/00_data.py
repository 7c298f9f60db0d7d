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
# # 00 · Data: source and target domains
#
# HIR-ALIGN adapts a restorer trained on a **source** domain to a **target** domain of which only
# degraded observations are available (paper, Section III and IV-A). This notebook builds both
# domains and writes them to `00_data.h5` in the run directory:
#
# * `dataset="synthetic"` (default): the **embedded synthetic benchmark** — real reflectance spectra
#   (colour-science, earthlib) laid out on scikit-image's bundled images with shading and illuminants.
#   Source and target differ in materials, layouts and illuminant, so a real domain shift exists;
#   it is measured below.
# * a path to real target scenes (CAVE / KAIST / ICVL / HSIDwrD / generic files, `docs/datasets.md`):
#   each scene is cut into `image_size` tiles that become the target images; the source stays the
#   embedded synthetic source unless `source_path` is given.
#
# The target is split into *observed* images (their degraded versions drive adaptation) and
# *unobserved* ones (held out, Table X); the two never share a pixel. With real scenes, `split`
# decides how: `tiles` draws distinct tiles from all scenes, `scenes` gives every scene to one split
# only, `auto` (default) uses `scenes` when there are at least two scenes and they can fill both splits,
# `lists` follows published split lists (`observed_scenes="cave/train"`, `unobserved_scenes="cave/test"`;
# the source likewise with `source_train_scenes="icvl/train"`, `source_test_scenes="icvl/test"`).
# `00_split.csv` in the run directory lists every image with its split, scene and position. Clean
# target images are used only for evaluation. When the source and target wavelength grids differ
# (KAIST 420..720 nm, ICVL 400..700 nm), `band_grid="common"` keeps the target bands inside the source
# range and resamples the source onto them.

# %% tags=["parameters"]
dataset: str = "synthetic"  # synthetic (embedded benchmark), or a file, folder or glob of real target scenes (relative: to the project root); split lists: the dataset folder
kind: str = ""  # loader for a real dataset: cave, icvl, kaist, hsidwrd or generic (empty: guess from path; split lists: the dataset of the split reference)
source_path: str = ""  # optional file/folder of real source scenes, e.g. ICVL (empty: embedded synthetic source; relative: to the project root)
source_kind: str = ""  # loader for the source scenes: icvl, cave, kaist, hsidwrd or generic (empty: guess from path; scene lists: the dataset of the split reference)
image_size: int = 64  # spatial size (px) of every image (synthetic size, or tile size for real scenes)
n_source_train: int = 24  # source-domain training images (pretraining); with source_train_scenes 0 takes every tile of its scenes
n_source_test: int = 6  # source-domain test images; with source_test_scenes 0 takes every tile of its scenes
n_target_observed: int = 8  # target images whose degraded observations are used for adaptation; split lists: 0 takes every tile of observed_scenes
n_target_unobserved: int = 8  # held-out target images (generalisation, Table X); with unobserved_scenes 0 takes every tile of its scenes
split: str = "auto"  # real target only: tiles (distinct tiles of any scene), scenes (whole scenes per split), lists (the scenes of observed_scenes and unobserved_scenes) or auto (scenes if 2+ scenes fill both)
observed_scenes: str = ""  # split lists: the observed target scenes, a split reference such as cave/train or a .txt file of scene names, one per line (relative: to the project root)
unobserved_scenes: str = ""  # split lists: the unobserved target scenes, such as cave/test (empty: drawn from the scenes no list names)
source_train_scenes: str = ""  # source training scenes, such as icvl/train or a .txt file (empty: drawn from the scenes under source_path)
source_test_scenes: str = ""  # source test scenes, such as icvl/test or a .txt file (empty: drawn from the scenes under source_path no list names)
band_grid: str = "common"  # when source and target wavelengths differ: common (target keeps its bands inside the source range, source linearly resampled onto them, never extrapolated) or error
wavelengths: str = ""  # target band centres in nm, start:stop:step (stop included) or a comma list (empty: the loader default); HSIDwrD needs them, e.g. 400:730:10, an assumption (docs/datasets.md, HSIDwrD)
seed: int = 0  # seed of every random choice (layouts, materials, splits)
run_dir: str = "runs/demo"  # run directory (relative: to the project root); 00_data.h5 is written here
force: bool = False  # rebuild even if 00_data.h5 is current (same parameters)
interactive: bool = False  # show an ipywidgets band/pixel explorer (never needed headless)

# %%
import matplotlib.pyplot as plt

from hiralign.data import stage as data_stage
from hiralign.data import synthetic
from hiralign.stages import run_stage, stage_parameters
from hiralign.store import resolve_run_dir

splits = run_stage("00_data", run_dir, stage_parameters(globals()), force=force)
data_stage.summary(splits)

# %% [markdown]
# ## Scenes
# Proxy-RGB renders (bands nearest 660 / 550 / 470 nm, Eq. 4) of source and target images.

# %%
fig = synthetic.plot_scenes(splits.source_train, n=4, title="source domain (train)")
fig = synthetic.plot_scenes(splits.target_observed, n=4, title="target domain (observed)")
plt.show()

# %% [markdown]
# ## Domain shift
# Spectra sampled from both domains: mean ± std of L2-normalised spectra and a 2-D PCA view. The
# kernel MMD² between source and target pixel spectra is compared with the MMD² between two halves
# of the source domain (the within-domain baseline).

# %%
domains = (splits.source_train + splits.source_test, splits.target_observed + splits.target_unobserved)
shift = synthetic.domain_shift(*domains, seed=seed)
for key, value in shift.items():
    print(f"{key:>28s}: {value:.4g}")
fig = synthetic.plot_domain_shift(domains, seed=seed, shift=shift)
fig.savefig(resolve_run_dir(run_dir) / "00_domain_shift.png", dpi=120, bbox_inches="tight")
plt.show()

# %%
if interactive:
    from hiralign.data.explore import band_explorer

    band_explorer(splits.target_observed[0])
