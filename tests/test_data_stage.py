"""Stage 00: splits from the synthetic benchmark or real scenes, the 00_data.h5 round trip, the split
modes (split lists among them) and 00_split.csv, path resolution, bad input, wavelength grids that
differ, and notebook 00 executed headless by papermill on tiny parameters."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import h5py
import numpy as np
import papermill
import pytest
import scipy.io
import tifffile

from hiralign.data import Cube, CubeError, DatasetError
from hiralign.data import band_grids, tiling
from hiralign.data import stage as data_stage
from hiralign.data.loaders import load_icvl
from hiralign.data.splits import get_split
from hiralign.stages import ParameterError, run_stage
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
    files = tiling.scene_files(pattern)
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
        tiling.scene_files(cave_path.parent / "kaist_*.mat")


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
        tiling.scene_files(missing / "kaist_*.mat")
    with pytest.raises(DatasetError, match=r"--set 00_data\.source_path=PATH"):
        data_stage.check({"source_path": str(missing)})
    with pytest.raises(DatasetError, match=f"Put the scenes in {REPO.parent / 'no-such-data'}:"):
        tiling.scene_files("../no-such-data/cave_*.mat")  # relative: the folder beside the repository


@pytest.mark.parametrize("cwd", [".", "notebooks", "hiralign/data"])
def test_a_relative_dataset_path_resolves_against_the_project_root_from_any_cwd(tmp_path, monkeypatch, cwd):
    write_scenes(tmp_path / "scenes", 2)
    relative = os.path.relpath(tmp_path / "scenes", REPO)  # ../../tmp/... : relative to the repository root
    monkeypatch.chdir(REPO / cwd)
    assert project_path("../shared/data/cave_*.mat") == REPO.parent / "shared" / "data" / "cave_*.mat"
    assert resolve_run_dir("runs/demo") == REPO / "runs" / "demo"
    assert tiling.scene_files(f"{relative}/*.mat") == sorted((tmp_path / "scenes").glob("*.mat"))
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


# ----------------------------------------------------------------------------- split lists, band grids, wavelengths

CAVE_SCENES = get_split("cave", "all")


def write_cave_scenes(folder: Path, names: list[str], side: int = 16) -> dict[str, np.ndarray]:
    """Tiny CAVE ``<scene>.mat`` files (``Omsi`` uint16 (H, W, 31)) named as the split lists name them;
    returns each scene's (B, H, W) cube in [0, 1]."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    scenes = {}
    for name in names:
        raw = rng.integers(0, 65536, (side, side, 31), dtype=np.uint16)
        scipy.io.savemat(folder / f"{name}.mat", {"Omsi": raw})
        scenes[name] = raw.transpose(2, 0, 1).astype(np.float32) / 65535.0
    return scenes


def write_icvl(folder: Path, names: list[str], bands: np.ndarray, side: int = 16) -> None:
    """Tiny ICVL scenes ``<scene>.mat``: MATLAB v7.3 (HDF5, arrays stored column-major) with ``rad``
    (H, W, B) radiance and ``bands``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for name in names:
        with h5py.File(folder / f"{name}.mat", "w", userblock_size=512) as f:
            for key, value in (("rad", rng.random((side, side, bands.size)) * 9.0), ("bands", bands.reshape(1, -1))):
                f.create_dataset(key, data=value.transpose()).attrs["MATLAB_class"] = np.bytes_("double")
        with open(folder / f"{name}.mat", "r+b") as f:
            f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .")


def write_list(path: Path, names: list[str]) -> Path:
    path.write_text("# a scene list\n" + "".join(f"{n}  # scene {i}\n" for i, n in enumerate(names)) + "\n")
    return path


def list_params(folder: Path, **params) -> dict:
    return {**TINY, "dataset": str(folder), "kind": "cave", "image_size": 8, "split": "lists",
            "n_target_observed": 0, "n_target_unobserved": 0, **params}


def test_lists_mode_puts_exactly_the_listed_scenes_tiles_in_each_split(tmp_path):
    scenes = write_cave_scenes(tmp_path / "cave", CAVE_SCENES)  # 4 tiles of 8 px each
    rows, data = run_tiny_stage(tmp_path / "run", tmp_path / "cave", **list_params(
        tmp_path / "cave", kind="", observed_scenes="cave/train", unobserved_scenes="cave/test"))
    observed, unobserved = target_rows(rows, "observed"), target_rows(rows, "unobserved")
    train, test = get_split("cave", "train"), get_split("cave", "test")
    assert len(observed) == 4 * len(train) and len(unobserved) == 4 * len(test)  # counts 0: every tile
    assert [r["scene"] for r in observed[::4]] == train and [r["scene"] for r in unobserved[::4]] == test
    for r, cube in zip(observed + unobserved, np.concatenate([data["target_observed"]["cubes"], data["target_unobserved"]["cubes"]])):
        top, left = int(r["top"]), int(r["left"])
        np.testing.assert_array_equal(cube, scenes[r["scene"]][:, top : top + 8, left : left + 8])
    bench = json.loads(data["benchmark"])
    assert bench["split"] == "lists" and "band_grid" not in bench
    assert bench["scene_lists"]["target_observed"] == {"parameter": "observed_scenes", "list": "cave/train",
                                                       "kind": "cave", "scenes": train}
    assert bench["scene_lists"]["target_unobserved"]["scenes"] == test


def test_lists_mode_draws_n_tiles_seeded_and_an_unlisted_split_from_the_other_scenes(tmp_path, monkeypatch):
    names = [f"scene{i}_ms" for i in range(5)]
    write_cave_scenes(tmp_path / "cave", names)
    listed = write_list(tmp_path / "observed.txt", names[:3])
    relative = os.path.relpath(listed, REPO)  # relative to the project root, from any cwd
    monkeypatch.chdir(REPO / "notebooks")
    params = list_params(tmp_path / "cave", observed_scenes=relative, n_target_observed=5, n_target_unobserved=3)
    bench = data_stage.build_splits(**params)
    again = data_stage.build_splits(**params)
    assert [c.name for c in bench.target_observed] == [c.name for c in again.target_observed]  # seeded
    assert len(bench.target_observed) == 5 and len({c.name for c in bench.target_observed}) == 5
    assert {c.meta["scene"] for c in bench.target_observed} <= set(names[:3])
    assert len(bench.target_unobserved) == 3 and {c.meta["scene"] for c in bench.target_unobserved} <= set(names[3:])
    assert bench.params["scene_lists"]["target_observed"]["scenes"] == names[:3]
    with pytest.raises(DatasetError, match=r"n_target_observed=13, but the 3 scene\(s\) of observed_scenes .* hold only 12 tiles of 8x8"):
        data_stage.build_splits(**{**params, "n_target_observed": 13})


def test_scene_list_parameters_are_checked(tmp_path):
    write_cave_scenes(tmp_path / "cave", CAVE_SCENES[:3])
    write_list(tmp_path / "shared.txt", [CAVE_SCENES[5], CAVE_SCENES[1]])
    check = lambda **p: data_stage.check(list_params(tmp_path / "cave", **p))  # noqa: E731
    with pytest.raises(ParameterError, match=rf"observed_scenes \(cave/train\) and unobserved_scenes .* share 2 scene\(s\): "
                                             rf"{CAVE_SCENES[1]}, {CAVE_SCENES[5]}; a scene serves one split only"):
        check(observed_scenes="cave/train", unobserved_scenes=str(tmp_path / "shared.txt"))
    with pytest.raises(ParameterError, match=r"split=lists needs observed_scenes"):
        check()
    with pytest.raises(ParameterError, match=r"observed_scenes is set, but split is 'auto'; set split=lists"):
        check(observed_scenes="cave/train", split="auto", n_target_observed=1)
    with pytest.raises(ParameterError, match=r"source_train_scenes is set, but source_path is empty"):
        check(observed_scenes="cave/train", source_train_scenes="icvl/train")
    with pytest.raises(ParameterError, match=r"observed_scenes must be a split reference <dataset>/<split> \(one of .*cave/train"):
        check(observed_scenes="cave/training")
    with pytest.raises(ParameterError, match=r"kind is 'kaist', but observed_scenes names cave scenes"):
        check(observed_scenes="cave/train", kind="kaist")
    with pytest.raises(ParameterError, match=r"n_target_observed must be >= 1"):
        data_stage.check({**TINY, "n_target_observed": 0})  # 0 means every tile only with split=lists
    with pytest.raises(DatasetError, match="no such scene-list file"):
        check(observed_scenes=str(tmp_path / "none.txt"))


def test_check_names_every_missing_listed_scene_in_one_error(tmp_path):
    present = CAVE_SCENES[:3]
    write_cave_scenes(tmp_path / "cave", present)
    write_icvl(tmp_path / "icvl", ["scene_a", "scene_b"], np.arange(400.0, 701.0, 10.0))
    write_list(tmp_path / "source.txt", ["scene_a", "lost_1", "lost_2"])
    params = list_params(tmp_path / "cave", observed_scenes="cave/train", unobserved_scenes="cave/test",
                         source_path=str(tmp_path / "icvl"), source_train_scenes=str(tmp_path / "source.txt"))
    with pytest.raises(DatasetError) as err:
        data_stage.check(params)  # what `hiralign run` calls before any stage runs
    message = str(err.value)
    missing = [s for s in CAVE_SCENES if s not in present]
    assert message.startswith(f"00_data: {len(missing) + 2} listed scene(s) not found:")
    assert f"observed_scenes (cave/train), 17 of 20 missing in {tmp_path / 'cave'}: " + ", ".join(missing[:17]) in message
    assert f"unobserved_scenes (cave/test), 12 of 12 missing in {tmp_path / 'cave'}: " + ", ".join(missing[17:]) in message
    assert f"2 of 3 missing in {tmp_path / 'icvl'}: lost_1, lost_2" in message
    assert f"{tmp_path / 'cave'}/<scene>/ or <scene>.mat (cave)" in message and "docs/datasets.md" in message
    data_stage.check({**params, "observed_scenes": write_list(tmp_path / "obs.txt", present[:2]).as_posix(),
                      "unobserved_scenes": write_list(tmp_path / "unobs.txt", present[2:]).as_posix(),
                      "source_train_scenes": write_list(tmp_path / "src.txt", ["scene_b"]).as_posix()})


@pytest.mark.parametrize("source_bands", [np.arange(400.0, 701.0, 10.0), np.arange(405.0, 706.0, 10.0)])
def test_band_grid_common_keeps_the_target_bands_inside_the_source_range_and_interpolates_the_source(tmp_path, source_bands):
    rng = np.random.default_rng(4)
    (tmp_path / "kaist").mkdir()
    for i in range(2):
        scipy.io.savemat(tmp_path / "kaist" / f"scene0{i + 1}.mat", {"HSI": rng.random((16, 16, 31)).astype(np.float32)})
    write_icvl(tmp_path / "icvl", ["icvl_a", "icvl_b", "icvl_c"], source_bands)
    lines = []
    bench = data_stage.build_splits(**{
        **TINY, "dataset": str(tmp_path / "kaist"), "kind": "kaist", "source_path": str(tmp_path / "icvl"), "image_size": 8,
        "split": "tiles", "n_source_train": 0, "n_source_test": 0, "source_kind": "icvl",
        "source_train_scenes": str(write_list(tmp_path / "train.txt", ["icvl_a", "icvl_b"])),
        "source_test_scenes": str(write_list(tmp_path / "test.txt", ["icvl_c"]))}, log=lines.append)
    common = np.arange(420.0, 701.0, 10.0)
    assert len(bench.source_train) == 8 and len(bench.source_test) == 4  # 0: every tile of the listed scenes
    for cube in bench.source + bench.target:
        np.testing.assert_array_equal(cube.wavelengths, common)
    np.testing.assert_array_equal(bench.wavelengths, common)
    assert bench.params["band_grid"] == "common" and bench.params["bands_dropped"] == [710.0, 720.0]
    assert bench.params["band_grids"]["common"] == "420..700 nm (29 bands)"
    assert lines == [f"band grid: target 420..720 nm (31 bands), source {source_bands[0]:g}..{source_bands[-1]:g} nm "
                     f"(31 bands) -> common 420..700 nm (29 bands); target bands dropped (outside the source range): "
                     f"710, 720 nm; source resampled onto it by linear interpolation"]
    original = {c.name: c for c in (load_icvl(tmp_path / "icvl" / f"{n}.mat") for n in ("icvl_a", "icvl_b", "icvl_c"))}
    for tile in bench.source:
        scene = original[tile.meta["scene"]].data[:, tile.meta["top"] : tile.meta["top"] + 8, tile.meta["left"] : tile.meta["left"] + 8]
        expected = np.apply_along_axis(lambda s: np.interp(common, source_bands, s), 0, scene)
        np.testing.assert_allclose(tile.data, expected, rtol=1e-6, atol=1e-7)
    kaist = {f"scene0{i + 1}": scipy.io.loadmat(tmp_path / "kaist" / f"scene0{i + 1}.mat")["HSI"].transpose(2, 0, 1) for i in range(2)}
    for tile in bench.target:
        np.testing.assert_array_equal(tile.data, kaist[tile.meta["scene"]][:29, tile.meta["top"] : tile.meta["top"] + 8,
                                                                            tile.meta["left"] : tile.meta["left"] + 8])
    rows = data_stage.split_rows(bench)
    assert {r["scene"] for r in rows if r["domain"] == "source" and r["split"] == "test"} == {"icvl_c"}


def test_band_grid_error_names_both_grids_and_a_same_grid_changes_nothing(tmp_path):
    scipy.io.savemat(tmp_path / "scene01.mat", {"HSI": np.random.default_rng(5).random((16, 16, 31)).astype(np.float32)})
    params = {**TINY, "dataset": str(tmp_path / "scene01.mat"), "kind": "kaist", "image_size": 8, "split": "tiles"}
    with pytest.raises(DatasetError, match=r"grids differ \(band_grid=error\): target 420\.\.720 nm \(31 bands\), source "
                                           r"400\.\.700 nm \(31 bands\); only in the target: 710, 720 nm; only in the "
                                           r"source: 400, 410 nm\. Set band_grid=common"):
        data_stage.build_splits(**params, band_grid="error")
    lines = []
    same = data_stage.build_splits(**{**params, "wavelengths": "400:700:10"}, band_grid="error", log=lines.append)
    assert same.target_observed[0].bands == 31 and "band_grid" not in same.params and not lines


def test_resample_bands_is_numpy_interp_along_wavelength_and_never_extrapolates():
    cube = Cube(np.random.default_rng(6).random((4, 3, 5)), [400.0, 410.0, 425.0, 450.0], name="c")
    new = np.array([400.0, 405.0, 425.0, 449.5, 450.0])
    out = band_grids.resample_bands(cube, new)
    expected = np.apply_along_axis(lambda s: np.interp(new, cube.wavelengths, s), 0, cube.data)
    np.testing.assert_allclose(out.data, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(out.data[[0, 2, 4]], cube.data[[0, 2, 3]])  # on the grid: the band itself
    assert out.meta["resampled_from"] == "400..450 nm (4 bands)" and band_grids.resample_bands(cube, cube.wavelengths) is cube
    with pytest.raises(CubeError, match=r"c: covers 400\.\.450 nm \(4 bands\); resampling it to 395\.\.450 nm .* would extrapolate"):
        band_grids.resample_bands(cube, [395.0, 450.0])


def test_the_wavelengths_parameter():
    np.testing.assert_array_equal(tiling.parse_wavelengths("400:730:10"), np.arange(400.0, 731.0, 10.0))
    np.testing.assert_array_equal(tiling.parse_wavelengths(" 410, 420.5,430 "), [410.0, 420.5, 430.0])
    assert tiling.parse_wavelengths("") is None
    for bad in ("400:730", "400:300:10", "a,b", "420,410"):
        with pytest.raises(ParameterError, match="wavelengths must be"):
            tiling.parse_wavelengths(bad)
    with pytest.raises(ParameterError, match="ICVL files carry their own wavelengths"):
        data_stage.check({"dataset": "data/icvl", "kind": "icvl", "wavelengths": "400:700:10"})


def test_hsidwrd_target_with_the_wavelengths_parameter(tmp_path):
    rng = np.random.default_rng(7)
    clean = {}
    for scene in ("1", "2", "3"):
        clean[scene] = rng.integers(0, 4096, size=(34, 16, 16), dtype=np.uint16)
        (tmp_path / "hsidwrd" / "gt").mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(tmp_path / "hsidwrd" / "gt" / f"{scene}.tif", clean[scene])
    params = list_params(tmp_path / "hsidwrd" / "gt", kind="hsidwrd", observed_scenes=str(write_list(tmp_path / "o.txt", ["1", "2"])),
                         unobserved_scenes=str(write_list(tmp_path / "u.txt", ["3"])))
    with pytest.raises(ParameterError, match=r"HSIDwrD files store no wavelengths; set wavelengths .* e\.g\. 400:730:10"):
        data_stage.check(params)
    params["wavelengths"] = "400:730:10"
    data_stage.check(params)
    rows, data = run_tiny_stage(tmp_path / "run", tmp_path, **params)
    stored = np.arange(400.0, 731.0, 10.0)
    kept = [b for b in range(34) if b not in (0, 11, 22) and stored[b] <= 700]  # dropped by the loader / by band_grid
    np.testing.assert_array_equal(data["wavelengths"], stored[kept])
    bench = json.loads(data["benchmark"])
    assert bench["bands_dropped"] == [710.0, 720.0, 730.0] and bench["band_grids"]["target"] == "410..730 nm (31 bands)"
    assert [r["scene"] for r in target_rows(rows, "observed")] == ["1"] * 4 + ["2"] * 4
    for r, cube in zip(target_rows(rows, "observed") + target_rows(rows, "unobserved"),
                       np.concatenate([data["target_observed"]["cubes"], data["target_unobserved"]["cubes"]])):
        top, left = int(r["top"]), int(r["left"])
        np.testing.assert_allclose(cube, clean[r["scene"]][kept, top : top + 8, left : left + 8] / 4096.0, rtol=1e-6)
