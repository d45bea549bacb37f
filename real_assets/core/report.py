"""The strategy comparison: per-strategy means with two-way bootstrap intervals, paired differences
against `random`, the budget sweep's reading, plots (matplotlib, no display) and markdown tables."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from real_assets.core.stats import ItemGrid, bootstrap_mean, paired_bootstrap

BASELINE = "random"
SEED_METRICS = (
    "pairs",
    "mean_cosine",
    "label_error_rate",
    "preference_accuracy",
    "reward_margin",
    "win_rate",
)
"""Per (strategy, seed) figures, in the order the comparison shows them."""
ITEM_METRICS = {
    "mean_cosine": "cosine",
    "label_error_rate": "label_error",
    "preference_accuracy": "preference",
    "reward_margin": "margin",
    "win_rate": "win",
}
"""Metric -> the per-item value it averages. Kept pairs (`cosine`, `label_error`) are grouped by their
train prompt, held-out outcomes (`preference`, `margin`: per held-out pair; `win`: per sampled comparison)
by their held-out prompt; each metric's interval resamples seeds and those prompts (`core.stats`)."""
PAIRED_METRICS = ("preference_accuracy", "reward_margin", "win_rate")
"""Metrics whose difference against `random` is bootstrapped on the same seeds and held-out prompts."""
PANELS = (
    ("mean_cosine", "mean cosine of kept pairs"),
    ("label_error_rate", "label error rate (vs gold)"),
    ("preference_accuracy", "held-out preference accuracy"),
    ("win_rate", "win rate vs reference"),
)


def item_grid(items: pd.DataFrame, seeds, prompts) -> ItemGrid:
    """Per (seed, prompt): the sum and count of `items`' values (one metric of one strategy)."""
    grouped = items.groupby(["seed", "prompt_id"])["value"]

    def cells(series: pd.Series) -> np.ndarray:
        grid = series.unstack("prompt_id").reindex(index=list(seeds), columns=list(prompts))
        return grid.fillna(0).to_numpy(dtype=float)

    return ItemGrid(cells(grouped.sum()), cells(grouped.count()))


def summarize_strategies(
    per_seed: pd.DataFrame, items: pd.DataFrame, order: list[str], resamples: int = 2000
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-strategy table, differences vs `random`).

    `per_seed`: one row per (strategy, seed) with `SEED_METRICS`; `items`: (strategy, seed, metric,
    prompt_id, value), one row per item of each `ITEM_METRICS` value. The table has `pairs` (mean over
    seeds) and, per item metric, `<m>` (mean over seeds of each seed's mean over its items, the figure each
    seed reports), `<m>_low` and `<m>_high` (95% two-way bootstrap over seeds and prompts; a metric without
    items keeps the mean of its per-seed figures and no interval). The differences pair each strategy with
    `random` on the seeds both have and the same held-out prompts, under the same bootstrap draws."""
    items = items.assign(value=pd.to_numeric(items["value"], errors="coerce")).dropna(subset=["value"])
    rows = []
    for strategy in [s for s in order if s in set(per_seed["strategy"])]:
        group = per_seed[per_seed["strategy"] == strategy]
        seeds = sorted(group["seed"])
        row: dict[str, float | int | str] = {
            "strategy": strategy,
            "seeds": len(group),
            "pairs": float(pd.to_numeric(group["pairs"], errors="coerce").mean()),
        }
        for metric, item in ITEM_METRICS.items():
            own = items[
                (items["strategy"] == strategy) & (items["metric"] == item) & items["seed"].isin(seeds)
            ]
            if own.empty:
                values = pd.to_numeric(group[metric], errors="coerce")
                row |= {metric: values.mean(), f"{metric}_low": math.nan, f"{metric}_high": math.nan}
                continue
            interval = bootstrap_mean(
                item_grid(own, seeds, sorted(set(own["prompt_id"]))), resamples=resamples
            )
            row |= {metric: interval.mean, f"{metric}_low": interval.low, f"{metric}_high": interval.high}
        rows.append(row)
    table = pd.DataFrame(rows)
    diffs = []
    if BASELINE in set(per_seed["strategy"]):
        base_seeds = set(per_seed.loc[per_seed["strategy"] == BASELINE, "seed"])
        for strategy in table["strategy"]:
            seeds = sorted(base_seeds & set(per_seed.loc[per_seed["strategy"] == strategy, "seed"]))
            for metric in PAIRED_METRICS:
                pair = items[
                    (items["metric"] == ITEM_METRICS[metric])
                    & items["seed"].isin(seeds)
                    & items["strategy"].isin([strategy, BASELINE])
                ]
                prompts = sorted(set(pair["prompt_id"]))
                if strategy == BASELINE or not prompts:
                    continue
                result = paired_bootstrap(
                    item_grid(pair[pair["strategy"] == strategy], seeds, prompts),
                    item_grid(pair[pair["strategy"] == BASELINE], seeds, prompts),
                    resamples=resamples,
                )
                diffs.append(
                    {
                        "strategy": strategy,
                        "metric": metric,
                        "diff_vs_random": result.diff,
                        "diff_low": result.low,
                        "diff_high": result.high,
                        "p_value": result.p_value,
                        "seeds": result.seeds,
                        "prompts": result.units,
                    }
                )
    columns = ["strategy", "metric", "diff_vs_random", "diff_low", "diff_high", "p_value", "seeds", "prompts"]
    return table, pd.DataFrame(diffs, columns=columns)


def smallest_budget_within(sweep: pd.DataFrame, strategy: str, low: float, high: float) -> float | None:
    """The smallest keep fraction at which `strategy`'s mean preference accuracy lies in [low, high]."""
    if math.isnan(low) or math.isnan(high):
        return None
    means = sweep[sweep["strategy"] == strategy].groupby("keep_fraction")["preference_accuracy"].mean()
    within = [f for f, v in means.sort_index().items() if low <= v <= high]
    return float(within[0]) if within else None


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}f}"


def display_table(table: pd.DataFrame, diffs: pd.DataFrame) -> pd.DataFrame:
    """The comparison as people read it: `mean [low, high]` per metric, `diff [low, high] p=` vs random."""
    out = []
    for row in table.to_dict("records"):
        shown = {"strategy": row["strategy"], "seeds": row["seeds"], "pairs": _fmt(row["pairs"], 1)}
        for metric in ITEM_METRICS:
            low, high = _fmt(row[f"{metric}_low"]), _fmt(row[f"{metric}_high"])
            shown[metric] = _fmt(row[metric]) + (f" [{low}, {high}]" if low else "")
        if row.get("win_ties") == 1.0:
            shown["win_rate"] += " (all ties)"
        for metric in PAIRED_METRICS:
            match = diffs[(diffs["strategy"] == row["strategy"]) & (diffs["metric"] == metric)]
            shown[f"{metric} - random"] = "" if match.empty else _difference(match.iloc[0])
        out.append(shown)
    return pd.DataFrame(out)


def _difference(row: pd.Series) -> str:
    p_value = row["p_value"]
    p = "p<0.001" if p_value < 0.001 else f"p={p_value:.3f}"
    return f"{row['diff_vs_random']:+.3f} [{row['diff_low']:+.3f}, {row['diff_high']:+.3f}] {p}"


def with_tie_shares(table: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """The comparison with `win_ties` per strategy: the share of its win-rate comparisons that were ties
    (None without any)."""
    wins = outcomes[outcomes["metric"] == "win"]
    shares = (wins["value"] == 0.5).groupby(wins["strategy"]).mean()
    return table.assign(win_ties=[shares.get(s) for s in table["strategy"]] if len(table) else [])


def tie_note(table: pd.DataFrame) -> str | None:
    """A line saying which strategies' win rates are ties only (their policies were not told apart from
    the reference), or None."""
    if "win_ties" not in table:
        return None
    tied = [row["strategy"] for row in table.to_dict("records") if row.get("win_ties") == 1.0]
    if not tied:
        return None
    return (
        f"win_rate of {', '.join(tied)}: every comparison was a tie (tie share 1.00), so the judge did not "
        "tell the policies apart and 0.5 is no result (eval_scores samples_per_prompt, max_new_tokens)"
    )


def _colors(strategies) -> list[str]:
    return ["#2b8cbe" if s == "easy" else "#a6bddb" for s in strategies]


def comparison_plot(table: pd.DataFrame, path: Path) -> Path:
    """One bar panel per metric, one bar per strategy (mean over seeds), with its 95% bootstrap interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(9, 6))  # fits the Dagster UI's metadata dialog
    for ax, (column, title) in zip(axes.flat, PANELS):
        values = pd.to_numeric(table[column], errors="coerce")
        low = pd.to_numeric(table[f"{column}_low"], errors="coerce")
        high = pd.to_numeric(table[f"{column}_high"], errors="coerce")
        errors = [(values - low).fillna(0).clip(lower=0), (high - values).fillna(0).clip(lower=0)]
        if column in ("preference_accuracy", "win_rate"):
            ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
        ax.bar(table["strategy"], values.fillna(0), yerr=errors, capsize=4, color=_colors(table["strategy"]))
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    seeds = int(table["seeds"].max()) if len(table) else 0
    fig.suptitle(f"REAL: pair selection strategies (mean over {seeds} seed(s), 95% intervals)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def budget_plot(sweep: pd.DataFrame, all_interval: tuple[float, float, float], path: Path) -> Path:
    """Label-error rate and preference accuracy against the keep fraction, one line per strategy; the
    `all` strategy's mean and interval as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means = sweep.groupby(["strategy", "keep_fraction"])[["label_error_rate", "preference_accuracy"]].mean()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, column, title in zip(
        axes,
        ("label_error_rate", "preference_accuracy"),
        ("label error rate", "held-out preference accuracy"),
    ):
        for strategy in sorted(set(sweep["strategy"])):
            series = means.loc[strategy][column]
            ax.plot(series.index, series.values, marker="o", label=strategy)
        if column == "preference_accuracy" and not math.isnan(all_interval[0]):
            mean, low, high = all_interval
            ax.axhspan(low, high, color="grey", alpha=0.2, label="all: 95% interval")
            ax.axhline(mean, color="grey", linewidth=1)
        ax.set_xlabel("keep fraction (annotation budget)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def markdown_table(table: pd.DataFrame, digits: int = 3) -> str:
    """A DataFrame as a GitHub-style markdown table (numbers rounded), for Dagster metadata."""

    def cell(value) -> str:
        if isinstance(value, float):
            return "" if value != value else f"{value:.{digits}f}"
        return str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + " --- |" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)
