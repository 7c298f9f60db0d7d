"""hiralign.statistics against scipy.stats, on data with known answers, and the evaluation tables built on it."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from hiralign import evaluate as ev
from hiralign import statistics as st


def test_t_interval_is_scipys_and_exact_for_constants():
    values = [0.3, -0.1, 0.5, 0.2]
    got = st.t_interval(values)
    ref = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    assert got.mean == pytest.approx(np.mean(values)) and (got.low, got.high) == pytest.approx(ref)
    assert got.n == 4 and got.over == "4 replicates (t)"
    const = st.t_interval([0.25, 0.25, 0.25])
    assert (const.mean, const.low, const.high) == (0.25, 0.25, 0.25)
    one = st.t_interval([1.0])
    assert one.mean == 1.0 and np.isnan(one.low) and np.isnan(one.high)


def test_bootstrap_interval_is_scipys_bca_with_the_same_seed():
    values = np.random.default_rng(1).normal(2.0, 1.0, 12)
    got = st.bootstrap_interval(values, seed=5)
    ref = stats.bootstrap((values,), np.mean, confidence_level=0.95, n_resamples=st.N_RESAMPLES, method="BCa",
                          random_state=np.random.default_rng(5)).confidence_interval
    assert (got.low, got.high) == pytest.approx((ref.low, ref.high)) and got.low < got.mean < got.high
    assert st.bootstrap_interval(values, seed=5) == got  # seeded: the same interval every time


def test_wilcoxon_p_is_scipys_and_one_for_identical_scores():
    d = np.array([0.4, -0.1, 0.3, 0.2, 0.5, 0.35, -0.05, 0.25])
    assert st.wilcoxon_p(d) == pytest.approx(stats.wilcoxon(d).pvalue)
    assert st.wilcoxon_p(np.zeros(6)) == 1.0 and np.isnan(st.wilcoxon_p([0.3]))


def test_identical_methods_give_an_interval_holding_zero_and_a_large_p():
    rng = np.random.default_rng(0)
    base = rng.normal(30.0, 2.0, (3, 10))
    same = st.paired_difference(base, base)
    assert (same.mean, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert same.verdict == st.NOT_DISTINGUISHABLE
    noisy = st.paired_difference(base + rng.normal(0.0, 0.2, base.shape), base)  # same method, another draw
    assert noisy.low < 0 < noisy.high and noisy.p_value > 0.05 and noisy.verdict == st.NOT_DISTINGUISHABLE


def test_a_constant_shift_gives_an_interval_equal_to_the_shift():
    base = np.random.default_rng(2).normal(30.0, 2.0, (3, 8))
    shifted = st.paired_difference(base + 0.5, base)
    assert shifted.mean == pytest.approx(0.5) and (shifted.low, shifted.high) == pytest.approx((0.5, 0.5))
    assert (shifted.replicate_low, shifted.replicate_high) == pytest.approx((0.5, 0.5))
    assert shifted.p_value == pytest.approx(stats.wilcoxon(np.full(8, 0.5)).pvalue) and shifted.verdict == st.BETTER
    assert st.paired_difference(base + 0.5, base, higher_is_better=False).verdict == st.WORSE  # e.g. SAM went up
    assert (shifted.n_images, shifted.n_replicates) == (8, 3)


def test_the_verdict_needs_every_interval_and_the_p_value():
    assert st.verdict([(0.1, 0.3)]) == st.BETTER and st.verdict([(-0.3, -0.1)]) == st.WORSE
    assert st.verdict([(0.1, 0.3), (-0.2, 0.4)]) == st.NOT_DISTINGUISHABLE  # replicates disagree
    assert st.verdict([(0.1, 0.3), (float("nan"), float("nan"))]) == st.BETTER  # one replicate: images only
    assert st.verdict([(0.1, 0.3)], p_value=0.2) == st.NOT_DISTINGUISHABLE
    assert st.verdict([(-0.3, -0.1)], higher_is_better=False) == st.BETTER
    with pytest.raises(ValueError, match="NaN"):
        st.t_interval([1.0, float("nan")])
    with pytest.raises(ValueError, match="equal shapes"):
        st.paired_difference(np.zeros((2, 3)), np.zeros((3, 2)))


def _records(shift: float, replicates: int = 3, images: int = 8) -> list[dict]:
    """Per-image scores of source-only and adapted (= source-only + ``shift`` dB, SAM - 1 deg)."""
    rng = np.random.default_rng(7)
    out = []
    for k in range(replicates):
        for i in range(images):
            split = "observed" if i < images // 2 else "unobserved"
            base = {"psnr": 30.0 + rng.normal(), "ssim": 0.8 + 0.01 * rng.normal(), "sam": 5.0 + rng.normal()}
            out.append({"method": "source-only", "split": split, "image": f"img{i}", "replicate": k, **base})
            out.append({"method": "adapted", "split": split, "image": f"img{i}", "replicate": k,
                        "psnr": base["psnr"] + shift, "ssim": base["ssim"], "sam": base["sam"] - 1.0})
    return out


def test_summary_intervals_are_over_replicates_or_over_images():
    records = _records(0.5)
    rows = ev.summarize(records)
    adapted = next(r for r in rows if r["method"] == "adapted" and r["split"] == "unobserved")
    means = [np.mean([r["psnr"] for r in records if r["method"] == "adapted" and r["split"] == "unobserved"
                      and r["replicate"] == k]) for k in range(3)]
    ref = stats.t.interval(0.95, 2, loc=np.mean(means), scale=stats.sem(means))
    assert adapted["replicates"] == 3 and adapted["n"] == 4 and adapted["interval"] == "3 replicates (t)"
    assert (adapted["psnr_low"], adapted["psnr_high"]) == pytest.approx(ref)
    assert adapted["d_psnr"] == pytest.approx(0.5)
    single = ev.summarize([r for r in records if r["replicate"] == 0])
    row = next(r for r in single if r["method"] == "adapted" and r["split"] == "total")
    assert row["replicates"] == 1 and row["interval"] == "8 images (bootstrap)" and row["psnr_low"] < row["psnr"]


def test_paired_comparisons_of_the_paper_pair_images_and_replicates():
    rows = ev.paired_comparisons(_records(0.5), seed=0)
    assert {r["comparison"] for r in rows} == {"adapted - source-only"}  # no proxy-only run: that pair is left out
    psnr = next(r for r in rows if r["split"] == "total" and r["metric"] == "psnr")
    assert psnr["difference"] == pytest.approx(0.5) and (psnr["difference_low"], psnr["difference_high"]) == pytest.approx((0.5, 0.5))
    assert psnr["n"] == 8 and psnr["replicates"] == 3 and psnr["verdict"] == "better"
    sam = next(r for r in rows if r["split"] == "total" and r["metric"] == "sam")
    assert sam["difference"] == pytest.approx(-1.0) and sam["verdict"] == "better"  # lower SAM is better
    ssim = next(r for r in rows if r["split"] == "total" and r["metric"] == "ssim")
    assert ssim["difference"] == 0.0 and ssim["p_wilcoxon"] == 1.0 and ssim["verdict"] == "not distinguishable"


def test_paired_scores_use_only_images_every_replicate_scored():
    records = [r for r in _records(0.5) if not (r["replicate"] == 1 and r["image"] == "img0" and r["method"] == "adapted")]
    a, b = ev.paired_scores(records, "adapted", "source-only", "total", "psnr")
    assert a.shape == b.shape == (3, 7) and np.allclose(a - b, 0.5)
