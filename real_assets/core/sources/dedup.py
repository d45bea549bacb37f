"""Which staged responses stay: the first occurrence of each response id (a window over ids and
positions), and at most a cap of responses per prompt, in file order."""

from __future__ import annotations

import duckdb

FIRST_PER_RESPONSE_ID = "partition by response_id order by row_number, item"
"""The window that ranks the occurrences of each response id in file order (row, then item)."""


def later_occurrences(table: str, window: str) -> str:
    """The (row_number, item) of every row of `table` that is not the first of its `window` partition. The
    window sees only ids and positions: over whole rows it cost as much as writing them. A window rather
    than a grouped form because it spills: DISTINCT ON and an IN over an aggregate ran out of DuckDB's
    memory_limit at 2M rows."""
    return (
        "select row_number, item from ("
        f"select row_number, item, row_number() over ({window}) as nth from {table}"
        ") where nth > 1"
    )


def cap_responses(con: duckdb.DuckDBPyConnection, cap: int, stored: str | None = None) -> int:
    """Keep at most `cap` responses per prompt: new response ids past the cap (in file order, after the
    responses already in the `stored` table, if given) leave staged_responses. Returns how many left."""
    stored_ids = (
        f"where not exists (select 1 from {stored} as r where r.response_id = s.response_id)"
        if stored
        else ""
    )
    existing = (
        f"select prompt_id, count(*) as n from {stored} "
        "where prompt_id in (select prompt_id from new) group by prompt_id"
        if stored
        else "select null::varchar as prompt_id, 0 as n where false"
    )
    # Staged rows plus stored responses bound the count from above: within the cap, nothing to rank.
    bound = con.execute(f"""
        with new as (select prompt_id, count(*) as n from staged_responses group by prompt_id),
        existing as ({existing})
        select coalesce(max(new.n + coalesce(e.n, 0)), 0) from new left join existing as e using (prompt_id)
    """).fetchone()[0]
    if bound <= cap:
        return 0
    con.execute(f"""
        create or replace temp table _over_cap as
        with new as (
            select prompt_id, response_id, min(row_number) as first_row,
                   arg_min(item, row_number) as first_item
            from staged_responses as s {stored_ids}
            group by prompt_id, response_id
        ),
        existing as ({existing}),
        ranked as (
            select new.response_id, coalesce(e.n, 0) + row_number() over (
                partition by new.prompt_id order by first_row, first_item, new.response_id) as k
            from new left join existing as e using (prompt_id)
        )
        select response_id from ranked where k > {int(cap)}
    """)
    dropped = con.execute("select count(*) from _over_cap").fetchone()[0]
    if dropped:
        con.execute("delete from staged_responses where response_id in (select response_id from _over_cap)")
    con.execute("drop table _over_cap")
    return int(dropped)
