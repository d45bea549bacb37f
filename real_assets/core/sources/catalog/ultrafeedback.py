"""openbmb/UltraFeedback (`instruction`, `completions`) or the binarized layout (`prompt`, `chosen`,
`rejected` message lists, optional `score_chosen` / `score_rejected`).

The original layout's nested completions are checked row by row; the binarized layout shares the
table source's pair checks (vectorized where chosen/rejected are plain texts)."""

from __future__ import annotations

import math
from typing import Any

import real_assets.core.sources.rowchecks as rc
from real_assets.core.sources.catalog.table import pair_validator, pair_vectorized
from real_assets.core.sources.reasons import EMPTY_COMPLETIONS, MISSING_FIELD, WRONG_TYPE
from real_assets.core.sources.registry import Layout, Source, schema_error
from real_assets.core.sources.spec import SourceSpec


def completion_score(completion: dict, field: str) -> float:
    """overall_score, else fine-grained_score, else the mean of the numeric annotation ratings."""
    if completion.get("overall_score") is not None:
        return rc.score(completion["overall_score"], f"{field}.overall_score")
    if completion.get("fine-grained_score") is not None:
        return rc.score(completion["fine-grained_score"], f"{field}.fine-grained_score")
    ratings: list[Any] = []
    annotations = completion.get("annotations")
    if isinstance(annotations, dict):
        for aspect in annotations.values():
            ratings.append(aspect.get("Rating") if isinstance(aspect, dict) else aspect)
    raw = completion.get("ratings")
    if isinstance(raw, dict):
        ratings.extend(raw.values())
    elif isinstance(raw, list):
        ratings.extend(raw)
    numeric = []
    for r in ratings:
        try:
            x = float(r) if isinstance(r, (int, float, str)) and not isinstance(r, bool) else math.nan
        except (ValueError, OverflowError):  # e.g. "N/A"
            continue
        if math.isfinite(x):
            numeric.append(x)
    if not numeric:
        raise rc.Reject(f"{field}.overall_score", MISSING_FIELD)
    return sum(numeric) / len(numeric)


def _original_validator(spec: SourceSpec) -> rc.Validator:
    max_chars = spec.max_chars

    def validate(row: dict) -> tuple[list[rc.Item], str]:
        prompt = rc.text(row.get("instruction"), "instruction", max_chars)
        completions = row.get("completions")
        if completions is None:
            raise rc.Reject("completions", MISSING_FIELD)
        if not isinstance(completions, list):
            raise rc.Reject("completions", WRONG_TYPE)
        if not completions:
            raise rc.Reject("completions", EMPTY_COMPLETIONS)
        items = []
        for i, completion in enumerate(completions):
            field = f"completions[{i}]"
            if not isinstance(completion, dict):
                raise rc.Reject(field, WRONG_TYPE)
            response = rc.text(completion.get("response"), f"{field}.response", max_chars)
            items.append((prompt, response, completion_score(completion, field)))
        return items, rc.SCORED

    return validate


def _layout(spec: SourceSpec, where: str, found: list[str]) -> Layout:
    cols = set(found)
    if {"instruction", "completions"} <= cols:
        return Layout(("instruction", "completions"), _original_validator(spec))
    if {"chosen", "rejected"} <= cols:
        names = ("prompt", "chosen", "rejected", "score_chosen", "score_rejected")
        return Layout(
            names, pair_validator(spec, *names), "rejected", pair_vectorized(spec.max_chars, *names)
        )
    raise schema_error(
        spec,
        where,
        "columns instruction, completions (openbmb/UltraFeedback) or "
        "chosen, rejected [prompt, score_chosen, score_rejected] (binarized)",
        found,
    )


SOURCE = Source("ultrafeedback", "openbmb/UltraFeedback, original or binarized layout", _layout)
