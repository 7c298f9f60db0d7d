"""Statistics of the evaluation: 95% intervals of means and paired comparisons of two methods.

Two sources of noise sit behind every number of a HIR-ALIGN run (docs/statistics.md):

* the **test images**: another set of target images would give other means;
* the **training randomness**: degradation draws, guides, warp sampling and finetuning depend on the
  seed, so another seed (a *replicate*, ``hiralign run --replicates N``) gives another model.

The intervals here (all from :mod:`scipy.stats`):

* :func:`t_interval` -- a Student-t interval of the mean of replicate means (training randomness);
* :func:`bootstrap_interval` -- a bias-corrected and accelerated (BCa) bootstrap interval of the mean over
  images (test-set noise), ``scipy.stats.bootstrap``;
* :func:`paired_difference` -- method minus baseline on the SAME images of the SAME replicates. The
  differences of one image are averaged over replicates and the images are resampled (so an image's
  replicates move together: a cluster bootstrap); the p-value is the Wilcoxon signed-rank test of
  those per-image differences (``scipy.stats.wilcoxon``). With two or more replicates, the t interval
  of the per-replicate mean differences is reported beside it.

:func:`verdict` calls a difference **better** or **worse** only when every interval available
excludes zero on the same side (images, and replicates when there are several) and the Wilcoxon
p-value is below 0.05; otherwise it is **not distinguishable** at 95%. (With fewer than six images
the exact Wilcoxon test cannot reach 0.05: a verdict needs at least six paired images.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

LEVEL = 0.95
#: Bootstrap resamples (scipy's default).
N_RESAMPLES = 9999
BETTER, WORSE, NOT_DISTINGUISHABLE = "better", "worse", "not distinguishable"


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided interval; ``low`` / ``high`` are NaN when one value cannot give one."""

    mean: float
    low: float
    high: float
    n: int
    over: str  # what the interval is over, e.g. "3 replicates (t)" or "8 images (bootstrap)"


def _values(values: Sequence[float], what: str) -> np.ndarray:
    values = np.asarray(values, np.float64).ravel()
    if values.size == 0:
        raise ValueError(f"no {what} to summarise")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{what} hold NaN or infinite values: {values.tolist()}")
    return values


def _constant(values: np.ndarray) -> bool:
    """All values equal up to rounding (a constant shift computed in floating point)."""
    return bool(np.ptp(values) <= 1e-12 * max(1.0, float(np.abs(values).max())))


def t_interval(values: Sequence[float], level: float = LEVEL, what: str = "replicates") -> Interval:
    """Mean and two-sided Student-t ``level`` interval of ``values`` (``scipy.stats.t``)."""
    from scipy import stats

    values = _values(values, what)
    mean, n = float(values.mean()), len(values)
    if n < 2:
        return Interval(mean, float("nan"), float("nan"), n, f"1 {what.rstrip('s')} (no interval)")
    if _constant(values):  # every value agrees: the interval is the value itself
        return Interval(mean, mean, mean, n, f"{n} {what} (t)")
    low, high = stats.t.interval(level, n - 1, loc=mean, scale=stats.sem(values))
    return Interval(mean, float(low), float(high), n, f"{n} {what} (t)")


def bootstrap_interval(values: Sequence[float], level: float = LEVEL, seed: int = 0, n_resamples: int = N_RESAMPLES,
                       what: str = "images") -> Interval:
    """Mean and BCa bootstrap ``level`` interval of the mean of ``values`` (``scipy.stats.bootstrap``)."""
    from scipy import stats

    values = _values(values, what)
    mean, n = float(values.mean()), len(values)
    if n < 2:
        return Interval(mean, float("nan"), float("nan"), n, f"1 {what.rstrip('s')} (no interval)")
    if _constant(values):  # a degenerate bootstrap distribution: the interval is the value itself
        return Interval(mean, mean, mean, n, f"{n} {what} (bootstrap)")
    result = stats.bootstrap((values,), np.mean, confidence_level=level, n_resamples=n_resamples, method="BCa",
                             random_state=np.random.default_rng(seed))
    low, high = result.confidence_interval
    if not (np.isfinite(low) and np.isfinite(high)):  # BCa undefined (e.g. one outlier among ties): percentile
        low, high = stats.bootstrap((values,), np.mean, confidence_level=level, n_resamples=n_resamples,
                                    method="percentile", random_state=np.random.default_rng(seed)).confidence_interval
    return Interval(mean, float(low), float(high), n, f"{n} {what} (bootstrap)")


def wilcoxon_p(differences: Sequence[float]) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test that ``differences`` are centred on zero
    (``scipy.stats.wilcoxon``); 1.0 when every difference is zero, NaN for fewer than two values."""
    from scipy import stats

    d = _values(differences, "differences")
    if len(d) < 2:
        return float("nan")
    if np.all(d == 0):
        return 1.0
    return float(stats.wilcoxon(d).pvalue)


@dataclass(frozen=True)
class PairedDifference:
    """Method minus baseline, paired over images and replicates (module docstring)."""

    mean: float
    low: float  # bootstrap interval over images
    high: float
    p_value: float  # Wilcoxon signed-rank over images
    replicate_low: float  # t interval over replicates (NaN with one replicate)
    replicate_high: float
    n_images: int
    n_replicates: int
    verdict: str


def paired_difference(method: np.ndarray, baseline: np.ndarray, higher_is_better: bool = True, level: float = LEVEL,
                      seed: int = 0) -> PairedDifference:
    """Compare two methods scored on the same images: arrays ``(replicates, images)`` (or ``(images,)``)."""
    method, baseline = np.atleast_2d(np.asarray(method, np.float64)), np.atleast_2d(np.asarray(baseline, np.float64))
    if method.shape != baseline.shape:
        raise ValueError(f"paired scores need equal shapes (replicates, images); got {method.shape} and {baseline.shape}")
    d = method - baseline
    per_image = _values(d.mean(axis=0), "paired differences")
    images = bootstrap_interval(per_image, level, seed)
    replicates = t_interval(d.mean(axis=1), level)
    return PairedDifference(images.mean, images.low, images.high, wilcoxon_p(per_image), replicates.low,
                            replicates.high, d.shape[1], d.shape[0],
                            verdict([(images.low, images.high), (replicates.low, replicates.high)], higher_is_better,
                                    wilcoxon_p(per_image), level))


def verdict(intervals: Sequence[tuple[float, float]], higher_is_better: bool = True, p_value: float | None = None,
            level: float = LEVEL) -> str:
    """``better`` / ``worse`` when every finite interval excludes zero on the same side (and the
    p-value, when given and finite, is below ``1 - level``), else ``not distinguishable``; an
    improvement is an increase (a decrease when not ``higher_is_better``)."""
    finite = [(lo, hi) for lo, hi in intervals if np.isfinite(lo) and np.isfinite(hi)]
    if not finite or (p_value is not None and np.isfinite(p_value) and p_value >= 1 - level):
        return NOT_DISTINGUISHABLE
    if all(lo > 0 for lo, _ in finite):
        return BETTER if higher_is_better else WORSE
    if all(hi < 0 for _, hi in finite):
        return WORSE if higher_is_better else BETTER
    return NOT_DISTINGUISHABLE
