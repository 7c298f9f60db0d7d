"""Parameter-free block matching (hiralign.restorers.matching): known shifts, an independent reference
(scikit-image's phase correlation), invariance to gain and offset, the sub-pixel fit, the smoothing."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.registration import phase_cross_correlation

from hiralign.restorers.deform import flow_warp
from hiralign.restorers.matching import _parabola_vertex, block_matching_flow, smooth_by_confidence, correlation_cost


def texture(seed: int, size: int = 96, sigma: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random((size, size)), sigma)


def as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image))[None, None].double()


def interior(flow: torch.Tensor, margin: int = 24) -> torch.Tensor:
    return flow[..., margin:-margin, margin:-margin]


@pytest.mark.parametrize("shift_xy", [(4.0, -8.0), (-4.0, 4.0), (0.0, 0.0), (-8.0, -8.0)])
def test_a_translation_by_whole_pooled_pixels_is_recovered(shift_xy):
    fixed = as_tensor(texture(0, size=128))
    field = torch.tensor(shift_xy, dtype=torch.float64).view(1, 2, 1, 1).expand(1, 2, 128, 128)
    moving = flow_warp(fixed, field)  # moving(p) = fixed(p + t): flow_warp(moving, -t) = fixed
    error = (interior(block_matching_flow(fixed, moving, sigma=0.0), 32) + field[..., 32:-32, 32:-32]).norm(dim=1)
    assert error.median() < 0.1 and error.max() < 0.3  # px; the sub-pixel parabola is biased off symmetric peaks


def test_a_subpixel_translation_agrees_with_phase_correlation():
    fixed = texture(1, size=128, sigma=3.0)
    moving = np.real(np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(fixed), (-2.6, 5.3))))  # moving(p) = fixed(p + (2.6, -5.3)) in (y, x)
    flow = block_matching_flow(as_tensor(fixed), as_tensor(moving), sigma=4.0)
    dx, dy = (interior(flow, 32)[0, i].median().item() for i in (0, 1))
    shift_yx = phase_cross_correlation(fixed, moving, upsample_factor=20)[0]  # fixed(p) ~ moving(p - shift)
    assert abs(dy - (-shift_yx[0])) < 0.3 and abs(dx - (-shift_yx[1])) < 0.3
    assert abs(dy - (-2.6)) < 0.3 and abs(dx - 5.3) < 0.3


def test_the_cost_ignores_a_gain_and_an_offset_of_either_image():
    fixed, moving = as_tensor(texture(2)), as_tensor(np.roll(texture(2), (3, -2), axis=(0, 1)))
    a, b = correlation_cost(fixed, moving, radius=3, window=11), correlation_cost(3.0 * fixed + 0.2, 0.5 * moving - 1.0, radius=3, window=11)
    assert torch.allclose(a, b, atol=1e-4)  # up to the variance floor eps
    best = a.argmax(1)[..., 16:-16, 16:-16]  # moving(p + d) = fixed(p) at d = (dy, dx) = (3, -2): index (3 + 3) 7 + (-2 + 3)
    assert (best == 43).double().mean() > 0.9


def test_the_parabola_vertex_is_exact_on_a_parabola_and_zero_off_a_peak():
    f = lambda x: -(x - 0.3) ** 2 + 5.0  # noqa: E731
    left, centre, right = (torch.tensor([f(x)], dtype=torch.float64) for x in (-1.0, 0.0, 1.0))
    assert torch.allclose(_parabola_vertex(left, centre, right), torch.tensor([0.3], dtype=torch.float64))
    assert _parabola_vertex(torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor([0.0])).item() == 0.0  # monotone: no peak


def test_normalised_convolution_keeps_a_constant_field_and_fills_unconfident_pixels():
    rng = np.random.default_rng(3)
    flow = torch.tensor([1.5, -2.0], dtype=torch.float64).view(1, 2, 1, 1).expand(1, 2, 20, 20).clone()
    confidence = torch.from_numpy(rng.random((1, 1, 20, 20)))
    assert torch.allclose(smooth_by_confidence(flow, confidence, 3.0), flow, atol=1e-5)
    flow[..., 10, 10], confidence[..., 10, 10] = 40.0, 0.0  # a wild match with no confidence is outvoted by its neighbours
    assert torch.allclose(smooth_by_confidence(flow, confidence, 3.0)[..., 10, 10], torch.tensor([1.5, -2.0], dtype=torch.float64), atol=1e-4)


def test_block_matching_refuses_images_that_do_not_pair():
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        block_matching_flow(torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 30))
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        block_matching_flow(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
