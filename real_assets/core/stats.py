"""Intervals across seeds and the paired bootstrap of the strategy comparison.

- `mean_interval`: mean of per-seed values with a Student-t 95% interval (none from one seed).
- `paired_bootstrap`: the difference of two strategies on the same seeds and the same held-out prompts,
  resampling seeds and prompts (both with replacement, independently: a two-way bootstrap), so the interval
  carries both the training-seed noise and the finite held-out set. The p-value is the two-sided
  bootstrap p-value of "no difference": 2 x the smaller tail share of the resampled differences beyond 0.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean and t-interval of independent per-seed values; NaN bounds below two values."""
    clean = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if clean.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(clean.mean())
    if clean.size < 2:
        return Interval(mean, math.nan, math.nan, 1)
    from scipy import stats as scipy_stats  # seconds to import; only the comparison needs it

    half = float(
        scipy_stats.t.ppf((1 + confidence) / 2, clean.size - 1) * clean.std(ddof=1) / math.sqrt(clean.size)
    )
    return Interval(mean, mean - half, mean + half, int(clean.size))


@dataclass(frozen=True)
class PairedDifference:
    diff: float
    low: float
    high: float
    p_value: float
    seeds: int
    units: int


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> PairedDifference:
    """Mean of `a - b` over a (seeds, units) grid, with a two-way bootstrap interval and p-value.

    `a` and `b` hold one value per (seed, held-out unit), aligned: row i is the same seed in both, column j
    the same held-out prompt. NaN cells (a unit not scored under one seed) are left out of each mean."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(
            f"paired_bootstrap needs two aligned (seeds, units) grids, got {a.shape} and {b.shape}"
        )
    diff = a - b
    n_seeds, n_units = diff.shape
    if n_seeds == 0 or n_units == 0 or np.isnan(diff).all():
        return PairedDifference(math.nan, math.nan, math.nan, math.nan, n_seeds, n_units)
    rng = np.random.default_rng(seed)
    seed_draws = rng.integers(0, n_seeds, size=(resamples, n_seeds))
    unit_draws = rng.integers(0, n_units, size=(resamples, n_units))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a draw of only missing cells: dropped below
        boot = np.array([np.nanmean(diff[np.ix_(s, u)]) for s, u in zip(seed_draws, unit_draws)], dtype=float)
    boot = boot[~np.isnan(boot)]
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    tail = min(float(np.mean(boot <= 0)), float(np.mean(boot >= 0)))
    p_value = min(1.0, max(2 * tail, 1 / (len(boot) + 1)))
    return PairedDifference(float(np.nanmean(diff)), float(low), float(high), p_value, n_seeds, n_units)
