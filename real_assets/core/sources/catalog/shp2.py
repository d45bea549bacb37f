"""stanfordnlp/SHP-2: `history`, `human_ref_A/B`, `score_A/B` (the reference's score).

SHP-2 repeats each comment in many pair rows: each response id is yielded once per run."""

from __future__ import annotations

import real_assets.core.sources.rowchecks as rc
import real_assets.core.sources.sqlchecks as sq
from real_assets.core.sources.registry import Layout, Source, Vectorized, schema_error
from real_assets.core.sources.spec import SourceSpec

COLUMNS = ("history", "human_ref_A", "human_ref_B", "score_A", "score_B")


def _layout(spec: SourceSpec, where: str, found: list[str]) -> Layout:
    if not set(COLUMNS) <= set(found):
        raise schema_error(spec, where, "columns " + ", ".join(COLUMNS), found)
    max_chars = spec.max_chars

    def validate(row: dict) -> tuple[list[rc.Item], str]:
        history = rc.text(row.get("history"), "history", max_chars)
        ref_a = rc.text(row.get("human_ref_A"), "human_ref_A", max_chars)
        ref_b = rc.text(row.get("human_ref_B"), "human_ref_B", max_chars)
        score_a = rc.score(row.get("score_A"), "score_A")
        score_b = rc.score(row.get("score_B"), "score_B")
        return [(history, ref_a, score_a), (history, ref_b, score_b)], rc.PAIR

    def vectorized(col) -> Vectorized:
        h, a, b = col("history"), col("human_ref_A"), col("human_ref_B")
        lets = [("score_a", sq.score_value(col("score_A"))), ("score_b", sq.score_value(col("score_B")))]
        accept = " and ".join(
            [
                *(sq.text_ok(c, max_chars) for c in (h, a, b)),
                sq.finite("score_a"),
                sq.finite("score_b"),
                f"{sq.normalised(a.v)} <> {sq.normalised(b.v)}",
            ]
        )
        return Vectorized(accept, [(h.v, a.v, "score_a"), (h.v, b.v, "score_b")], lets=lets)

    return Layout(COLUMNS, validate, "human_ref_B", vectorized)


SOURCE = Source(
    "shp2", "stanfordnlp/SHP-2: two scored comments on one post per row", _layout, unique_responses=True
)
