"""The train candidate pairs read into Python, for what picks or trains there: `centroid`'s k-means (a range
of whole prompts at a time) and the budget sweep. The other strategies select in SQL (`defs/selection.py`)."""

import numpy as np
import pandas as pd

from real_assets.core.ranges import key_ranges
from real_assets.core.selection import KEY_COLUMNS, SelectionConfig, select_pairs
from real_assets.defs.pair_scores import TRAIN_CANDIDATES
from real_assets.resources import Warehouse

PAIR_COLUMNS = [
    "prompt_id",
    "chosen_id",
    "rejected_id",
    "chosen_score",
    "rejected_score",
    "score_gap",
    "gold_gap",
    "label_error",
    "cosine",
    "n_responses",
]


def read_train_candidates(warehouse: Warehouse, with_embeddings: bool, with_texts: bool = False):
    """Candidate pairs of the train split (with their prompt and response texts when asked), and the
    embeddings of their responses when asked."""
    texts = ", p.prompt, c.response as chosen, r.response as rejected" if with_texts else ""
    joins = (
        " join raw.prompts as p using (prompt_id)"
        " join raw.responses as c on c.response_id = k.chosen_id"
        " join raw.responses as r on r.response_id = k.rejected_id"
        if with_texts
        else ""
    )
    columns = ", ".join(f"k.{c}" for c in PAIR_COLUMNS)
    with warehouse.connect(read_only=True) as con:
        candidates = con.execute(
            f"select {columns}, k.labelled_pair{texts} from selection.pair_candidates as k{joins} "
            "where k.split = 'train' order by k.prompt_id, k.chosen_id, k.rejected_id"
        ).df()
        embeddings = {}
        if with_embeddings:
            rows = con.execute(
                "select e.response_id, e.embedding from features.response_embeddings as e "
                "join raw.prompts as p using (prompt_id) where p.split = 'train'"
            ).fetchall()
            embeddings = {rid: np.asarray(vec, dtype=np.float32) for rid, vec in rows}
    return candidates, embeddings


CENTROID_PAIRS_PER_RANGE = 50_000
"""Candidate pairs (of whole prompts) whose rows and response vectors `centroid` holds at once in per-prompt
mode: about 50,000 x 2 x 384 x 4 B of vectors at most, whatever the corpus."""


def centroid_picks(
    warehouse: Warehouse, config: SelectionConfig, seed: int, mode: str, prompts: list[str] | None, report
) -> pd.DataFrame:
    """`centroid`'s picks (key columns), for every prompt or only `prompts`. Per prompt: a range of whole
    prompts of about `CENTROID_PAIRS_PER_RANGE` pairs at a time, so memory holds one range's candidates and
    vectors. Globally (one pair per prompt): k-means over every train
    pair's mean vector at once, pairs x dimensions x 4 B, plus as many centres as pairs kept."""
    if mode == "global":
        candidates, embeddings = read_train_candidates(warehouse, with_embeddings=True)
        picked = select_pairs(candidates, "centroid", config, seed, embeddings)
        return picked[KEY_COLUMNS]
    picks = []
    only = "and prompt_id in (select unnest(?::varchar[]))" if prompts is not None else ""
    where = f"{only} and k.prompt_id > ? and k.prompt_id <= ?"
    given = [prompts] if prompts is not None else []
    with warehouse.connect(read_only=True) as con:
        ranges = key_ranges(
            con,
            f"select prompt_id from {TRAIN_CANDIDATES} where true {only}",
            given,
            CENTROID_PAIRS_PER_RANGE,
        )
    for after, last in ranges:
        with warehouse.connect(read_only=True) as con:
            window = [after, last]
            columns = ", ".join(f"k.{c}" for c in PAIR_COLUMNS)
            candidates = con.execute(
                f"select {columns} from {TRAIN_CANDIDATES} as k where true {where}", [*given, *window]
            ).df()
            rows = con.execute(
                f"select response_id, embedding from features.response_embeddings as k where true {where}",
                [*given, *window],
            ).fetchall()
        embeddings = {rid: np.asarray(vec, dtype=np.float32) for rid, vec in rows}
        picked = select_pairs(candidates, "centroid", SelectionConfig(mode="per_prompt"), seed, embeddings)
        picks.append(picked[KEY_COLUMNS])
        report(f"centroid: prompts up to {last}: {len(picked)} pairs")
    return pd.concat(picks, ignore_index=True) if picks else pd.DataFrame(columns=KEY_COLUMNS)
