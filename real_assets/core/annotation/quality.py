"""Agreement and label noise per strategy and round, from the annotations themselves.

With two annotators per double-labelled task, each flipping the true label independently with probability
e, they agree with probability (1 - e)^2 + e^2 = 1 - 2e(1 - e); so e = (1 - sqrt(2A - 1)) / 2 for an observed
agreement A >= 0.5 (and e = 0.5 below: the labels carry no information). Where gold quality is known, the
true error rate is the share of annotations that picked the answer of lower gold (gold ties left out);
`gold_ties` counts the annotations of pairs whose answers tie on gold, where a label can only be a coin flip
(a policy whose candidates all tie gives labels that carry nothing, whatever the agreement says).
"""

from __future__ import annotations

import math

import pandas as pd

ALL_ROUNDS = -1
"""The `round` of the rows that pool every round of a strategy."""


def flip_rate_from_agreement(agreement: float | None) -> float | None:
    """The symmetric flip rate that explains an agreement between two annotators."""
    if agreement is None or math.isnan(agreement):
        return None
    if agreement <= 0.5:
        return 0.5
    return (1 - math.sqrt(2 * agreement - 1)) / 2


def annotation_quality(annotations: pd.DataFrame) -> pd.DataFrame:
    """Per strategy and round (and per strategy over every round, `round` = ALL_ROUNDS): tasks, annotations,
    double-labelled tasks, agreement, estimated flip rate, the true error rate where gold is known, and the
    annotations of pairs that tie on gold.
    `annotations`: one row per current annotation with strategy, round, request_id, annotator, chosen_id,
    and `gold_gap` (gold of chosen minus rejected, NaN where unknown)."""
    columns = [
        "strategy",
        "round",
        "tasks",
        "annotations",
        "double_labelled",
        "agreement",
        "estimated_flip_rate",
        "true_error_rate",
        "gold_known",
        "gold_ties",
    ]
    if annotations.empty:
        return pd.DataFrame(columns=columns)
    pooled = annotations.assign(round=ALL_ROUNDS)
    rows = []
    for (strategy, round_), group in pd.concat([annotations, pooled]).groupby(
        ["strategy", "round"], sort=True
    ):
        agree, double = 0, 0
        for _, task in group.sort_values(["request_id", "annotator"]).groupby("request_id"):
            if len(task) >= 2:
                double += 1
                first, second = task["chosen_id"].iloc[0], task["chosen_id"].iloc[1]
                agree += int(first == second)
        agreement = agree / double if double else None
        known = group["gold_gap"].dropna()
        gold = known[known != 0]
        rows.append(
            {
                "strategy": strategy,
                "round": int(round_),
                "tasks": int(group["request_id"].nunique()),
                "annotations": len(group),
                "double_labelled": double,
                "agreement": agreement,
                "estimated_flip_rate": flip_rate_from_agreement(agreement),
                "true_error_rate": float((gold < 0).mean()) if len(gold) else None,
                "gold_known": len(gold),
                "gold_ties": int((known == 0).sum()),
            }
        )
    return pd.DataFrame(rows, columns=columns)
