"""Table digests kept up to date from the rows removed and added, instead of rehashing whole tables.

A table's content digest (`core.hashing.table_digest_sql`, format 2) is the SHA-256 of its row count and of
two sums of per-row hashes: it is additive over rows. `models.key_digests` keeps those three numbers per
table and per value of a key column (the prompt; one row under `''` for a table without one), so that:

- a writer that removes and adds rows updates the numbers from those rows alone (`apply_delta`), and the
  table's digest is their total (`tracked_digest`), equal to a full recomputation;
- a step downstream (an incremental SQL model, a selection partition) finds which prompts changed upstream
  without reading the tables: every change stamps the keys it touched with a new sequence number, and the
  step remembers the last number it saw of each upstream table (`plan_refresh`).

A table is tracked once `record_full` has run on it; a tracked table whose row count no longer matches
(written by something that kept no account) is recounted in full.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import duckdb

from real_assets.core.identifiers import validate_identifier

KEY_DIGESTS = "models.key_digests"
_HALF = "18446744073709551615"  # 2**64 - 1
_DDL = f"""
create table if not exists {KEY_DIGESTS} (
    table_name varchar not null, key_column varchar, key varchar,
    rows bigint not null, hi decimal(38, 0) not null, lo decimal(38, 0) not null, seq bigint not null
)
"""
# The sums as DECIMAL(38, 0), not HUGEINT: DuckLake keeps a HUGEINT column to a double's precision only.
# The row with a null key marks a tracked table, names its key column, and its `seq` is the table's epoch:
# the stamp of its last full count. A key whose rows are all gone stays, with 0 rows, so that the change
# is seen downstream.


def _table(table: str) -> str:
    schema, _, name = table.partition(".")
    check = validate_identifier
    return f"{check(schema, 'schema')}.{check(name, 'table')}"


def key_parts_sql(relation: str, key_column: str | None) -> str:
    """(key, rows, hi, lo) per key value of `relation`'s rows: the digest parts of `table_digest_sql`.
    The rows' JSON must have the table's columns in its order (a `select *` of it, or a table created
    from the same select)."""
    key = f"t.{validate_identifier(key_column, 'column')}" if key_column else "''"
    return (
        f"select key, count(*) as rows, coalesce(sum((h >> 64)::ubigint), 0)::hugeint as hi, "
        f"coalesce(sum((h & {_HALF})::ubigint), 0)::hugeint as lo "
        f"from (select {key} as key, md5_number(to_json(t)) as h from {relation} as t) group by key"
    )


def ensure_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(_DDL)


def record_full(con: duckdb.DuckDBPyConnection, table: str, key_column: str | None) -> None:
    """Count every row of `table` afresh (one pass) and start tracking it."""
    table = _table(table)
    ensure_table(con)
    seq = _next_seq(con)
    con.execute(f"delete from {KEY_DIGESTS} where table_name = ?", [table])
    con.execute(f"insert into {KEY_DIGESTS} values (?, ?, null, 0, 0, 0, ?)", [table, key_column, seq])
    con.execute(
        f"insert into {KEY_DIGESTS} select ?, ?, key, rows, hi, lo, ? "
        f"from ({key_parts_sql(table, key_column)})",
        [table, key_column, seq],
    )


def _next_seq(con: duckdb.DuckDBPyConnection) -> int:
    # Not a sequence object: DuckLake has none. Writers of the warehouse take turns (one writing process
    # per DuckDB file; a commit conflict on DuckLake retries the whole transaction).
    return con.execute(f"select coalesce(max(seq), 0) + 1 from {KEY_DIGESTS}").fetchone()[0]


def apply_delta(
    con: duckdb.DuckDBPyConnection, table: str, key_column: str | None, relation: str, sign: int
) -> None:
    """Add (`sign` 1) or subtract (-1) the rows of `relation` to the tracked numbers of `table`: call it
    with the rows about to be deleted (before the delete) and with the rows inserted. The keys touched are
    stamped with a new sequence number."""
    if sign not in (1, -1):
        raise ValueError("sign is 1 (rows added) or -1 (rows removed)")
    table = _table(table)
    con.execute(f"create or replace temp table _key_delta as {key_parts_sql(relation, key_column)}")
    if con.execute("select count(*) from _key_delta").fetchone()[0]:
        seq = _next_seq(con)
        con.execute(
            f"""update {KEY_DIGESTS} as k set rows = k.rows + {sign} * d.rows, hi = k.hi + {sign} * d.hi,
                   lo = k.lo + {sign} * d.lo, seq = ?
                from _key_delta as d where k.table_name = ? and k.key = d.key""",
            [seq, table],
        )
        con.execute(
            f"""insert into {KEY_DIGESTS}
                select ?, ?, d.key, {sign} * d.rows, {sign} * d.hi, {sign} * d.lo, ? from _key_delta as d
                where not exists
                    (select 1 from {KEY_DIGESTS} as k where k.table_name = ? and k.key = d.key)""",
            [table, key_column, seq, table],
        )
    con.execute("drop table _key_delta")


def is_tracked(con: duckdb.DuckDBPyConnection, table: str, key_column: str | None) -> bool:
    """Whether `table` is tracked by `key_column` and its row count matches the tracked one."""
    table = _table(table)
    ensure_table(con)
    marker, rows = con.execute(
        f"""select count(*) filter (where key is null and key_column is not distinct from ?),
                   coalesce(sum(rows), 0)
            from {KEY_DIGESTS} where table_name = ?""",
        [key_column, table],
    ).fetchone()
    if not marker:
        return False
    return con.execute(f"select count(*) from {table}").fetchone()[0] == rows


def ensure_tracked(con: duckdb.DuckDBPyConnection, table: str, key_column: str | None) -> bool:
    """Track `table` by `key_column`, counting it in full when it is not tracked (or its row count does not
    match); returns whether it had to be counted."""
    if is_tracked(con, table, key_column):
        return False
    record_full(con, table, key_column)
    return True


def digest_from_parts(rows: int, hi: int, lo: int) -> str:
    """The table digest of `table_digest_sql` from its three parts."""
    return hashlib.sha256(f"{rows}:{hi}:{lo}".encode()).hexdigest()


def tracked_digest(con: duckdb.DuckDBPyConnection, table: str) -> tuple[str, int]:
    """(digest, rows) of a tracked table from its tracked numbers: no row is read."""
    rows, hi, lo = con.execute(
        f"select coalesce(sum(rows), 0), coalesce(sum(hi), 0), coalesce(sum(lo), 0) from {KEY_DIGESTS} "
        "where table_name = ?",
        [_table(table)],
    ).fetchone()
    return digest_from_parts(int(rows), int(hi), int(lo)), int(rows)


# ------------------------------------------------------------------------------------ partition digests

PARTITION_DIGESTS = "models.partition_digests"
_PARTITION_DDL = f"""
create table if not exists {PARTITION_DIGESTS} (
    scope varchar not null, rows bigint not null, hi decimal(38, 0) not null, lo decimal(38, 0) not null
)
"""


def parts_of(con: duckdb.DuckDBPyConnection, relation: str) -> tuple[int, int, int]:
    """(rows, hi, lo) of `relation`'s rows in one pass: the parts of their digest (`digest_from_parts`).
    The rows must have their table's columns in its order, as in `key_parts_sql`."""
    row = con.execute(
        f"select coalesce(sum(rows), 0), coalesce(sum(hi), 0), coalesce(sum(lo), 0) "
        f"from ({key_parts_sql(relation, None)})"
    ).fetchone()
    return int(row[0]), int(row[1]), int(row[2])


def kept_partition_parts(
    con: duckdb.DuckDBPyConnection, scope: str, relation: str
) -> tuple[int, int, int] | None:
    """The digest parts kept for one partition of a table (`scope`: the step that writes it) while they
    still count its rows (`relation`); None when none are kept or its row count changed outside the step."""
    con.execute(_PARTITION_DDL)
    row = con.execute(f"select rows, hi, lo from {PARTITION_DIGESTS} where scope = ?", [scope]).fetchone()
    if row is None or con.execute(f"select count(*) from {relation}").fetchone()[0] != row[0]:
        return None
    return int(row[0]), int(row[1]), int(row[2])


def keep_partition_parts(con: duckdb.DuckDBPyConnection, scope: str, parts: tuple[int, int, int]) -> str:
    """Keep one partition's digest parts (a writer that removed and added rows passes the kept parts less
    the removed rows' plus the added rows'); returns the partition's digest, as `table_digest_sql` over
    its rows gives it."""
    con.execute(_PARTITION_DDL)
    con.execute(f"delete from {PARTITION_DIGESTS} where scope = ?", [scope])
    con.execute(f"insert into {PARTITION_DIGESTS} values (?, ?, ?, ?)", [scope, *parts])
    return digest_from_parts(*parts)


# ------------------------------------------------------------------------------------ incremental steps

STEP_STATE = "models.incremental_state"
STEP_INPUTS = "models.incremental_inputs"
_STEP_DDL = f"""
create table if not exists {STEP_STATE} (step varchar not null, version varchar not null);
create table if not exists {STEP_INPUTS} (
    step varchar not null, table_name varchar not null, epoch bigint not null, seen bigint not null
);
"""


def plan_refresh(
    con: duckdb.DuckDBPyConnection,
    step: str,
    upstream_tables: Sequence[str],
    key_column: str,
    version: str,
    full_refresh: bool = False,
) -> str | None:
    """Prepare a refresh of `step` (a SQL model, a selection partition) from the tracked digests of the
    tables it reads: temp table `_changed_keys` (key) holds the key values whose upstream rows changed (or
    went) since the step last recorded its inputs (`record_inputs`), found from the sequence numbers of
    the changes, without reading the tables. Returns why the step must rebuild in full instead (requested,
    first run, a new `version` of its code and config, an upstream table counted afresh), or None. Call in
    the step's transaction."""
    ensure_table(con)
    con.execute(_STEP_DDL)
    for upstream in upstream_tables:
        ensure_tracked(con, upstream, key_column)
    names = [_table(t) for t in upstream_tables]
    con.execute(
        f"""create or replace temp table _upstream_now as
            select table_name, max(seq) filter (where key is null) as epoch, max(seq) as seen
            from {KEY_DIGESTS} where table_name in (select unnest(?::varchar[])) group by table_name""",
        [names],
    )
    con.execute(
        f"""create or replace temp table _changed_keys as
            select distinct k.key from {KEY_DIGESTS} as k
            join {STEP_INPUTS} as i on i.step = ? and i.table_name = k.table_name
            where k.key is not null and k.seq > i.seen""",
        [step],
    )
    if full_refresh:
        return "full refresh requested"
    row = con.execute(f"select version from {STEP_STATE} where step = ?", [step]).fetchone()
    if row is None:
        return "first run"
    if row[0] != version:
        return f"code or config changed ({row[0]} -> {version})"
    recounted = con.execute(
        f"""select min(n.table_name) from _upstream_now as n
            left join {STEP_INPUTS} as i on i.step = ? and i.table_name = n.table_name
            where i.epoch is distinct from n.epoch""",
        [step],
    ).fetchone()[0]
    if recounted is not None:
        return f"{recounted} was counted afresh"
    return None


def upstream_seen(con: duckdb.DuckDBPyConnection) -> list[tuple[str, int, int]]:
    """The upstream tables' sequence numbers that `plan_refresh` found, for a step that writes its rows
    over several connections and records them at the end (`record_inputs(..., seen=...)`)."""
    return con.execute("select table_name, epoch, seen from _upstream_now").fetchall()


def record_inputs(
    con: duckdb.DuckDBPyConnection,
    step: str,
    version: str,
    seen: Sequence[tuple[str, int, int]] | None = None,
) -> None:
    """After the step's rows are written: record the sequence numbers of the upstream tables it has now
    seen (from `plan_refresh` on this connection, or `seen` as `upstream_seen` gave them), and its version."""
    con.execute(f"delete from {STEP_INPUTS} where step = ?", [step])
    if seen is None:
        con.execute(f"insert into {STEP_INPUTS} select ?, table_name, epoch, seen from _upstream_now", [step])
    elif seen:
        con.executemany(f"insert into {STEP_INPUTS} values (?, ?, ?, ?)", [(step, *row) for row in seen])
    con.execute(f"delete from {STEP_STATE} where step = ?", [step])
    con.execute(f"insert into {STEP_STATE} values (?, ?)", [step, version])
