"""Stage 00: splits from the synthetic benchmark or real scenes, the 00_data.h5 round trip, the split
modes and 00_split.csv, path resolution, bad input, and notebook 00 executed headless by papermill on
tiny parameters."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import papermill
import pytest
import scipy.io

from hiralign.data import CubeError, DatasetError
from hiralign.data import stage as data_stage
from hiralign.stages import run_stage
from hiralign.store import ArtifactError, RunStore, canonical_params, project_path, resolve_run_dir

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
TINY = dict(dataset="synthetic", kind="", source_path="", image_size=32, n_source_train=3, n_source_test=1,
            n_target_observed=2, n_target_unobserved=2, split="auto", seed=0)


def write_scenes(folder: Path, n: int, side: int = 32) -> dict[str, np.ndarray]:
    """``n`` tiny CAVE-like scenes ``scene<i>_ms.mat`` (variable ``Omsi``, uint16 (H, W, 31), random values,
    so no two pixels share a spectrum); returns each scene's (B, H, W) cube in [0, 1] by scene name."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    scenes = {}
    for i in range(n):
        raw = rng.integers(0, 65536, (side, side, 31), dtype=np.uint16)
        scipy.io.savemat(folder / f"scene{i}_ms.mat", {"Omsi": raw})
        scenes[f"scene{i}_ms"] = raw.transpose(2, 0, 1).astype(np.float32) / 65535.0
    return scenes


def run_tiny_stage(run: Path, folder: Path, **params) -> tuple[list[dict], dict]:
    """Stage 00 on the tiny scenes of ``folder`` (16 px tiles): the rows of 00_split.csv and 00_data.h5's content."""
    params = {**TINY, "dataset": str(folder / "*.mat"), "kind": "cave", "image_size": 16, **params}
    run_stage("00_data", run, params, log=lambda _: None)
    with open(run / data_stage.SPLIT_FILE, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows, RunStore(run).read("00_data").data


def target_rows(rows: list[dict], split: str) -> list[dict]:
    return [r for r in rows if r["domain"] == "target" and r["split"] == split]


def tile_pixels(rows: list[dict]) -> set[tuple[str, int, int]]:
    """(scene, row, col) of every pixel of the images listed in ``rows``."""
    out = set()
    for r in rows:
        top, left, size = int(r["top"]), int(r["left"]), int(r["size"])
        out |= {(r["scene"], top + i, left + j) for i in range(size) for j in range(size)}
    return out


def spectra(cubes: np.ndarray) -> set[bytes]:
    """Every pixel spectrum of ``cubes`` (n, B, H, W) as bytes."""
    flat = np.ascontiguousarray(np.moveaxis(cubes, 1, -1).reshape(-1, cubes.shape[1]))
    return {row.tobytes() for row in flat}


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


@pytest.mark.parametrize("split", ["tiles", "scenes"])
def test_a_glob_pattern_picks_the_cave_scenes_and_the_splits_never_share_a_pixel(cave_path, split):
    pattern = cave_path.parent / "cave_*.mat"
    files = data_stage.scene_files(pattern)
    assert [f.name for f in files] == sorted(f.name for f in cave_path.parent.glob("cave_*.mat")) and len(files) == 3
    bench = data_stage.build_splits(**{**TINY, "dataset": str(pattern), "kind": "cave", "image_size": 64,
                                       "n_target_observed": 8, "n_target_unobserved": 8, "split": split})
    assert bench.params["split"] == split
    rows = data_stage.split_rows(bench)
    observed, unobserved = target_rows(rows, "observed"), target_rows(rows, "unobserved")
    assert [r["image"] for r in observed] == [c.name for c in bench.target_observed]
    assert not tile_pixels(observed) & tile_pixels(unobserved)
    if split == "scenes":
        assert not {r["scene"] for r in observed} & {r["scene"] for r in unobserved}
    assert {c.name.split("@")[0] for c in bench.target_observed + bench.target_unobserved} > {"cave_balloons_ms_256"}
    with pytest.raises(DatasetError, match="matches no scene files"):
        data_stage.scene_files(cave_path.parent / "kaist_*.mat")


@pytest.mark.parametrize("split", ["tiles", "scenes"])
def test_observed_and_unobserved_tiles_never_share_a_pixel(tmp_path, split):
    scenes = write_scenes(tmp_path / "scenes", 3)  # 4 tiles of 16 px each
    rows, data = run_tiny_stage(tmp_path / "run", tmp_path / "scenes", split=split, n_target_observed=3, n_target_unobserved=4)
    observed, unobserved = target_rows(rows, "observed"), target_rows(rows, "unobserved")
    assert len(observed) == 3 and len(unobserved) == 4 and json.loads(data["benchmark"])["split"] == split
    assert not tile_pixels(observed) & tile_pixels(unobserved)  # by the coordinates of the split file
    obs, unobs = data["target_observed"]["cubes"], data["target_unobserved"]["cubes"]
    assert not spectra(obs) & spectra(unobs)  # by pixel content
    for r, cube in zip(observed + unobserved, np.concatenate([obs, unobs])):  # the file says where each tile lies
        top, left = int(r["top"]), int(r["left"])
        np.testing.assert_array_equal(cube, scenes[r["scene"]][:, top : top + 16, left : left + 16])


def test_scenes_mode_puts_each_scene_in_one_split_only(tmp_path):
    write_scenes(tmp_path / "scenes", 4)
    for seed in range(3):
        bench = data_stage.build_splits(**{**TINY, "dataset": str(tmp_path / "scenes"), "kind": "cave", "image_size": 16,
                                           "n_target_observed": 5, "n_target_unobserved": 3, "split": "scenes", "seed": seed})
        scenes = [{c.meta["scene"] for c in cubes} for cubes in (bench.target_observed, bench.target_unobserved)]
        assert len(scenes[0]) == 2 and scenes[1] and not scenes[0] & scenes[1]  # 5 observed tiles need 2 scenes of 4


def test_auto_split_uses_scenes_when_they_fill_both_splits_and_tiles_otherwise(tmp_path):
    write_scenes(tmp_path / "three", 3)
    write_scenes(tmp_path / "one", 1)
    write_scenes(tmp_path / "two", 2)
    def mode(folder, n_observed, n_unobserved, split="auto"):
        bench = data_stage.build_splits(**{**TINY, "dataset": str(tmp_path / folder), "kind": "cave", "image_size": 16,
                                           "n_target_observed": n_observed, "n_target_unobserved": n_unobserved,
                                           "split": split})
        return bench.params["split"]
    assert mode("three", 2, 2) == "scenes"
    assert mode("one", 2, 2) == "tiles"  # a single scene cannot serve both splits
    assert mode("two", 5, 2) == "tiles"  # 5 observed tiles take both scenes of 4 tiles
    with pytest.raises(DatasetError, match=r"hold 8 tiles for 5 observed images, the other 0 hold 0 for 2 unobserved"):
        mode("two", 5, 2, split="scenes")


def test_split_file_lists_the_images_of_00_data_and_is_a_tracked_side_file(tmp_path):
    write_scenes(tmp_path / "scenes", 2)
    run = tmp_path / "run"
    rows, data = run_tiny_stage(run, tmp_path / "scenes")
    for name in data_stage.SPLITS:
        domain, split = name.split("_")
        assert [r["image"] for r in rows if (r["domain"], r["split"]) == (domain, split)] == data[name]["names"]
    source = [r for r in rows if r["domain"] == "source"]
    assert all(r["scene"] == r["image"] and r["top"] == r["left"] == "0" and r["size"] == "16" for r in source)
    store = RunStore(run)
    assert set(store.header("00_data").files) == {data_stage.SPLIT_FILE}
    with open(run / data_stage.SPLIT_FILE, "a") as f:
        f.write("tampered\n")
    with pytest.raises(ArtifactError, match="00_split.csv changed"):
        store.read("00_data")


def test_missing_scenes_name_the_folder_and_what_to_put_there(tmp_path):
    missing = tmp_path / "data" / "cave"
    for dataset, folder in [(missing / "cave_*.mat", missing), (missing, missing), (missing / "balloons_ms.mat", missing)]:
        with pytest.raises(DatasetError) as err:
            data_stage.check({"dataset": str(dataset)})  # what `hiralign run` calls before any stage runs
        message = str(err.value)
        assert f"Put the scenes in {folder}:" in message
        assert "<scene>_ms folders of 16-bit band PNGs" in message and "--set 00_data.dataset=PATH" in message
    missing.mkdir(parents=True)
    with pytest.raises(DatasetError, match=rf"matches no scene files .* in {missing}\. Put the scenes in {missing}:"):
        data_stage.scene_files(missing / "kaist_*.mat")
    with pytest.raises(DatasetError, match=r"--set 00_data\.source_path=PATH"):
        data_stage.check({"source_path": str(missing)})
    with pytest.raises(DatasetError, match=f"Put the scenes in {REPO.parent / 'no-such-data'}:"):
        data_stage.scene_files("../no-such-data/cave_*.mat")  # relative: the folder beside the repository


@pytest.mark.parametrize("cwd", [".", "notebooks", "hiralign/data"])
def test_a_relative_dataset_path_resolves_against_the_project_root_from_any_cwd(tmp_path, monkeypatch, cwd):
    write_scenes(tmp_path / "scenes", 2)
    relative = os.path.relpath(tmp_path / "scenes", REPO)  # ../../tmp/... : relative to the repository root
    monkeypatch.chdir(REPO / cwd)
    assert project_path("../shared/data/cave_*.mat") == REPO.parent / "shared" / "data" / "cave_*.mat"
    assert resolve_run_dir("runs/demo") == REPO / "runs" / "demo"
    assert data_stage.scene_files(f"{relative}/*.mat") == sorted((tmp_path / "scenes").glob("*.mat"))
    rows, _ = run_tiny_stage(tmp_path / "run", Path(relative))
    assert {r["scene"] for r in target_rows(rows, "observed") + target_rows(rows, "unobserved")} == {"scene0_ms", "scene1_ms"}


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
    assert art.attrs["synthetic"] and (run / "00_domain_shift.png").exists() and (run / data_stage.SPLIT_FILE).exists()


def test_explorer_figure_marks_pixel_and_spectrum():
    from hiralign.data.explore import plot_band_and_spectrum

    cube = data_stage.build_splits(**TINY).target_observed[0]
    fig = plot_band_and_spectrum(cube, band=15, row=3, col=4)
    line = fig.axes[1].lines[0]
    np.testing.assert_allclose(line.get_ydata(), cube.data[:, 3, 4])
    np.testing.assert_allclose(line.get_xdata(), cube.wavelengths)
