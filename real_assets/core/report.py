"""The strategy comparison as a plot (matplotlib, no display) and as a markdown table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

PANELS = (
    ("mean_cosine", "mean cosine of kept pairs"),
    ("label_error_rate", "label error rate (vs gold)"),
    ("preference_accuracy", "held-out preference accuracy"),
    ("win_rate", "win rate vs reference (95% CI)"),
)


def comparison_plot(table: pd.DataFrame, path: Path) -> Path:
    """One bar panel per metric, one bar per strategy; the win-rate panel has its interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(8, 6))  # fits the Dagster UI's metadata dialog
    for ax, (column, title) in zip(axes.flat, PANELS):
        values = pd.to_numeric(table[column], errors="coerce")
        errors = None
        if column == "win_rate" and values.notna().any():
            low = pd.to_numeric(table["win_rate_ci_low"], errors="coerce")
            high = pd.to_numeric(table["win_rate_ci_high"], errors="coerce")
            errors = [(values - low).fillna(0), (high - values).fillna(0)]
            ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
        ax.bar(
            table["strategy"],
            values.fillna(0),
            yerr=errors,
            capsize=4,
            color=["#2b8cbe" if s == "easy" else "#a6bddb" for s in table["strategy"]],
        )
        ax.set_title(title, fontsize=10)
    fig.suptitle("REAL: pair selection strategies")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
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
