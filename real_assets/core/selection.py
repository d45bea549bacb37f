"""Pair selection strategies of the REAL paper over the candidate pairs of the train split.

Semantics (docs/design.md): with several responses per prompt, each strategy picks one pair per prompt; with
exactly one candidate pair per prompt (HH-RLHF), pairs are ranked globally and a fraction is kept.
Direction is decided before selection in SQL (chosen = higher label score), so a strategy only picks.
A strategy is one `STRATEGY_REGISTRY` entry: its pick function and the inputs it needs (`embeddings` of
the responses, or `reference_scores`: `ref_margin` and `ches` columns from `core.reference_scores`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

KEY_COLUMNS = ["prompt_id", "chosen_id", "rejected_id"]


@dataclass(frozen=True)
class SelectionConfig:
    """The selection step. `mode`: `per_prompt`, `global` or `auto` (global when every prompt has exactly
    one candidate pair); `keep_fraction` applies to global ranking only. The strategy and the seed are the
    partition's."""

    mode: str = "auto"
    keep_fraction: float = 0.5
    from_requests: bool = False
    """Keep the pairs this strategy asked annotators to label (`annotation_requests`, every round) that
    have a direction now, instead of choosing among the candidates: the choice was made before the labels."""


@dataclass(frozen=True)
class BudgetSweepConfig:
    """The budget sweep: each strategy ranks every candidate pair globally and keeps each fraction; DPO
    (with the settings the `all` checkpoints were trained with) and eval run at each budget and seed.
    Fraction 1.0 is the `all` strategy itself (its eval rows are reused, not retrained)."""

    keep_fractions: list[float] = field(default_factory=lambda: [0.1, 0.25, 0.5, 1.0])
    strategies: list[str] = field(default_factory=lambda: ["easy", "random"])
    seeds: list[int] = field(default_factory=lambda: [0])


def resolve_mode(candidates: pd.DataFrame, mode: str) -> str:
    """`auto` becomes `global` for one-pair-per-prompt data (every prompt has one candidate pair, or every
    candidate is a labelled comparison, as in HH-RLHF where a prompt may recur in several rows), else
    `per_prompt`."""
    if mode not in ("auto", "per_prompt", "global"):
        raise ValueError(f"selection mode must be auto, per_prompt or global, not {mode!r}")
    if mode != "auto":
        return mode
    if "labelled_pair" in candidates and candidates["labelled_pair"].all():
        return "global"
    return "global" if candidates.groupby("prompt_id").size().max() == 1 else "per_prompt"


def select_pairs(
    candidates: pd.DataFrame,
    strategy: str,
    config: SelectionConfig = SelectionConfig(),
    seed: int = 0,
    embeddings: Mapping[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """The selected pairs (rows of `candidates`) for one strategy; deterministic for a seed."""
    if strategy not in STRATEGY_REGISTRY:
        raise ValueError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    if candidates.empty:
        return candidates.copy()
    entry = STRATEGY_REGISTRY[strategy]
    missing = [c for c in entry.columns if c not in candidates]
    if missing:
        raise ValueError(f"strategy {strategy!r} needs candidate columns {missing} ({entry.needs})")
    ordered = candidates.sort_values(KEY_COLUMNS, kind="stable").reset_index(drop=True)
    mode = resolve_mode(ordered, config.mode)
    picked = entry.pick(ordered, mode, config, seed, embeddings or {})
    return picked.sort_values(KEY_COLUMNS, kind="stable").reset_index(drop=True)


def _n_keep(candidates: pd.DataFrame, fraction: float) -> int:
    if not 0 < fraction <= 1:
        raise ValueError(f"keep_fraction must be in (0, 1], not {fraction}")
    return max(1, round(len(candidates) * fraction))


def _lowest(column: str, ascending: bool = True, absolute: bool = False):
    """Keep the pairs lowest (or highest) in `column`: a fraction globally, one per prompt otherwise."""

    def pick(candidates: pd.DataFrame, mode: str, config: SelectionConfig, _seed, _emb) -> pd.DataFrame:
        key = candidates[column].abs() if absolute else candidates[column]
        ranked = (
            candidates.assign(_key=key.fillna(np.inf if ascending else -np.inf))
            .sort_values(["_key", *KEY_COLUMNS], ascending=[ascending, True, True, True], kind="stable")
            .drop(columns="_key")
        )
        if mode == "global":
            return ranked.head(_n_keep(candidates, config.keep_fraction))
        return ranked.groupby("prompt_id", sort=False).head(1)

    return pick


def _all(candidates: pd.DataFrame, _mode, _config, _seed, _emb) -> pd.DataFrame:
    return candidates


def _random(candidates: pd.DataFrame, mode: str, config: SelectionConfig, seed: int, _emb) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    if mode == "global":
        n = _n_keep(candidates, config.keep_fraction)
        return candidates.iloc[np.sort(rng.choice(len(candidates), size=n, replace=False))]
    keys = rng.random(len(candidates))
    return candidates.assign(_key=keys).sort_values("_key").groupby("prompt_id").head(1).drop(columns="_key")


def _centroid(
    candidates: pd.DataFrame, mode: str, config: SelectionConfig, seed: int, embeddings
) -> pd.DataFrame:
    from sklearn.cluster import KMeans, MiniBatchKMeans

    missing = {*candidates["chosen_id"], *candidates["rejected_id"]} - set(embeddings)
    if missing:
        raise ValueError(f"centroid selection needs embeddings for {len(missing)} responses without one")
    if mode == "global":
        # One pair per prompt: cluster the pairs' mean embeddings into as many clusters as pairs to keep
        # and take the pair nearest each centre (representative, mutually distinct pairs).
        n = _n_keep(candidates, config.keep_fraction)
        means = np.stack(
            [
                (embeddings[c] + embeddings[r]) / 2
                for c, r in zip(candidates["chosen_id"], candidates["rejected_id"])
            ]
        )
        km = MiniBatchKMeans(n_clusters=n, random_state=seed, n_init=3).fit(means)
        dist = np.linalg.norm(means - km.cluster_centers_[km.labels_], axis=1)
        ranked = pd.DataFrame({"label": km.labels_, "dist": dist}).sort_values(
            ["dist", "label"], kind="stable"
        )
        first = set(ranked.groupby("label").head(1).index)
        # k-means can leave clusters empty: top up with the pairs nearest their own centre.
        rest = [i for i in ranked.index if i not in first][: n - len(first)]
        return candidates.iloc[np.sort([*first, *rest])]

    picked = []
    for _, group in candidates.groupby("prompt_id", sort=True):
        ids = sorted({*group["chosen_id"], *group["rejected_id"]})
        vectors = np.stack([embeddings[i] for i in ids])
        km = KMeans(n_clusters=2, random_state=seed, n_init=4).fit(vectors)
        order = [
            [ids[i] for i in np.argsort(np.linalg.norm(vectors - centre, axis=1)) if km.labels_[i] == c]
            for c, centre in enumerate(km.cluster_centers_)
        ]
        pairs = {
            frozenset((a, b)): idx for idx, a, b in zip(group.index, group["chosen_id"], group["rejected_id"])
        }
        # Nearest response to each centre; if that pair has no direction (tied labels), the next nearest.
        for ra, rb in sorted(
            ((a, b) for a in order[0] for b in order[1]),
            key=lambda ab: order[0].index(ab[0]) + order[1].index(ab[1]),
        ):
            if frozenset((ra, rb)) in pairs:
                picked.append(pairs[frozenset((ra, rb))])
                break
    return candidates.loc[picked]


@dataclass(frozen=True)
class Strategy:
    pick: Callable[..., pd.DataFrame]
    """(candidates, mode, config, seed, embeddings) -> the kept rows."""
    description: str
    needs: str | None = None
    """None, `embeddings` (response vectors) or `reference_scores` (`ref_margin`, `ches` columns)."""

    @property
    def columns(self) -> tuple[str, ...]:
        return ("ref_margin", "ches") if self.needs == "reference_scores" else ()


STRATEGY_REGISTRY: dict[str, Strategy] = {
    "easy": Strategy(_lowest("cosine"), "least similar pairs (REAL, arXiv 2409.17169)"),
    "hard": Strategy(_lowest("cosine", ascending=False), "most similar pairs"),
    "random": Strategy(_random, "a seeded random pick"),
    "centroid": Strategy(
        _centroid, "k-means k=2 per prompt, the responses nearest each centre", "embeddings"
    ),
    "all": Strategy(_all, "every candidate pair: the full annotation budget"),
    "margin": Strategy(
        _lowest("ref_margin", absolute=True),
        "smallest |reference implicit-reward margin| (arXiv 2406.17312)",
        "reference_scores",
    ),
    "ches": Strategy(
        _lowest("ches"), "lowest CHES in the reference's hidden states (arXiv 2410.08847)", "reference_scores"
    ),
}
STRATEGIES = tuple(STRATEGY_REGISTRY)


def selection_summary(selected: pd.DataFrame, candidates: pd.DataFrame) -> dict[str, float | int | None]:
    """Pairs kept, prompts covered, mean similarity and label-error rate against gold (where known)."""
    gold_known = selected["label_error"].notna() if "label_error" in selected else pd.Series(dtype=bool)
    per_prompt = candidates.groupby("prompt_id")["n_responses"].first() if len(candidates) else pd.Series()
    return {
        "pairs": len(selected),
        "prompts": int(selected["prompt_id"].nunique()) if len(selected) else 0,
        "candidate_pairs": len(candidates),
        "mean_cosine": float(selected["cosine"].mean()) if len(selected) else None,
        "label_error_rate": float(selected.loc[gold_known, "label_error"].astype(float).mean())
        if gold_known.any()
        else None,
        "share_prompts_3plus_responses": float((per_prompt >= 3).mean()) if len(per_prompt) else None,
    }
