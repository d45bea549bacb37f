"""Table digests kept up to date from the rows removed and added, instead of rehashing whole tables.

A table's content digest (`core.hashing.table_digest_sql`, format 2) is the SHA-256 of its row count and of
two sums of per-row hashes: it is additive over rows. `models.key_digests` keeps those three numbers per
table and per value of a key column (the prompt; one row under `''` for a table without one), so that:

- a writer that removes and adds rows updates the numbers from those rows alone (`apply_delta`), and the
  table's digest is their total (`tracked_digest`), equal to a full recomputation;
- an incremental SQL model finds which prompts changed upstream by comparing the per-prompt numbers of its
  upstream tables with those it recorded at its last run, without reading the tables (`core.sql_models`).

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
    rows bigint not null, hi hugeint not null, lo hugeint not null
)
"""
# The row with a null key marks a tracked table and names its key column.


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
    con.execute(f"delete from {KEY_DIGESTS} where table_name = ?", [table])
    con.execute(f"insert into {KEY_DIGESTS} values (?, ?, null, 0, 0, 0)", [table, key_column])
    con.execute(
        f"insert into {KEY_DIGESTS} select ?, ?, key, rows, hi, lo from ({key_parts_sql(table, key_column)})",
        [table, key_column],
    )


def apply_delta(
    con: duckdb.DuckDBPyConnection, table: str, key_column: str | None, relation: str, sign: int
) -> None:
    """Add (`sign` 1) or subtract (-1) the rows of `relation` to the tracked numbers of `table`: call it
    with the rows about to be deleted (before the delete) and with the rows inserted. Keys left with no
    rows are dropped."""
    if sign not in (1, -1):
        raise ValueError("sign is 1 (rows added) or -1 (rows removed)")
    table = _table(table)
    con.execute(f"create or replace temp table _key_delta as {key_parts_sql(relation, key_column)}")
    con.execute(
        f"""update {KEY_DIGESTS} as k set rows = k.rows + {sign} * d.rows, hi = k.hi + {sign} * d.hi,
               lo = k.lo + {sign} * d.lo
            from _key_delta as d where k.table_name = ? and k.key = d.key""",
        [table],
    )
    con.execute(
        f"""insert into {KEY_DIGESTS}
            select ?, ?, d.key, {sign} * d.rows, {sign} * d.hi, {sign} * d.lo from _key_delta as d
            where not exists (select 1 from {KEY_DIGESTS} as k where k.table_name = ? and k.key = d.key)""",
        [table, key_column, table],
    )
    con.execute(f"delete from {KEY_DIGESTS} where table_name = ? and key is not null and rows = 0", [table])
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


def upstream_fingerprints_sql(tables: Sequence[str]) -> str:
    """(key, fingerprint) per key value over the tracked numbers of `tables`: the fingerprint moves when
    any of the key's rows in any of the tables changes."""
    names = ", ".join(f"'{_table(t)}'" for t in tables)
    return (
        "select key, md5(string_agg(table_name || ':' || rows || ':' || hi || ':' || lo, ',' "
        f"order by table_name)) as fingerprint from {KEY_DIGESTS} "
        f"where table_name in ({names}) and key is not null group by key"
    )


# ------------------------------------------------------------------------------------ incremental steps

STEP_STATE = "models.incremental_state"
STEP_INPUTS = "models.incremental_inputs"
_STEP_DDL = f"""
create table if not exists {STEP_STATE} (step varchar not null, version varchar not null);
create table if not exists {STEP_INPUTS} (step varchar not null, key varchar not null, fingerprint varchar);
"""


def plan_refresh(
    con: duckdb.DuckDBPyConnection,
    step: str,
    upstream_tables: Sequence[str],
    key_column: str,
    version: str,
    full_refresh: bool = False,
) -> str | None:
    """Prepare a refresh of `step` (a SQL model, a selection partition) from the per-key digests of the
    tables it reads: temp table `_changed_keys` (key) holds the key values whose upstream rows changed (or
    went) since the step last recorded its inputs. Returns why the step must rebuild in full instead
    (requested, first run, new `version`: its code and config), or None. Call in the step's transaction."""
    ensure_table(con)
    con.execute(_STEP_DDL)
    for upstream in upstream_tables:
        ensure_tracked(con, upstream, key_column)
    con.execute("create or replace temp table _fingerprints as " + upstream_fingerprints_sql(upstream_tables))
    con.execute(
        f"""create or replace temp table _changed_keys as
            select coalesce(now.key, was.key) as key
            from _fingerprints as now
            full outer join (select key, fingerprint from {STEP_INPUTS} where step = ?) as was
                on was.key = now.key
            where now.fingerprint is distinct from was.fingerprint""",
        [step],
    )
    if full_refresh:
        return "full refresh requested"
    row = con.execute(f"select version from {STEP_STATE} where step = ?", [step]).fetchone()
    if row is None:
        return "first run"
    if row[0] != version:
        return f"code or config changed ({row[0]} -> {version})"
    return None


def record_inputs(con: duckdb.DuckDBPyConnection, step: str, version: str, full: bool) -> None:
    """After the step's rows are written: record the fingerprints it was computed from (all of them after a
    full rebuild, else those of `_changed_keys`) and its version."""
    if full:
        con.execute(f"delete from {STEP_INPUTS} where step = ?", [step])
        con.execute(f"insert into {STEP_INPUTS} select ?, key, fingerprint from _fingerprints", [step])
    else:
        con.execute(
            f"delete from {STEP_INPUTS} where step = ? and key in (select key from _changed_keys)", [step]
        )
        con.execute(
            f"insert into {STEP_INPUTS} select ?, key, fingerprint from _fingerprints "
            "where key in (select key from _changed_keys)",
            [step],
        )
    con.execute(f"delete from {STEP_STATE} where step = ?", [step])
    con.execute(f"insert into {STEP_STATE} values (?, ?)", [step, version])
