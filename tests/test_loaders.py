"""Dataset loaders read each real on-disk format (written here in miniature) into the right (B, H, W) cube."""
from __future__ import annotations

from pathlib import Path

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
import scipy.io
import tifffile

from hiralign.data import Cube, CubeError
from hiralign.data.loaders import (
    CAVE_WAVELENGTHS,
    KAIST_WAVELENGTHS,
    DatasetError,
    guess_kind,
    load,
    load_cave,
    load_generic,
    load_hsidwrd,
    load_hsidwrd_pair,
    load_icvl,
    load_kaist,
    load_scene,
    scene_path,
)
from hiralign.data.splits import get_split, list_datasets, list_splits, split_source

REAL_CAVE = Path(__file__).resolve().parents[2] / "shared/data/cave_balloons_ms_256.mat"
H, W = 6, 5  # non-square so that a swapped height/width cannot pass unnoticed


def matlab_hwb(rng: np.random.Generator, bands: int = 31, dtype=np.uint16) -> np.ndarray:
    """An (H, W, B) array as MATLAB would hold it, with distinct values everywhere."""
    if np.dtype(dtype).kind == "f":
        return rng.random((H, W, bands)).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, size=(H, W, bands), dtype=dtype)


def write_mat_v73(path: Path, **variables: np.ndarray) -> None:
    """A MATLAB v7.3 file: HDF5 with MATLAB's 512-byte header, arrays stored column-major (axes reversed)."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in variables.items():
            dataset = f.create_dataset(name, data=np.asarray(value).transpose())
            dataset.attrs["MATLAB_class"] = np.bytes_("double" if value.dtype.kind == "f" else str(value.dtype))
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .")


def write_cave_folder(root: Path, scene: str, hwb: np.ndarray, nested: bool = True) -> Path:
    """The official CAVE zip layout: <scene>/<scene>/<scene>_01.png ... (16-bit grayscale) + an RGB bmp."""
    folder = root / scene / scene if nested else root / scene
    folder.mkdir(parents=True)
    for b in range(hwb.shape[2]):
        iio.imwrite(folder / f"{scene}_{b + 1:02d}.png", hwb[:, :, b])
    (folder / f"{scene}_RGB.bmp").write_bytes(b"BM not read")
    return root / scene


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# ----------------------------------------------------------------------------- CAVE


def test_cave_png_folder_nested_layout(tmp_path, rng):
    hwb = matlab_hwb(rng)
    scene = write_cave_folder(tmp_path, "balloons_ms", hwb)
    cube = load_cave(scene)
    assert cube.name == "balloons_ms" and cube.shape == (31, H, W)
    np.testing.assert_array_equal(cube.wavelengths, np.arange(400, 701, 10))
    np.testing.assert_allclose(cube.data, hwb.transpose(2, 0, 1) / 65535.0, rtol=1e-6)
    assert cube.meta["multichannel_bands"] == [] and cube.meta["source"].endswith("balloons_ms/balloons_ms")
    one_png = scene / "balloons_ms" / "balloons_ms_07.png"
    np.testing.assert_array_equal(load_cave(one_png).data, cube.data)
    np.testing.assert_array_equal(load(scene).data, cube.data)


def test_cave_flat_folder_and_errors(tmp_path, rng):
    hwb = matlab_hwb(rng)
    scene = write_cave_folder(tmp_path, "cd_ms", hwb, nested=False)
    assert load_cave(scene).shape == (31, H, W)
    write_cave_folder(tmp_path, "beads_ms", hwb)
    with pytest.raises(DatasetError, match="several folders"):
        load_cave(tmp_path)
    (scene / "cd_ms_17.png").unlink()
    with pytest.raises(DatasetError, match=r"cd_ms.*missing \[17\]"):
        load_cave(scene)
    with pytest.raises(DatasetError, match="no such"):
        load_cave(tmp_path / "nowhere_ms")
    empty = tmp_path / "empty_ms"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no CAVE band images"):
        load_cave(empty)


def test_cave_multichannel_png_uses_first_channel(tmp_path, rng):
    """The 'watercolors' quirk: band PNGs stored as 8-bit RGBA."""
    folder = tmp_path / "watercolors_ms" / "watercolors_ms"
    folder.mkdir(parents=True)
    rgba = rng.integers(0, 256, size=(31, H, W, 4), dtype=np.uint8)
    for b in range(31):
        iio.imwrite(folder / f"watercolors_ms_{b + 1:02d}.png", rgba[b])
    with pytest.warns(UserWarning, match="first channel"):
        cube = load_cave(tmp_path / "watercolors_ms")
    np.testing.assert_allclose(cube.data, rgba[..., 0] / 255.0, rtol=1e-6)
    assert cube.meta["multichannel_bands"] == list(range(1, 32)) and "first channel" in cube.meta["note"]


def test_cave_mat_v5_omsi(tmp_path, rng):
    hwb = matlab_hwb(rng)
    path = tmp_path / "egyptian_statue_ms.mat"
    scipy.io.savemat(path, {"Omsi": hwb})
    cube = load_cave(path)
    assert cube.name == "egyptian_statue_ms" and cube.meta["layout_on_disk"] == "HWB"
    np.testing.assert_allclose(cube.data, hwb.transpose(2, 0, 1) / 65535.0, rtol=1e-6)
    assert cube.meta["scale"] == 65535.0 and guess_kind(path) == "cave"


def test_real_cave_scene():
    if not REAL_CAVE.exists():
        pytest.skip(f"real CAVE scene not found at {REAL_CAVE}")
    cube = load(REAL_CAVE)
    assert isinstance(cube, Cube) and cube.shape == (31, 256, 256) and cube.data.dtype == np.float32
    np.testing.assert_array_equal(cube.wavelengths, CAVE_WAVELENGTHS)
    assert 0.0 <= cube.data.min() and cube.data.max() <= 1.0 and cube.data.max() > 0.5
    raw = scipy.io.loadmat(REAL_CAVE)["Omsi"]
    assert cube.data[30, 100, 200] == np.float32(raw[100, 200, 30] / 65535.0)


# ----------------------------------------------------------------------------- ICVL


def test_icvl_v73_transposition_and_bands(tmp_path, rng):
    rad = rng.random((H, W, 31)) * 4000.0  # radiance, far above 1
    wl = np.arange(400.0, 701.0, 10.0).reshape(1, 31)  # MATLAB row vector
    path = tmp_path / "bulb_0822-0909.mat"
    write_mat_v73(path, rad=rad, bands=wl, rgb=rng.random((H, W, 3)))
    with h5py.File(path, "r") as f:
        assert f["rad"].shape == (31, W, H)  # what h5py shows for MATLAB (H, W, B)
    cube = load_icvl(path)
    assert cube.shape == (31, H, W) and cube.name == "bulb_0822-0909" and guess_kind(path) == "icvl"
    for b, r, c in [(0, 0, 0), (5, 4, 1), (30, 5, 4), (17, 2, 3)]:
        assert cube.data[b, r, c] == pytest.approx(rad[r, c, b] / rad.max(), rel=1e-6)
    np.testing.assert_array_equal(cube.wavelengths, wl.ravel())
    assert cube.meta["scale"] == pytest.approx(rad.max()) and cube.data.max() == pytest.approx(1.0)
    minmax = load_icvl(path, normalize="minmax")
    assert minmax.data.min() == pytest.approx(0.0) and minmax.data.max() == pytest.approx(1.0)
    assert minmax.meta["offset"] == pytest.approx(rad.min())


def test_icvl_errors(tmp_path, rng):
    path = tmp_path / "no_bands.mat"
    write_mat_v73(path, rad=rng.random((H, W, 31)) * 10)
    cube = load_icvl(path)
    assert "default" in cube.meta["wavelengths_from"] and cube.wavelengths[0] == 400
    bad = tmp_path / "wrong_bands.mat"
    write_mat_v73(bad, rad=rng.random((H, W, 31)), bands=np.arange(400.0, 700.0, 10.0))
    with pytest.raises(DatasetError, match=r"wrong_bands\.mat.*length 30"):
        load_icvl(bad)
    truncate(path)
    with pytest.raises(DatasetError, match=r"no_bands\.mat: corrupt or truncated"):
        load_icvl(path)


# ----------------------------------------------------------------------------- KAIST


def test_kaist_v5_and_v73_agree(tmp_path, rng):
    hsi = matlab_hwb(rng, dtype=np.float64)
    v5, v73 = tmp_path / "scene01.mat", tmp_path / "scene02.mat"
    scipy.io.savemat(v5, {"HSI": hsi})
    write_mat_v73(v73, HSI=hsi)
    a, b = load_kaist(v5), load_kaist(v73)
    np.testing.assert_allclose(a.data, hsi.transpose(2, 0, 1), rtol=1e-6)
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.wavelengths, KAIST_WAVELENGTHS)
    assert a.wavelengths[0] == 420 and a.wavelengths[-1] == 720 and a.meta["scaling"].startswith("float")
    assert guess_kind(v5) == guess_kind(v73) == "kaist"


def test_kaist_other_band_count_needs_wavelengths(tmp_path, rng):
    path = tmp_path / "scene05.mat"
    scipy.io.savemat(path, {"HSI": matlab_hwb(rng, bands=28, dtype=np.float32)})
    with pytest.raises(DatasetError, match="scene05.mat"):
        load_kaist(path)
    assert load_kaist(path, wavelengths=np.linspace(450, 650, 28)).bands == 28


# ----------------------------------------------------------------------------- HSIDwrD


def write_hsidwrd(root: Path, scene: str, rng) -> tuple[np.ndarray, np.ndarray]:
    """The release layout: gt/<n>.tif and input50/<n>.tif, multi-page (34, H, W) uint16 of 12-bit values."""
    clean = rng.integers(0, 4096, size=(34, H, W), dtype=np.uint16)
    noisy = (clean // 50 + rng.integers(0, 3, size=clean.shape)).astype(np.uint16)
    for folder, cube in (("gt", clean), ("input50", noisy)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(root / folder / f"{scene}.tif", cube)
    return clean, noisy


def test_hsidwrd_pair_drops_bands_and_scales(tmp_path, rng):
    clean_raw, noisy_raw = write_hsidwrd(tmp_path, "3", rng)
    wl = np.arange(400.0, 731.0, 10.0)  # 34 stored bands
    noisy, clean = load_hsidwrd_pair(tmp_path, "3", wl)
    keep = [b for b in range(34) if b not in (0, 11, 22)]
    assert clean.shape == noisy.shape == (31, H, W) and clean.name == "3"
    np.testing.assert_array_equal(clean.wavelengths, wl[keep])
    assert 400 not in clean.wavelengths and 510 not in clean.wavelengths and 620 not in clean.wavelengths
    np.testing.assert_allclose(clean.data, clean_raw[keep] / 4096.0, rtol=1e-6)
    np.testing.assert_allclose(noisy.data, np.clip(noisy_raw[keep] / 4096.0 * 50, 0, 1), rtol=1e-6)
    assert (clean.meta["role"], noisy.meta["role"], noisy.meta["ratio"]) == ("clean", "noisy", 50.0)
    kept_wl = load_hsidwrd(tmp_path / "gt" / "3.tif", wavelengths=wl[keep])
    np.testing.assert_array_equal(kept_wl.data, clean.data)
    assert guess_kind(tmp_path / "input50" / "3.tif") == "hsidwrd"


def test_hsidwrd_requires_wavelengths_and_a_variable(tmp_path, rng):
    write_hsidwrd(tmp_path, "1", rng)
    with pytest.raises(DatasetError, match="pass wavelengths="):
        load_hsidwrd(tmp_path / "gt" / "1.tif")
    with pytest.raises(DatasetError, match=r"1\.tif: .*\(34, 6, 5\).*length 30 or 33"):
        load_hsidwrd(tmp_path / "gt" / "1.tif", wavelengths=np.arange(400.0, 700.0, 10.0))
    with pytest.raises(DatasetError, match="30 wavelengths given, but the file has 34 bands"):
        load_hsidwrd(tmp_path / "gt" / "1.tif", wavelengths=np.arange(400.0, 700.0, 10.0), layout="BHW")
    mat = tmp_path / "scene7.mat"
    both = {k: (matlab_hwb(rng, 34) >> 4) for k in ("noisy", "clean")}  # 12-bit values
    scipy.io.savemat(mat, both)
    wl = np.arange(400.0, 731.0, 10.0)
    with pytest.raises(DatasetError, match=r"scene7\.mat: several candidate.*'noisy'.*'clean'.*variable="):
        load_hsidwrd(mat, wl)
    cube = load_hsidwrd(mat, wl, variable="clean", drop_bands=())
    np.testing.assert_allclose(cube.data, both["clean"].transpose(2, 0, 1) / 4096.0, rtol=1e-6)


# ----------------------------------------------------------------------------- generic


@pytest.fixture
def bhw(rng) -> np.ndarray:
    return rng.random((7, H, W)).astype(np.float32)


WL7 = np.linspace(450.0, 650.0, 7)


def test_generic_npy_npz(tmp_path, bhw):
    npy = tmp_path / "a.npy"
    np.save(npy, bhw)
    np.testing.assert_array_equal(load_generic(npy, wavelengths=WL7).data, bhw)
    with pytest.raises(DatasetError, match=r"a\.npy: no wavelengths.*wavelengths="):
        load_generic(npy)
    npz = tmp_path / "b.npz"
    np.savez(npz, cube=bhw.transpose(1, 2, 0), wavelengths=WL7)
    cube = load_generic(npz)
    np.testing.assert_array_equal(cube.data, bhw)
    assert cube.meta["layout_on_disk"] == "HWB" and cube.meta["wavelengths_from"] == "wavelengths"
    assert guess_kind(npz) == "generic"


def test_generic_h5_and_mat(tmp_path, bhw):
    h5 = tmp_path / "c.h5"
    with h5py.File(h5, "w") as f:
        f["group/cube"] = bhw
        f["wl"] = WL7
    np.testing.assert_array_equal(load_generic(h5).data, bhw)
    mat5, mat73 = tmp_path / "d.mat", tmp_path / "e.mat"
    scipy.io.savemat(mat5, {"data": bhw.transpose(1, 2, 0), "bands": WL7})
    write_mat_v73(mat73, data=bhw.transpose(1, 2, 0).astype(np.float64), bands=WL7.reshape(1, -1))
    for path in (mat5, mat73):
        cube = load_generic(path)
        np.testing.assert_allclose(cube.data, bhw, rtol=1e-6)
        np.testing.assert_array_equal(cube.wavelengths, WL7)
    uint = tmp_path / "f.npy"
    np.save(uint, (bhw * 255).astype(np.uint8))
    assert load_generic(uint, wavelengths=WL7).meta["scale"] == 255.0


def test_generic_variable_choice(tmp_path, bhw):
    path = tmp_path / "two.npz"
    np.savez(path, x=bhw, y=bhw, wl=WL7)
    with pytest.raises(DatasetError, match=r"two\.npz: several candidate 3-D variables \['x', 'y'\]"):
        load_generic(path)
    assert load_generic(path, variable="y").meta["variable"] == "y"
    with pytest.raises(DatasetError, match="no variable 'z'"):
        load_generic(path, variable="z")
    flat = tmp_path / "flat.npz"
    np.savez(flat, image=bhw[0], wl=WL7)
    with pytest.raises(DatasetError, match=r"flat\.npz: no 3-D variable"):
        load_generic(flat)


def test_generic_wrong_wavelength_count(tmp_path, bhw):
    path = tmp_path / "g.npy"
    np.save(path, bhw)
    with pytest.raises(DatasetError, match=r"g\.npy.*length 6"):
        load_generic(path, wavelengths=WL7[:6])
    with pytest.raises(DatasetError, match=r"g\.npy: the cube has 7 bands but 6 wavelengths"):
        load_generic(path, wavelengths=WL7[:6], layout="BHW")


def test_truncated_files_name_the_file(tmp_path, bhw):
    h5 = tmp_path / "broken.h5"
    with h5py.File(h5, "w") as f:
        f["cube"] = np.repeat(bhw, 40, axis=1)
        f["wl"] = WL7
    truncate(h5)
    with pytest.raises(DatasetError, match=r"broken\.h5: corrupt or truncated"):
        load_generic(h5)
    mat = tmp_path / "broken.mat"
    scipy.io.savemat(mat, {"cube": np.repeat(bhw, 40, axis=1), "wl": WL7})
    truncate(mat)
    with pytest.raises(DatasetError, match=r"broken\.mat: corrupt or truncated"):
        load_generic(mat)


def test_nan_file_raises_cube_error(tmp_path, bhw):
    bhw[3, 2, 1] = np.nan
    path = tmp_path / "nan.npy"
    np.save(path, bhw)
    with pytest.raises(CubeError, match=r"nan\.npy: .*NaN.*band 3"):
        load_generic(path, wavelengths=WL7)


def test_dispatch_and_scene_paths(tmp_path, rng, bhw):
    with pytest.raises(DatasetError, match="no such"):
        load(tmp_path / "missing.mat")
    np.save(tmp_path / "h.npy", bhw)
    with pytest.raises(DatasetError, match="unknown dataset kind 'bogus'"):
        load(tmp_path / "h.npy", kind="bogus")
    assert load(tmp_path / "h.npy", kind="generic", wavelengths=WL7).bands == 7
    cave_root, icvl_root = tmp_path / "cave", tmp_path / "icvl"
    write_cave_folder(cave_root, "balloons_ms", matlab_hwb(rng))
    icvl_root.mkdir()
    write_mat_v73(icvl_root / "bulb_0822-0909.mat", rad=rng.random((H, W, 31)) * 9, bands=CAVE_WAVELENGTHS)
    assert load_scene("cave", cave_root, "balloons_ms").name == "balloons_ms"
    assert load_scene("icvl", icvl_root, "bulb_0822-0909").meta["dataset"] == "icvl"
    with pytest.raises(DatasetError, match="not found"):
        scene_path("kaist", tmp_path, "scene01")


# ----------------------------------------------------------------------------- splits


@pytest.mark.parametrize("dataset, counts", [
    ("icvl", {"train": 100, "test": 50, "test_complex": 51}),
    ("cave", {"all": 32, "train": 20, "test": 12}),
    ("kaist", {"all": 30, "train": 20, "test": 10}),
    ("hsidwrd", {"train": 44, "test": 15}),
])
def test_split_counts_and_disjointness(dataset, counts):
    assert dataset in list_datasets() and set(list_splits(dataset)) == set(counts)
    splits = {s: get_split(dataset, s) for s in counts}
    assert {s: len(v) for s, v in splits.items()} == counts
    evaluation = [s for s in splits if s.startswith("test")]
    for test in evaluation:
        assert not set(splits["train"]) & set(splits[test])
    if "all" in splits:
        assert sorted(splits["train"] + splits["test"]) == sorted(splits["all"])
    assert "Certainty" in split_source(dataset, "train")


def test_split_contents_and_errors():
    assert get_split("icvl", "test")[:1] == ["CC_40D_2_1103-0917"] and "bulb_0822-0909" in get_split("icvl", "test")
    assert "balloons_ms" in get_split("cave", "all") and get_split("kaist", "all")[0] == "scene01"
    assert not set(get_split("icvl", "test")) & set(get_split("icvl", "test_complex"))
    with pytest.raises(ValueError, match="no split 'val'"):
        get_split("icvl", "val")
    with pytest.raises(ValueError, match="no split files for dataset 'pavia'"):
        list_splits("pavia")
