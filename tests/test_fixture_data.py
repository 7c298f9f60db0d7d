"""The fixture dataset root (hiralign.data.fixture, ``hiralign data make-fixture``) has the real layouts
and loads through the real loaders; a broken root gives one clear error naming the file (check_scene)."""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
import scipy.io
import tifffile
from PIL import Image

from hiralign.cli import main
from hiralign.data.fixture import (
    MANIFEST,
    MARKER,
    SAMSON_WAVELENGTHS,
    FixtureError,
    band_average,
    is_fixture_root,
    write_fixture_root,
    write_mat_v73,
)
from hiralign.data.loaders import (
    CAVE_WAVELENGTHS,
    ICVL_WAVELENGTHS,
    KAIST_WAVELENGTHS,
    DatasetError,
    check_dataset_root,
    check_scene,
    load_cave,
    load_hsidwrd_pair,
    load_scene,
)
from hiralign.data.splits import get_split, list_splits

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SIZE = 16
KAIST_HW = (SIZE, 20)  # the 2704 x 3376 aspect
ICVL_HW = (17, SIZE)  # the 1392 x 1300 aspect
HSIDWRD_WL = np.arange(400.0, 731.0, 10.0)


def names(dataset: str) -> list[str]:
    return list(dict.fromkeys(n for s in list_splits(dataset) for n in get_split(dataset, s)))


def needs_shared() -> None:
    if not (SHARED / "cave_balloons_ms_256.mat").exists() or not (SHARED / "samson_95.mat").exists():
        pytest.skip(f"real scenes not found in {SHARED} (cave_balloons_ms_256.mat, samson_95.mat)")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """One fixture root for the module: real scenes when the shared folder exists, no models."""
    shared = SHARED if SHARED.is_dir() else None
    return write_fixture_root(tmp_path_factory.mktemp("fixture") / "data", shared, size=SIZE, seed=0,
                              models=False, progress=False)


def copy_dataset(root: Path, dataset: str, dest: Path) -> Path:
    """A writable copy of one dataset folder of the fixture under a new root ``dest``."""
    shutil.copytree(root / dataset, dest / dataset)
    return dest / dataset


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# ----------------------------------------------------------------------------- layouts and loading


def test_cave_doubly_nested_16bit_pngs_load(root):
    scenes = get_split("cave", "all")
    assert sorted(p.name for p in (root / "cave").iterdir()) == sorted(scenes) and len(scenes) == 32
    for scene in scenes:
        inner = root / "cave" / scene / scene
        pngs = sorted(inner.glob("*.png"))
        assert [p.name for p in pngs] == [f"{scene}_{b:02d}.png" for b in range(1, 32)]
        assert (inner / f"{scene}_RGB.bmp").is_file()
    for png in (root / "cave" / "beads_ms" / "beads_ms").glob("*.png"):
        with Image.open(png) as image:
            assert image.mode == "I;16" and image.size == (SIZE, SIZE)  # 16-bit grayscale
        assert iio.imread(png).dtype == np.uint16
    cube = load_scene("cave", root / "cave", "beads_ms")
    assert cube.shape == (31, SIZE, SIZE) and cube.name == "beads_ms"
    np.testing.assert_array_equal(cube.wavelengths, CAVE_WAVELENGTHS)
    raw = iio.imread(root / "cave" / "beads_ms" / "beads_ms" / "beads_ms_07.png")
    np.testing.assert_array_equal(cube.data[6], raw / np.float32(65535))
    assert 0.0 <= cube.data.min() and cube.data.max() <= 1.0 and cube.meta["multichannel_bands"] == []


def test_kaist_v73_hsi_loads_with_its_grid(root):
    assert sorted(p.stem for p in (root / "kaist").glob("*.mat")) == sorted(get_split("kaist", "all"))
    path = root / "kaist" / "scene05.mat"
    assert h5py.is_hdf5(path) and scipy.io.matlab.matfile_version(path) == (2, 0)  # MATLAB v7.3 header
    with h5py.File(path, "r") as f:
        assert list(f) == ["HSI"] and f["HSI"].shape == (31, KAIST_HW[1], KAIST_HW[0])  # column-major
        assert f["HSI"].attrs["MATLAB_class"] == b"double"
        stored = f["HSI"][()]
    cube = load_scene("kaist", root / "kaist", "scene05")
    assert cube.shape == (31, *KAIST_HW) and cube.meta["scaling"].startswith("float values kept")
    np.testing.assert_array_equal(cube.wavelengths, KAIST_WAVELENGTHS)
    assert cube.data[4, 3, 11] == np.float32(stored[4, 11, 3])  # MATLAB HSI(4, 12, 5)
    assert 0.0 <= cube.data.min() and cube.data.max() <= 1.0


def test_icvl_v73_rad_bands_rgb_load_as_radiance(root):
    scenes = names("icvl")
    assert len(scenes) == 201 and sorted(p.stem for p in (root / "icvl").glob("*.mat")) == sorted(scenes)
    path = root / "icvl" / "bulb_0822-0909.mat"
    assert h5py.is_hdf5(path) and scipy.io.matlab.matfile_version(path) == (2, 0)
    with h5py.File(path, "r") as f:
        assert sorted(f) == ["bands", "rad", "rgb"]
        assert f["rad"].shape == (31, ICVL_HW[1], ICVL_HW[0]) and f["bands"].shape == (31, 1)
        assert f["rgb"].shape == (3, ICVL_HW[1], ICVL_HW[0]) and f["rgb"].dtype == np.uint8
        rad = f["rad"][()]
    assert rad.max() > 100  # radiance, not [0, 1]
    cube = load_scene("icvl", root / "icvl", "bulb_0822-0909")
    assert cube.shape == (31, *ICVL_HW) and cube.meta["wavelengths_from"] == "bands"
    np.testing.assert_array_equal(cube.wavelengths, ICVL_WAVELENGTHS)
    assert cube.meta["scale"] == pytest.approx(rad.max()) and cube.data.max() == pytest.approx(1.0)
    assert cube.data[30, 16, 2] == pytest.approx(rad[30, 2, 16] / rad.max(), rel=1e-6)


def test_hsidwrd_pairs_are_multipage_12bit_tiffs(root):
    scenes = [str(n) for n in range(1, 60)]
    for folder in ("gt", "input50"):
        assert sorted(p.stem for p in (root / "hsidwrd" / folder).glob("*.tif")) == sorted(scenes)
    with tifffile.TiffFile(root / "hsidwrd" / "gt" / "7.tif") as tif:
        assert len(tif.pages) == 34 and all(p.dtype == np.uint16 and p.shape == (SIZE, SIZE) for p in tif.pages)
        clean_raw = tif.asarray()
    assert clean_raw.max() <= 4095 and clean_raw.max() > 1000
    noisy, clean = load_hsidwrd_pair(root / "hsidwrd", "7", wavelengths=HSIDWRD_WL)
    assert noisy.shape == clean.shape == (31, SIZE, SIZE) and noisy.meta["ratio"] == 50.0
    np.testing.assert_array_equal(clean.wavelengths, np.delete(HSIDWRD_WL, [0, 11, 22]))
    assert abs(noisy.data.mean() - clean.data.mean()) < 0.1 * clean.data.mean()  # noisy x 50 ~ clean
    assert np.abs(noisy.data - clean.data).mean() > 0.005  # but noisy


def test_the_fixture_root_passes_every_layout_check_and_says_what_it_is(root):
    check_dataset_root(root)
    readme = (root / "README.md").read_text()
    assert readme.startswith(MARKER) and "FIXTURE" in readme and "not" in readme
    for folder in ("## cave/", "## kaist/", "## icvl/", "## hsidwrd/"):
        assert folder in readme
    assert f"size={SIZE}" in readme and "seed=0" in readme and "## models/" not in readme
    manifest = json.loads((root / MANIFEST).read_text())
    assert manifest["size"] == SIZE and sorted(manifest["datasets"]) == ["cave", "hsidwrd", "icvl", "kaist"]
    assert is_fixture_root(root) and not (root / "models").exists()


def test_real_scenes_are_crops_of_the_shared_files(root):
    needs_shared()
    real = scipy.io.loadmat(SHARED / "cave_balloons_ms_256.mat")["Omsi"]  # (256, 256, 31) uint16
    top = (256 - SIZE) // 2
    for band in (1, 16, 31):
        png = iio.imread(root / "cave" / "balloons_ms" / "balloons_ms" / f"balloons_ms_{band:02d}.png")
        np.testing.assert_array_equal(png, real[top:top + SIZE, top:top + SIZE, band - 1])
    cloth = scipy.io.loadmat(SHARED / "cave_cloth_ms_256.mat")["NRD"]
    cube = load_scene("cave", root / "cave", "cloth_ms")
    np.testing.assert_array_equal(cube.data, cloth[top:top + SIZE, top:top + SIZE].transpose(2, 0, 1) / np.float32(65535))
    samson = scipy.io.loadmat(SHARED / "samson_95.mat")["T"]
    expected = band_average(samson[:SIZE, :KAIST_HW[1]], SAMSON_WAVELENGTHS, KAIST_WAVELENGTHS)
    kaist = load_scene("kaist", root / "kaist", "scene01")
    np.testing.assert_allclose(kaist.data, expected.transpose(2, 0, 1), rtol=1e-6, atol=1e-7)
    manifest = json.loads((root / MANIFEST).read_text())["datasets"]
    assert manifest["cave"]["balloons_ms"].startswith("real CAVE") and manifest["cave"]["beads_ms"].startswith("synthetic")
    assert manifest["kaist"]["scene01"].startswith("real Samson") and manifest["icvl"][names("icvl")[0]].startswith("real Samson")
    assert "`balloons_ms`" in (root / "README.md").read_text()


def test_band_average_is_a_box_mean():
    native = np.array([401.0, 404.0, 407.0, 410.0, 413.0])
    hwb = np.arange(5.0).reshape(1, 1, 5)
    np.testing.assert_allclose(band_average(hwb, native, np.array([400.0, 410.0])).ravel(), [0.5, 3.0])
    with pytest.raises(ValueError, match="no source band within 5 nm of 430"):
        band_average(hwb, native, np.array([430.0]))


def test_cli_make_fixture_synthetic_only_replaces_a_fixture_and_refuses_other_folders(tmp_path, capsys):
    out = tmp_path / "fx"
    assert main(["data", "make-fixture", str(out), "--size", "8", "--seed", "3", "--no-models",
                 "--shared-data", str(tmp_path / "empty")]) == 2  # no such folder
    (tmp_path / "empty").mkdir()
    assert main(["data", "make-fixture", str(out), "--size", "8", "--seed", "3", "--no-models",
                 "--shared-data", str(tmp_path / "empty")]) == 0
    assert "NOT the datasets" in capsys.readouterr().out
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["seed"] == 3 and not any(s.startswith("real") for d in manifest["datasets"].values() for s in d.values())
    assert load_scene("cave", out / "cave", "balloons_ms").shape == (31, 8, 8)
    assert main(["data", str(out / "kaist" / "scene02.mat")]) == 0  # summaries still work
    assert "scene02" in capsys.readouterr().out
    assert main(["data", str(out / "kaist" / "scene02.mat"), "--size", "4"]) == 2
    assert "--size: only with `hiralign data make-fixture ROOT`" in capsys.readouterr().err
    write_fixture_root(out, None, size=8, seed=4, models=False, progress=False)  # an earlier fixture is replaced
    assert json.loads((out / MANIFEST).read_text())["seed"] == 4
    other = tmp_path / "real-data"
    (other / "cave").mkdir(parents=True)
    with pytest.raises(FixtureError, match="not empty and is not a fixture root"):
        write_fixture_root(other, None, size=8, models=False, progress=False)


# ----------------------------------------------------------------------------- broken roots: one clear error


def test_missing_scene_names_its_folder(root, tmp_path):
    cave = copy_dataset(root, "cave", tmp_path)
    shutil.rmtree(cave / "feathers_ms")
    with pytest.raises(DatasetError) as err:
        check_dataset_root(tmp_path)
    assert str(err.value).startswith(f"{cave / 'feathers_ms'}: missing cave scene") and "\n" not in str(err.value)
    with pytest.raises(DatasetError, match=rf"^{cave / 'feathers_ms'}: no such file or folder"):
        check_scene(cave / "feathers_ms", "cave")


def test_scene_with_30_pngs_names_the_missing_band(root, tmp_path):
    cave = copy_dataset(root, "cave", tmp_path)
    inner = cave / "balloons_ms" / "balloons_ms"
    (inner / "balloons_ms_17.png").unlink()
    with pytest.raises(DatasetError, match=rf"^{inner}: CAVE scene folder holds 30 band PNGs, not 31.*missing band\(s\) \[17\]"):
        check_scene(cave / "balloons_ms", "cave")
    with pytest.raises(DatasetError, match=rf"^{inner}: .*missing band\(s\) \[17\]"):
        check_dataset_root(tmp_path)


def test_8bit_png_is_refused_but_the_rgba_quirk_is_accepted(root, tmp_path):
    cave = copy_dataset(root, "cave", tmp_path)
    png = cave / "cd_ms" / "cd_ms" / "cd_ms_05.png"
    Image.fromarray((iio.imread(png) >> 8).astype(np.uint8)).save(png)  # 8-bit grayscale
    with pytest.raises(DatasetError, match=rf"^{png}: band PNG is 8-bit grayscale; CAVE band images are 16-bit"):
        check_scene(cave / "cd_ms", "cave")
    inner = cave / "watercolors_ms" / "watercolors_ms"
    for b in range(1, 32):  # the documented watercolors quirk: 8-bit RGBA band PNGs
        band = iio.imread(inner / f"watercolors_ms_{b:02d}.png")
        grey = (band >> 8).astype(np.uint8)
        iio.imwrite(inner / f"watercolors_ms_{b:02d}.png", np.stack([grey, grey, grey, np.full_like(grey, 255)], -1))
    check_scene(cave / "watercolors_ms", "cave")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_cave(cave / "watercolors_ms").meta["multichannel_bands"] == list(range(1, 32))
    assert any("first channel" in str(w.message) for w in caught)


def test_mat_without_the_expected_variable_lists_what_it_holds(root, tmp_path):
    icvl = copy_dataset(root, "icvl", tmp_path)
    path = icvl / "bulb_0822-0909.mat"
    with h5py.File(path, "r") as f:
        rad, bands, rgb = (f[k][()].transpose() for k in ("rad", "bands", "rgb"))
    write_mat_v73(path, {"radiance": rad, "bands": bands, "rgb": rgb})
    with pytest.raises(DatasetError) as err:
        check_scene(path, "icvl")
    text = str(err.value)
    assert text.startswith(f"{path}: no ICVL variable 'rad'") and "'radiance'" in text and "'rgb' (17x16x3 uint8)" in text
    kaist = tmp_path / "kaist"
    kaist.mkdir()
    scipy.io.savemat(kaist / "scene03.mat", {"img": np.zeros((8, 9, 28)), "mask": np.zeros((8, 9))})  # a CASSI copy
    with pytest.raises(DatasetError, match=rf"^{kaist / 'scene03.mat'}: no KAIST variable 'HSI'.*'img' \(8x9x28 double\)"):
        check_scene(kaist / "scene03.mat", "kaist")
    cave_mat = tmp_path / "egyptian_statue_ms.mat"
    scipy.io.savemat(cave_mat, {"NRD": np.zeros((8, 8, 31), np.uint16)})  # another accepted name: the single cube
    check_scene(cave_mat, "cave")


@pytest.mark.parametrize("dataset, relative", [
    ("icvl", "icvl/bulb_0822-0909.mat"),
    ("kaist", "kaist/scene10.mat"),
    ("cave", "cave/clay_ms/clay_ms/clay_ms_31.png"),
    ("hsidwrd", "hsidwrd/input50/12.tif"),
])
def test_truncated_file_is_named(root, tmp_path, dataset, relative):
    copy_dataset(root, dataset, tmp_path)
    path = tmp_path / relative
    truncate(path)
    with pytest.raises(DatasetError, match=rf"^{path}: corrupt or truncated"):
        check_dataset_root(tmp_path)


def test_truncated_mat_v5_and_tiffs_that_are_not_multipage_16bit(tmp_path):
    v5 = tmp_path / "cave" / "face_ms.mat"
    v5.parent.mkdir()
    scipy.io.savemat(v5, {"Omsi": np.arange(20 * 20 * 31, dtype=np.uint16).reshape(20, 20, 31)})
    check_scene(v5, "cave")
    truncate(v5, 0.8)
    with pytest.raises(DatasetError, match=rf"^{v5}: corrupt or truncated \.mat"):
        check_scene(v5, "cave")
    gt = tmp_path / "hsidwrd" / "gt"
    gt.mkdir(parents=True)
    tifffile.imwrite(gt / "1.tif", np.zeros((8, 8), np.uint16))
    with pytest.raises(DatasetError, match=rf"^{gt / '1.tif'}: HSIDwrD cubes are multi-page TIFFs.*1 page"):
        check_scene(gt / "1.tif")
    tifffile.imwrite(gt / "2.tif", np.zeros((34, 8, 8), np.uint8), photometric="minisblack")
    with pytest.raises(DatasetError, match=rf"^{gt / '2.tif'}: page 1 is uint8"):
        check_scene(gt / "2.tif", "hsidwrd")


def test_a_root_with_several_problems_gives_one_error_listing_them(root, tmp_path):
    kaist = copy_dataset(root, "kaist", tmp_path)
    (kaist / "scene30.mat").unlink()
    truncate(kaist / "scene02.mat")
    with pytest.raises(DatasetError) as err:
        check_dataset_root(tmp_path)
    lines = str(err.value).splitlines()
    assert lines[0].startswith(f"{kaist / 'scene02.mat'}: corrupt or truncated")
    assert lines[1] == f"  also: {kaist / 'scene30.mat'}: missing kaist scene (named in hiralign/data/splits/kaist_*.txt)"
    with pytest.raises(DatasetError, match="no dataset folder"):
        check_dataset_root(tmp_path / "kaist")


def test_paper_profile_on_a_broken_root_stops_before_any_stage_runs(root, tmp_path):
    """Through `hiralign reproduce --profile paper --scale tiny`: a CAVE train scene with 30 band PNGs
    is named by stage 00's check, before any run folder holds an artifact or a results table exists."""
    from hiralign import reproduce as rp

    broken = tmp_path / "data"
    for dataset in ("cave", "icvl"):
        copy_dataset(root, dataset, broken)
    for model in ("stable-diffusion-2-1-unclip", "clip-blur-robust"):  # present as folders: the path check passes
        (broken / "models" / model).mkdir(parents=True)
    scene = get_split("cave", "train")[0]
    band = next((broken / "cave" / scene).rglob(f"{scene}_31.png"))
    band.unlink()
    with pytest.raises(rp.ReproduceError) as err:
        rp.reproduce("table6", "paper", runs_root=tmp_path / "runs", results_dir=tmp_path / "results",
                     data_root=broken, scale="tiny", log=lambda _: None)
    message = str(err.value)
    assert str(band.parent) in message and "31" in message, message
    assert not list((tmp_path / "runs").rglob("*.h5")) and not (tmp_path / "results").exists()
