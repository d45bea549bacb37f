"""Pairs chosen for annotators before any label exists: the label-free strategies over the unlabelled
candidate pairs, one pair per prompt, a budget of pairs per strategy and round.

A pair of unlabelled candidates has no direction yet: its two responses are `response_id_a` <
`response_id_b`. The strategies of `core.selection` read only ids, similarity, embeddings and (for `margin`
and `ches`) reference-model scores, so they run unchanged on such pairs, with `a` in the chosen slot.
`ref_margin` is taken in absolute value by `margin`; CHES depends on which response is preferred, so a pair's
label-free CHES is the larger of its two orientations (the pair is kept as low only if low either way).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from real_assets.core.hashing import digest
from real_assets.core.selection import STRATEGY_REGISTRY, SelectionConfig, select_pairs

LABEL_FREE = ("easy", "hard", "random", "centroid", "aepo", "margin", "ches")
"""Strategies that choose a pair without reading its label (`aepo` where the registry has it)."""


class NeedsLabels(ValueError):
    """A strategy that cannot choose pairs before they are labelled."""


@dataclass(frozen=True)
class RequestConfig:
    """One round of annotation requests: `budget` pairs per strategy (one pair per prompt, prompts not yet
    requested by that strategy in an earlier round, in a seeded order), `overlap` the share of them labelled
    twice, `seed` for the order, the random picks and the left/right order shown to annotators."""

    round: int = 0
    strategies: list[str] = field(default_factory=lambda: ["easy", "hard", "random"])
    budget: int = 50
    overlap: float = 0.2
    seed: int = 0

    def check(self) -> None:
        """NeedsLabels for a strategy that reads labels; ValueError for values out of range."""
        for strategy in self.strategies:
            if strategy not in STRATEGY_REGISTRY:
                raise ValueError(f"unknown strategy {strategy!r}; label-free ones: {', '.join(label_free())}")
            if strategy not in LABEL_FREE:
                raise NeedsLabels(
                    f"strategy {strategy!r} needs labels (it works on directed, labelled candidate pairs: "
                    f"{STRATEGY_REGISTRY[strategy].description}), so it cannot choose pairs for annotators "
                    f"before labels exist; label-free strategies: {', '.join(label_free())}"
                )
        if self.round < 0 or self.budget < 1:
            raise ValueError(
                f"round must be >= 0 and budget >= 1, got round={self.round} budget={self.budget}"
            )
        if not 0 <= self.overlap <= 1:
            raise ValueError(f"overlap must be in [0, 1], got {self.overlap}")


def label_free() -> tuple[str, ...]:
    """The label-free strategies this registry has."""
    return tuple(s for s in LABEL_FREE if s in STRATEGY_REGISTRY)


def pair_id(prompt_id: str, response_a: str, response_b: str) -> str:
    """Stable id of an unordered pair of responses to one prompt."""
    low, high = sorted((response_a, response_b))
    return digest("pair", prompt_id, low, high)[:16]


def request_id(strategy: str, round_: int, pair: str) -> str:
    """Id of one request (one task): a pair asked for by one strategy in one round."""
    return digest("request", strategy, str(round_), pair)[:16]


def as_candidates(unlabelled: pd.DataFrame) -> pd.DataFrame:
    """Unlabelled pairs (`prompt_id`, `response_id_a`, `response_id_b`, `cosine`, ...) in the frame the
    selection strategies read (`a` in the chosen slot)."""
    return unlabelled.rename(columns={"response_id_a": "chosen_id", "response_id_b": "rejected_id"}).assign(
        labelled_pair=False
    )


def label_free_ches(ches_ab: np.ndarray, ches_ba: np.ndarray) -> np.ndarray:
    """CHES of an unlabelled pair: the larger of its two orientations."""
    return np.fmax(ches_ab, ches_ba)


def choose_requests(
    unlabelled: pd.DataFrame,
    strategy: str,
    config: RequestConfig,
    already_requested: set[str],
    embeddings: dict | None = None,
) -> pd.DataFrame:
    """One round's requests of one strategy: its pick per prompt among the unlabelled pairs of the prompts
    it has not requested yet, `budget` prompts in a seeded order. Columns: request_id, round, strategy,
    pair_id, prompt_id, response_id_a, response_id_b, cosine, left_id, right_id, double_label."""
    RequestConfig(config.round, [strategy], config.budget, config.overlap, config.seed).check()
    open_ = unlabelled[~unlabelled["prompt_id"].isin(already_requested)]
    if open_.empty:
        return _frame([])
    seed = int(digest("round", str(config.seed), str(config.round))[:8], 16)
    picked = select_pairs(
        as_candidates(open_), strategy, SelectionConfig(mode="per_prompt"), seed, embeddings
    )
    order = sorted(picked.itertuples(index=False), key=lambda r: digest(str(seed), r.prompt_id))
    rows = []
    for r in order[: config.budget]:
        pid = pair_id(r.prompt_id, r.chosen_id, r.rejected_id)
        rid = request_id(strategy, config.round, pid)
        flip = int(digest("side", str(config.seed), rid)[:8], 16) % 2 == 1
        left, right = (r.rejected_id, r.chosen_id) if flip else (r.chosen_id, r.rejected_id)
        double = int(digest("overlap", str(config.seed), rid)[:8], 16) / 0xFFFFFFFF < config.overlap
        rows.append(
            {
                "request_id": rid,
                "round": config.round,
                "strategy": strategy,
                "pair_id": pid,
                "prompt_id": r.prompt_id,
                "response_id_a": r.chosen_id,
                "response_id_b": r.rejected_id,
                "cosine": r.cosine,
                "left_id": left,
                "right_id": right,
                "double_label": bool(double),
            }
        )
    return _frame(rows)


REQUEST_COLUMNS = [
    "request_id",
    "round",
    "strategy",
    "pair_id",
    "prompt_id",
    "response_id_a",
    "response_id_b",
    "cosine",
    "left_id",
    "right_id",
    "double_label",
]


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=REQUEST_COLUMNS)


def requested_pairs(candidates: pd.DataFrame, requested: pd.DataFrame) -> pd.DataFrame:
    """The directed candidate pairs that are one of the requested (unordered) pairs."""
    keys = {(p, *sorted((a, b))) for p, a, b in requested.itertuples(index=False)}
    mask = [
        (p, *sorted((c, r))) in keys
        for p, c, r in zip(
            candidates["prompt_id"], candidates["chosen_id"], candidates["rejected_id"], strict=True
        )
    ]
    return candidates[mask]
