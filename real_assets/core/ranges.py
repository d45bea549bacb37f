"""Key ranges: how a step reads (or builds) a table a bounded piece at a time, whatever its size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb

from real_assets.core.identifiers import validate_identifier


def key_ranges(
    con: duckdb.DuckDBPyConnection,
    rows_sql: str,
    params: Sequence[Any],
    max_rows: int,
    key: str = "prompt_id",
) -> list[tuple[str, str]]:
    """`(after, last]` ranges of `key` that together cover the rows of `rows_sql` (its `?` bound to `params`),
    in `key` order, each of whole keys and about `max_rows` rows: a range ends at the key that reaches
    `max_rows`, so it holds at most `max_rows` rows plus its last key's rows less one. One scan of the rows,
    however many ranges: what lets a step read a table a bounded range at a time. Keys are text (the first
    range starts after ''); rows whose key is null are in no range."""
    column = validate_identifier(key, "column")
    ends = con.execute(
        f"""select max({column}) from (
                select {column}, coalesce(sum(n) over (order by {column}
                    rows between unbounded preceding and 1 preceding), 0) as before
                from (select {column}, count(*) as n from ({rows_sql}) group by {column}))
            group by before // ? order by 1""",
        [*params, int(max_rows)],
    ).fetchall()
    ends = [end for (end,) in ends]
    return list(zip(["", *ends], ends))  # each range starts after the previous one's end
