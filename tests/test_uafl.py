"""UAFL (reference-based SR with an unregistered RGB): the sr-ref degradation, DCNv2, the backbone."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from hiralign import degrade as dg
from hiralign import restorers
from hiralign.misalign import Misalignment, misalignment_field, warp_image
from hiralign.restorers.deform import flow_warp, modulated_deform_conv2d
from hiralign.restorers.inference import restore, restore_batch
from hiralign.restorers.uafl import MATCHING, matched_coarse_flow, mix, svd_endmembers, unmix
from hiralign.spectral import VISIBLE_31, rgb_band_indices
from hiralign.tasks import get_task
from hiralign.unmixing import svd_basis


@pytest.fixture
def cube() -> np.ndarray:
    rng = np.random.default_rng(0)
    smooth = ndimage.gaussian_filter(rng.random((31, 40, 48)), sigma=(2, 3, 3))
    return ((smooth - smooth.min()) / np.ptp(smooth)).astype(np.float32)


# ----------------------------------------------------------------------------- the degradation

def test_sr_ref_is_seeded_and_returns_the_lr_cube_and_the_known_field(cube):
    task = get_task("sr-ref-x4")
    a, b, other = task.degrade(cube, seed=5), task.degrade(cube, seed=5), task.degrade(cube, seed=6)
    assert np.array_equal(a.data, b.data) and np.array_equal(a.info["ref"], b.info["ref"])
    assert not np.allclose(a.info["flow"], other.info["flow"])
    assert np.array_equal(a.data, dg.degrade("sr-bicubic", cube, scale=4).data)  # the LR cube is sr-bicubic's
    assert a.info["ref"].shape == (3, 40, 48) and a.info["flow"].shape == (2, 40, 48)
    rgb = cube[list(rgb_band_indices(VISIBLE_31))]
    assert np.allclose(a.info["ref"], warp_image(rgb, a.info["flow"]), atol=1e-6)  # ref(p) = rgb(p + flow(p))
    settings = a.info["misalignment"]["settings"]
    assert settings["shift"] == 4.0 and np.isclose(np.hypot(*a.info["misalignment"]["drawn"]["shift_xy"]), 4.0)


def test_a_pure_translation_is_exactly_the_seeded_shift(cube):
    d = dg.degrade("sr-ref", cube, seed=2, scale=4, shift=3.0, rotation_deg=0, zoom=0, elastic=0)
    dx, dy = d.info["misalignment"]["drawn"]["shift_xy"]
    assert np.allclose(d.info["flow"][0], dx, atol=1e-5) and np.allclose(d.info["flow"][1], dy, atol=1e-5)
    assert np.isclose(np.hypot(dx, dy), 3.0)
    rgb = cube[list(rgb_band_indices(VISIBLE_31))]
    shifted = np.stack([ndimage.shift(band, (-dy, -dx), order=1, mode="nearest") for band in rgb])  # independent reference
    assert np.abs(d.info["ref"] - shifted)[:, 5:-5, 5:-5].max() < 1e-5


def test_zero_misalignment_is_the_registered_rgb_and_the_elastic_field_peaks_at_its_amplitude(cube):
    d = dg.degrade("sr-ref", cube, seed=0, shift=0, rotation_deg=0, zoom=0, elastic=0)
    assert np.array_equal(d.info["ref"], cube[list(rgb_band_indices(VISIBLE_31))])
    flow, _ = misalignment_field((40, 48), np.random.default_rng(1), Misalignment(shift=0, rotation_deg=0, zoom=0, elastic=2.5))
    assert np.isclose(np.sqrt((flow ** 2).sum(0)).max(), 2.5)
    coloured = dg.degrade("sr-ref", cube, seed=0, shift=0, rotation_deg=0, zoom=0, elastic=0, colour=0.2)
    assert not np.allclose(coloured.info["ref"], d.info["ref"]) and coloured.info["ref"].min() >= 0


def test_sr_ref_refuses_bad_settings_and_wavelengths(cube):
    with pytest.raises(ValueError, match="give the wavelengths"):
        dg.degrade("sr-ref", cube[:20])
    with pytest.raises(ValueError, match="wavelengths given"):
        dg.degrade("sr-ref", cube, wavelengths=VISIBLE_31[:30])
    with pytest.raises(ValueError, match="shift must be a finite number >= 0"):
        dg.degrade("sr-ref", cube, shift=-1)
    assert dg.degrade("sr-ref", cube[:20], wavelengths=np.linspace(450, 690, 20)).info["ref"].shape == (3, 40, 48)


def test_the_task_hands_the_reference_to_the_restorer_and_checks_it(cube):
    task = get_task("sr-ref-x8")
    d = task.degrade(cube, seed=0)
    assert d.data.shape == (31, 5, 6) and task.extra_inputs(d.info, d.data.shape)["ref"].shape == (3, 40, 48)
    with pytest.raises(ValueError, match="needs the reference RGB"):
        task.extra_inputs({}, d.data.shape)
    with pytest.raises(ValueError, match="reference shape"):
        task.extra_inputs({"ref": d.info["ref"][:, :-8]}, d.data.shape)


# ----------------------------------------------------------------------------- DCNv2 and warping

def _bilinear(img: np.ndarray, y: float, x: float) -> float:
    y0, x0, value = int(np.floor(y)), int(np.floor(x)), 0.0
    for yi in (y0, y0 + 1):
        for xi in (x0, x0 + 1):
            if 0 <= yi < img.shape[0] and 0 <= xi < img.shape[1]:
                value += img[yi, xi] * (1 - abs(y - yi)) * (1 - abs(x - xi))
    return value


def test_modulated_deform_conv_matches_a_direct_loop_and_plain_convolution():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 5, 6, generator=g, dtype=torch.float64)
    w = torch.randn(3, 4, 3, 3, generator=g, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64)
    zero, ones = torch.zeros(1, 36, 5, 6, dtype=torch.float64), torch.ones(1, 18, 5, 6, dtype=torch.float64)
    assert torch.allclose(modulated_deform_conv2d(x, zero, w, ones, b, padding=1), F.conv2d(x, w, b, padding=1), atol=1e-12)
    offset = 1.5 * torch.randn(1, 36, 5, 6, generator=g, dtype=torch.float64)  # 2 offset groups x 9 taps x (dy, dx)
    mask = torch.rand(1, 18, 5, 6, generator=g, dtype=torch.float64)
    y = modulated_deform_conv2d(x, offset, w, mask, b, padding=1).numpy()
    off, m, xs, ws = offset.numpy().reshape(2, 9, 2, 5, 6), mask.numpy().reshape(2, 9, 5, 6), x.numpy()[0], w.numpy()
    expected = np.zeros_like(y)
    for o in range(3):
        for i in range(5):
            for j in range(6):
                total = b[o].item()
                for c in range(4):
                    for k in range(9):
                        gr, (ki, kj) = c // 2, divmod(k, 3)
                        total += ws[o, c, ki, kj] * m[gr, k, i, j] * _bilinear(xs[c], i - 1 + ki + off[gr, k, 0, i, j],
                                                                              j - 1 + kj + off[gr, k, 1, i, j])
                expected[0, o, i, j] = total
    assert np.abs(y - expected).max() < 1e-10


def test_modulated_deform_conv_agrees_with_torchvision_where_it_imports():
    tv_ops = pytest.importorskip("torchvision.ops", reason="torchvision's CPU build is not installable beside the CPU torch here")
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(2, 4, 7, 7, generator=g), torch.randn(5, 4, 3, 3, generator=g)
    offset, mask = 2 * torch.randn(2, 36, 7, 7, generator=g), torch.rand(2, 18, 7, 7, generator=g)
    ours = modulated_deform_conv2d(x, offset, w, mask, padding=1)
    assert torch.allclose(ours, tv_ops.deform_conv2d(x, offset, w, padding=1, mask=mask), atol=1e-4)


def test_flow_warp_follows_the_misalignment_convention():
    rng = np.random.default_rng(3)
    image = ndimage.gaussian_filter(rng.random((3, 20, 24)), (0, 2, 2)).astype(np.float32)
    flow, _ = misalignment_field((20, 24), rng, Misalignment(shift=2.3, rotation_deg=3, zoom=0.02, elastic=1.0))
    warped = flow_warp(torch.from_numpy(image)[None].double(), torch.from_numpy(flow)[None])[0].numpy()
    assert np.abs(warped - warp_image(image, flow)).max() < 1e-5


# ----------------------------------------------------------------------------- the backbone

def test_svd_unmixing_reconstructs_a_rank_k_cube_and_spans_the_numpy_basis():
    rng = np.random.default_rng(0)
    e0, a0 = rng.random((31, 3)), rng.random((3, 12, 10))
    x = torch.from_numpy(np.einsum("bk,khw->bhw", e0, a0))[None]
    e, a = unmix(x, 3)
    assert torch.allclose(mix(e, a), x, atol=1e-10)
    reference = svd_basis(x[0].reshape(31, -1).T.numpy(), 3)  # hiralign.unmixing, numpy
    assert np.allclose(e[0].numpy() @ e[0].numpy().T, reference @ reference.T, atol=1e-8)
    assert torch.allclose(svd_endmembers(x, 3).transpose(1, 2) @ svd_endmembers(x, 3), torch.eye(3, dtype=x.dtype), atol=1e-10)


@pytest.mark.parametrize("task, lr, cpfp", [("sr-ref-x4", (7, 9), "matching"), ("sr-ref-x8", (5, 4), "matching"),
                                           ("sr-ref-x4", (7, 9), "conv")])
def test_uafl_forward_backward_and_the_zeroed_residual_is_the_upsampled_input(task, lr, cpfp):
    torch.manual_seed(0)
    model = restorers.get("uafl", 31, task, size="tiny", cpfp=cpfp)
    s = get_task(task).scale
    x, ref = torch.rand(2, 31, *lr), torch.rand(2, 3, lr[0] * s, lr[1] * s)
    up = F.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False)
    assert torch.equal(model(x, ref=ref), up)  # the residual head starts at zero: Y = X_up
    target = torch.rand_like(up)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):  # one step moves the head off zero, then every parameter gets a gradient
        optimiser.zero_grad()
        y = model(x, ref=ref)
        (y - target).abs().mean().backward()
        optimiser.step()
    assert y.shape == (2, 31, lr[0] * s, lr[1] * s) and torch.isfinite(y).all() and not torch.equal(model(x, ref=ref), up)
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["net.head.weight"].abs().sum() > 0 and grads["net.embed_ref.weight"].abs().sum() > 0  # the reference is used
    torch.nn.init.zeros_(model.net.head.weight)
    torch.nn.init.zeros_(model.net.head.bias)
    assert torch.equal(model(x, ref=ref), up)  # with the residual branch zeroed the output is X_up exactly


def test_uafl_refuses_a_reference_of_the_wrong_size_and_too_many_endmembers():
    model = restorers.get("uafl", 31, "sr-ref-x4", size="tiny")
    with pytest.raises(ValueError, match="reference"):
        model(torch.rand(1, 31, 6, 6), ref=torch.rand(1, 3, 20, 24))
    with pytest.raises(ValueError, match="K must be <= B"):
        restorers.get("uafl", 2, "sr-ref-x4", size="tiny")
    with pytest.raises(ValueError, match="cannot solve task"):
        restorers.get("uafl", 31, "sr-x4", size="tiny")
    with pytest.raises(ValueError, match="unknown cpfp 'flownet'"):
        restorers.get("uafl", 31, "sr-ref-x4", size="tiny", cpfp="flownet")


def test_endmembers_are_signed_so_the_first_abundance_is_brightness():
    rng = np.random.default_rng(4)
    x = torch.from_numpy(rng.random((2, 31, 8, 9)))
    e, a = unmix(x, 3)
    assert (a[:, 0] > 0).all()  # a non-negative cube: positive first abundance
    reference = np.stack([svd_basis(cube.reshape(31, -1).T, 3) for cube in x.numpy()])  # hiralign.unmixing's sign convention
    assert np.allclose(e.numpy(), reference, atol=1e-8)
    assert torch.allclose(svd_endmembers(-x, 3), e)  # the sign is fixed: negating the cube does not flip the endmembers


@pytest.mark.parametrize("shift", [4.0, 8.0])
def test_the_matched_coarse_flow_recovers_the_seeded_misalignment_of_a_textured_scene(shift):
    rng = np.random.default_rng(5)
    abundances = ndimage.gaussian_filter(rng.random((3, 128, 128)), (0, 2.5, 2.5))
    scene = np.einsum("bk,khw->bhw", rng.random((31, 3)), abundances).astype(np.float32)  # a rank-3 cube
    d = dg.degrade("sr-ref", scene, seed=1, scale=4, shift=shift, rotation_deg=0.0, zoom=0.0, elastic=0.0)
    x_up = F.interpolate(torch.from_numpy(d.data)[None], scale_factor=4, mode="bicubic", align_corners=False)
    flow = matched_coarse_flow(unmix(x_up, 3)[1], torch.from_numpy(d.info["ref"])[None], **MATCHING)
    error = (flow + torch.from_numpy(d.info["flow"])[None])[..., 24:-24, 24:-24].norm(dim=1)  # aligning undoes the field
    assert error.median() < 0.75, f"median end-point error {error.median():.2f} px for a {shift} px shift"


class _ReferenceEcho(torch.nn.Module):
    """Returns the reference's first channel in every band: tiled == untiled iff each tile got its own HR crop."""

    def forward(self, x, ref):
        assert ref.shape[-2:] == (4 * x.shape[-2], 4 * x.shape[-1])
        return ref[:, :1].expand(-1, x.shape[1], -1, -1)


def test_tiling_crops_the_reference_at_the_output_scale(cube):
    d = get_task("sr-ref-x4").degrade(cube, seed=0)
    echo = restore(_ReferenceEcho(), d.data, {"ref": d.info["ref"]}, tile=6, overlap=1)
    assert np.array_equal(echo, np.broadcast_to(d.info["ref"][:1], echo.shape))
    model = restorers.get("uafl", 31, "sr-ref-x4", size="tiny")  # untrained, its head zero: Y = X_up, a local model
    x, ref = torch.from_numpy(d.data)[None], torch.from_numpy(d.info["ref"])[None]
    assert torch.allclose(restore_batch(model, x, {"ref": ref}, tile=8, overlap=3), model(x, ref=ref), atol=1e-5)
    with pytest.raises(ValueError, match="not an integer multiple"):
        restore_batch(model, x, {"ref": ref[..., :-1]}, tile=6, overlap=2)


def test_training_crops_take_the_reference_at_the_clean_scale(cube):
    from hiralign.train.patches import Pair, crop_pair, degraded_patches

    d = get_task("sr-ref-x4").degrade(cube, seed=0)
    pair = Pair(d.data, cube, {"ref": cube[:3].copy()})  # a reference registered with the clean cube
    for seed in range(4):
        crop = crop_pair(pair, 16, np.random.default_rng(seed), augment=True)
        assert crop.degraded.shape == (31, 4, 4) and crop.extra["ref"].shape == (3, 16, 16)
        assert np.array_equal(crop.extra["ref"], crop.clean[:3])
    patches = degraded_patches([cube], get_task("sr-ref-x4"), 2, 16, np.random.default_rng(0))
    assert [p.extra["ref"].shape for p in patches] == [(3, 16, 16)] * 2


@pytest.fixture(scope="module")
def sr_ref_run(tmp_path_factory):
    """A tiny notebook-pipeline run (stages 00-05) of the sr-ref-x4 task with a tiny UAFL pretrained here."""
    from stage_helpers import make_run

    run_dir = tmp_path_factory.mktemp("sr-ref-run")
    results = make_run(run_dir, **{"01_proxy": {"task": "sr-ref-x4", "backbone_config": "tiny", "pretrain_epochs": 1,
                                                "pretrain_batch": 2, "pretrain_patch": 16}})
    return run_dir, results


def test_stage_01_stores_each_observations_reference_and_makes_the_proxies_from_lr_and_reference(sr_ref_run):
    from hiralign.train import load_checkpoint

    run_dir, results = sr_ref_run
    proxies, clean = results["01_proxy"], results["00_data"].target_observed
    info = proxies.degradation
    assert info["ref"].shape == (len(clean), 3, clean[0].height, clean[0].width)
    for i, c in enumerate(clean):  # the stored reference is the clean image's Eq. 4 RGB through the stored field
        assert np.allclose(info["ref"][i], warp_image(c.data[list(info["rgb_bands"][i])], info["flow"][i]), atol=1e-6)
    model = load_checkpoint(proxies.checkpoint, bands=clean[0].bands, task="sr-ref-x4").model
    assert model.build_config["backbone"] == "uafl"
    with_ref = restore(model, proxies.degraded[0].data, {"ref": info["ref"][0]})
    assert np.allclose(np.clip(with_ref, 0, 1), proxies.proxies[0].data, atol=1e-5)  # Eq. 3 with the reference
    other = restore(model, proxies.degraded[0].data, {"ref": info["ref"][1]})
    assert not np.allclose(with_ref, other, atol=1e-4)  # the proxy depends on the reference


def test_finetuning_pairs_carry_a_misaligned_reference_of_their_target(sr_ref_run):
    from hiralign.finetune import GENERATED, PROXY, AlignedPairs, load_inputs

    run_dir, _ = sr_ref_run
    inputs = load_inputs(run_dir)
    pairs = AlignedPairs(inputs.proxies, "sr-ref-x4", inputs.synthesized, composition="mixed", ratio="3:1").epoch(0)
    assert {p.ref.branch for p in pairs} == {PROXY, GENERATED}
    for p in pairs:  # ref(p) = rgb(target)(p + flow(p)), a 4 px misalignment of this pair's own target
        assert p.extra["ref"].shape == (3, *p.clean.shape[1:])
        assert np.allclose(p.extra["ref"], warp_image(p.clean[p.info["rgb_bands"]], p.info["flow"]), atol=1e-6)
        assert np.isclose(np.hypot(*p.info["misalignment"]["drawn"]["shift_xy"]), 4.0)


def test_stage_05_restores_the_observations_with_their_stored_references(sr_ref_run):
    from hiralign.train import load_checkpoint

    _, results = sr_ref_run
    evaluation, proxies = results["05_evaluate"], results["01_proxy"]
    assert {"input", "source-only", "proxy-only", "adapted"} <= set(evaluation.restored)
    adapted = load_checkpoint(evaluation.models["adapted"], bands=evaluation.degraded.shape[1], task="sr-ref-x4").model
    expected = np.clip(restore(adapted, evaluation.degraded[0], {"ref": proxies.degradation["ref"][0]}), 0, 1)
    assert np.allclose(evaluation.restored["adapted"][0], expected, atol=1e-5)
    assert np.all(np.isfinite(evaluation.restored["adapted"]))


@pytest.mark.parametrize("name", ["uafl-sr", "cave-real-uafl-sr"])
def test_the_uafl_profiles_pass_every_stage_check_and_run_the_sr_ref_task(name):
    from pathlib import Path

    from hiralign.pipeline import load_config, validate_config

    repo = Path(__file__).resolve().parents[1]
    if name.startswith("cave") and not list((repo.parent / "shared" / "data").glob("cave_*.mat")):
        pytest.skip("the real-CAVE profile's dataset check needs the CAVE scenes of ../shared/data")
    resolved = validate_config(load_config(repo / "params" / f"{name}.yaml"), repo / "notebooks")
    assert resolved["01_proxy"]["task"] == "sr-ref-x4" and resolved["01_proxy"]["backbone"] == "uafl"
    assert resolved["01_proxy"]["backbone_config"] == "tiny"
