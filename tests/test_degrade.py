"""Statistics of the degradation operators (QRNN3D/HSIR constants, paper Sec. IV-D)."""
from pathlib import Path

import numpy as np
import pytest

from hiralign import degrade as dg
from hiralign.data import Cube

B, H, W = 31, 64, 64
NONIID = np.array([10, 30, 50, 70]) / 255


@pytest.fixture
def flat():
    """A constant 0.5 cube: every change is the degradation itself."""
    return np.full((B, H, W), 0.5, dtype=np.float32)


@pytest.fixture
def textured():
    rng = np.random.default_rng(7)
    return rng.random((8, 32, 32)).astype(np.float32)


def test_registry_lists_every_operator_and_describes_it():
    expected = {"gaussian", "gaussian-noniid", "impulse", "stripe", "deadline", "complex",
                "sr-bicubic", "blur", "bandmiss", "inpaint"}
    assert expected <= set(dg.NAMES)
    assert "radius / 3" in dg.describe("blur")
    with pytest.raises(ValueError, match="known: .*gaussian-noniid"):
        dg.degrade("snow", np.zeros((2, 4, 4), np.float32))


def test_register_adds_a_named_operator():
    @dg.register("test-invert")
    def invert(x, rng):
        """1 - x."""
        return 1 - x, {}

    try:
        assert "test-invert" in dg.NAMES
        np.testing.assert_array_equal(dg.apply("test-invert", np.zeros((1, 2, 2), np.float32)), 1)
    finally:  # keep the global registry clean for other tests
        dg._REGISTRY.unregister("test-invert")
        dg.NAMES = tuple(dg._REGISTRY)


def test_gaussian_residual_std_matches_sigma(flat):
    out = dg.degrade("gaussian", flat, seed=1)
    residual = out.data - flat
    assert out.data.dtype == np.float32
    assert abs(residual.mean()) < 2e-3
    assert residual.std() == pytest.approx(50 / 255, rel=0.01)
    np.testing.assert_allclose(out.info["sigma"], 50 / 255)
    assert (out.data > 1).any() and (out.data < 0).any()  # not clipped by default
    assert dg.apply("gaussian", flat, sigma_255=30).std() == pytest.approx(30 / 255, rel=0.02)
    clipped = dg.apply("gaussian", flat, clip=True)
    assert clipped.min() >= 0 and clipped.max() <= 1


def test_noniid_per_band_std_is_from_the_set(flat):
    out = dg.degrade("gaussian-noniid", flat, seed=2)
    band_std = (out.data - flat).reshape(B, -1).std(axis=1)
    nearest = NONIID[np.abs(band_std[:, None] - NONIID[None]).argmin(axis=1)]
    np.testing.assert_allclose(band_std, nearest, rtol=0.05)
    np.testing.assert_allclose(out.info["sigma"], nearest)
    assert len(set(np.round(out.info["sigma"] * 255))) >= 3  # all levels are used across 31 bands


def test_impulse_fraction_matches_amount(flat):
    out = dg.degrade("impulse", flat, seed=3)
    assert np.array_equal(out.info["bands"], np.arange(B))
    assert set(out.info["band_amounts"]) <= {0.1, 0.3, 0.5, 0.7}
    hit = (out.data == 0) | (out.data == 1)
    np.testing.assert_allclose(hit.reshape(B, -1).mean(axis=1), out.info["band_amounts"], atol=0.04)
    assert np.all((out.data == 0.5) | hit)
    assert (out.data == 1).mean() == pytest.approx((out.data == 0).mean(), rel=0.1)  # salt vs pepper 0.5

    some = dg.degrade("impulse", flat, seed=3, bands=[0, 5]).data
    assert np.all(some[1:5] == 0.5) and not np.all(some[5] == 0.5)


def test_stripe_offsets_are_per_column_constants(flat):
    out = dg.degrade("stripe", flat, seed=4)
    diff = out.data - flat
    for b in range(B):
        changed = np.flatnonzero(np.abs(diff[b]).max(axis=0) > 0)
        assert 0.05 <= changed.size / W <= 0.15
        np.testing.assert_array_equal(changed, out.info["columns"][b])
        np.testing.assert_allclose(diff[b][:, changed], np.broadcast_to(diff[b][:1, changed], (H, changed.size)))
        np.testing.assert_allclose(diff[b][0, changed], out.info["offsets"][b], atol=1e-6)
        assert np.abs(diff[b][0, changed]).max() <= 0.25


def test_deadline_zeroes_5_to_15_percent_of_columns(flat):
    out = dg.degrade("deadline", flat, seed=5)
    dead = np.all(out.data == 0, axis=1)  # (B, W)
    assert np.all((dead.mean(axis=1) >= 0.05) & (dead.mean(axis=1) <= 0.15))
    assert np.all((out.data == 0) | (out.data == 0.5))
    assert np.all(out.data[~np.broadcast_to(dead[:, None, :], out.data.shape)] == 0.5)


def test_complex_uses_disjoint_band_thirds(flat):
    out = dg.degrade("complex", flat, seed=6)
    info = out.info
    groups = [set(info[f"{k}_bands"].tolist()) for k in ("stripe", "deadline", "impulse")]
    assert [len(g) for g in groups] == [B // 3] * 3
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert set(np.round(info["sigma"] * 255)) <= {10, 30, 50, 70}
    for b, cols in zip(info["deadline_bands"], info["deadline_columns"]):
        assert np.all(out.data[b][:, cols] == 0)
    for b, amount in zip(info["impulse_bands"], info["impulse_amounts"]):
        assert ((out.data[b] == 0) | (out.data[b] == 1)).mean() == pytest.approx(amount, abs=0.05)
    gaussian_only = sorted(set(range(B)) - set().union(*groups))
    std = (out.data[gaussian_only] - 0.5).reshape(len(gaussian_only), -1).std(axis=1)
    np.testing.assert_allclose(std, info["sigma"][gaussian_only], rtol=0.05)


def test_sr_bicubic_shape_constant_and_ramp():
    const = np.full((3, 32, 48), 0.3, np.float32)
    out = dg.degrade("sr-bicubic", const)
    assert out.data.shape == (3, 8, 12) and out.info["scale"] == 4
    np.testing.assert_allclose(out.data, 0.3, atol=1e-6)

    ramp = np.broadcast_to(np.linspace(0, 1, 64, dtype=np.float32), (2, 16, 64)).copy()
    lr = dg.apply("sr-bicubic", ramp, scale=2)
    block_mean = ramp.reshape(2, 8, 2, 32, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(lr[:, :, 2:-2], block_mean[:, :, 2:-2], atol=1e-5)  # interior: exact average
    np.testing.assert_allclose(lr, block_mean, atol=0.02)

    up = dg.upsample_bicubic(dg.apply("sr-bicubic", const, scale=8), 8)
    assert up.shape == const.shape
    np.testing.assert_allclose(up, 0.3, atol=1e-6)


def test_blur_preserves_mean_and_removes_high_frequencies(textured):
    out = dg.degrade("blur", textured)
    assert out.info["radius"] == 15 and out.info["kernel_sigma"] == 5.0
    assert out.info["kernel"].shape == (31, 31)
    assert out.info["kernel"].sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(out.data.mean(axis=(1, 2)), textured.mean(axis=(1, 2)), atol=1e-5)

    def high_freq_energy(x):
        spectrum = np.abs(np.fft.fft2(x - x.mean(axis=(1, 2), keepdims=True))) ** 2
        f = np.abs(np.fft.fftfreq(x.shape[-1]))
        return spectrum[:, (f[:, None] > 0.125) | (f[None, :] > 0.125)].sum()

    assert high_freq_energy(out.data) < 1e-3 * high_freq_energy(textured)
    assert high_freq_energy(dg.apply("blur", textured, radius=2, sigma=1.0)) > high_freq_energy(out.data)
    noisy = dg.apply("blur", textured, noise_sigma=0.05)
    assert (noisy - out.data).std() == pytest.approx(0.05, rel=0.05)


def test_bandmiss_zeroes_30_percent_of_bands(flat):
    out = dg.degrade("bandmiss", flat, seed=8)
    missing = out.info["missing_bands"]
    assert missing.size == round(0.3 * B) == 9
    zero_bands = np.flatnonzero(np.all(out.data == 0, axis=(1, 2)))
    np.testing.assert_array_equal(zero_bands, missing)
    assert out.info["mask"].dtype == bool and out.info["mask"].shape == (B, H, W)
    np.testing.assert_array_equal(out.info["mask"], out.data != 0)


def test_inpaint_masks_90_percent_of_pixels_in_all_bands(flat):
    out = dg.degrade("inpaint", flat, seed=9)
    mask = out.info["mask"]
    assert (~mask[0]).mean() == pytest.approx(0.9, abs=1 / (H * W))
    assert np.all(mask == mask[:1])  # one spatial mask shared by every band
    np.testing.assert_array_equal(out.data == 0, ~mask)


@pytest.mark.parametrize("name", ["gaussian", "gaussian-noniid", "impulse", "stripe", "deadline", "complex",
                                  "bandmiss", "inpaint"])
def test_seeded_determinism(name, textured):
    a = dg.apply(name, textured, seed=11)
    assert np.array_equal(a, dg.apply(name, textured, seed=11))
    assert not np.array_equal(a, dg.apply(name, textured, seed=12))
    assert np.array_equal(dg.degrade(name, textured, seed=11).data, a)


def test_cube_in_cube_out_keeps_wavelengths(textured):
    wl = np.linspace(400, 700, textured.shape[0])
    cube = Cube(textured, wl, name="t", meta={"source": "unit"})
    lr = dg.apply("sr-bicubic", cube, scale=2)
    assert isinstance(lr, Cube) and lr.shape == (8, 16, 16) and lr.name == "t"
    np.testing.assert_array_equal(lr.wavelengths, wl)
    assert lr.meta["source"] == "unit" and lr.meta["degradation"]["scale"] == 2
    assert isinstance(dg.upsample_bicubic(lr, 2), Cube)
    noisy = dg.apply("gaussian-noniid", cube, seed=1)
    assert noisy.meta["degradation"]["name"] == "gaussian-noniid"
    assert noisy.meta["degradation"]["sigma"].shape == (8,)
    np.testing.assert_array_equal(cube.data, textured)  # input untouched


@pytest.mark.parametrize(
    "name, x, kw, message",
    [
        ("gaussian", np.full((2, 4, 4), np.nan, np.float32), {}, "NaN"),
        ("gaussian", np.zeros((4, 4), np.float32), {}, "3-D"),
        ("gaussian", np.zeros((2, 4, 4), np.uint16), {}, "float"),
        ("sr-bicubic", np.zeros((2, 30, 32), np.float32), {"scale": 4}, "divisible"),
        ("sr-bicubic", np.zeros((2, 32, 32), np.float32), {"scale": 1.5}, "integer"),
        ("gaussian", np.zeros((2, 4, 4), np.float32), {"sigma": 0.1, "sigma_255": 10}, "not both"),
        ("blur", np.zeros((2, 4, 4), np.float32), {"radiuss": 3}, "unknown parameter"),
        ("impulse", np.zeros((2, 4, 4), np.float32), {"bands": [2]}, "out of range"),
        ("bandmiss", np.zeros((2, 4, 4), np.float32), {"ratio": 1.5}, r"\[0, 1\]"),
    ],
)
def test_bad_inputs_raise_clear_errors(name, x, kw, message):
    with pytest.raises(ValueError, match=message):
        dg.degrade(name, x, **kw)


CAVE = Path(__file__).resolve().parents[2] / "shared/data/cave_balloons_ms_256.mat"


@pytest.mark.skipif(not CAVE.exists(), reason="real CAVE scene not present")
def test_bicubic_baseline_on_real_cave_scene():
    from scipy.io import loadmat

    hr = (loadmat(CAVE)["Omsi"].astype(np.float32) / 65535).transpose(2, 0, 1)[:, 64:192, 64:192]
    up = dg.upsample_bicubic(dg.apply("sr-bicubic", hr, scale=4), 4)
    nearest = np.repeat(np.repeat(hr[:, 2::4, 2::4], 4, axis=1), 4, axis=2)  # a cruder x4 reconstruction
    mse_up, mse_nearest = float(((up - hr) ** 2).mean()), float(((nearest - hr) ** 2).mean())
    assert 10 * np.log10(1 / mse_up) > 32  # bicubic x4 on a smooth CAVE crop (measured ~35.4 dB)
    assert mse_up < mse_nearest
