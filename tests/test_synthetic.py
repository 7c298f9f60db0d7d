"""The embedded SYNTHETIC benchmark: real spectra, determinism, caching, measured domain shift, figures."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.figure import Figure
from skimage.transform import resize

from hiralign.data import Cube
from hiralign.data import spectra, synthetic
from hiralign.spectral import VISIBLE_31

SIZE = 16
N_SCENES = 12


@pytest.fixture(scope="module")
def source() -> list[Cube]:
    return synthetic.make_domain("source", N_SCENES, size=SIZE, seed=1)


@pytest.fixture(scope="module")
def target() -> list[Cube]:
    return synthetic.make_domain("target", N_SCENES, size=SIZE, seed=1)


# ----------------------------------------------------------------------------- spectra
def test_libraries_match_the_packages_data_at_shared_wavelengths():
    import colour

    refl, labels = spectra.load_library("colorchecker")
    assert refl.shape == (24, 31) and refl.dtype == np.float32 and labels[0] == "colorchecker/dark skin"
    native = colour.SDS_COLOURCHECKERS["BabelColor Average"]["dark skin"]
    np.testing.assert_allclose(refl[0], native[VISIBLE_31], rtol=1e-6)  # 10 nm grid is a subset: exact

    soil, soil_labels = spectra.load_library("earthlib/soil")
    assert len(soil) == 4185 and all("/soil/" in lab for lab in soil_labels)
    for name in ("rawtoaces190", "cie2017", "pmc", "earthlib"):
        values, names = spectra.load_library(name)
        assert values.shape == (len(names), 31) and 0.0 <= values.min() and values.max() <= 1.0
    assert len(spectra.load_library("rawtoaces190")[1]) == 190 and len(spectra.load_library("cie2017")[1]) == 99


def test_illuminant_is_band_averaged_and_peak_normalised():
    import colour

    a = spectra.illuminant("A")
    ref = colour.SDS_ILLUMINANTS["A"][VISIBLE_31]
    np.testing.assert_allclose(a, ref / ref.max(), rtol=5e-3)  # smooth SPD: averaging changes ~nothing
    fl = spectra.illuminant("FL2")
    assert fl.max() == pytest.approx(1.0) and fl.min() >= 0.0
    assert fl.max() < colour.SDS_ILLUMINANTS["FL2"].values.max() / colour.SDS_ILLUMINANTS["FL2"][VISIBLE_31].max()


def test_bad_library_names_and_wavelengths_are_named():
    with pytest.raises(ValueError, match="unknown spectral library"):
        spectra.load_library("munsell-glossy")
    with pytest.raises(ValueError, match="no spectra of type 'lava'"):
        spectra.load_library("earthlib/lava")
    with pytest.raises(ValueError, match="covers 380..730 nm"):
        spectra.load_library("colorchecker", [350.0, 400.0])
    with pytest.raises(ValueError, match="unknown illuminant"):
        spectra.illuminant("D99")


# ----------------------------------------------------------------------------- scenes
def test_make_domain_is_deterministic_for_a_seed(source):
    again = synthetic.make_domain("source", 2, size=SIZE, seed=1)
    for a, b in zip(source, again):
        assert np.array_equal(a.data, b.data) and a.meta == b.meta
    other = synthetic.make_domain("source", 2, size=SIZE, seed=2)
    assert not np.array_equal(source[0].data, other[0].data)


def test_cubes_are_valid_labelled_synthetic_and_normalised(source, target):
    for cube in [*source, *target]:
        domain = cube.meta["domain"]
        assert cube.shape == (31, SIZE, SIZE) and cube.data.dtype == np.float32
        np.testing.assert_array_equal(cube.wavelengths, VISIBLE_31)
        assert cube.data.min() >= 0.0 and 0.9 - 1e-6 <= cube.data.max() <= 1.0
        assert cube.name.startswith(f"synthetic-{domain}/") and cube.meta["synthetic"] is True
        assert cube.meta["illuminant"] in synthetic.RECIPES[domain].illuminants
        assert cube.meta["image"] in synthetic.RECIPES[domain].images
    source_materials = {m.split("/")[0] for c in source for m in c.meta["materials"]}
    target_materials = {m.split("/")[0] for c in target for m in c.meta["materials"]}
    assert source_materials <= set(synthetic.SOURCE.libraries) and "earthlib" not in source_materials
    assert "earthlib" in target_materials and target_materials <= set(synthetic.TARGET.libraries)


def test_scene_follows_its_layout_picture_and_is_not_piecewise_constant(source):
    cube = source[0]
    img, _ = synthetic.layout_image(cube.meta["image"])
    top, left, side = cube.meta["crop"]
    view = resize(img[top : top + side, left : left + side], (SIZE, SIZE), order=1, anti_aliasing=True)
    view = view[:, ::-1] if cube.meta["flip"][0] else view
    view = view[::-1] if cube.meta["flip"][1] else view
    correlation = np.corrcoef(view.mean(axis=2).ravel(), cube.data.mean(axis=0).ravel())[0, 1]
    assert correlation > 0.5
    shapes = cube.data.reshape(31, -1).T
    shapes = np.round(shapes / np.linalg.norm(shapes, axis=1, keepdims=True), 3)
    assert len(np.unique(shapes, axis=0)) > 3 * cube.meta["n_regions"]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="domain must be one of"):
        synthetic.make_domain("medium", 1)
    with pytest.raises(ValueError, match="size must be"):
        synthetic.make_domain("source", 1, size=4)
    with pytest.raises(ValueError, match="unknown layout picture 'download_all'"):
        synthetic.make_domain("source", 1, images=["download_all"])


# ----------------------------------------------------------------------------- benchmark + cache
TINY = dict(size=16, n_source_train=2, n_source_test=1, n_target_observed=1, n_target_unobserved=1, seed=5)


def _same(a: synthetic.Benchmark, b: synthetic.Benchmark) -> bool:
    pairs = [(x, y) for s in a.splits() for x, y in zip(a.splits()[s], b.splits()[s], strict=True)]
    return all(np.array_equal(x.data, y.data) and x.name == y.name and x.meta == y.meta for x, y in pairs)


def test_benchmark_splits_use_disjoint_pictures_and_round_trip_the_cache(tmp_path, monkeypatch):
    bench = synthetic.make_benchmark(**TINY, cache_dir=tmp_path)
    assert [len(v) for v in bench.splits().values()] == [2, 1, 1, 1]
    pictures = {s: {c.meta["image"] for c in cubes} for s, cubes in bench.splits().items()}
    assert pictures["source_train"].isdisjoint(pictures["source_test"])
    assert pictures["target_observed"].isdisjoint(pictures["target_unobserved"])
    assert bench.target_observed[0].name.startswith("synthetic-target/observed/")
    (cached,) = tmp_path.glob("synthetic-benchmark-v*.npz")

    def no_generation(params):
        raise AssertionError("should have been loaded from the cache")

    monkeypatch.setattr(synthetic, "generate_benchmark", no_generation)
    assert _same(synthetic.make_benchmark(**TINY, cache_dir=tmp_path), bench)
    monkeypatch.undo()

    cached.write_bytes(b"not an npz file")
    with pytest.warns(RuntimeWarning, match="regenerating corrupt"):
        regenerated = synthetic.make_benchmark(**TINY, cache_dir=tmp_path)
    assert _same(regenerated, bench)
    assert synthetic._load(cached, regenerated.params) is not None  # rewritten valid


def test_cache_dir_defaults_to_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HIRALIGN_CACHE", str(tmp_path))
    from hiralign.cache import cache_root

    assert cache_root() == tmp_path


# ----------------------------------------------------------------------------- domain shift
def test_mmd_matches_a_direct_unbiased_estimate():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(0.5, 1.0, size=(5, 3))
    mmd2, p = synthetic.mmd2_permutation_test(x, y, bandwidth=1.3, n_permutations=20, rng=rng)

    def k(u, v):
        return np.exp(-((u[:, None] - v[None]) ** 2).sum(-1) / (2 * 1.3**2))

    kxx, kyy = k(x, x), k(y, y)
    expected = ((kxx.sum() - np.trace(kxx)) / 42 + (kyy.sum() - np.trace(kyy)) / 20 - 2 * k(x, y).mean())
    assert mmd2 == pytest.approx(expected, rel=1e-5) and 0.0 < p <= 1.0


def test_source_target_shift_clearly_exceeds_within_source(source, target):
    shift = synthetic.domain_shift(source, target, n_samples=400, seed=0)
    assert all(isinstance(v, float) for v in shift.values())
    assert shift["mmd2"] > 3.0 * max(shift["mmd2_within"], 1e-3) and shift["p_value"] < 0.05
    assert shift["sam_deg"] > shift["sam_within_deg"]
    same = synthetic.domain_shift(source, source, n_samples=400, seed=0)
    assert abs(same["mmd2"]) < 0.1 * shift["mmd2"] and same["p_value"] > 0.05


# ----------------------------------------------------------------------------- figures
def test_plots_return_figures(source, target):
    import matplotlib.pyplot as plt

    fig = synthetic.plot_domain_shift((source, target), n_samples=200)
    assert isinstance(fig, Figure) and "MMD" in fig._suptitle.get_text()
    scenes = synthetic.plot_scenes(source, n=2)
    assert isinstance(scenes, Figure) and len(scenes.axes) == 2
    plt.close("all")
