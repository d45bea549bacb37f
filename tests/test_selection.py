import duckdb
import numpy as np
import pandas as pd
import pytest

from real_assets.core.selection import (
    STRATEGY_REGISTRY,
    SelectionConfig,
    candidate_stats,
    resolve_mode,
    select_pairs,
    selection_summary,
)


def _mode(frame: pd.DataFrame, mode: str = "auto") -> str:
    with duckdb.connect() as con:
        con.register("frame", frame)
        return resolve_mode(con, "frame", mode)


def _candidates(rows):
    frame = pd.DataFrame(rows, columns=["prompt_id", "chosen_id", "rejected_id", "cosine", "label_error"])
    frame["n_responses"] = frame.groupby("prompt_id")["chosen_id"].transform("size")
    return frame


MULTI = _candidates(
    [
        ("p1", "a", "b", 0.9, False),
        ("p1", "a", "c", 0.1, True),
        ("p1", "b", "c", 0.5, False),
        ("p2", "d", "e", 0.2, False),
        ("p2", "d", "f", 0.8, True),
        ("p2", "e", "f", 0.3, False),
    ]
)
SINGLE = _candidates([(f"p{i}", f"c{i}", f"r{i}", i / 10, i % 2 == 0) for i in range(10)])


def test_easy_and_hard_pick_the_least_and_most_similar_pair_per_prompt():
    easy = select_pairs(MULTI, "easy")
    hard = select_pairs(MULTI, "hard")
    assert list(zip(easy.prompt_id, easy.cosine)) == [("p1", 0.1), ("p2", 0.2)]
    assert list(zip(hard.prompt_id, hard.cosine)) == [("p1", 0.9), ("p2", 0.8)]


def test_global_mode_keeps_a_fraction_from_the_chosen_end():
    assert _mode(SINGLE) == "global"
    assert _mode(MULTI) == "per_prompt"
    easy = select_pairs(SINGLE, "easy", SelectionConfig(keep_fraction=0.3))
    hard = select_pairs(SINGLE, "hard", SelectionConfig(keep_fraction=0.3))
    assert sorted(easy.cosine) == [0.0, 0.1, 0.2]
    assert sorted(hard.cosine) == [0.7, 0.8, 0.9]
    rand = select_pairs(SINGLE, "random", SelectionConfig(keep_fraction=0.5))
    assert len(rand) == 5


def test_random_is_seeded_and_independent_of_input_order():
    shuffled = MULTI.sample(frac=1.0, random_state=3)
    a = select_pairs(MULTI, "random", seed=1)
    b = select_pairs(shuffled, "random", seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 2 and set(a.prompt_id) == {"p1", "p2"}
    picks = {
        tuple(
            select_pairs(MULTI, "random", seed=s).chosen_id
            + select_pairs(MULTI, "random", seed=s).rejected_id
        )
        for s in range(20)
    }
    assert len(picks) > 1


def test_centroid_pairs_the_responses_nearest_each_cluster_centre():
    # p1: a and b are close together, c is far away: the pair must cross the clusters, a-c or b-c,
    # taking the member nearest its centre (a sits exactly at the centre of {a, b'} here).
    emb = {
        "a": np.array([1.0, 0.0]),
        "b": np.array([0.9, 0.1]),
        "c": np.array([-1.0, 0.0]),
        "d": np.array([0.0, 1.0]),
        "e": np.array([0.0, -1.0]),
        "f": np.array([0.1, -0.9]),
    }
    picked = select_pairs(MULTI, "centroid", embeddings=emb)
    pairs = {frozenset((c, r)) for c, r in zip(picked.chosen_id, picked.rejected_id)}
    assert len(picked) == 2
    assert pairs & {frozenset("ac"), frozenset("bc")}
    assert pairs & {frozenset("de"), frozenset("df")}
    with pytest.raises(ValueError, match="embeddings"):
        select_pairs(MULTI, "centroid", embeddings={})


def test_unknown_strategy_and_bad_fraction_fail_clearly():
    with pytest.raises(ValueError, match="unknown strategy"):
        select_pairs(MULTI, "best")
    with pytest.raises(ValueError, match="keep_fraction"):
        select_pairs(SINGLE, "easy", SelectionConfig(keep_fraction=0))
    with pytest.raises(ValueError, match="mode"):
        select_pairs(MULTI, "easy", SelectionConfig(mode="sometimes"))


def test_summary_reports_pairs_similarity_and_label_error():
    easy = select_pairs(MULTI, "easy")
    with duckdb.connect() as con:
        con.register("easy", easy)
        con.register("candidates", MULTI)
        summary = selection_summary(con, "easy", candidate_stats(con, "candidates"))
    assert summary["pairs"] == 2 and summary["prompts"] == 2
    assert summary["mean_cosine"] == pytest.approx(0.15)
    assert summary["label_error_rate"] == pytest.approx(0.5)
    assert summary["share_prompts_3plus_responses"] == 1.0


def test_centroid_in_global_mode_keeps_exactly_the_fraction():
    rng = np.random.default_rng(0)
    # many duplicate embeddings: k-means leaves clusters empty, the fill-up must still reach the count
    emb = {}
    for c, r in zip(SINGLE.chosen_id, SINGLE.rejected_id):
        emb[c] = np.array([1.0, 0.0])
        emb[r] = rng.normal(size=2) if c == "c0" else np.array([0.0, 1.0])
    picked = select_pairs(SINGLE, "centroid", SelectionConfig(keep_fraction=0.5), embeddings=emb)
    assert len(picked) == 5 and picked["prompt_id"].is_unique


def test_labelled_comparisons_use_global_ranking_even_when_a_prompt_recurs():
    recurring = SINGLE.assign(labelled_pair=True)
    recurring.loc[1, "prompt_id"] = "p0"  # the same prompt in two HH rows: two compared pairs
    assert _mode(recurring) == "global"
    assert _mode(recurring.assign(labelled_pair=False)) == "per_prompt"
    assert len(select_pairs(recurring, "easy", SelectionConfig(keep_fraction=0.5))) == 5


def test_all_keeps_every_candidate_pair():
    assert len(select_pairs(MULTI, "all")) == len(MULTI)
    assert len(select_pairs(SINGLE, "all", SelectionConfig(keep_fraction=0.1))) == len(SINGLE)


def test_margin_and_ches_keep_the_lowest_reference_scores():
    scored = MULTI.assign(
        ref_margin=[2.0, -0.1, 1.0, 0.5, -3.0, 0.4],  # smallest |margin|: a-c in p1, e-f in p2
        ches=[5.0, 1.0, -2.0, 0.0, 3.0, 7.0],  # lowest CHES: b-c in p1, d-e in p2
    )
    margin = select_pairs(scored, "margin")
    assert list(zip(margin.chosen_id, margin.rejected_id)) == [("a", "c"), ("e", "f")]
    ches = select_pairs(scored, "ches")
    assert list(zip(ches.chosen_id, ches.rejected_id)) == [("b", "c"), ("d", "e")]
    single = SINGLE.assign(ref_margin=[(-1) ** i * i for i in range(10)], ches=list(range(10, 0, -1)))
    assert sorted(select_pairs(single, "margin", SelectionConfig(keep_fraction=0.3)).prompt_id) == [
        "p0",
        "p1",
        "p2",
    ]
    assert sorted(select_pairs(single, "ches", SelectionConfig(keep_fraction=0.2)).prompt_id) == ["p8", "p9"]
    with pytest.raises(ValueError, match="ref_margin"):
        select_pairs(MULTI, "margin")


def test_random_varies_with_the_seed_in_global_mode_too():
    picks = {
        tuple(select_pairs(SINGLE, "random", SelectionConfig(keep_fraction=0.5), seed=s).prompt_id)
        for s in range(5)
    }
    assert len(picks) > 1


# AEPO, by hand (lambda = 1). Prompt q has four responses a, b, c, d with these cosines:
#   s_ab 0.1, s_ac 0.9, s_bc 0.9, s_ad -0.05, s_bd 0.0, s_cd 0.0
# Centrality (sum over the N - 1 = 3 others): C_a 0.95, C_b 1.0, C_c 1.8, C_d -0.05. Score of {x, y}:
# (C_x + C_y) / (2 * 3) - s_xy:
#   ab 0.225, ac -0.4417, ad 0.2, bc -0.4333, bd 0.1583, cd 0.2917  -> AEPO keeps c-d
# (easy keeps a-d, the least similar; hard keeps a-c). With lambda = 0 (centrality alone) it keeps b-c
# (0.4667 against a-c's 0.4583). Prompt r has two responses: its one pair is kept whatever the score.
AEPO_SIMILARITY = pd.DataFrame(
    [
        ("q", "a", "b", 0.1),
        ("q", "a", "c", 0.9),
        ("q", "b", "c", 0.9),
        ("q", "a", "d", -0.05),
        ("q", "b", "d", 0.0),
        ("q", "c", "d", 0.0),
        ("r", "e", "f", 0.7),
    ],
    columns=["prompt_id", "response_id_a", "response_id_b", "cosine"],
)


def _aepo_candidates(pairs):
    cosine = {(a, b): s for _, a, b, s in AEPO_SIMILARITY.itertuples(index=False)}
    return _candidates([(p, c, r, cosine[tuple(sorted((c, r)))], False) for p, c, r in pairs]).assign(
        n_responses=lambda f: f["prompt_id"].map({"q": 4, "r": 2})
    )


AEPO_ALL = [("q", "a", "b"), ("q", "c", "a"), ("q", "a", "d"), ("q", "b", "c"), ("q", "d", "b")]
AEPO_ALL += [("q", "d", "c"), ("r", "f", "e")]


def _pairs(frame):
    return [(p, frozenset((c, r))) for p, c, r in zip(frame.prompt_id, frame.chosen_id, frame.rejected_id)]


def test_aepo_keeps_the_central_yet_unlike_pair_computed_by_hand():
    candidates = _aepo_candidates(AEPO_ALL)
    picked = select_pairs(candidates, "aepo", similarity=AEPO_SIMILARITY)
    assert _pairs(picked) == [("q", frozenset("cd")), ("r", frozenset("ef"))]
    # the direction is the candidate's (chosen d, rejected c), decided by label score before selection
    assert (picked.chosen_id[0], picked.rejected_id[0]) == ("d", "c")
    assert _pairs(select_pairs(candidates, "easy")) == [("q", frozenset("ad")), ("r", frozenset("ef"))]
    centrality_only = select_pairs(
        candidates, "aepo", SelectionConfig(aepo_lambda=0.0), similarity=AEPO_SIMILARITY
    )
    assert _pairs(centrality_only)[0] == ("q", frozenset("bc"))


def test_aepo_counts_the_whole_group_even_pairs_without_a_direction():
    # c-d has tied labels (no candidate): the next best candidate, a-b (0.225), is kept, and the centrality
    # of every response still counts its similarity to c and d.
    without_cd = _aepo_candidates([p for p in AEPO_ALL if set(p[1:]) != {"c", "d"}])
    picked = select_pairs(without_cd, "aepo", similarity=AEPO_SIMILARITY)
    assert _pairs(picked) == [("q", frozenset("ab")), ("r", frozenset("ef"))]
    with pytest.raises(ValueError, match="similarity"):
        select_pairs(without_cd, "aepo")


def test_aepo_with_one_pair_per_prompt_ranks_by_one_minus_lambda_times_similarity():
    # N = 2 everywhere: each response's mean similarity to the others is s_ab, the score (1 - lambda) s_ab.
    similarity = SINGLE.rename(columns={"chosen_id": "response_id_a", "rejected_id": "response_id_b"})[
        ["prompt_id", "response_id_a", "response_id_b", "cosine"]
    ]
    keep = SelectionConfig(keep_fraction=0.3, aepo_lambda=2.0)  # 1 - lambda < 0: the least similar first
    assert sorted(select_pairs(SINGLE, "aepo", keep, similarity=similarity).cosine) == [0.0, 0.1, 0.2]
    assert len(select_pairs(SINGLE, "aepo", SelectionConfig(keep_fraction=0.3), similarity=similarity)) == 3


def test_every_registered_strategy_is_documented_and_runs():
    scored = MULTI.assign(ref_margin=0.0, ches=0.0)
    emb = {r: np.array([float(i), 1.0]) for i, r in enumerate("abcdef")}
    similarity = MULTI.rename(columns={"chosen_id": "response_id_a", "rejected_id": "response_id_b"})
    for name, entry in STRATEGY_REGISTRY.items():
        assert entry.description, name
        picked = select_pairs(scored, name, embeddings=emb, similarity=similarity)
        assert len(picked) == (len(MULTI) if name == "all" else 2), name
