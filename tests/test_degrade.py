"""Statistics of the degradation operators (QRNN3D/HSIR constants, paper Sec. IV-D).

The ``hsir`` tests compare with the reference transforms of ``hsir==0.1.1``
(``hsir/data/transform/noise.py``, identical to QRNN3D's ``utility/dataset.py``). ``import hsir``
needs torchlights, timm, streamlit ... (and a torch upgrade), so the wheel is installed without its
dependencies (``pip install --no-deps hsir==0.1.1``) and only its numpy-only noise module is loaded
from its file; without the wheel those tests skip.
"""
import importlib.metadata
import importlib.util
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
    expected = {"gaussian", "gaussian-noniid", "impulse", "stripe", "deadline", "complex", "complex-train",
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
    bands = out.info["bands"]
    assert bands.size == B // 3 == 10 and np.unique(bands).size == bands.size
    assert set(out.info["band_amounts"]) <= {0.1, 0.3, 0.5, 0.7}
    hit = (out.data == 0) | (out.data == 1)
    np.testing.assert_allclose(hit[bands].reshape(bands.size, -1).mean(axis=1), out.info["band_amounts"], atol=0.04)
    assert not hit[np.setdiff1d(np.arange(B), bands)].any()
    assert np.all((out.data == 0.5) | hit)
    assert (out.data == 1).mean() == pytest.approx((out.data == 0).mean(), rel=0.1)  # salt vs pepper 0.5

    some = dg.degrade("impulse", flat, seed=3, bands=[0, 5]).data
    assert np.all(some[1:5] == 0.5) and not np.all(some[5] == 0.5)


def test_stripe_offsets_are_per_column_constants(flat):
    out = dg.degrade("stripe", flat, seed=4)
    diff = out.data - flat
    assert out.info["bands"].size == B // 3
    np.testing.assert_array_equal(np.flatnonzero(np.abs(diff).max(axis=(1, 2)) > 0), out.info["bands"])
    for b, cols, offsets in zip(out.info["bands"], out.info["columns"], out.info["offsets"]):
        changed = np.flatnonzero(np.abs(diff[b]).max(axis=0) > 0)
        assert 3 <= changed.size <= 8  # floor(0.05 W) .. floor(0.15 W) - 1 at W = 64
        np.testing.assert_array_equal(changed, cols)
        np.testing.assert_allclose(diff[b][:, changed], np.broadcast_to(diff[b][:1, changed], (H, changed.size)))
        np.testing.assert_allclose(diff[b][0, changed], offsets, atol=1e-6)
        assert np.abs(diff[b][0, changed]).max() <= 0.25


def test_deadline_zeroes_ceil_5_to_15_percent_of_columns_of_a_third_of_the_bands(flat):
    out = dg.degrade("deadline", flat, seed=5)
    dead = np.all(out.data == 0, axis=1)  # (B, W)
    counts = dead.sum(axis=1)
    np.testing.assert_array_equal(np.flatnonzero(counts), out.info["bands"])
    assert out.info["bands"].size == B // 3
    assert np.all((counts[out.info["bands"]] >= 4) & (counts[out.info["bands"]] <= 9))  # ceil(3.2) .. ceil(9.6) - 1
    assert np.all((out.data == 0) | (out.data == 0.5))
    assert np.all(out.data[~np.broadcast_to(dead[:, None, :], out.data.shape)] == 0.5)


def test_explicit_bands_override_the_random_third(flat):
    for name in ("impulse", "stripe", "deadline"):
        out = dg.degrade(name, flat, seed=1, bands=[0, 5, 30])
        np.testing.assert_array_equal(out.info["bands"], [0, 5, 30])
        changed = np.flatnonzero(np.abs(out.data - flat).max(axis=(1, 2)) > 0)
        np.testing.assert_array_equal(changed, [0, 5, 30])
        assert dg.degrade(name, flat, seed=1, bands=range(B)).info["bands"].size == B


def _column_counts(name, width, seeds, bands=9):
    """Every per-band column count drawn by ``name`` on a (bands, 2, width) cube over ``seeds``."""
    x = np.full((bands, 2, width), 0.5, np.float32)
    return [c.size for s in seeds for c in dg.degrade(name, x, seed=s).info["columns"]]


def test_column_count_support_is_hsirs_randint_range():
    # W = 64: stripe randint(floor(3.2), floor(9.6)) = 3..8, deadline randint(ceil(3.2), ceil(9.6)) = 4..9;
    # 100 seeds x 3 bands = 300 draws, so every value of the support shows up (P(miss) < 1e-20)
    assert set(_column_counts("stripe", 64, range(100))) == set(range(3, 9))
    assert set(_column_counts("deadline", 64, range(100))) == set(range(4, 10))
    assert set(_column_counts("stripe", 16, range(30))) == {0, 1}  # floor(0.8) .. floor(2.4) - 1: zero columns happen
    assert set(_column_counts("deadline", 16, range(30))) == {1, 2}
    with pytest.raises(ValueError, match="too narrow"):
        dg.degrade("stripe", np.zeros((3, 4, 6), np.float32))
    with pytest.raises(ValueError, match="too narrow"):
        dg.degrade("complex", np.zeros((3, 4, 6), np.float32))
    with pytest.raises(ValueError, match="lo < hi"):
        dg.degrade("deadline", np.zeros((3, 4, 64), np.float32), column_fraction=(0.1, 0.1))


def _sparse_kinds(noisy: np.ndarray, clean_value: float = 0.5) -> dict[str, list[int]]:
    """Classify each band of a degraded constant cube (no Gaussian noise) by its sparse noise: whole
    columns at 0 = deadline, values off {0, 0.5, 1} = stripe, scattered 0 / 1 = impulse."""
    kinds = {"deadline": [], "stripe": [], "impulse": []}
    for b, band in enumerate(noisy):
        changed = band != clean_value
        if not changed.any():
            continue
        if np.any(changed & (band != 0) & (band != 1)):
            kinds["stripe"].append(b)
        elif np.all(changed == changed[:1]) and np.all(band[changed] == 0):
            kinds["deadline"].append(b)
        else:
            kinds["impulse"].append(b)
    return kinds


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


def test_complex_train_adds_gaussian_and_at_most_one_sparse_noise(flat):
    small = np.full((6, 4, 16), 0.5, np.float32)
    choices = [dg.degrade("complex-train", small, seed=s).info["sparse_noise"] for s in range(400)]
    freq = {k: choices.count(k) / len(choices) for k in dg.SPARSE_NOISES}
    assert set(dg.SPARSE_NOISES) == {"none", "impulse", "stripe", "deadline"}
    assert all(abs(f - 0.25) < 0.06 for f in freq.values()), freq  # 1/4 each (binomial sd 0.022)
    for d in (dg.degrade("complex-train", flat[:, :16], seed=s, sigmas=(0.0,)) for s in range(40)):
        kinds = {k: v for k, v in _sparse_kinds(d.data).items() if v}
        kind = d.info["sparse_noise"]
        assert list(kinds) == ([] if kind == "none" else [kind])  # never more than one sparse type
        if kind != "none":
            assert len(kinds[kind]) == B // 3
            np.testing.assert_array_equal(kinds[kind], d.info[f"{kind}_bands"])
    gauss = dg.degrade("complex-train", flat, seed=3)
    assert set(np.round(gauss.info["sigma"] * 255)) <= {10, 30, 50, 70}
    assert gauss.info["sigma"].shape == (B,)


def test_tasks_train_complex_noise_on_complex_train_and_observe_the_full_mixture(flat):
    from hiralign.tasks import get_task

    task = get_task("denoise-complex")
    assert task.degradation == "complex" and task.training_degradation == "complex-train"
    assert task.degrade(flat, seed=2).info["name"] == "complex"
    assert task.degrade(flat, seed=2, training=True).info["name"] == "complex-train"
    assert get_task("denoise-gaussian").degrade(flat, seed=2, training=True).info["name"] == "gaussian-noniid"


# ------------------------------------------------------------------ reference: hsir==0.1.1 transforms


@pytest.fixture(scope="module")
def hsir_noise():
    """``hsir/data/transform/noise.py`` of the installed hsir==0.1.1 wheel, loaded from its file
    (``import hsir`` itself fails without torchlights / timm / streamlit, see the module docstring)."""
    try:
        dist = importlib.metadata.distribution("hsir")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("hsir==0.1.1 is not installed (pip install --no-deps hsir==0.1.1)")
    if dist.version != "0.1.1":
        pytest.skip(f"reference tests pin hsir 0.1.1; found {dist.version}")
    path = Path(dist.locate_file("hsir/data/transform/noise.py"))
    spec = importlib.util.spec_from_file_location("hsir_reference_noise", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    state = np.random.get_state()
    np.random.seed(2024)  # hsir draws from numpy's global generator
    yield module
    np.random.set_state(state)


def _hsir_draws(transform, x: np.ndarray, n: int) -> list[np.ndarray]:
    return [np.asarray(transform(x.astype(np.float64))) for _ in range(n)]


def _dead_columns(band: np.ndarray) -> int:
    return int(np.all(band == 0, axis=0).sum())


def _striped_columns(band: np.ndarray, clean_value: float = 0.5) -> int:
    return int(np.any(band != clean_value, axis=0).sum())


@pytest.mark.parametrize("width", [64, 16])
def test_column_count_support_matches_hsir(hsir_noise, width):
    x = np.full((9, 2, width), 0.5, np.float32)
    hsir_stripe = {_striped_columns(b) for y in _hsir_draws(hsir_noise.AddNoiseStripe(), x, 100)
                   for b in y if np.any(b != 0.5)}
    hsir_dead = {_dead_columns(b) for y in _hsir_draws(hsir_noise.AddNoiseDeadline(), x, 100) for b in y}
    hsir_dead.discard(0)  # bands that were not hit (a hit band always loses >= ceil(0.05 W) >= 1 column)
    ours_stripe = set(_column_counts("stripe", width, range(100)))
    if width == 16:  # 0 striped columns leave a hit band unchanged: invisible in hsir's output
        ours_stripe.discard(0)
    assert ours_stripe == hsir_stripe
    assert set(_column_counts("deadline", width, range(100))) == hsir_dead


def test_bands_hit_per_call_match_hsir(hsir_noise, flat):
    cube = flat[:, :16, :]
    for name, transform in (("impulse", hsir_noise.AddNoiseImpulse()), ("stripe", hsir_noise.AddNoiseStripe()),
                            ("deadline", hsir_noise.AddNoiseDeadline())):
        hsir_hits = {int(np.any(y != 0.5, axis=(1, 2)).sum()) for y in _hsir_draws(transform, cube, 20)}
        ours = {int(np.any(dg.apply(name, cube, seed=s) != 0.5, axis=(1, 2)).sum()) for s in range(20)}
        assert hsir_hits == ours == {B // 3}, name


def test_impulse_fraction_per_band_matches_hsir(hsir_noise):
    x = np.full((6, 64, 64), 0.5, np.float32)  # 2 hit bands per call, 4096 pixels each

    def per_band(draws):
        fractions = [((b == 0) | (b == 1)).mean() for y in draws for b in y if np.any(b != 0.5)]
        salt = [(b == 1).sum() / ((b == 0) | (b == 1)).sum() for y in draws for b in y if np.any(b != 0.5)]
        return np.array(fractions), np.array(salt)

    hsir_frac, hsir_salt = per_band(_hsir_draws(hsir_noise.AddNoiseImpulse(), x, 60))
    ours_frac, ours_salt = per_band([dg.apply("impulse", x, seed=s) for s in range(60)])
    levels = np.array([0.1, 0.3, 0.5, 0.7])
    for frac in (hsir_frac, ours_frac):
        assert np.abs(frac[:, None] - levels[None]).min(axis=1).max() < 0.03  # each band at one of the levels
        assert set(levels[np.abs(frac[:, None] - levels[None]).argmin(axis=1)]) == set(levels)
    assert ours_frac.mean() == pytest.approx(hsir_frac.mean(), abs=0.06)  # both ~0.4 (sd of a mean of 120: 0.02)
    assert ours_salt.mean() == pytest.approx(0.5, abs=0.01) and hsir_salt.mean() == pytest.approx(0.5, abs=0.01)


def test_complex_mixture_matches_hsir_add_noise_complex(hsir_noise):
    x = np.full((12, 16, 64), 0.5, np.float32)
    hsir_out = _hsir_draws(hsir_noise.AddNoiseComplex(), x, 40)
    hsir = [_sparse_kinds(y) for y in hsir_out]
    ours = [_sparse_kinds(dg.apply("complex", x, seed=s, sigmas=(0.0,))) for s in range(40)]
    for kinds in hsir + ours:  # three disjoint sets of floor(12 / 3) = 4 bands each
        assert [len(kinds[k]) for k in ("stripe", "deadline", "impulse")] == [4, 4, 4]
    # column counts of the stripe and deadline thirds: the same support as hsir's (160 draws each)
    hsir_dead = {_dead_columns(y[b]) for y, k in zip(hsir_out, hsir) for b in k["deadline"]}
    hsir_striped = {_striped_columns(y[b]) for y, k in zip(hsir_out, hsir) for b in k["stripe"]}
    ours_info = [dg.degrade("complex", x, seed=s, sigmas=(0.0,)).info for s in range(40)]
    assert {c.size for i in ours_info for c in i["deadline_columns"]} == hsir_dead == set(range(4, 10))
    assert {c.size for i in ours_info for c in i["stripe_columns"]} == hsir_striped == set(range(3, 9))


def test_complex_train_matches_hsir_complex_loader_train(hsir_noise):
    """hsir's complex_loader_train input transform, built from its parts (the loader itself needs an
    LMDB data set): AddNoiseNoniid(sigmas), then one of (identity, AddNoiseImpulse, AddNoiseStripe,
    AddNoiseDeadline) in turn (SequentialSelect, a round-robin)."""
    x = np.full((9, 16, 64), 0.5, np.float32)
    gaussian = hsir_noise.AddNoiseNoniid([0])  # sigma 0: only the sparse noise remains to classify
    choices = [lambda y: y, hsir_noise.AddNoiseImpulse(), hsir_noise.AddNoiseStripe(), hsir_noise.AddNoiseDeadline()]
    hsir = [_sparse_kinds(choices[i % 4](gaussian(x.astype(np.float64)))) for i in range(80)]
    ours = [_sparse_kinds(dg.apply("complex-train", x, seed=s, sigmas=(0.0,))) for s in range(400)]

    def kind_of(kinds):
        hit = [k for k, v in kinds.items() if v]
        assert len(hit) <= 1 and all(len(kinds[k]) == 3 for k in hit)  # one sparse type, floor(9 / 3) bands
        return hit[0] if hit else "none"

    hsir_freq = {k: np.mean([kind_of(d) == k for d in hsir]) for k in dg.SPARSE_NOISES}
    ours_freq = {k: np.mean([kind_of(d) == k for d in ours]) for k in dg.SPARSE_NOISES}
    assert all(f == 0.25 for f in hsir_freq.values())
    assert all(abs(ours_freq[k] - hsir_freq[k]) < 0.06 for k in dg.SPARSE_NOISES), ours_freq


@pytest.mark.parametrize("name", ["gaussian", "gaussian-noniid", "impulse", "stripe", "deadline", "complex",
                                  "complex-train", "bandmiss", "inpaint"])
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
