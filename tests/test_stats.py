"""Intervals across seeds, the two-way paired bootstrap, and the comparison built from them."""

import math

import numpy as np
import pandas as pd
import pytest

from real_assets.core.report import display_table, smallest_budget_within, summarize_strategies
from real_assets.core.stats import mean_interval, paired_bootstrap


def test_mean_interval_is_the_student_t_interval():
    interval = mean_interval([1.0, 2.0, 3.0])
    # mean 2, sd 1, n 3: t(0.975, 2) = 4.3027 -> half width 4.3027 / sqrt(3) = 2.4841
    assert interval.mean == 2.0 and interval.n == 3
    assert interval.low == pytest.approx(2 - 2.4841, abs=1e-3)
    assert interval.high == pytest.approx(2 + 2.4841, abs=1e-3)
    one = mean_interval([0.7])
    assert one.mean == 0.7 and math.isnan(one.low) and math.isnan(one.high)
    assert math.isnan(mean_interval([None, float("nan")]).mean)


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
                ("easy", 0, 0.05, 0.9),
                ("easy", 1, 0.07, 0.8),
                ("random", 0, 0.1, 0.5),
                ("random", 1, 0.1, 0.6),
            ]
        ]
    )
    outcomes = pd.concat(
        [
            _outcomes("easy", 0, [1, 1, 1, 0.5] * 5),
            _outcomes("easy", 1, [1, 1, 0, 1] * 5),
            _outcomes("random", 0, [0, 1, 0, 0.5] * 5),
            _outcomes("random", 1, [1, 0, 0, 1] * 5),
        ]
    )
    table, diffs = summarize_strategies(per_seed, outcomes, ["easy", "hard", "random"], resamples=300)
    assert list(table["strategy"]) == ["easy", "random"]
    easy = table.iloc[0]
    assert easy["preference_accuracy"] == pytest.approx(0.85)
    assert easy["preference_accuracy_low"] < 0.85 < easy["preference_accuracy_high"]
    assert easy["label_error_rate"] == pytest.approx(0.06)
    row = diffs[(diffs["strategy"] == "easy") & (diffs["metric"] == "preference_accuracy")].iloc[0]
    # easy mean over the grid 0.8125, random 0.4375
    assert row["diff_vs_random"] == pytest.approx(0.375)
    assert row["diff_low"] <= 0.375 <= row["diff_high"] and row["seeds"] == 2 and row["prompts"] == 20
    assert "random" not in set(diffs["strategy"])
    shown = display_table(table, diffs)
    assert shown.loc[0, "preference_accuracy"].startswith("0.850 [")
    assert shown.loc[0, "preference_accuracy - random"].startswith("+0.375 [")


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
