"""The coherent warp mode (issue 18): its building blocks against known answers and independent
references (coherence-aware selection, tone curves, the noise estimate, the curvature term, the
guide model), then the known-answer fidelity cases at 64 px on the real CAVE scene (the ``cave_crop``
fixture of conftest.py)."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from hiralign.spectral import VISIBLE_31
from hiralign.warp import WarpParams, spectral_warp
from hiralign.warp import coherence, colour, known_answers, losses
from hiralign.warp.descriptors import excess_noise, noise_sigma
from hiralign.warp.guide_model import GuideModel, blur_options, guide_model, noise_settings
from hiralign.warp.retrieval import Candidates
from hiralign.warp.synthesis import common_intensity_scale
from hiralign.warp.transport import pixel_grid



# ----------------------------------------------------------------------------- coherence-aware selection


def test_match_confidence_is_a_ratio_test_against_far_candidates():
    width = 10
    # pixel 0: best at 0 (d 0.1), a neighbour at 1 (d 0.12, not far), the best far one at 5 (d 0.4)
    # pixel 1: every candidate within one pixel of the best -> confidence 1
    # pixel 2: a far candidate as close as the best -> confidence 0
    indices = torch.tensor([[0, 1, 5], [11, 12, 21], [30, 39, 31]])
    distances = torch.tensor([[0.1, 0.12, 0.4], [0.2, 0.3, 0.3], [0.2, 0.2, 0.25]])
    conf = coherence.match_confidence(Candidates(indices, distances, "flat"), width)
    torch.testing.assert_close(conf, torch.tensor([1 - 0.1 / 0.4, 1.0, 0.0]))


def test_prior_displacement_spreads_confident_matches_over_ambiguous_pixels():
    """Confident pixels (a quarter, all displaced by (2, -1)) and unconfident pixels with random
    matches: the normalised convolution gives (2, -1) everywhere, up to the unconfident ones' 1e-4 weight."""
    h = w = 16
    rng = np.random.default_rng(0)
    grid = pixel_grid(h, w).reshape(2, -1).long()
    best = ((grid[0] + 2).clamp(0, h - 1) * w + (grid[1] - 1).clamp(0, w - 1))
    confident = torch.from_numpy(rng.random(h * w) < 0.25) & (grid[0] < h - 2) & (grid[1] >= 1)  # unclamped moves only
    best = torch.where(confident, best, torch.from_numpy(rng.integers(0, h * w, h * w)))
    confidence = torch.where(confident, torch.tensor(0.9), torch.tensor(0.05))
    prior = coherence.prior_displacement(best, confidence, h, w, sigma=2.0)
    inner = prior[:, 3:-3, 3:-3]
    assert torch.allclose(inner[0], torch.tensor(2.0), atol=0.05) and torch.allclose(inner[1], torch.tensor(-1.0), atol=0.05)


def test_agreement_is_graded_by_the_distance_to_the_prior_target():
    targets = torch.tensor([[2.0], [3.0]])  # one pixel whose prior points at (2, 3) in a 10-wide image
    indices = torch.tensor([[23, 24, 34, 25, 99]])  # (2,3) (2,4) (3,4) (2,5) (9,9)
    torch.testing.assert_close(coherence.agreement(indices, targets, 10, radius=1), torch.tensor([[1.0, 0.5, 0.5, 0.0, 0.0]]))


def test_coherent_pass_prefers_the_prior_within_the_discount_and_keeps_true_distances():
    """A 1 x 6 image: pixel 2 matched a metamer at 5 (distance 0.10); the prior says 'identity' and
    pixel 2 itself scores 0.11 -- within the 25% discount, so it ranks first. Pixel 4's far match
    is distinctly better (0.01 vs 0.5): it stays first. Stored distances are the true Eq. 12 ones."""
    guide = torch.zeros(6, 1)
    proxy = torch.tensor([[0.5], [0.5], [0.11], [0.5], [0.5], [0.10]])
    proxy[5] = 0.10
    guide[4] = 0.09  # pixel 4's best: proxy 5 (|0.09 - 0.10| = 0.01); itself: |0.09 - 0.5| = 0.41
    indices = torch.tensor([[0, 1], [1, 0], [5, 4], [3, 2], [5, 3], [5, 4]])
    dist_rows, dist_cols = torch.arange(6).repeat_interleave(2), indices.reshape(-1)
    distances = (guide[dist_rows] - proxy[dist_cols]).abs().reshape(6, 2)
    prior = torch.zeros(2, 1, 6)
    out = coherence.coherent_pass(Candidates(indices, distances, "flat"), guide, proxy, prior, radius=0, discount=0.25)
    assert out.indices[2, 0] == 2 and out.indices[4, 0] == 5
    expected = (guide[torch.arange(6)[:, None].expand_as(out.indices)] [..., 0] - proxy[out.indices][..., 0]).abs()
    torch.testing.assert_close(out.distances, expected)


def test_neighbour_proposals_shift_each_neighbours_match():
    best = torch.tensor([0, 1, 3, 3])
    proposals = coherence.neighbour_proposals(best, 1, 4)
    assert proposals[2].tolist() == [3, 3, 2, 2]  # up / down clamp to itself; left: 1 + 1; right: 3 - 1


# ----------------------------------------------------------------------------- curvature, noise, tone curves


def test_displacement_curvature_is_zero_for_every_affine_map():
    h = w = 12
    grid = pixel_grid(h, w)
    theta = np.deg2rad(7.0)
    rotation = torch.tensor([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]], dtype=torch.float32)
    affine_maps = {
        "translation": grid + torch.tensor([2.0, -3.0]).view(2, 1, 1),
        "flip": torch.stack([grid[0], (w - 1) - grid[1]]),
        "rotation + zoom": 1.2 * torch.einsum("ij,jhw->ihw", rotation, grid) + 0.5,
    }
    for name, mapping in affine_maps.items():
        assert float(losses.displacement_curvature(mapping)) == pytest.approx(0.0, abs=1e-6), name
    bent = grid.clone()
    bent[1] += 3.0 * torch.sin(grid[0] / 2.0)
    assert float(losses.displacement_curvature(bent)) > 1e-3


def test_noise_sigma_recovers_gaussian_noise_on_a_smooth_image():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:128, 0:128] / 128.0
    clean = np.stack([0.2 + 0.5 * xx, 0.3 + 0.4 * yy, 0.5 + 0.2 * xx * yy]).astype(np.float32)
    for sigma in (0.005, 0.02, 0.05):
        noisy = clean + rng.normal(0, sigma, clean.shape).astype(np.float32)
        assert noise_sigma(torch.from_numpy(noisy)) == pytest.approx(sigma, rel=0.05)
    assert noise_sigma(torch.from_numpy(clean)) < 0.002
    noisy = torch.from_numpy(clean + rng.normal(0, 0.02, clean.shape).astype(np.float32))
    assert excess_noise(noisy, torch.from_numpy(clean)) == pytest.approx(0.02, rel=0.05)
    assert excess_noise(torch.from_numpy(clean), noisy) == 0.0


def test_tone_curves_recover_a_known_gain_and_gamma_and_invert():
    rng = np.random.default_rng(2)
    proxy = rng.uniform(0.02, 1.0, size=(3, 40, 40)).astype(np.float32)
    truth = np.array([[1.1, 0.8], [0.9, 1.0], [1.0, 1.25]])
    guide = colour.apply_tone_curves(proxy, truth)
    # guide -> proxy curves from the quantiles (no correspondence needed): the inverse of the truth
    back = colour.apply_tone_curves(guide, colour.tone_curves_from_quantiles(guide, proxy))
    np.testing.assert_allclose(back, proxy, atol=2e-3)
    fitted = colour.fit_tone_curves(proxy.reshape(3, -1), guide.reshape(3, -1))
    np.testing.assert_allclose(fitted, truth, rtol=1e-3)


# ----------------------------------------------------------------------------- the guide model


def test_noise_settings_switch_patch_and_smoothing_and_scale_the_curvature_weight():
    p = WarpParams(mode="coherent", noise_reference=0.01, lambda_flow=2.0)
    assert noise_settings(0.0, p) == (p.patch, 0.0, 0.0)
    assert noise_settings(0.005, p) == (p.patch, 0.0, pytest.approx(0.5))  # 2 * (0.005 / 0.01)^2
    assert noise_settings(0.02, p) == (p.noisy_patch, p.descriptor_sigma, 2.0)
    assert blur_options(WarpParams(mode="coherent", max_guide_blur=2.0)) == [0.0, 1.0, 2.0]
    assert blur_options(WarpParams(mode="coherent", max_guide_blur=1.5)) == [0.0, 1.0, 1.5]


@pytest.mark.parametrize("name, blur, toned, noisy", [
    ("flip", {0.0}, False, False), ("blur 2", {2.0}, False, False), ("gamma 0.8", {0.0}, True, False),
    ("colour cast", {0.0}, True, False), ("affine 1.2x", {0.0, 1.0}, False, False), ("blur 1 + noise 0.02", None, False, True),
])
def test_guide_model_reads_blur_tone_and_noise_of_known_answer_guides(cave_crop, name, blur, toned, noisy):
    """The zoomed crop's quantiles differ from the proxy's (a spurious tone change); its tone curves
    must lose against the untoned guide; its bilinear 1.2x zoom softens it by up to about a pixel. A noisy guide is matched as noisy (its blur is not asserted:
    smoothing the noisy guide absorbs part of it)."""
    hsi, rgb = cave_crop
    case = known_answers.make_case(name, hsi, VISIBLE_31, seed=0)
    p = WarpParams(mode="coherent")
    model = guide_model(case.guide_rgb, rgb, common_intensity_scale(rgb, case.guide_rgb), p, torch.device("cpu"))
    assert (model.tone_curves is not None) == toned, model
    assert (model.patch == p.noisy_patch) == noisy and (model.sigma > 0) == noisy, model
    if blur is not None:
        assert model.blur in blur, model
    assert guide_model(case.guide_rgb, rgb, 1.0, WarpParams(mode="paper"), torch.device("cpu")) == GuideModel(0.0, 3, 0.0, 0.0, 0.0, None)


# ----------------------------------------------------------------------------- known answers at 64 px

#: The issue-18 acceptance thresholds (HSI PSNR dB, SAM deg, median EPE px) for the 128 px benchmark,
#: asserted here at 64 px on one scene, where both modes score lower (less context per pixel).
ACCEPTANCE_64 = {
    "gain 1.1": (38.0, 2.5, 0.5), "gamma 0.8": (38.0, 2.5, 0.5), "colour cast": (38.0, 2.5, 0.5), "noise 0.02": (38.0, 2.5, 0.5),
    "blur 1 + noise 0.02": (36.0, 3.0, 0.5), "blur 2 + noise 0.02": (36.0, 3.0, 0.5),
    "elastic 6 px + blur 1 + noise 0.02": (34.0, 4.0, 1.0), "flip": (40.0, 90.0, 90.0), "mosaic 4x4": (40.0, 90.0, 90.0),
}


@pytest.fixture(scope="module")
def known_answer_scores(cave_crop):
    """Scores of both modes on the acceptance cases of the 64 px crop."""
    hsi, rgb = cave_crop
    scores = {}
    for name in ACCEPTANCE_64:
        case = known_answers.make_case(name, hsi, VISIBLE_31, seed=0)
        scores[name] = {mode: known_answers.score(spectral_warp(hsi, rgb, case.guide_rgb, mode=mode, threads=1), case)
                        for mode in ("paper", "coherent")}
    return scores


@pytest.mark.parametrize("name", list(ACCEPTANCE_64))
def test_coherent_mode_meets_the_fidelity_thresholds(known_answer_scores, name):
    psnr_min, sam_max, epe_max = ACCEPTANCE_64[name]
    ours = known_answer_scores[name]["coherent"]
    assert ours["hsi_psnr"] >= psnr_min and ours["sam"] <= sam_max and ours["epe_median"] <= epe_max, ours


@pytest.mark.parametrize("name", list(ACCEPTANCE_64))
def test_coherent_mode_is_never_much_worse_than_the_paper_mode(known_answer_scores, name):
    paper, ours = known_answer_scores[name]["paper"], known_answer_scores[name]["coherent"]
    assert ours["hsi_psnr"] >= paper["hsi_psnr"] - 0.5, (paper, ours)


@pytest.mark.parametrize("name", ["gamma 0.8", "noise 0.02", "blur 2 + noise 0.02"])
def test_the_paper_mode_fails_where_the_coherent_mode_was_needed(known_answer_scores, name):
    """The failure issue 18 reported, kept visible: the paper mode moves spectra (median EPE > 2 px)
    to copy a tone change or noise."""
    assert known_answer_scores[name]["paper"]["epe_median"] > 2.0, known_answer_scores[name]["paper"]
