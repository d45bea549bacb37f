"""Intervals of the strategy comparison: a two-way bootstrap over seeds and items' units.

Every figure of the comparison is a mean of per-item values (a held-out pair's preference outcome or
margin, a sampled comparison's win, a kept pair's cosine or label error), grouped by seed and by unit (the
prompt the item belongs to). An `ItemGrid` holds, per (seed, unit), the sum and the count of those values.

- The figure is the mean over seeds of each seed's mean over its items (what each seed reports itself).
- `bootstrap_mean`: that figure with a 95% interval from a two-way bootstrap that resamples seeds and
  units, both with replacement and independently, so it carries both the training-seed noise and the finite
  set of prompts. A percentile interval of a mean of values in [0, 1] stays within [0, 1].
- `paired_bootstrap`: the difference of two strategies on the same seeds and the same units under the same
  draws (cells that either lacks are left out of both). The p-value is the two-sided bootstrap p-value of
  "no difference": 2 x the smaller tail share of the resampled differences beyond 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ItemGrid:
    """Per (seed, unit): the sum and the count of one figure's per-item values (count 0: no item)."""

    sums: np.ndarray
    counts: np.ndarray

    def __post_init__(self) -> None:
        if self.sums.shape != self.counts.shape or self.sums.ndim != 2:
            raise ValueError(
                f"an ItemGrid needs (seeds, units) sums and counts of one shape, got {self.sums.shape} and "
                f"{self.counts.shape}"
            )

    @classmethod
    def of_means(cls, means: np.ndarray) -> ItemGrid:
        """One item per cell with a value; NaN cells have none."""
        means = np.asarray(means, dtype=float)
        if means.ndim != 2:
            raise ValueError(f"a grid of means needs (seeds, units), got shape {means.shape}")
        present = ~np.isnan(means)
        return cls(np.where(present, means, 0.0), present.astype(float))

    @property
    def shape(self) -> tuple[int, int]:
        return self.sums.shape


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    seeds: int
    units: int


@dataclass(frozen=True)
class PairedDifference:
    diff: float
    low: float
    high: float
    p_value: float
    seeds: int
    units: int


_CHUNK = 250
"""Bootstrap draws weighed at a time: a draw's unit weights are one row as long as the units."""


def _multiplicities(rng: np.random.Generator, n: int, draws: int) -> np.ndarray:
    """(draws, n): how often each of n indices is picked in n picks with replacement, per draw."""
    picks = rng.integers(0, n, size=(draws, n)) + n * np.arange(draws)[:, None]
    return np.bincount(picks.ravel(), minlength=draws * n).reshape(draws, n).astype(float)


def _statistic(grids: list[ItemGrid], seed_weights: np.ndarray, unit_weights: np.ndarray) -> np.ndarray:
    """Per draw (a row of both weights): a grid's mean over seeds of each seed's mean over its items, or
    for two grids the first minus the second over the seeds both have."""
    with np.errstate(invalid="ignore", divide="ignore"):
        per_seed = [(unit_weights @ g.sums.T) / (unit_weights @ g.counts.T) for g in grids]  # (draws, seeds)
        present = np.logical_and.reduce([~np.isnan(values) for values in per_seed])
        weights = seed_weights * present
        means = [
            (np.where(present, values, 0.0) * weights).sum(axis=1) / weights.sum(axis=1)
            for values in per_seed
        ]
    return means[0] - means[1] if len(means) == 2 else means[0]


def _bootstrap(grids: list[ItemGrid], resamples: int, seed: int) -> tuple[float, np.ndarray]:
    """The statistic on the data, and on `resamples` two-way bootstrap draws (draws without an item left
    out)."""
    n_seeds, n_units = grids[0].shape
    estimate = float(_statistic(grids, np.ones((1, n_seeds)), np.ones((1, n_units)))[0])
    rng = np.random.default_rng(seed)
    seed_weights = _multiplicities(rng, n_seeds, resamples)
    boot = np.concatenate(
        [
            _statistic(grids, seed_weights[start : start + _CHUNK], _multiplicities(rng, n_units, size))
            for start in range(0, resamples, _CHUNK)
            for size in [min(_CHUNK, resamples - start)]
        ]
    )
    return estimate, boot[~np.isnan(boot)]


def _empty(grid: ItemGrid) -> bool:
    return 0 in grid.shape or not grid.counts.any()


def bootstrap_mean(
    grid: ItemGrid, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> Interval:
    """A figure's mean over seeds of per-seed item means, with a two-way bootstrap percentile interval over
    seeds and units (NaN throughout without an item)."""
    n_seeds, n_units = grid.shape
    if _empty(grid):
        return Interval(math.nan, math.nan, math.nan, n_seeds, n_units)
    estimate, boot = _bootstrap([grid], resamples, seed)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    return Interval(estimate, float(low), float(high), n_seeds, n_units)


def paired_bootstrap(
    a: ItemGrid | np.ndarray,
    b: ItemGrid | np.ndarray,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedDifference:
    """Difference of two aligned (seeds, units) grids (`a` - `b`) with a two-way bootstrap interval and
    p-value. Row i is the same seed in both, column j the same unit; a plain array is a grid of cell means
    (NaN: no value). A cell that one grid lacks is left out of both."""
    a = a if isinstance(a, ItemGrid) else ItemGrid.of_means(a)
    b = b if isinstance(b, ItemGrid) else ItemGrid.of_means(b)
    if a.shape != b.shape:
        raise ValueError(
            f"paired_bootstrap needs two aligned (seeds, units) grids, got {a.shape} and {b.shape}"
        )
    both = (a.counts > 0) & (b.counts > 0)
    a = ItemGrid(np.where(both, a.sums, 0.0), np.where(both, a.counts, 0.0))
    b = ItemGrid(np.where(both, b.sums, 0.0), np.where(both, b.counts, 0.0))
    n_seeds, n_units = a.shape
    if _empty(a):
        return PairedDifference(math.nan, math.nan, math.nan, math.nan, n_seeds, n_units)
    estimate, boot = _bootstrap([a, b], resamples, seed)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    tail = min(float(np.mean(boot <= 0)), float(np.mean(boot >= 0)))
    p_value = min(1.0, max(2 * tail, 1 / (len(boot) + 1)))
    return PairedDifference(estimate, float(low), float(high), p_value, n_seeds, n_units)
