"""The reference policy's scores of every train candidate pair (`ref_margin`, `ches`), kept per reference
version in the warehouse and computed only for pairs not yet scored: what `margin` and `ches` select by."""

import pandas as pd

from real_assets.core import table_digests
from real_assets.core.ranges import key_ranges
from real_assets.core.reference_scores import reference_pair_scores
from real_assets.core.selection import KEY_COLUMNS
from real_assets.defs.training import recorded_checkpoint
from real_assets.resources import Compute, Warehouse

CANDIDATES_TABLE = "selection.pair_candidates"
TRAIN_CANDIDATES = f"(select * from {CANDIDATES_TABLE} where split = 'train')"
REFERENCE_SCORES = "selection.reference_pair_scores"
"""`ref_margin` and `ches` of the train pairs under one reference version: computed once per pair and
reference, a range of prompts at a time, and shared by `margin` and `ches` on every seed."""
SCORE_PAIRS_PER_RANGE = 50_000
"""Pairs (with their texts: about 45 MB in pandas) the reference model scores per call: a range of whole
prompts (`key_ranges`), so memory does not grow with the corpus."""
SCORES_DDL = f"""
create table if not exists {REFERENCE_SCORES} (
    reference_version varchar not null, prompt_id varchar not null, chosen_id varchar not null,
    rejected_id varchar not null, ref_margin double, ches double
)
"""


def score_pending_pairs(warehouse: Warehouse, reference_version: str, compute: Compute, report) -> int:
    """Score the train pairs that have no score under `reference_version` yet, one range of whole prompts
    at a time (memory: about `SCORE_PAIRS_PER_RANGE` pairs' texts), and drop the scores of other versions.
    After a first complete pass, only the prompts whose candidates changed since (`core.table_digests`)
    are looked at, so a refresh (and every partition after the first) does not scan every pair for
    scores. Returns the pairs scored."""
    with warehouse.connect() as con:
        con.execute(SCORES_DDL)
        con.execute("begin transaction")
        try:
            con.execute(f"delete from {REFERENCE_SCORES} where reference_version <> ?", [reference_version])
            full = table_digests.plan_refresh(
                con, REFERENCE_SCORES, (CANDIDATES_TABLE,), "prompt_id", reference_version
            )
            changed = (
                None if full else [key for (key,) in con.execute("select key from _changed_keys").fetchall()]
            )
            seen = table_digests.upstream_seen(con)
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
    scored = 0
    ranges = []
    if changed != []:
        with warehouse.connect(read_only=True) as con:
            ranges = key_ranges(con, *_pending(reference_version, changed), SCORE_PAIRS_PER_RANGE)
    for after, last in ranges:
        pending, params = _pending(reference_version, changed, (after, last))
        with warehouse.connect(read_only=True) as con:
            pairs = con.execute(
                f"""select p.prompt_id, p.chosen_id, p.rejected_id, t.prompt, c.response as chosen,
                           r.response as rejected
                    from ({pending}) as p join raw.prompts as t using (prompt_id)
                    join raw.responses as c on c.response_id = p.chosen_id
                    join raw.responses as r on r.response_id = p.rejected_id
                    order by p.prompt_id, p.chosen_id, p.rejected_id""",
                params,
            ).df()
        scores = _reference_scores(warehouse, pairs, reference_version, compute, report)
        frame = pd.concat([pairs[KEY_COLUMNS].reset_index(drop=True), scores.reset_index(drop=True)], axis=1)
        frame = frame.assign(reference_version=reference_version)
        with warehouse.connect() as con:
            con.register("scores_frame", frame)
            con.execute(f"insert into {REFERENCE_SCORES} by name select * from scores_frame")
        scored += len(frame)
    with warehouse.connect() as con:  # every pair seen up to `seen` now has its score
        table_digests.record_inputs(con, REFERENCE_SCORES, reference_version, seen)
    return scored


def _pending(
    reference_version: str, changed: list[str] | None, bounds: tuple[str, str] | None = None
) -> tuple[str, list]:
    """The train pairs with no score under `reference_version` (of the `changed` prompts only, and in the
    `(after, last]` prompt range, where given), and the parameters of that SQL. Both sides of the anti join
    are narrowed alike, so the scores side is read for those prompts alone: an anti join against every
    stored score ran out of a 128MB `memory_limit` in a refresh at 1M responses."""
    narrow, params = "", []
    if changed is not None:
        narrow, params = " and prompt_id in (select unnest(?::varchar[]))", [changed]
    if bounds is not None:
        narrow, params = f"{narrow} and prompt_id > ? and prompt_id <= ?", [*params, *bounds]
    sql = f"""select prompt_id, chosen_id, rejected_id
              from {TRAIN_CANDIDATES} as k
              anti join (select prompt_id, chosen_id, rejected_id from {REFERENCE_SCORES}
                         where reference_version = ?{narrow}) as s
              using (prompt_id, chosen_id, rejected_id)
              where true{narrow}"""
    return sql, [reference_version, *params, *params]


def _reference_scores(warehouse, candidates, reference_version, compute, report) -> pd.DataFrame:
    reference, training = recorded_checkpoint(warehouse, "reference_policy", reference_version)
    scores, _ = compute.run(
        reference_pair_scores,
        reference,
        candidates[["prompt", "chosen", "rejected"]],
        max_length=training["max_length"],
        min_response_tokens=training["min_response_tokens"],
        report=report,
    )
    return scores
