"""MCNet (hiralign.restorers.mcnet): size, training behaviour, exact tiling, and equality with the
HSIR toolbox's re-packaging of the official code (``hsir.model.sr.mcnet.MCNet``)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))

from hsir_reference import hsir_model

from hiralign.restorers import mcnet
from hiralign.restorers.inference import restore_batch
from net_helpers import fit_losses

pytestmark = [pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning"), pytest.mark.usefixtures("one_torch_thread")]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


class _CpuBandMean:
    """Stands in for the reference's band-mean tensor: its ``forward`` calls ``band_mean.cuda()``
    unconditionally, which fails on a CPU-only machine; this returns the tensor where it is."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor

    def cuda(self) -> torch.Tensor:
        return self.tensor


def reference_net(tmp_path: Path, bands: int, scale: int, n_feats: int, n_conv: int,
                  band_mean: np.ndarray | None = None) -> torch.nn.Module:
    """The HSIR MCNet with its statistics file written the way its constructor reads it:
    ``np.load(stat_path)['data_mean']`` -- a 0-d structured array with a ``data_mean`` field."""
    stats = np.zeros((), dtype=[("data_mean", "<f4", (bands,))])
    if band_mean is not None:
        stats["data_mean"] = band_mean
    path = tmp_path / f"stats_{bands}.npy"
    np.save(path, stats)
    net = hsir_model("sr.mcnet").MCNet(n_colors=bands, n_feats=n_feats, n_conv=n_conv, upscale_factor=scale,
                                        stat_path=str(path))
    net.band_mean = _CpuBandMean(net.band_mean)
    return net


def test_paper_parameter_count():
    model = mcnet.build(31, mcnet.PAPER_SCALE, **mcnet.PAPER_CONFIG)
    assert abs(n_params(model) - mcnet.PAPER_PARAMETERS) <= 0.05 * mcnet.PAPER_PARAMETERS
    for scale, count in mcnet.PAPER_PARAMETERS_BY_SCALE.items():
        assert n_params(mcnet.build(31, scale, **mcnet.PAPER_CONFIG)) == count
    assert n_params(mcnet.build(31, 4, **mcnet.TINY_CONFIG)) < 100_000


@pytest.mark.parametrize("scale", [2, 3])
def test_forward_backward_tiny(scale):
    torch.manual_seed(0)
    model = mcnet.build(3, scale, **mcnet.TINY_CONFIG)
    x = torch.rand(2, 3, 5, 7)  # odd, non-square: input_multiple is 1
    y = model(x)
    assert y.shape == (2, 3, 5 * scale, 7 * scale)
    y.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(g.abs().sum() > 0 for g in grads)
    # the official (HSIR) layout (N, 1, B, h, w) gives the same numbers, in that layout
    with torch.no_grad():
        torch.testing.assert_close(model(x[:, None])[:, 0], model(x), rtol=0, atol=0)


def test_band_mean_argument():
    assert mcnet.build(4, 2, **mcnet.TINY_CONFIG).band_mean.abs().sum() == 0  # default: no normalisation
    model = mcnet.build(31, 2, band_mean=mcnet.CAVE_BAND_MEAN, **mcnet.TINY_CONFIG)
    assert model.band_mean.flatten().tolist() == pytest.approx(mcnet.CAVE_BAND_MEAN)
    assert "band_mean" not in model.state_dict()  # not stored by the official code either
    assert model.to(torch.float64).band_mean.dtype == torch.float64  # a (non-persistent) buffer: moves with the model
    with pytest.raises(ValueError, match="band_mean"):
        mcnet.build(4, 2, band_mean=[0.1, 0.2], **mcnet.TINY_CONFIG)
    # a constant input equal to the mean is shifted to zero before the network, for any mean
    torch.manual_seed(0)
    a = mcnet.build(2, 2, band_mean=[0.3, 0.6], **mcnet.TINY_CONFIG).eval()
    b = mcnet.build(2, 2, **mcnet.TINY_CONFIG).eval()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        mean = torch.tensor([0.3, 0.6]).view(1, 2, 1, 1)
        torch.testing.assert_close(a(mean.expand(1, 2, 4, 4)), b(torch.zeros(1, 2, 4, 4)) + mean)


def test_short_training_lowers_loss():
    """x2 SR of smooth random cubes (LR = 2x2 average pooling), L1 loss as in the official train.py."""
    torch.manual_seed(0)
    model = mcnet.build(3, 2, **mcnet.TINY_CONFIG)
    hr = F.interpolate(torch.rand(2, 3, 4, 4), size=(12, 12), mode="bilinear", align_corners=False)
    lr = F.avg_pool2d(hr, 2)
    losses = fit_losses(model, lr, hr, 25, 2e-3, loss=F.l1_loss)
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:3])


def test_receptive_radius_is_exact():
    """The LR pixels that one LR pixel's s x s block of HR outputs depends on reach exactly
    ``receptive_radius`` on each side (nonzero input gradients), and no further."""
    torch.manual_seed(0)
    model = mcnet.build(1, 2, **mcnet.TINY_CONFIG)
    r, q = model.receptive_radius, 27
    assert r == 26
    x = (0.2 + torch.rand(1, 1, 2 * q + 1, 2 * q + 1)).requires_grad_()
    model(x)[..., 2 * q : 2 * q + 2, 2 * q : 2 * q + 2].sum().backward()
    rows, cols = (x.grad[0, 0].abs() > 0).nonzero(as_tuple=True)
    assert rows.min() == q - r and rows.max() == q + r
    assert cols.min() == q - r and cols.max() == q + r


def test_tiled_equals_untiled():
    torch.manual_seed(0)
    model = mcnet.build(2, 2, **mcnet.TINY_CONFIG)
    assert model.tile_align == 1 and model.input_multiple == 1
    x = torch.rand(1, 2, 56, 57)
    full = restore_batch(model, x)
    tiled = restore_batch(model, x, tile=2 * model.receptive_radius + 2, overlap=model.receptive_radius)
    assert full.shape == tiled.shape == (1, 2, 112, 114)
    assert (full - tiled).abs().max() <= 1e-5


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_paper_state_dict_keys_match_reference(tmp_path, scale):
    ours = mcnet.build(31, scale, **mcnet.PAPER_CONFIG)
    ref = reference_net(tmp_path, 31, scale, **mcnet.PAPER_CONFIG)
    assert shapes(ours) == shapes(ref)
    ref.load_state_dict(ours.state_dict(), strict=True)  # and the other way round


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_same_weights_same_output_as_reference(tmp_path, scale):
    torch.manual_seed(0)
    bands, cfg = 3, {"n_feats": 4, "n_conv": 2}  # n_conv 2 exercises the stacked separable convolutions
    band_mean = np.array([0.09, 0.12, 0.15], dtype=np.float32)
    ref = reference_net(tmp_path, bands, scale, band_mean=band_mean, **cfg)
    state = ref.state_dict()
    gen = torch.Generator().manual_seed(1)
    # Move g and gamma off their initial values (g = ||v||, gamma = 1). Scaling them up by 1..3 keeps
    # the deep features from fading (at the default init, perturbing a whole module moves the output
    # by < 1e-5), so the comparison below is sensitive to every module: see the last assertion.
    for key, value in state.items():
        if key.endswith(("weight_g", "gamma")):
            state[key] = value * (1 + 2 * torch.rand(value.shape, generator=gen))
    ref.load_state_dict(state, strict=True)
    ours = mcnet.build(bands, scale, band_mean=band_mean, **cfg)
    ours.load_state_dict(state, strict=True)
    x = torch.rand(2, bands, 4, 5, generator=gen)
    for train in (False, True):  # no batch norm or dropout: both modes are deterministic
        ours.train(train)
        ref.train(train)
        with torch.no_grad():
            expected = ref(x[:, None])  # the HSIR code takes (N, 1, B, h, w)
            assert expected.shape == (2, 1, bands, 4 * scale, 5 * scale)
            assert (ours(x) - expected[:, 0]).abs().max() <= 1e-5
            assert (ours(x[:, None]) - expected).abs().max() <= 1e-5
    with torch.no_grad():  # the test discriminates: permuting one fusion weight of the first MCM shows
        ours.SSRM1.gamma.copy_(ours.SSRM1.gamma.flip(0))
        assert (ours(x) - expected[:, 0]).abs().max() > 1e-3
