"""Stage 1: proxies (Eq. 3), proxy RGB (Eq. 4), 01_proxy.h5, the gap table and notebook 01."""
from __future__ import annotations

from pathlib import Path

import nbformat
import numpy as np
import papermill
import pytest
import torch
from torch import nn

from hiralign import proxy as stage1
from hiralign import restorers
from hiralign.data import Cube
from hiralign.store import RunStore
from stage_helpers import make_run

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "01_proxy.ipynb"


def cubes(n: int = 2, bands: int = 31, size: int = 32, seed: int = 0) -> list[Cube]:
    rng = np.random.default_rng(seed)
    wl = np.linspace(400, 700, bands)
    return [Cube(rng.uniform(0.1, 0.9, (bands, size, size)).astype(np.float32), wl, name=f"synthetic-test/img-{i}")
            for i in range(n)]


def test_tiled_proxies_equal_untiled_proxies_to_1e5():
    torch.manual_seed(0)
    model = restorers.get("spectral-cnn", 31, "denoise-gaussian")
    degraded = stage1.degrade_targets(cubes(1, size=72), "denoise-gaussian", seed=0)
    whole = stage1.make_proxies(model, degraded, "denoise-gaussian", tile=None, clip=False)[0]
    tiled = stage1.make_proxies(model, degraded, "denoise-gaussian", tile=40, clip=False)[0]  # 3 x 3 tiles
    np.testing.assert_allclose(tiled.data, whole.data, atol=1e-5, rtol=0)
    assert tiled.name == degraded[0].name and np.array_equal(tiled.wavelengths, degraded[0].wavelengths)


def test_proxies_pass_the_mask_for_general_tasks_and_upsample_for_sr():
    class EchoMask(nn.Module):
        def forward(self, x, mask=None):
            return mask

    degraded = stage1.degrade_targets(cubes(1, bands=6), "inpaint", seed=3)
    (echo,) = stage1.make_proxies(EchoMask(), degraded, "inpaint")
    np.testing.assert_array_equal(echo.data, degraded[0].meta["degradation"]["mask"].astype(np.float32))
    with pytest.raises(ValueError, match="needs the degradation info"):
        stage1.make_proxies(EchoMask(), cubes(1, bands=6), "inpaint")

    sr = restorers.get("tiny-sspsr", 6, "sr-x4")
    lr = stage1.degrade_targets(cubes(1, bands=6), "sr-x4")
    assert lr[0].shape == (6, 8, 8) and stage1.make_proxies(sr, lr, "sr-x4", tile=4, overlap=1)[0].shape == (6, 32, 32)


def test_proxy_rgb_picks_the_bands_nearest_660_550_470_nm_by_wavelength():
    wl = np.array([455.0, 468.0, 480.0, 548.0, 560.0, 650.0, 664.0])
    data = np.arange(7, dtype=np.float32)[:, None, None] * np.ones((7, 4, 4), np.float32)
    rgb = stage1.proxy_rgb([Cube(data, wl)])
    assert rgb.shape == (1, 3, 4, 4) and rgb[0, :, 0, 0].tolist() == [6.0, 3.0, 1.0]


def test_parse_observed():
    assert stage1.parse_observed("all", 3).tolist() == [True, True, True]
    assert stage1.parse_observed("0, 2", 4).tolist() == [True, False, True, False]
    with pytest.raises(ValueError, match=r"not valid for 3 target images"):
        stage1.parse_observed("1,5", 3)
    with pytest.raises(ValueError, match="comma-separated"):
        stage1.parse_observed("first", 3)


def test_proxy_artifact_round_trip(tmp_path):
    store = RunStore(tmp_path)
    clean = cubes(2, bands=31, size=16)
    degraded = stage1.degrade_targets(clean, "bandmiss", seed=1)
    proxies = [c.replace(np.clip(d.data, 0, 1)) for c, d in zip(clean, degraded)]
    params = {"task": "bandmiss", "observed": "0"}
    store.write("01_proxy", stage1.proxy_tree(degraded, proxies, np.array([True, False]), "ckpt.safetensors", clean=clean), params)
    art = store.read("01_proxy")
    assert art["degraded"].shape == art["proxy"].shape == art["clean"].shape == (2, 31, 16, 16)
    assert art["proxy_rgb"].shape == (2, 3, 16, 16) and art["names"] == [c.name for c in clean]
    assert art["degradation"]["mask"].shape == (2, 31, 16, 16) and art["degradation"]["name"] == ["bandmiss"] * 2
    back = stage1.load(store)
    assert back.observed.tolist() == [True, False] and len(back.observed_proxies) == 1
    assert back.task == "bandmiss" and back.checkpoint.name == "ckpt.safetensors"
    np.testing.assert_array_equal(back.proxies[1].data, proxies[1].data)
    np.testing.assert_array_equal(back.rgb[0], proxies[0].data[[26, 15, 7]])  # 660, 550, 470 nm

    store.write("01_proxy", stage1.proxy_tree(degraded, proxies, np.array([True, True]), "ckpt.safetensors"), params)
    assert "clean" not in store.read("01_proxy") and stage1.load(store).clean is None  # clean unknown


def test_gap_table_reports_each_split_and_their_difference():
    identity = nn.Identity()
    splits = {"source_test": cubes(2, bands=8, size=24, seed=1), "target_observed": cubes(2, bands=8, size=24, seed=2)}
    rows = stage1.gap_table(identity, None, splits, "denoise-gaussian", seed=0, tile=None)
    assert [r["split"] for r in rows] == ["source_test", "target_observed", "gap source_test - target_observed"]
    for row in rows[:2]:  # identity: the restored cube is the observation clipped to [0, 1]
        assert row["model gain"] == pytest.approx(row["model PSNR"] - row["input PSNR"])
        assert 0 < row["model gain"] < 2
    assert rows[2]["model PSNR"] == pytest.approx(rows[0]["model PSNR"] - rows[1]["model PSNR"])
    with_baseline = stage1.gap_table(identity, nn.Identity(), splits, "denoise-gaussian", seed=0, tile=None)
    assert all(r["model - baseline"] == pytest.approx(0) for r in with_baseline)
    table = stage1.markdown_table(rows)
    assert table.count("\n") == 4 and "| split |" in table


def test_notebook_01_runs_headless_with_tiny_parameters(tmp_path):
    out = tmp_path / "01_proxy.ipynb"
    make_run(tmp_path / "run", until="00_data")
    papermill.execute_notebook(
        str(NOTEBOOK), str(out), cwd=str(NOTEBOOK.parent), progress_bar=False, kernel_name="python3",
        parameters={"task": "denoise-gaussian", "tile": 24, "baseline_iterations": 5, "run_dir": str(tmp_path / "run")},
    )
    art = RunStore(tmp_path / "run").read("01_proxy")
    assert art["proxy"].shape == (2, 31, 32, 32) and art["observed"].all()
    assert art.params["task"] == "denoise-gaussian" and art.header.upstream["checkpoint"]["digest"]
    assert set(art.header.upstream) == {"00_data", "checkpoint"}
    text = "\n".join(str(o.get("data", {}).get("text/markdown", "")) for c in nbformat.read(out, 4).cells
                     if c.cell_type == "code" for o in c.get("outputs", []))
    assert "gap source_test - target_observed" in text and "proxy PSNR" in text
    assert (tmp_path / "run" / "01_proxies.png").exists()
