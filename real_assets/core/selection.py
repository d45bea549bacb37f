"""Pair selection strategies of the REAL paper over the candidate pairs of the train split.

Semantics (docs/design.md): with several responses per prompt, each strategy picks one pair per prompt; with
exactly one candidate pair per prompt (HH-RLHF), pairs are ranked globally and a fraction is kept.
Direction is decided before selection in SQL (chosen = higher label score), so a strategy only picks.

A strategy is one `STRATEGY_REGISTRY` entry. Most are an ordering in SQL (`selection_sql`): a window
function keeps the first pair of each prompt, or one global order keeps a fraction, so DuckDB ranks the
warehouse table itself (spilling past its memory limit) and the same SQL ranks a DataFrame
(`select_pairs`). Only `centroid` picks in Python (k-means over response vectors): the asset feeds it a range
of prompts at a time, or, in global mode, every pair's mean vector at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

KEY_COLUMNS = ["prompt_id", "chosen_id", "rejected_id"]


@dataclass(frozen=True)
class SelectionConfig:
    """The selection step. `mode`: `per_prompt`, `global` or `auto` (global when every prompt has exactly
    one candidate pair); `keep_fraction` applies to global ranking only, `aepo_lambda` to `aepo` only. The
    strategy and the seed are the partition's."""

    mode: str = "auto"
    keep_fraction: float = 0.5
    aepo_lambda: float = 1.0
    """AEPO's weight of a pair's own similarity (diversity) against its centrality (representativeness)."""
    from_requests: bool = False
    """Keep the pairs this strategy asked annotators to label (`annotation_requests`, every round) that
    have a direction now, instead of choosing among the candidates: the choice was made before the labels."""


def candidate_stats(con: duckdb.DuckDBPyConnection, candidates: str) -> dict:
    """One pass over the `candidates` relation (a table name or parenthesised select): pairs, prompts, the
    most pairs of one prompt, whether every pair is a labelled comparison, and the share of prompts with
    three or more responses."""
    columns = {d[0] for d in con.execute(f"select * from {candidates} as c limit 0").description}
    labelled = "bool_and(labelled_pair)" if "labelled_pair" in columns else "false"
    responses = "first(n_responses)" if "n_responses" in columns else "null::bigint"
    pairs, prompts, most, all_labelled, share = con.execute(
        f"""select coalesce(sum(n), 0), count(*), max(n), bool_and(labelled), avg((responses >= 3)::double)
            from (select prompt_id, count(*) as n, {labelled} as labelled, {responses} as responses
                  from {candidates} as c group by prompt_id)"""
    ).fetchone()
    return {
        "pairs": int(pairs),
        "prompts": int(prompts),
        "most_per_prompt": most,
        "all_labelled": bool(all_labelled),
        "share_3plus": share,
    }


def resolve_mode(
    con: duckdb.DuckDBPyConnection, candidates: str, mode: str, stats: dict | None = None
) -> str:
    """`auto` becomes `global` for one-pair-per-prompt data (every prompt has one candidate pair, or every
    candidate is a labelled comparison, as in HH-RLHF where a prompt may recur in several rows), else
    `per_prompt`. `candidates` is a relation DuckDB can read; `stats`, its `candidate_stats` if known."""
    if mode not in ("auto", "per_prompt", "global"):
        raise ValueError(f"selection mode must be auto, per_prompt or global, not {mode!r}")
    if mode != "auto":
        return mode
    stats = stats or candidate_stats(con, candidates)
    return "global" if stats["all_labelled"] or stats["most_per_prompt"] == 1 else "per_prompt"


def n_keep(pairs: int, fraction: float) -> int:
    """How many pairs a global ranking keeps: the fraction of `pairs`, at least one."""
    if not 0 < fraction <= 1:
        raise ValueError(f"keep_fraction must be in (0, 1], not {fraction}")
    return max(1, round(pairs * fraction))


def selection_sql(
    strategy: str,
    mode: str,
    config: SelectionConfig,
    seed: int,
    candidates: str,
    similarity: str | None = None,
    keep: int | None = None,
) -> str:
    """The select that keeps a SQL strategy's pairs (every column of `candidates`): the first pair of
    each prompt in the strategy's order (`per_prompt`), or the first `keep` pairs of one global order.
    Ties go to the smaller (prompt, chosen, rejected) ids. `similarity` is the relation of
    `features.response_similarity` (strategies that need the whole group of responses)."""
    entry = strategy_entry(strategy)
    if entry.pick is not None:
        raise ValueError(f"strategy {strategy!r} picks in Python, not in SQL")
    if entry.needs == "similarity" and similarity is None:
        raise ValueError(f"strategy {strategy!r} needs the similarity table")
    ctes = [f"c as (select * from {candidates})"]
    join = ""
    if entry.scores is not None:
        ctes.append(f"x as ({entry.scores(config, similarity)})")
        join = (
            " left join x on x.prompt_id = c.prompt_id and x.chosen_id = c.chosen_id"
            " and x.rejected_id = c.rejected_id"
        )
    select = "with " + ", ".join(ctes) + f" select c.* from c{join}"
    if entry.order is None:
        return select
    order = f"{entry.order(config, seed)}, c.prompt_id, c.chosen_id, c.rejected_id"
    if mode == "global":
        if keep is None:
            raise ValueError("global selection needs the number of pairs to keep")
        return f"{select} order by {order} limit {int(keep)}"
    return f"{select} qualify row_number() over (partition by c.prompt_id order by {order}) = 1"


def select_pairs(
    candidates: pd.DataFrame,
    strategy: str,
    config: SelectionConfig = SelectionConfig(),
    seed: int = 0,
    embeddings: Mapping[str, np.ndarray] | None = None,
    similarity: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The selected pairs (rows of `candidates`) for one strategy, in key order; deterministic for a
    seed. The same SQL as the warehouse runs (`selection_sql`), here over DataFrames; `similarity` holds
    the rows of `features.response_similarity` for the candidates' prompts (`aepo`)."""
    entry = strategy_entry(strategy)
    if candidates.empty:
        return candidates.copy()
    missing = [c for c in entry.columns if c not in candidates]
    if missing:
        raise ValueError(f"strategy {strategy!r} needs candidate columns {missing} ({entry.needs})")
    if entry.needs == "similarity" and similarity is None:
        raise ValueError(f"strategy {strategy!r} needs the similarity rows of the candidates' prompts")
    ordered = candidates.sort_values(KEY_COLUMNS, kind="stable").reset_index(drop=True)
    with duckdb.connect() as con:
        con.register("candidates_frame", ordered)
        if similarity is not None:
            con.register("similarity_frame", similarity)
        mode = resolve_mode(con, "candidates_frame", config.mode)
        keep = n_keep(len(ordered), config.keep_fraction) if mode == "global" else None
        if entry.pick is not None:
            picked = entry.pick(ordered, mode, config, seed, embeddings or {})
        else:
            sql = selection_sql(strategy, mode, config, seed, "candidates_frame", "similarity_frame", keep)
            picked = con.execute(sql).df()
    return picked.sort_values(KEY_COLUMNS, kind="stable").reset_index(drop=True)


def _order(sql: str) -> Callable[[SelectionConfig, int], str]:
    return lambda _config, _seed: sql


def _random_order(_config: SelectionConfig, seed: int) -> str:
    # A seeded hash of the pair's ids: the same pick for a seed whatever the row order, others per seed.
    return f"md5_number(concat_ws(':', '{int(seed)}', c.prompt_id, c.chosen_id, c.rejected_id))"


def _aepo_scores(config: SelectionConfig, similarity: str | None) -> str:
    """AEPO's score of every candidate pair {a, b} of a prompt with N responses (arXiv 2405.13541):
    (sum over m != a of s_ma + sum over m != b of s_mb) / (2 (N - 1)) - lambda * s_ab, the mean similarity
    of a and of b to the rest of the group (each over its N - 1 others, the partner included) minus the
    pair's own similarity. The group is every response of the prompt in `similarity`, pairs with tied
    labels (no candidate) included. With N = 2 each mean is s_ab itself: the score is (1 - lambda) s_ab
    (0 at lambda = 1), and the one pair is kept."""
    lam = float(config.aepo_lambda)
    return f"""
        with group_pairs as (
            select prompt_id, response_id_a, response_id_b, cosine from {similarity}
            where prompt_id in (select prompt_id from c)
        ),
        ends as (
            select prompt_id, response_id_a as response_id, cosine from group_pairs
            union all
            select prompt_id, response_id_b as response_id, cosine from group_pairs
        ),
        centrality as (
            select prompt_id, response_id, sum(cosine) as total, count(*) as others
            from ends group by prompt_id, response_id
        )
        select c.prompt_id, c.chosen_id, c.rejected_id,
               (ca.total + cb.total) / (2 * ca.others) - {lam!r} * s.cosine as score
        from c
        join group_pairs as s
            on s.prompt_id = c.prompt_id
            and s.response_id_a = least(c.chosen_id, c.rejected_id)
            and s.response_id_b = greatest(c.chosen_id, c.rejected_id)
        join centrality as ca on ca.prompt_id = c.prompt_id and ca.response_id = s.response_id_a
        join centrality as cb on cb.prompt_id = c.prompt_id and cb.response_id = s.response_id_b"""


TIE = 1e-6
"""Distances to a k-means centre closer than this are equal. The two members of a two-member cluster lie
exactly as far from its centre; float rounding, whose last bits differ with the machine's and libraries'
kernels that made the embeddings, must not choose between them: the smaller key does."""


def _tie_ranks(distances: np.ndarray) -> np.ndarray:
    """Rank of each distance, ascending, with distances within `TIE` of their group's smallest tied."""
    ranks = np.empty(len(distances), dtype=int)
    rank, start = -1, -np.inf
    for i in np.argsort(distances, kind="stable"):
        if distances[i] - start > TIE:
            rank, start = rank + 1, distances[i]
        ranks[i] = rank
    return ranks


def _nearest_first(vectors: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Indices of `vectors` by distance to `centre`, ties (`TIE`) in index order."""
    return np.argsort(_tie_ranks(np.linalg.norm(vectors - centre, axis=1)), kind="stable")


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
        n = n_keep(len(candidates), config.keep_fraction)
        means = np.stack(
            [
                (embeddings[c] + embeddings[r]) / 2
                for c, r in zip(candidates["chosen_id"], candidates["rejected_id"])
            ]
        )
        km = MiniBatchKMeans(n_clusters=n, random_state=seed, n_init=3).fit(means)
        dist = np.linalg.norm(means - km.cluster_centers_[km.labels_], axis=1)
        ranked = pd.DataFrame({"label": km.labels_, "rank": _tie_ranks(dist)}).sort_values(
            ["rank", "label"], kind="stable"
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
            [ids[i] for i in _nearest_first(vectors, centre) if km.labels_[i] == c]
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
    """One selection strategy: an SQL `order` of a prompt's candidate pairs `c` (first kept; `scores`
    adds a `score` column as `x.score`), or a Python `pick`; neither keeps every pair."""

    description: str
    order: Callable[[SelectionConfig, int], str] | None = None
    """(config, seed) -> an SQL order by expression over `c` (and `x`); the first pair is kept."""
    scores: Callable[[SelectionConfig, str | None], str] | None = None
    """(config, similarity relation) -> a select over `c` of (prompt_id, chosen_id, rejected_id, score)."""
    pick: Callable[..., pd.DataFrame] | None = None
    """(candidates, mode, config, seed, embeddings) -> the kept rows, for strategies SQL cannot rank."""
    needs: str | None = None
    """None, `embeddings` (response vectors), `similarity` (the whole group of a prompt's responses) or
    `reference_scores` (`ref_margin`, `ches` columns)."""

    @property
    def columns(self) -> tuple[str, ...]:
        return ("ref_margin", "ches") if self.needs == "reference_scores" else ()


STRATEGY_REGISTRY: dict[str, Strategy] = {
    "easy": Strategy("least similar pairs (REAL, arXiv 2409.17169)", _order("c.cosine asc nulls last")),
    "hard": Strategy("most similar pairs", _order("c.cosine desc nulls last")),
    "random": Strategy("a seeded random pick", _random_order),
    "centroid": Strategy(
        "k-means k=2 per prompt, the responses nearest each centre", pick=_centroid, needs="embeddings"
    ),
    "all": Strategy("every candidate pair: the full annotation budget"),
    "margin": Strategy(
        "smallest |reference implicit-reward margin| (arXiv 2406.17312)",
        _order("abs(c.ref_margin) asc nulls last"),
        needs="reference_scores",
    ),
    "ches": Strategy(
        "lowest CHES in the reference's hidden states (arXiv 2410.08847)",
        _order("c.ches asc nulls last"),
        needs="reference_scores",
    ),
    "aepo": Strategy(
        "responses central to the group yet unlike each other (AEPO, arXiv 2405.13541)",
        _order("x.score desc nulls last"),
        scores=_aepo_scores,
        needs="similarity",
    ),
}
STRATEGIES = tuple(STRATEGY_REGISTRY)


def strategy_entry(strategy: str) -> Strategy:
    """The registry entry of a strategy, or ValueError naming the known ones."""
    if strategy not in STRATEGY_REGISTRY:
        raise ValueError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    return STRATEGY_REGISTRY[strategy]


def selection_summary(con: duckdb.DuckDBPyConnection, selected: str, candidates: dict) -> dict:
    """Pairs kept, prompts covered, mean similarity and label-error rate against gold (where known), of
    the `selected` relation, among candidates with these `candidate_stats`."""
    pairs, prompts, mean_cosine, label_error_rate = con.execute(
        f"select count(*), count(distinct prompt_id), avg(cosine), avg(label_error::double) from {selected}"
    ).fetchone()
    return {
        "pairs": int(pairs),
        "prompts": int(prompts),
        "candidate_pairs": candidates["pairs"],
        "mean_cosine": mean_cosine,
        "label_error_rate": label_error_rate,
        "share_prompts_3plus_responses": candidates["share_3plus"],
    }
