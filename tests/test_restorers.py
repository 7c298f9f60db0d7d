"""Backbone registry, tiled inference and the classical baselines (tiny cubes, CPU)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from hiralign import degrade as dg
from hiralign import restorers
from hiralign.metrics import psnr
from hiralign.restorers.classical import SubspaceTVParams, baseline, fill_missing, subspace_tv
from hiralign.restorers.inference import restore_batch, tile_spans
from hiralign.tasks import get_task

TASK_OF_FAMILY = {"denoise": "denoise-gaussian", "sr": "sr-x4", "sr-ref": "sr-ref-x4", "general": "inpaint"}
BANDS = 6


def tiny_input(family: str, size: int, seed: int = 0) -> tuple[torch.Tensor, dict]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, BANDS, size, size - 2, generator=g)
    extra = {"mask": (torch.rand(x.shape, generator=g) > 0.5).float()} if family == "general" else {}
    if family == "sr-ref":
        extra = {"ref": torch.rand(2, 3, 4 * size, 4 * (size - 2), generator=g)}
    return x, extra


def cpu_config(name: str) -> str:
    """The CPU-sized configuration of a registered backbone: ``tiny`` for the faithful ones, else ``small``."""
    return "tiny" if "tiny" in restorers.config_names(name) else "small"


def build(name: str, bands: int = BANDS, **cfg) -> nn.Module:
    """Registered backbone ``name`` in its CPU-sized configuration, for the task of its family."""
    return restorers.get(name, bands, TASK_OF_FAMILY[restorers.backbone(name).family], size=cpu_config(name), **cfg)


def smooth_cube(bands: int = 31, size: int = 48, rank: int = 3, seed: int = 0) -> np.ndarray:
    """A rank-``rank`` cube: smooth positive spectra times piecewise-smooth abundance maps, in [0.1, 0.9]."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, bands)
    spectra = np.stack([np.exp(-((t - c) ** 2) / 0.08) + 0.2 for c in rng.uniform(0, 1, rank)])
    maps = gaussian_filter(rng.random((rank, size, size)), sigma=(0, 5, 5))
    maps[:, : size // 2] += 0.3  # an edge
    cube = np.einsum("rb,rhw->bhw", spectra, maps)
    return (0.1 + 0.8 * (cube - cube.min()) / (cube.max() - cube.min())).astype(np.float32)


# ----------------------------------------------------------------------------- registry


@pytest.mark.parametrize("name", restorers.names())
def test_every_backbone_runs_forward_and_backward_on_a_tiny_cube(name):
    family = restorers.backbone(name).family
    task = get_task(TASK_OF_FAMILY[family])
    torch.manual_seed(0)
    model = build(name)
    x, extra = tiny_input(family, 16)
    y = model(x, **extra)
    assert y.shape == (2, BANDS, 16 * task.scale, 14 * task.scale)
    target = torch.rand_like(y)
    nn.functional.l1_loss(y, target).backward()
    unused = tuple("net." + u for u in getattr(getattr(model, "net", None), "unused_parameters", ()))  # as the official code
    grads = [p.grad for n, p in model.named_parameters() if not n.startswith(unused)]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("name", restorers.names())
def test_named_configs_build_and_the_default_is_the_bigger_for_faithful_backbones(name):
    configs = restorers.config_names(name)
    assert configs in (["small", "large"], ["paper", "tiny"])  # stand-ins / faithful (hiralign.restorers.paper)
    task = TASK_OF_FAMILY[restorers.backbone(name).family]
    sizes = {}
    for size in configs:
        model = restorers.get(name, 31, task, size=size)
        sizes[size] = sum(p.numel() for p in model.parameters())
        assert model.build_config["size"] == size and model.build_config["bands"] == 31
    assert restorers.get(name, 31, task).build_config["size"] == configs[0]
    big, small = ("large", "small") if "large" in sizes else ("paper", "tiny")
    assert sizes[big] > sizes[small]


def test_registry_rejects_wrong_family_unknown_names_and_sizes():
    with pytest.raises(ValueError, match="sspsr.*cannot solve task 'denoise-gaussian'"):
        restorers.get("sspsr", BANDS, "denoise-gaussian")
    with pytest.raises(ValueError, match="unknown backbone 'nope'"):
        restorers.get("nope", BANDS, "denoise-gaussian")
    with pytest.raises(ValueError, match="unknown task"):
        restorers.get("spectral-cnn", BANDS, "denoise-everything")
    with pytest.raises(ValueError, match="unknown size 'huge' of backbone 'spectral-cnn'; choose one of small, large"):
        restorers.get("spectral-cnn", BANDS, "denoise-gaussian", size="huge")
    with pytest.raises(ValueError, match="unknown size 'small' of backbone 'sert'; choose one of paper, tiny"):
        restorers.get("sert", BANDS, "denoise-gaussian", size="small")
    assert restorers.names("sr-x4") == ["mcnet", "sspsr", "essaformer", "tiny-sspsr", "tiny-essa"]
    assert {restorers.default_backbone(t) for t in ("denoise-complex", "sr-x4", "bandmiss")} == {
        "spectral-cnn", "tiny-sspsr", "tiny-unet"}


def test_a_user_module_registers_and_builds_by_name():
    class Shrink(nn.Module):
        def __init__(self, bands: int, factor: float = 0.5):
            super().__init__()
            self.weight = nn.Parameter(torch.full((bands, 1, 1), factor))

        def forward(self, x):
            return x * self.weight

    restorers.register("test-shrink", "denoise", {"small": {"factor": 0.5}, "large": {"factor": 0.9}})(Shrink)
    try:
        model = restorers.get("test-shrink", 3, "denoise-complex", size="large")
        assert torch.allclose(model(torch.ones(1, 3, 4, 4)), torch.full((1, 3, 4, 4), 0.9))
        assert restorers.get("test-shrink", 3, "denoise-complex").build_config["cfg"] == {"factor": 0.5}  # the first
        with pytest.raises(ValueError, match="already registered"):
            restorers.register("test-shrink", "denoise", {"small": {}})(Shrink)
    finally:
        restorers._REGISTRY.unregister("test-shrink")


# ----------------------------------------------------------------------------- locality and tiling


def local_backbones() -> list[str]:
    return [n for n in restorers.names() if build(n).receptive_radius is not None]


@pytest.mark.parametrize("name", local_backbones())
def test_declared_receptive_radius_bounds_the_influence_of_one_pixel(name):
    family = restorers.backbone(name).family
    model = build(name).eval()
    size = max(40 if family == "sr" else 96, 2 * model.receptive_radius + 8)  # the poke's reach fits inside
    x, extra = tiny_input(family, size)
    x, extra = x[:1], {k: v[:1] for k, v in extra.items()}
    poked = x.clone()
    poked[0, :, size // 2, size // 2] += 1.0
    with torch.no_grad():
        change = (model(poked, **extra) - model(x, **extra)).abs().amax(dim=(0, 1))
    scale = get_task(TASK_OF_FAMILY[family]).scale
    rows, cols = torch.nonzero(change > 0, as_tuple=True)
    reach = torch.maximum(((rows + 0.5) / scale - (size // 2 + 0.5)).abs(),
                          ((cols + 0.5) / scale - (size // 2 + 0.5)).abs()).max()
    assert 0 < reach <= model.receptive_radius


@pytest.mark.parametrize("length,tile,overlap,align", [(100, 40, 8, 4), (64, 64, 8, 1), (130, 50, 10, 8), (57, 20, 3, 1)])
def test_tile_spans_partition_the_axis_with_margins(length, tile, overlap, align):
    spans = tile_spans(length, tile, overlap, align)
    assert spans[0][2] == 0 and spans[-1][3] == length
    for (s, e, ks, ke), nxt in zip(spans, spans[1:] + [None]):
        assert s % align == 0 and e - s <= tile + align - 1 and s <= ks < ke <= e
        assert (ks - s >= overlap or s == 0) and (e - ke >= overlap or e == length)
        if nxt is not None:
            assert ke == nxt[2]


def test_tile_spans_reject_a_tile_too_small_for_the_overlap():
    with pytest.raises(ValueError, match="too small for overlap 8"):
        tile_spans(100, 16, 8)


@pytest.mark.parametrize("name", local_backbones())
def test_tiled_inference_equals_untiled_for_local_backbones(name):
    family = restorers.backbone(name).family
    torch.manual_seed(1)
    model = build(name)
    tile = 2 * model.receptive_radius + 2 * model.tile_align + 6
    size = max(36 if family == "sr" else 100, tile + 12)  # really tiled
    x, extra = tiny_input(family, size, seed=3)
    full = restore_batch(model, x, extra)
    tiled = restore_batch(model, x, extra, tile=tile)
    assert torch.allclose(full, tiled, atol=1e-5, rtol=0)


def test_window_blending_is_exact_for_a_pointwise_model():
    model = nn.Conv2d(BANDS, BANDS, 1)
    x, _ = tiny_input("denoise", 50)
    full = restore_batch(model, x)
    blended = restore_batch(model, x, tile=20, overlap=4, blend="window")
    assert torch.allclose(full, blended, atol=1e-6)


def test_global_backbone_is_tiled_approximately_with_window_blend():
    torch.manual_seed(0)
    model = restorers.get("tiny-essa", BANDS, "sr-x4")
    x, _ = tiny_input("sr", 40)
    out = restore_batch(model, x, tile=24, overlap=6, blend="window")
    assert out.shape == (2, BANDS, 160, 152) and torch.isfinite(out).all()


# ----------------------------------------------------------------------------- classical baselines


def test_subspace_tv_reproduces_a_noise_free_low_rank_cube():
    cube = smooth_cube(bands=12, size=24, rank=3)
    out = subspace_tv(cube, SubspaceTVParams(rank=4, tv_weight=0.0, penalty=0.01, iterations=20))  # rank 3 + offset
    np.testing.assert_allclose(out, cube, atol=1e-5)


@pytest.mark.parametrize("task,min_gain", [("denoise-gaussian", 6.0), ("denoise-complex", 6.0), ("inpaint", 6.0),
                                           ("deblur", 0.5)])
def test_classical_baseline_improves_psnr_over_the_observation(task, min_gain):
    spec = get_task(task)
    cube = smooth_cube()
    observed = spec.degrade(cube, seed=0)
    extra = {k: torch.from_numpy(v)[None] for k, v in spec.extra_inputs(observed.info, cube.shape).items()}
    out = baseline(spec)(torch.from_numpy(observed.data)[None], **extra)[0].numpy()
    assert psnr(out, cube) > psnr(observed.data, cube) + min_gain


def test_classical_completion_keeps_observed_entries_and_fills_missing_bands():
    cube = smooth_cube(bands=10, size=24)
    observed = dg.degrade("bandmiss", cube, seed=1, ratio=0.3)
    mask = observed.info["mask"]
    out = subspace_tv(observed.data, SubspaceTVParams(rank=3, tv_weight=0.0, iterations=20), mask=mask)
    np.testing.assert_array_equal(out[mask], observed.data[mask])
    missing = ~mask
    assert np.abs(out[missing] - cube[missing]).mean() < 0.1 * np.abs(cube[missing]).mean()
    assert np.abs(fill_missing(observed.data, mask, 1.5)[missing] - cube[missing]).mean() < 0.2


def test_bicubic_baseline_matches_the_degradation_modules_upsampler():
    lr = np.random.default_rng(0).random((4, 8, 10)).astype(np.float32)
    ours = baseline("sr-x4")(torch.from_numpy(lr)[None])[0].numpy()
    np.testing.assert_allclose(ours, dg.upsample_bicubic(lr, 4), atol=1e-5)


def test_the_sr_ref_baseline_is_bicubic_and_ignores_the_reference():
    lr = torch.from_numpy(np.random.default_rng(0).random((1, 4, 8, 10)).astype(np.float32))
    ref = torch.rand(1, 3, 32, 40, generator=torch.Generator().manual_seed(0))
    with_ref = baseline("sr-ref-x4")(lr, ref=ref)
    assert torch.equal(with_ref, baseline("sr-x4")(lr)) and torch.equal(with_ref, baseline("sr-ref-x4")(lr, ref=torch.zeros_like(ref)))
    assert baseline("sr-ref-x8")(lr).shape == (1, 4, 64, 80)


def test_baseline_parameters_are_exposed_and_validated():
    assert baseline("denoise-gaussian", iterations=3).params.iterations == 3
    assert baseline("deblur").kernel.shape == (31, 31)
    with pytest.raises(TypeError):
        baseline("denoise-gaussian", not_a_parameter=1)
    with pytest.raises(ValueError, match="bicubic baseline takes no parameters"):
        baseline("sr-x4", iterations=3)
