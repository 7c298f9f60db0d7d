"""HSI generators (hiralign.generators): the UBF source's invariants, the registry and checks, and
the stage-2 path (02 writes generated HSIs, 03 passes them through unwarped, 04 trains on them)."""
from __future__ import annotations

import json
import os

import numpy as np
import papermill
import pytest
import yaml

from hiralign.data.synthetic import make_benchmark
from hiralign.generators import HSI_GENERATORS, generate_hsis, hsi_generator_parameters
from hiralign import proxy as proxy_stage
from hiralign.cli import main
from hiralign.generators import compare, ubf
from hiralign.guides import stage as guide_stage
from hiralign.store import RunStore
from hiralign.warp import stage as warp_stage
from hiralign.guides import GENERATORS
from hiralign.unmixing import fcls
from stage_helpers import NOTEBOOKS, TINY_STAGES, make_run

TINY_UBF = dict(n_endmembers=3, unmixing_steps=40, unmixing_width=8, patch_size=8, block_out_channels=(8, 16), batch_size=4,
                natural_image_size=24)


@pytest.fixture(scope="module")
def proxies():
    bench = make_benchmark(size=16, n_source_train=0, n_source_test=0, n_target_observed=2, n_target_unobserved=0, seed=3)
    cubes = np.stack([c.data for c in bench.target_observed]).astype(np.float32)
    return cubes, np.asarray(bench.target_observed[0].wavelengths)


@pytest.fixture(scope="module")
def tiny_model(proxies):
    cubes, wl = proxies
    return ubf.train_ubf(cubes, wl, ubf.UBFConfig(train_steps=4, **TINY_UBF))


def test_hsi_generator_names_are_not_guide_generator_names():
    assert set(HSI_GENERATORS.names()) == {"ubf", "hsigene"}
    assert not set(HSI_GENERATORS.names()) & set(GENERATORS.names())
    assert {"train_steps", "steps", "n_endmembers", "natural_images"} <= set(hsi_generator_parameters("ubf"))


def test_unmixing_net_abundances_lie_on_the_simplex_and_the_loss_falls(proxies, tiny_model):
    cubes, wl = proxies
    net, losses = ubf.train_unmixing_net(cubes, wl, ubf.UBFConfig(**TINY_UBF))
    assert losses[-1] < 0.8 * losses[0]
    (a,) = ubf.infer_abundances(net, [cubes[0, list(ubf.rgb_band_indices(wl))]])
    assert a.shape == (3, 16, 16) and a.min() >= 0 and np.allclose(a.sum(axis=0), 1.0, atol=1e-5)
    assert tiny_model.endmembers.shape == (cubes.shape[1], 3) and tiny_model.endmembers.min() >= 0


def test_sampled_abundances_are_on_the_simplex_and_hsis_follow_the_linear_mixing_model(tiny_model, proxies):
    a = ubf.sample_abundances(tiny_model, count=2, height=13, width=11, steps=3, seed=1)
    assert a.shape == (2, 3, 13, 11) and a.min() >= 0 and np.allclose(a.sum(axis=1), 1.0, atol=1e-5)
    hsi = ubf.mix(tiny_model.endmembers, a)
    pixels = np.moveaxis(hsi, 1, -1).reshape(-1, hsi.shape[1]).astype(np.float64)
    inside = pixels.max(axis=1) < 1.0  # the clip to [0, 1] leaves these pixels exact mixtures
    recovered = fcls(pixels[inside], tiny_model.endmembers.astype(np.float64))
    flat = np.moveaxis(a, 1, -1).reshape(-1, 3)[inside]
    assert np.abs(recovered @ tiny_model.endmembers.T - pixels[inside]).max() < 1e-4  # Eq. 7: inside the endmembers' simplex
    assert np.linalg.matrix_rank(tiny_model.endmembers) < 3 or np.abs(recovered - flat).max() < 1e-3


def test_to_simplex_clips_renormalises_and_handles_all_zero_pixels():
    a = np.array([[[[-0.5]], [[1.0]], [[3.0]]], [[[0.0]], [[-1.0]], [[0.0]]]])
    out = ubf.to_simplex(a)
    assert np.allclose(out[0, :, 0, 0], [0.0, 0.25, 0.75]) and np.allclose(out[1, :, 0, 0], 1 / 3)


def test_ubf_is_seeded_cached_and_uses_the_natural_images(proxies, tmp_path, monkeypatch):
    cubes, wl = proxies
    kwargs = dict(steps=3, train_steps=3, cache_dir=tmp_path, **TINY_UBF)
    first = generate_hsis(cubes, wl, "ubf", n_generated=2, seed=0, **kwargs)
    assert first.shape == (2, 2) + cubes.shape[1:] and first.dtype == np.float32 and 0 <= first.min() and first.max() <= 1
    calls = []
    monkeypatch.setattr(ubf, "train_ubf", lambda *a, **k: calls.append(1))
    again = generate_hsis(cubes, wl, "ubf", n_generated=2, seed=0, **kwargs)
    assert calls == [] and np.array_equal(first, again)  # loaded from the cache, same draws
    assert len(list(tmp_path.iterdir())) == 1
    monkeypatch.undo()
    other = generate_hsis(cubes, wl, "ubf", n_generated=2, seed=1, **kwargs)
    assert not np.allclose(first, other)
    without = generate_hsis(cubes, wl, "ubf", n_generated=2, seed=0, **{**kwargs, "natural_images": False})
    assert len(list(tmp_path.iterdir())) == 3 and not np.allclose(first, without)  # another setting, another model


def test_generate_hsis_refuses_bad_proxies_and_unknown_parameters(proxies):
    cubes, wl = proxies
    with pytest.raises(ValueError, match="wavelengths given for proxies with"):
        generate_hsis(cubes, wl[:-1], "ubf")
    bad = cubes.copy()
    bad[1, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="proxy HSI 1 holds 1 NaN"):
        generate_hsis(bad, wl, "ubf")
    with pytest.raises(ValueError, match=r"\(N, B, H, W\)"):
        generate_hsis(cubes[0], wl, "ubf")
    with pytest.raises(TypeError, match="does not take \\['strength'\\]"):
        generate_hsis(cubes, wl, "ubf", strength=0.3)
    with pytest.raises(ValueError, match="unknown HSI generator 'gan'"):
        generate_hsis(cubes, wl, "gan")


@pytest.fixture(scope="module")
def source_runs(tmp_path_factory):
    """Two tiny runs through 05 from the same 00/01 stages: jitter guides + warp, and ubf."""
    root = tmp_path_factory.mktemp("sources")
    before = os.environ.get("HIRALIGN_CACHE")
    os.environ["HIRALIGN_CACHE"] = str(root / "cache")  # the ubf model is trained into the test's folder
    overrides = {"01_proxy": {"observed": "0"}, "02_rgb_guides": {"train_steps": 3, "steps": 2}}
    try:
        runs = {"warp": make_run(root / "warp", **{**overrides, "02_rgb_guides": {**overrides["02_rgb_guides"], "generator": "jitter"}})}
        stages = {stage: {**params, **overrides.get(stage, {})} for stage, params in TINY_STAGES.items()}
        stages["02_rgb_guides"]["generator"] = "ubf"
        (root / "ubf.yaml").write_text(yaml.safe_dump({"name": "ubf", "run_dir": str(root / "ubf"), "device": "cpu", "seed": 0,
                                                       "stages": stages}))
        assert main(["run", str(root / "ubf.yaml"), "--notebooks", str(NOTEBOOKS)]) == 0  # the real notebooks 00..05
        store = RunStore(root / "ubf")
        runs["ubf"] = {"01_proxy": proxy_stage.load(store), "02_rgb_guides": guide_stage.load(store), "03_warp": warp_stage.load(store)}
    finally:
        if before is None:
            os.environ.pop("HIRALIGN_CACHE")
        else:
            os.environ["HIRALIGN_CACHE"] = before
    return root, runs


def test_stage_two_generates_hsis_of_the_observed_proxies_and_stage_three_passes_them_through(source_runs):
    root, runs = source_runs
    run = runs["ubf"]
    guides, warp = run["02_rgb_guides"], run["03_warp"]
    observed = np.asarray(run["01_proxy"].observed, bool)
    assert observed.sum() < len(observed)  # 01 holds every target image: only the observed ones are learnt from
    assert guides.generated_hsi.shape[:2] == (int(observed.sum()), 2) and guides.names == [
        c.name for c, keep in zip(run["01_proxy"].proxies, observed) if keep]
    assert np.array_equal(guides.guides, guides.generated_hsi[:, :, list(ubf.rgb_band_indices(guides.wavelengths))])
    assert not warp.warped and np.array_equal(warp["hsi"], guides.generated_hsi)
    assert "operators" not in warp.data and set(warp["quality"]) >= {"histogram_synthesized"}
    assert runs["warp"]["03_warp"].warped
    metrics = json.loads((root / "ubf" / "05_metrics.json").read_text())["tables"]
    stage2 = dict(zip(metrics["stage2_quality"]["columns"], metrics["stage2_quality"]["rows"][0]))
    assert stage2["generator"] == "ubf" and 0.0 <= stage2["spr"] <= 1.0


def test_sources_notebook_shows_the_runs_side_by_side(source_runs, tmp_path):
    root, _ = source_runs
    views = compare.load_sources([root / "warp", root / "ubf"], ["warp", "ubf"])
    rows = compare.fidelity_rows(views)
    assert [r["warped"] for r in rows] == [True, False] and all(r["spr"] is not None for r in rows)
    with pytest.raises(ValueError, match="outside the 32x32 image"):
        compare.parse_pixels("40,1", 32, 32)
    papermill.execute_notebook(str(NOTEBOOKS / "07_generators.ipynb"), str(tmp_path / "07.ipynb"), cwd=str(NOTEBOOKS),
                               parameters={"run_dirs": f"{root / 'warp'},{root / 'ubf'}", "labels": "warp,ubf",
                                           "pixels": "3,3;20,9", "max_hsis": 2}, kernel_name="python3", progress_bar=False)
    text = (tmp_path / "07.ipynb").read_text()
    assert "'generator': 'ubf'" in text and "'warped': False" in text
