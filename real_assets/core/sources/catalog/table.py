"""Any JSONL / CSV / Parquet with a `column_map`: prompt+response+score, or prompt+chosen+rejected
(optionally score_chosen+score_rejected). Without a map, the layout is detected from the column names."""

from __future__ import annotations

from collections.abc import Callable

import real_assets.core.sources.rowchecks as rc
import real_assets.core.sources.sqlchecks as sq
from real_assets.core.records import SourceError
from real_assets.core.sources.registry import Layout, Source, Vectorized, schema_error
from real_assets.core.sources.spec import SourceSpec

POINT = ("prompt", "response", "score")
PAIR = ("prompt", "chosen", "rejected")
PAIR_OPTIONAL = ("score_chosen", "score_rejected")


def pair_validator(
    spec: SourceSpec, prompt_col: str, chosen_col: str, rejected_col: str, sc_col: str, sr_col: str
) -> rc.Validator:
    """Chosen/rejected as texts or message lists (shared with the UltraFeedback binarized layout)."""
    max_chars = spec.max_chars

    def validate(row: dict) -> tuple[list[rc.Item], str]:
        ctx_c, chosen = rc.messages(row.get(chosen_col), chosen_col, max_chars)
        ctx_r, rejected = rc.messages(row.get(rejected_col), rejected_col, max_chars)
        if (
            ctx_c is not None
            and ctx_r is not None
            and (
                len(ctx_c) != len(ctx_r)
                or any(
                    rc_ != rr or not rc.same_text(cc, cr)
                    for (rc_, cc), (rr, cr) in zip(ctx_c, ctx_r, strict=True)
                )
            )
        ):
            raise rc.Reject(rejected_col, "prompt_mismatch")
        raw_prompt = row.get(prompt_col)
        if raw_prompt is None and ctx_c:
            prompt = rc.text(rc.render_context(ctx_c), prompt_col, max_chars)
        else:
            prompt = rc.text(raw_prompt, prompt_col, max_chars)
        sc = row.get(sc_col)
        sr = row.get(sr_col)
        score_c = 1.0 if sc is None else rc.score(sc, sc_col)
        score_r = 0.0 if sr is None else rc.score(sr, sr_col)
        kind = rc.LABELLED_PAIR if sc is None and sr is None else rc.PAIR
        return [(prompt, chosen, score_c), (prompt, rejected, score_r)], kind

    return validate


def pair_vectorized(
    max_chars: int, prompt_col: str, chosen_col: str, rejected_col: str, sc_col: str, sr_col: str
) -> Callable:
    """The SQL form of pair_validator for plain-text chosen/rejected (message lists go row-wise)."""

    def vectorized(col) -> Vectorized:
        p, c, r, sc, sr = (col(n) for n in (prompt_col, chosen_col, rejected_col, sc_col, sr_col))
        lets = [
            ("score_c", f"(case when {sc.t} = 'null' then 1.0 else {sq.score_value(sc)} end)"),
            ("score_r", f"(case when {sr.t} = 'null' then 0.0 else {sq.score_value(sr)} end)"),
        ]
        accept = " and ".join(
            [
                *(sq.text_ok(x, max_chars) for x in (p, c, r)),
                sq.finite("score_c"),
                sq.finite("score_r"),
                f"{sq.normalised(c.v)} <> {sq.normalised(r.v)}",
            ]
        )
        return Vectorized(
            accept,
            [(p.v, c.v, "score_c"), (p.v, r.v, "score_r")],
            labelled=f"({sc.t} = 'null' and {sr.t} = 'null')",
            lets=lets,
        )

    return vectorized


def _point_vectorized(max_chars: int, prompt_col: str, response_col: str, score_col: str) -> Callable:
    def vectorized(col) -> Vectorized:
        p, r = col(prompt_col), col(response_col)
        lets = [("score", sq.score_value(col(score_col)))]
        accept = f"{sq.text_ok(p, max_chars)} and {sq.text_ok(r, max_chars)} and {sq.finite('score')}"
        return Vectorized(accept, [(p.v, r.v, "score")], lets=lets)

    return vectorized


def _point_validator(spec: SourceSpec, prompt_col: str, response_col: str, score_col: str) -> rc.Validator:
    max_chars = spec.max_chars

    def validate(row: dict) -> tuple[list[rc.Item], str]:
        prompt = rc.text(row.get(prompt_col), prompt_col, max_chars)
        response = rc.text(row.get(response_col), response_col, max_chars)
        return [(prompt, response, rc.score(row.get(score_col), score_col))], rc.SCORED

    return validate


def check_column_map(spec: SourceSpec) -> None:
    """SourceError for a column_map that names neither layout."""
    cmap = spec.column_map
    if not cmap:
        return
    if not isinstance(cmap, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v and "\x00" not in v for k, v in cmap.items()
    ):
        raise SourceError(f"table: bad column_map {cmap!r}: expected a dict of key -> non-empty column name")
    keys = set(cmap)
    if keys == set(POINT) or (set(PAIR) <= keys and keys <= set(PAIR) | set(PAIR_OPTIONAL)):
        return
    raise SourceError(
        f"table: bad column_map keys {sorted(keys)}: expected exactly prompt, response, score "
        "or prompt, chosen, rejected (optionally score_chosen, score_rejected)"
    )


def _column_map(spec: SourceSpec, where: str, found: list[str]) -> dict[str, str]:
    if spec.column_map:
        return spec.column_map
    cols = set(found)
    if set(POINT) <= cols:
        return {k: k for k in POINT}
    if set(PAIR) <= cols:
        return {k: k for k in PAIR + PAIR_OPTIONAL}
    raise schema_error(
        spec,
        where,
        "columns prompt, response, score or prompt, chosen, rejected (or pass a column_map)",
        found,
    )


def _layout(spec: SourceSpec, where: str, found: list[str]) -> Layout:
    check_column_map(spec)
    cols = set(found)
    cmap = _column_map(spec, where, found)
    missing = [c for k, c in cmap.items() if c not in cols and k not in PAIR_OPTIONAL]
    if missing:
        raise SourceError(
            f"table: {where} lacks the mapped column(s) {missing} (column_map={cmap}); "
            f"found columns {sorted(found)}"
        )
    if "response" in cmap:
        columns = tuple(cmap[k] for k in POINT)
        return Layout(
            columns, _point_validator(spec, *columns), vectorized=_point_vectorized(spec.max_chars, *columns)
        )
    sc, sr = cmap.get("score_chosen", "\0score_chosen"), cmap.get("score_rejected", "\0score_rejected")
    columns = tuple(cmap[k] for k in PAIR) + tuple(c for c in (sc, sr) if c in cols)
    names = (cmap["prompt"], cmap["chosen"], cmap["rejected"], sc, sr)
    return Layout(
        columns,
        pair_validator(spec, *names),
        cmap["rejected"],
        pair_vectorized(spec.max_chars, *names),
    )


SOURCE = Source(
    "table", "any JSONL/CSV/Parquet with a column map (pointwise or pairs)", _layout, takes_column_map=True
)
