"""The known-answer case maker of the warp fidelity benchmark (hiralign.warp.known_answers) and the
benchmark script's plumbing: truths, true displacement fields, guides, determinism and scoring, on
small synthetic inputs (no real data). Warp quality is tested elsewhere (tests/test_warp.py)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import ndimage

from hiralign.spectral import VISIBLE_31, to_rgb
from hiralign.warp.known_answers import (
    CASE_NAMES,
    STANDARD_CASES,
    jpeg_quantise,
    make_case,
    make_cases,
    score,
)

REPO = Path(__file__).resolve().parents[1]
SIZE = 32
ACCEPTANCE = ["gain 1.1", "gamma 0.8", "colour cast", "noise 0.02", "blur 1 + noise 0.02", "blur 2 + noise 0.02",
              "elastic 6 px + blur 1 + noise 0.02", "flip", "mosaic 4x4"]


@pytest.fixture(scope="module")
def proxy() -> np.ndarray:
    """A smooth, textured 31 x 32 x 32 cube in [0, 1] (distinct spectra, no symmetry)."""
    rng = np.random.default_rng(7)
    base = ndimage.gaussian_filter(rng.random((6, SIZE, SIZE)), sigma=(0, 2, 2))
    base = (base - base.min()) / (base.max() - base.min())
    basis = np.abs(np.sin(np.linspace(0, 3, 31)[:, None] * np.arange(1, 7)[None, :] + np.arange(6)))  # (31, 6)
    hsi = np.einsum("bk,khw->bhw", basis, base)
    return (0.05 + 0.9 * hsi / hsi.max()).astype(np.float32)


@pytest.fixture(scope="module")
def cases(proxy) -> dict:
    return {c.name: c for c in make_cases(proxy, VISIBLE_31, seed=0)}


def _pull(hsi: np.ndarray, displacement: np.ndarray) -> np.ndarray:
    """Independent reference: proxy sampled at guide coordinate + displacement (bilinear)."""
    _, h, w = hsi.shape
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    coords = np.stack([ys + displacement[0], xs + displacement[1]])
    return np.stack([ndimage.map_coordinates(b.astype(np.float64), coords, order=1, mode="nearest") for b in hsi])


def test_standard_set_names_kinds_and_acceptance_cases(cases):
    assert list(cases) == list(CASE_NAMES) and len(CASE_NAMES) == 18
    assert set(ACCEPTANCE) <= set(CASE_NAMES)
    assert {c.kind for c in cases.values()} == {"photometric", "geometric", "combined", "new layout"}
    for c in cases.values():
        assert c.guide_rgb.shape == (3, SIZE, SIZE) and c.guide_rgb.dtype == np.float32 and c.guide_rgb.min() >= 0
        assert c.displacement.shape == (2, SIZE, SIZE) and c.valid.shape == (SIZE, SIZE)
        assert "sharp" in c.truths and all(t.shape == (31, SIZE, SIZE) for t in c.truths.values())
        assert ("blurred" in c.truths) == (STANDARD_CASES[c.name].blur > 0)
    with pytest.raises(ValueError, match="unknown known-answer case"):
        make_cases(cases["flip"].truth, VISIBLE_31, names=["flip", "no such case"])


def test_flip_truth_and_analytic_field(proxy, cases):
    c = cases["flip"]
    np.testing.assert_array_equal(c.truth, proxy[:, :, ::-1])
    cols = np.arange(SIZE, dtype=np.float32)
    np.testing.assert_array_equal(c.displacement[0], 0.0)
    np.testing.assert_array_equal(c.displacement[1], np.broadcast_to((SIZE - 1 - cols) - cols, (SIZE, SIZE)))
    assert c.valid.all()
    np.testing.assert_array_equal(c.guide_rgb, to_rgb(proxy[:, :, ::-1], VISIBLE_31))


@pytest.mark.parametrize("name", ["elastic 6 px", "mosaic 4x4", "rotate 5 deg", "affine 1.2x", "elastic 6 px + blur 1 + noise 0.02"])
def test_true_field_reproduces_truth(proxy, cases, name):
    c = cases[name]
    pulled = _pull(proxy, c.displacement)
    np.testing.assert_allclose(pulled[:, c.valid], c.truth[:, c.valid], atol=1e-5)
    assert c.valid.mean() > 0.6  # 32 px: a 6 px field pulls a sizeable border from outside the proxy
    if name.startswith("elastic"):
        length = np.sqrt((c.displacement.astype(np.float64) ** 2).sum(axis=0))
        assert length.max() == pytest.approx(6.0, abs=1e-4) and np.abs(np.diff(c.displacement, axis=2)).max() < 1.0  # smooth


def test_mosaic_is_an_exact_tile_permutation(proxy, cases):
    c = cases["mosaic 4x4"]
    t = SIZE // 4
    assert c.valid.all() and np.array_equal(c.displacement, np.round(c.displacement))
    tiles = {(i, j): proxy[:, i * t:(i + 1) * t, j * t:(j + 1) * t] for i in range(4) for j in range(4)}
    used = set()
    for i in range(4):
        for j in range(4):
            dy, dx = c.displacement[:, i * t, j * t].astype(int)
            assert np.all(c.displacement[:, i * t:(i + 1) * t, j * t:(j + 1) * t] == np.array([dy, dx])[:, None, None])
            src = ((i * t + dy) // t, (j * t + dx) // t)
            assert src != (i, j)  # a derangement: every tile moves
            np.testing.assert_array_equal(c.truth[:, i * t:(i + 1) * t, j * t:(j + 1) * t], tiles[src])
            used.add(src)
    assert len(used) == 16


def test_photometric_cases_keep_the_layout(proxy, cases):
    for c in cases.values():
        if c.kind != "photometric":
            continue
        np.testing.assert_array_equal(c.truth, proxy)
        np.testing.assert_array_equal(c.displacement, 0.0)
        assert c.valid.all()
        if "blurred" in c.truths:
            sigma = STANDARD_CASES[c.name].blur
            np.testing.assert_allclose(c.truths["blurred"], ndimage.gaussian_filter(proxy, (0, sigma, sigma), mode="nearest"), atol=1e-6)
        else:
            assert not np.allclose(c.guide_rgb, to_rgb(proxy, VISIBLE_31), atol=1e-4)  # the RGB did change
    clean = to_rgb(proxy, VISIBLE_31)
    np.testing.assert_allclose(cases["gain 1.1"].guide_rgb, 1.1 * clean, rtol=1e-6)
    np.testing.assert_allclose(cases["blur 1"].guide_rgb, to_rgb(cases["blur 1"].truths["blurred"], VISIBLE_31), atol=1e-7)
    residual = cases["noise 0.02"].guide_rgb - clean
    assert np.std(residual) == pytest.approx(0.02 * np.percentile(clean, 99), rel=0.1)


def test_geometric_guides_are_the_rgb_of_the_truth(cases):
    for c in cases.values():
        if c.kind in ("geometric", "new layout"):
            np.testing.assert_array_equal(c.guide_rgb, to_rgb(c.truth, VISIBLE_31))
    combined = cases["flip + gain + blur 1 + noise 0.02"]
    np.testing.assert_array_equal(combined.truth, cases["flip"].truth)
    np.testing.assert_array_equal(combined.displacement, cases["flip"].displacement)


def test_cases_are_deterministic_for_a_seed(proxy, cases):
    again = make_cases(proxy, VISIBLE_31, seed=0)
    for c in again:
        np.testing.assert_array_equal(c.guide_rgb, cases[c.name].guide_rgb)
        np.testing.assert_array_equal(c.displacement, cases[c.name].displacement)
        for k, v in c.truths.items():
            np.testing.assert_array_equal(v, cases[c.name].truths[k])
    alone = make_case("elastic 6 px + blur 1 + noise 0.02", proxy, VISIBLE_31, seed=0)  # same alone as in the set
    np.testing.assert_array_equal(alone.guide_rgb, cases[alone.name].guide_rgb)
    other = {c.name: c for c in make_cases(proxy, VISIBLE_31, seed=1, names=["noise 0.02", "elastic 6 px", "flip"])}
    assert not np.array_equal(other["noise 0.02"].guide_rgb, cases["noise 0.02"].guide_rgb)
    assert not np.array_equal(other["elastic 6 px"].displacement, cases["elastic 6 px"].displacement)
    np.testing.assert_array_equal(other["flip"].guide_rgb, cases["flip"].guide_rgb)


def test_jpeg_quantisation_is_lossy_but_close():
    rng = np.random.default_rng(0)
    rgb = ndimage.gaussian_filter(rng.random((3, 40, 36)), (0, 1.5, 1.5)).astype(np.float32) * 0.7  # not a multiple of 8
    out = jpeg_quantise(rgb, 50)
    assert out.shape == rgb.shape and out.min() >= 0 and out.max() <= rgb.max() + 1e-6
    err50 = np.mean((out - rgb) ** 2)
    err95 = np.mean((jpeg_quantise(rgb, 95) - rgb) ** 2)
    assert 0 < err95 < err50 and 10 * np.log10(rgb.max() ** 2 / err50) > 25


def test_score_of_a_perfect_result(proxy, cases):
    for name in ("flip", "elastic 6 px", "mosaic 4x4", "blur 2"):
        c = cases[name]
        rendered = c.truths.get("blurred", c.truth)
        perfect = SimpleNamespace(hsi=rendered, rgb=to_rgb(rendered, VISIBLE_31), displacement=c.displacement)
        s = score(perfect, c)
        assert s["hsi_psnr"] >= 99.0 and s["sam"] < 1e-3 and s["rgb_psnr"] >= 99.0
        assert s["epe_median"] == 0.0 and s["epe_p90"] == 0.0
        assert s["best_truth"] == ("blurred" if "blurred" in c.truths else "sharp")
        assert set(s["hsi_psnr_by_truth"]) == set(c.truths)
    c = cases["flip"]
    identity = SimpleNamespace(hsi=proxy, rgb=to_rgb(proxy, VISIBLE_31), displacement=np.zeros_like(c.displacement))
    s = score(identity, c)  # not flipping at all: low PSNR, EPE = |(W-1-c) - c| median
    assert s["hsi_psnr"] < 40 and s["epe_median"] == pytest.approx(np.median(np.abs(SIZE - 1 - 2 * np.arange(SIZE))))
    no_field = SimpleNamespace(hsi=c.truth, rgb=c.guide_rgb, displacement=None)
    assert score(no_field, c)["epe_median"] is None


def test_benchmark_script_configs_and_smoke_run(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_warp_fidelity", REPO / "benchmarks" / "warp_fidelity.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cfg = tmp_path / "configs.yaml"
    cfg.write_text("fast: {iters: 2, stencil: 1}\n")
    args = SimpleNamespace(no_default_configs=False, configs_file=str(cfg), config=['ours={"iters": 3}', "plain="])
    configs = bench.parse_configs(args)
    assert configs == {**bench.DEFAULT_CONFIGS, "fast": {"iters": 2, "stencil": 1}, "ours": {"iters": 3}, "plain": {}}
    assert bench.DEFAULT_CONFIGS["paper"] == {"mode": "paper"} and bench.DEFAULT_CONFIGS["nearest copy"]["iters"] == 0
    monkeypatch.setenv("HIRALIGN_BENCH_SCENES", str(tmp_path / "missing.mat"))
    monkeypatch.setattr(bench, "load_scenes", lambda paths, size, seed: ([("tiny", _tiny_cube())], ["tiny synthetic cube"]))
    assert bench.main(["--size", "24", "--cases", "flip", "blur 1", "--no-default-configs", "--config", "copy={\"iters\": 0}",
                       "--threads", "1", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "warp_fidelity.json").read_text())
    assert [r["case"] for r in report["rows"]] == ["flip", "blur 1"] and report["configs"] == {"copy": {"iters": 0}}
    assert all(r["epe_top_median"] is not None for r in report["rows"]) and report["resolved_params"]["copy"]["iters"] == 0
    assert report["machine"]["cpu_cores"] and "| flip | geometric |" in (tmp_path / "warp_fidelity.md").read_text()


def _tiny_cube():
    from hiralign.data import Cube

    rng = np.random.default_rng(3)
    data = ndimage.gaussian_filter(rng.random((31, 24, 24)), (0, 1.5, 1.5)).astype(np.float32)
    return Cube(data, VISIBLE_31)
