"""Stage 00: splits from the synthetic benchmark or real scenes, the 00_data.h5 round trip, bad input,
and notebook 00 executed headless by papermill on tiny parameters."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import papermill
import pytest
import scipy.io

from hiralign.data import CubeError, DatasetError
from hiralign.data import stage as data_stage
from hiralign.store import RunStore, canonical_params

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
TINY = dict(dataset="synthetic", kind="", source_path="", image_size=32, n_source_train=3, n_source_test=1,
            n_target_observed=2, n_target_unobserved=2, seed=0)


def test_synthetic_splits_roundtrip_keeps_names_wavelengths_and_metadata(tmp_path):
    bench = data_stage.build_splits(**TINY)
    store = RunStore(tmp_path)
    store.write("00_data", data_stage.splits_tree(bench), TINY)
    back = data_stage.load(store)
    for name, cubes in bench.splits().items():
        got = back.splits()[name]
        assert [c.name for c in got] == [c.name for c in cubes]
        for a, b in zip(got, cubes):
            np.testing.assert_array_equal(a.data, b.data)
            np.testing.assert_array_equal(a.wavelengths, b.wavelengths)
            assert a.meta == b.meta and a.meta["illuminant"]  # the scene titles of notebook 00 need it
    assert back.params == json.loads(canonical_params(bench.params)) and data_stage.is_synthetic(back)


def test_real_target_tiles_from_cave_scene(cave_path):
    bench = data_stage.build_splits(**{**TINY, "dataset": str(cave_path), "image_size": 64})
    target = bench.target_observed + bench.target_unobserved
    assert len(target) == 4 and all(c.shape == (31, 64, 64) and not c.meta["synthetic"] for c in target)
    assert all(c.name.startswith("cave_balloons_ms_256@") for c in target)
    assert len({c.name for c in target}) == 4  # drawn without replacement


def test_a_glob_pattern_picks_the_cave_scenes_and_the_splits_never_share_a_pixel(cave_path):
    pattern = cave_path.parent / "cave_*.mat"
    files = data_stage.scene_files(pattern)
    assert [f.name for f in files] == sorted(f.name for f in cave_path.parent.glob("cave_*.mat")) and len(files) == 3
    bench = data_stage.build_splits(**{**TINY, "dataset": str(pattern), "kind": "cave", "image_size": 64,
                                       "n_target_observed": 8, "n_target_unobserved": 8})
    def pixels(cubes):  # (scene, row, col) of every pixel of every tile
        out = set()
        for c in cubes:
            scene, corner = c.name.split("@")
            top, left = map(int, corner.split(","))
            out |= {(scene, top + r, left + q) for r in range(64) for q in range(64)}
        return out
    assert not pixels(bench.target_observed) & pixels(bench.target_unobserved)
    assert {c.name.split("@")[0] for c in bench.target_observed + bench.target_unobserved} > {"cave_balloons_ms_256"}
    with pytest.raises(DatasetError, match="matches no scene files"):
        data_stage.scene_files(cave_path.parent / "kaist_*.mat")


def test_bad_real_data_fails_clearly_and_writes_nothing(tmp_path):
    run = tmp_path / "run"
    bad = np.random.default_rng(0).random((40, 40, 31))
    bad[3, 4, 5] = np.nan
    scipy.io.savemat(tmp_path / "nan_scene.mat", {"Omsi": bad})
    with pytest.raises(CubeError, match="NaN"):
        data_stage.build_splits(**{**TINY, "dataset": str(tmp_path / "nan_scene.mat"), "kind": "cave"})
    with pytest.raises(DatasetError, match="no such file"):
        data_stage.build_splits(**{**TINY, "dataset": str(tmp_path / "missing.mat")})
    scipy.io.savemat(tmp_path / "small.mat", {"Omsi": np.random.default_rng(0).random((40, 40, 31))})
    with pytest.raises(DatasetError, match="only 1 tiles"):
        data_stage.build_splits(**{**TINY, "dataset": str(tmp_path / "small.mat")})
    assert not run.exists()


def test_notebook_00_runs_headless(tmp_path):
    run = tmp_path / "run"
    papermill.execute_notebook(
        str(NOTEBOOKS / "00_data.ipynb"), str(tmp_path / "00.ipynb"), cwd=str(NOTEBOOKS), progress_bar=False,
        parameters={k: v for k, v in {**TINY, "run_dir": str(run)}.items() if k not in ("kind", "source_path")},
    )
    art = RunStore(run).read("00_data")
    assert art["target_observed"]["cubes"].shape == (2, 31, 32, 32)
    assert art.attrs["synthetic"] and (run / "00_domain_shift.png").exists()


def test_explorer_figure_marks_pixel_and_spectrum():
    from hiralign.data.explore import plot_band_and_spectrum

    cube = data_stage.build_splits(**TINY).target_observed[0]
    fig = plot_band_and_spectrum(cube, band=15, row=3, col=4)
    line = fig.axes[1].lines[0]
    np.testing.assert_allclose(line.get_ydata(), cube.data[:, 3, 4])
    np.testing.assert_allclose(line.get_xdata(), cube.wavelengths)
