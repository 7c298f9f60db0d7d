"""Cube validation, wavelength-based RGB (Eq. 4) and the run store's atomic, parameter-checked artifacts."""
from __future__ import annotations

import json
import h5py
import numpy as np
import pytest

from hiralign.data import Cube, CubeError
from hiralign.spectral import VISIBLE_31, rgb_band_indices, to_rgb
from hiralign.store import ArtifactError, RunStore, content_digest, file_digest, read_header


def small_cube(bands: int = 31) -> Cube:
    data = np.random.default_rng(1).random((bands, 8, 9), dtype=np.float32)
    return Cube(data, np.linspace(400, 700, bands), name="t")


def test_cube_validates_and_converts():
    cube = Cube(np.ones((3, 4, 5), dtype=np.float64), [450, 550, 650])
    assert cube.data.dtype == np.float32 and cube.shape == (3, 4, 5) and cube.bands == 3
    with pytest.raises(CubeError, match="3-D"):
        Cube(np.ones((4, 5)), [1])
    bad = np.ones((3, 4, 5)); bad[1, 2, 3] = np.nan
    with pytest.raises(CubeError, match="NaN.*band 1"):
        Cube(bad, [450, 550, 650])
    with pytest.raises(CubeError, match="2 entries but the cube has 3 bands"):
        Cube(np.ones((3, 4, 5)), [450, 550])
    with pytest.raises(CubeError, match="strictly increasing"):
        Cube(np.ones((3, 4, 5)), [450, 650, 550])


def test_cube_crop_and_replace_keep_wavelengths():
    cube = small_cube()
    crop = cube.crop(1, 2, 4, 5)
    np.testing.assert_array_equal(crop.data, cube.data[:, 1:5, 2:7])
    np.testing.assert_array_equal(crop.wavelengths, cube.wavelengths)
    with pytest.raises(CubeError, match="outside"):
        cube.crop(5, 0, 4, 4)
    assert cube.replace(meta={"a": 1}).meta == {"a": 1}


def test_rgb_chosen_by_wavelength_not_index():
    assert rgb_band_indices(VISIBLE_31) == (26, 15, 7)  # 660, 550, 470 nm on the 400..700/10 grid
    # KAIST-like grid 420..720 nm: 660 nm is band 24, 550 band 13, 470 band 5
    assert rgb_band_indices(np.arange(420, 721, 10)) == (24, 13, 5)
    cube = small_cube()
    rgb = to_rgb(cube)
    np.testing.assert_array_equal(rgb, cube.data[[26, 15, 7]])
    with pytest.raises(ValueError, match="wavelengths"):
        to_rgb(cube.data)
    with pytest.raises(ValueError, match="no band within"):
        to_rgb(np.ones((3, 2, 2)), [800, 900, 1000])


def test_rgb_on_torch_batches():
    import torch

    batch = torch.rand(2, 31, 4, 4, requires_grad=True)
    rgb = to_rgb(batch, VISIBLE_31)
    assert rgb.shape == (2, 3, 4, 4) and rgb.requires_grad


def test_store_roundtrip_header_and_content_digest(tmp_path):
    store = RunStore(tmp_path / "run")
    params = {"k": 16, "name": "demo", "ratio": 3.0}
    data = {"hsi": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "names": ["a", "b"], "grp": {"x": np.ones(3)},
            "label": "text", "empty": []}
    upstream = {"01_proxy": {"path": "01_proxy.h5", "digest": "0123456789abcdef"}}
    header = store.write("03_warp", data, params, attrs={"demo": False}, upstream=upstream)
    assert header.path == tmp_path / "run" / "03_warp.h5" and header.digest == content_digest(data, {"demo": False})
    art = store.read("03_warp")
    np.testing.assert_array_equal(art["hsi"], data["hsi"])
    assert art["names"] == ["a", "b"] and art["label"] == "text" and art.params == params
    assert art.header.stage == "03_warp" and art.header.upstream == upstream and art.attrs == {"demo": False}
    assert content_digest(art.data, art.attrs) == header.digest  # the same digest before writing and after reading
    assert json.loads(art.header.code_version)["hiralign"] and art.header.created
    assert read_header(header.path).digest == header.digest
    other = content_digest({**data, "hsi": data["hsi"] + 1}, {"demo": False})
    assert other != header.digest and content_digest(data, {"demo": True}) != header.digest


def test_store_truncated_file_is_named_and_corrupt(tmp_path):
    store = RunStore(tmp_path)
    path = store.write("01_proxy", {"x": np.random.default_rng(0).random((64, 64))}, {"a": 1}).path
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ArtifactError, match="01_proxy.h5.*corrupt"):
        store.read("01_proxy")


def test_store_side_files_are_verified(tmp_path):
    store = RunStore(tmp_path)
    side = tmp_path / "04_model.safetensors"
    side.write_bytes(b"weights")
    store.write("04_finetune", {"x": np.ones(2)}, {}, files={side.name: file_digest(side)})
    assert store.read("04_finetune").header.files == {side.name: file_digest(side)}
    side.write_bytes(b"other weights")
    with pytest.raises(ArtifactError, match="changed since 04_finetune.h5 was written"):
        store.read("04_finetune")


def test_store_failed_write_leaves_no_partial_artifact(tmp_path):
    store = RunStore(tmp_path)
    good = store.write("00_data", {"x": np.ones(3)}, {"v": 1}).path
    with pytest.raises(TypeError):
        store.write("00_data", {"x": np.ones(3), "bad": [np.ones(2), np.ones(3)]}, {"v": 2})
    # the earlier artifact is intact and no temp file is left behind
    assert store.read("00_data").params == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == [good.name]
    with h5py.File(good) as f:
        assert f["x"].shape == (3,)
