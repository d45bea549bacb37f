"""Intervals across seeds, the two-way paired bootstrap, and the comparison built from them."""

import math

import numpy as np
import pandas as pd
import pytest

from real_assets.core.report import display_table, smallest_budget_within, summarize_strategies
from real_assets.core.stats import ItemGrid, bootstrap_mean, paired_bootstrap


def _grid(values_by_seed, prompts_of=None) -> ItemGrid:
    """ItemGrid from per-seed lists of values; item i belongs to prompt `prompts_of(i)` (default: its own)."""
    prompts_of = prompts_of or (lambda i: i)
    units = sorted({prompts_of(i) for values in values_by_seed for i in range(len(values))})
    sums, counts = np.zeros((len(values_by_seed), len(units))), np.zeros((len(values_by_seed), len(units)))
    for s, values in enumerate(values_by_seed):
        for i, value in enumerate(values):
            sums[s, units.index(prompts_of(i))] += value
            counts[s, units.index(prompts_of(i))] += 1
    return ItemGrid(sums, counts)


def test_a_proportions_interval_stays_within_0_and_1():
    # Two seeds of 0/1 outcomes, 1.0 and 0.8: the t-interval across seeds (t = 12.7) was [-0.37, 2.17].
    grid = _grid([[1.0] * 20, [1.0] * 16 + [0.0] * 4])
    interval = bootstrap_mean(grid, resamples=500)
    assert interval.mean == pytest.approx(0.9)
    assert 0 <= interval.low < 0.9 < interval.high <= 1
    assert (interval.seeds, interval.units) == (2, 20)
    # all correct: the interval is the point, not a band past 1
    perfect = bootstrap_mean(_grid([[1.0] * 10, [1.0] * 10]), resamples=200)
    assert (perfect.mean, perfect.low, perfect.high) == (1.0, 1.0, 1.0)


def test_the_level_is_each_seeds_item_mean_averaged_over_seeds():
    # Prompts hold different numbers of items (i // 3): the figure weighs items like each seed's own
    # report does, and one seed still gets an interval from its prompts.
    seed0, seed1 = [1, 1, 0, 1, 0, 1, 1], [0, 1, 1, 1, 1, 1, 0]
    interval = bootstrap_mean(_grid([seed0, seed1], lambda i: i // 3), resamples=300)
    assert interval.mean == pytest.approx((np.mean(seed0) + np.mean(seed1)) / 2)
    one = bootstrap_mean(_grid([seed0], lambda i: i // 3), resamples=300)
    assert one.mean == pytest.approx(np.mean(seed0)) and one.low < one.mean < one.high
    empty = bootstrap_mean(ItemGrid(np.zeros((2, 0)), np.zeros((2, 0))))
    assert math.isnan(empty.mean) and math.isnan(empty.low)
    with pytest.raises(ValueError, match="one shape"):
        ItemGrid(np.zeros((2, 3)), np.zeros((3, 2)))


def test_paired_bootstrap_finds_a_clear_difference_and_none_where_there_is_none():
    rng = np.random.default_rng(0)
    base = rng.random((3, 50))
    better = base + 0.2 + rng.normal(0, 0.01, size=base.shape)
    result = paired_bootstrap(better, base, resamples=500)
    assert result.diff == pytest.approx(0.2, abs=0.01)
    assert 0.15 < result.low < result.diff < result.high < 0.25
    assert result.p_value < 0.01
    assert (result.seeds, result.units) == (3, 50)
    same = paired_bootstrap(base, base, resamples=200)
    assert same.diff == 0 and same.low == 0 and same.high == 0 and same.p_value == 1.0
    noisy = paired_bootstrap(base, rng.permutation(base.ravel()).reshape(base.shape), resamples=500)
    assert noisy.low < 0 < noisy.high and noisy.p_value > 0.05


def test_paired_bootstrap_refuses_unaligned_grids_and_skips_missing_cells():
    with pytest.raises(ValueError, match="aligned"):
        paired_bootstrap(np.zeros((2, 3)), np.zeros((3, 2)))
    a = np.array([[1.0, np.nan], [1.0, 1.0]])
    assert paired_bootstrap(a, np.zeros_like(a), resamples=50).diff == 1.0


def _outcomes(strategy, seed, values):
    return pd.DataFrame(
        {
            "strategy": strategy,
            "seed": seed,
            "metric": "preference",
            "prompt_id": [f"p{i}" for i in range(len(values))],
            "value": values,
        }
    )


def _kept(strategy, seed, cosines, errors):
    frame = pd.DataFrame({"prompt_id": [f"t{i}" for i in range(len(cosines))]})
    return pd.concat(
        [
            frame.assign(strategy=strategy, seed=seed, metric="cosine", value=cosines),
            frame.assign(strategy=strategy, seed=seed, metric="label_error", value=errors),
        ]
    )


def test_summary_has_mean_interval_and_paired_difference_for_every_strategy():
    per_seed = pd.DataFrame(
        [
            {
                "strategy": s,
                "seed": seed,
                "pairs": 10,
                "mean_cosine": 0.1,
                "label_error_rate": err,
                "preference_accuracy": acc,
                "reward_margin": 1.0,
                "win_rate": None,
            }
            for s, seed, err, acc in [
                ("easy", 0, 0.1, 0.875),
                ("easy", 1, 0.0, 0.75),
                ("random", 0, 0.1, 0.5),
                ("random", 1, 0.1, 0.6),
            ]
        ]
    )
    items = pd.concat(
        [
            _outcomes("easy", 0, [1, 1, 1, 0.5] * 5),
            _outcomes("easy", 1, [1, 1, 0, 1] * 5),
            _outcomes("random", 0, [0, 1, 0, 0.5] * 5),
            _outcomes("random", 1, [1, 0, 0, 1] * 5),
            _kept("easy", 0, [0.1] * 10, [1] + [0] * 9),
            _kept("easy", 1, [0.1] * 10, [0] * 10),
        ]
    )
    table, diffs = summarize_strategies(per_seed, items, ["easy", "hard", "random"], resamples=300)
    assert list(table["strategy"]) == ["easy", "random"]
    easy, random = table.iloc[0], table.iloc[1]
    assert easy["preference_accuracy"] == pytest.approx(0.8125)  # the items' mean per seed, over seeds
    assert 0 <= easy["preference_accuracy_low"] < 0.8125 < easy["preference_accuracy_high"] <= 1
    assert easy["label_error_rate"] == pytest.approx(0.05)
    assert 0 <= easy["label_error_rate_low"] <= 0.05 <= easy["label_error_rate_high"] <= 1
    assert easy["mean_cosine"] == pytest.approx(0.1) and easy["pairs"] == 10
    # random has no kept-pair items here: the per-seed figure, without an interval
    assert random["label_error_rate"] == pytest.approx(0.1) and math.isnan(random["label_error_rate_low"])
    assert math.isnan(easy["win_rate"]) and math.isnan(easy["win_rate_low"])
    row = diffs[(diffs["strategy"] == "easy") & (diffs["metric"] == "preference_accuracy")].iloc[0]
    # easy 0.8125, random 0.4375: the difference of the two levels
    assert row["diff_vs_random"] == pytest.approx(0.375)
    assert row["diff_vs_random"] == pytest.approx(easy["preference_accuracy"] - random["preference_accuracy"])
    assert row["diff_low"] <= 0.375 <= row["diff_high"] and row["seeds"] == 2 and row["prompts"] == 20
    assert "random" not in set(diffs["strategy"])
    shown = display_table(table, diffs)
    assert shown.loc[0, "preference_accuracy"].startswith("0.812 [")
    assert shown.loc[0, "preference_accuracy - random"].startswith("+0.375 [")


def test_paired_difference_weighs_items_like_the_levels():
    # Prompt p0 holds three items, p1 one: the difference is that of the two item means per seed.
    a = _grid([[1, 1, 1, 0]], lambda i: min(i // 3, 1))
    b = _grid([[0, 0, 0, 0]], lambda i: min(i // 3, 1))
    assert paired_bootstrap(a, b, resamples=100).diff == pytest.approx(0.75)


def test_smallest_budget_within_the_interval_of_all():
    sweep = pd.DataFrame(
        {
            "strategy": ["easy"] * 4,
            "keep_fraction": [0.1, 0.25, 0.5, 1.0],
            "preference_accuracy": [0.6, 0.78, 0.81, 0.8],
        }
    )
    assert smallest_budget_within(sweep, "easy", 0.77, 0.83) == 0.25
    assert smallest_budget_within(sweep, "easy", 0.9, 0.95) is None
    assert smallest_budget_within(sweep, "easy", float("nan"), 0.9) is None
