"""The SQL models in `dbt_like_sql/`: one `select` per file, `<schema>/<table>.sql`, whose first line
names its key columns (`-- key: a, b`), in the order its content is digested. A model may declare an
incremental key (`-- incremental: prompt_id`): a column of its output and of every table it reads, such
that the output rows of one key value are computed from the upstream rows of that value alone. The runner
(`run_sql_model`) then recomputes only the key values whose upstream rows changed since its last run.

They ship as package data (`real_assets/dbt_like_sql`, a link to the top-level folder in a checkout), so an
installed wheel finds them beside the package, never through the source tree.

Upstream tables and column lineage come from parsing the SQL with sqlglot, never from regexes, so the
asset graph follows the files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.lineage import lineage

from real_assets.core import table_digests
from real_assets.core.identifiers import validate_identifier
from real_assets.core.ranges import key_ranges

DIALECT = "duckdb"
SQL_ROOT = Path(__file__).resolve().parents[1] / "dbt_like_sql"
"""Package data: `real_assets/dbt_like_sql`, installed with the package (a link to the top-level folder in a
checkout)."""
_KEY_LINE = re.compile(r"^--\s*key:(.*)$", re.MULTILINE)
_INCREMENTAL_LINE = re.compile(r"^--\s*incremental:(.*)$", re.MULTILINE)
MAX_ROWS_PER_RANGE = 200_000
"""At most this many upstream rows per statement of an incremental model (`rows_per_range`)."""
RANGE_BYTES_PER_ROW = 4096
"""DuckDB memory a range may count on per upstream row: the similarity self-join of one range of 384-float
vectors ran out of a 128MB `memory_limit` at 100,000 upstream rows and fit at 30,000 (2026-12-05)."""
_SIZE = re.compile(r"^\s*([0-9.]+)\s*([kmgtp]i?b|bytes?)\s*$", re.IGNORECASE)
_UNITS = {"byte": 1, "bytes": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15}
_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50}


@dataclass(frozen=True)
class SqlModel:
    """One SQL file: the table it builds and the tables it reads."""

    schema: str
    name: str
    path: Path
    sql: str
    upstream_tables: tuple[str, ...]
    columns: tuple[str, ...]
    keys: tuple[str, ...]
    incremental_key: str | None = None
    """The column by whose values the model recomputes only what changed (None: always in full)."""

    @property
    def table(self) -> str:
        return f"{self.schema}.{self.name}"


def parse_sql_model(path: Path) -> SqlModel:
    """Parse one `.sql` file; fails naming the file if it is not a single select."""
    sql = path.read_text()
    try:
        tree = sqlglot.parse_one(sql, dialect=DIALECT)
    except sqlglot.errors.ParseError as e:
        raise ValueError(f"{path}: cannot parse SQL: {e}") from e
    if not isinstance(tree, exp.Query):
        raise ValueError(f"{path}: a SQL model must be one select statement")
    cte_names = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    upstream = sorted(
        {f"{t.db}.{t.name}" for t in tree.find_all(exp.Table) if t.name not in cte_names and t.db}
    )
    unqualified = sorted({t.name for t in tree.find_all(exp.Table) if t.name not in cte_names and not t.db})
    if unqualified:
        raise ValueError(f"{path}: tables must be schema-qualified, found {', '.join(unqualified)}")
    columns = tuple(s.alias_or_name for s in tree.selects)
    if "*" in columns:
        raise ValueError(f"{path}: list the output columns instead of select *")
    key_line = _KEY_LINE.search(sql)
    keys = tuple(k.strip() for k in key_line.group(1).split(",")) if key_line else ()
    if not keys or not set(keys) <= set(columns):
        raise ValueError(f"{path}: start with `-- key: <output columns that identify a row>`")
    incremental = _INCREMENTAL_LINE.search(sql)
    incremental_key = incremental.group(1).strip() if incremental else None
    if incremental_key is not None and incremental_key not in keys:
        raise ValueError(f"{path}: the incremental key {incremental_key!r} must be one of the key columns")
    return SqlModel(
        schema=validate_identifier(path.parent.name, "schema"),
        name=validate_identifier(path.stem, "table name"),
        path=path,
        sql=sql,
        upstream_tables=tuple(upstream),
        columns=columns,
        keys=keys,
        incremental_key=incremental_key,
    )


def load_sql_models(root: Path = SQL_ROOT) -> list[SqlModel]:
    """Every `<schema>/<table>.sql` under root, sorted by path; fails if there is none (a broken install)."""
    if not any(root.glob("*/*.sql")):
        raise FileNotFoundError(f"no SQL models under {root}: is the package installed with its data?")
    return [parse_sql_model(p) for p in sorted(root.glob("*/*.sql"))]


def column_lineage(
    model: SqlModel, schema: dict[str, dict[str, dict[str, str]]]
) -> dict[str, list[tuple[str, str]]]:
    """For each output column, the sorted (upstream table, column) pairs it is computed from.

    `schema` is {db: {table: {column: type}}}, read from the warehouse's information_schema.
    """
    out: dict[str, list[tuple[str, str]]] = {}
    for column in model.columns:
        node = lineage(column, model.sql, schema, dialect=DIALECT)
        sources = set()
        for leaf in node.walk():
            if leaf.downstream or not isinstance(leaf.source, exp.Table):
                continue
            sources.add((f"{leaf.source.db}.{leaf.source.name}", leaf.name.split(".")[-1]))
        out[column] = sorted(sources)
    return out


# ------------------------------------------------------------------------------------------------ runner


@dataclass(frozen=True)
class ModelRun:
    """What one run of a SQL model did: `full` or `incremental`, why, how many key values (prompts) it
    recomputed (None for a model without an incremental key), and the table's rows and digest after."""

    mode: str
    reason: str
    recomputed_keys: int | None
    rows_removed: int
    rows_added: int
    rows: int
    digest: str


def restricted_sql(model: SqlModel, keys_relation: str) -> str:
    """The model's select with every upstream table narrowed to the rows whose incremental key is in
    `keys_relation` (a relation with a `key` column): the output rows of exactly those key values."""
    if model.incremental_key is None:
        raise ValueError(f"{model.path}: declares no incremental key")
    key = validate_identifier(model.incremental_key, "column")
    tree = sqlglot.parse_one(model.sql, dialect=DIALECT)
    cte_names = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}

    def narrow(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table) and node.db and node.name not in cte_names:
            inner = sqlglot.parse_one(
                f"select * from {node.db}.{node.name} where {key} in (select key from {keys_relation})",
                dialect=DIALECT,
            )
            return exp.Subquery(this=inner, alias=exp.TableAlias(this=exp.to_identifier(node.alias_or_name)))
        return node

    return tree.transform(narrow).sql(dialect=DIALECT)


def run_sql_model(
    con: duckdb.DuckDBPyConnection, model: SqlModel, code_version: str, full_refresh: bool = False
) -> ModelRun:
    """Build `model.table` in one transaction. A model with an incremental key recomputes only the key
    values whose upstream rows changed since its last run (found from the upstream tables' per-key
    digests, `core.table_digests`, without reading them): delete and insert, and the table's digest updated
    from the rows removed and added. It rebuilds in full on request, on its first run, when its code
    version changed, or when its table was changed by something else."""
    con.execute("begin transaction")
    try:
        table_digests.ensure_table(con)
        run = _run(con, model, code_version, full_refresh)
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    return run


def rows_per_range(con: duckdb.DuckDBPyConnection) -> int:
    """Upstream rows one statement of an incremental model reads: as many as the connection's DuckDB
    `memory_limit` allows at `RANGE_BYTES_PER_ROW` each, at least 1,000 and at most `MAX_ROWS_PER_RANGE`."""
    limit = str(con.execute("select current_setting('memory_limit')").fetchone()[0])
    match = _SIZE.match(limit)
    if match is None:
        raise ValueError(f"DuckDB memory_limit {limit!r}: not a size this runner reads")
    allowed = int(float(match[1]) * _UNITS[match[2].lower()]) // RANGE_BYTES_PER_ROW
    return min(MAX_ROWS_PER_RANGE, max(1_000, allowed))


def _insert_in_ranges(
    con: duckdb.DuckDBPyConnection, model: SqlModel, keys: str, upstream: str, target: str
) -> None:
    """Insert into `target` the model's rows of the key values in `keys` (a relation with a `key` column),
    one range of whole key values at a time: `key_ranges` over `upstream` (the key column of the upstream
    rows concerned), about `rows_per_range` rows each. Every statement reads and joins a bounded share, so
    memory grows neither with the corpus (a full build) nor with the batch (a refresh): one statement over
    every embedding ran out of a 256 MB `memory_limit` at 1M responses. The range's bounds are bound
    parameters of one statement: a temp table of keys replaced for every range kept each old copy until
    the build's transaction committed (33 MiB of DuckDB's memory after 1,000 ranges of 3,000 keys)."""
    in_range = f"(select key from {keys} where key > $after and key <= $last)"
    insert = f"insert into {target} by name {restricted_sql(model, in_range)}"
    for after, last in key_ranges(con, upstream, [], rows_per_range(con), model.incremental_key):
        con.execute(insert, {"after": after, "last": last})


def _upstream_key_rows(model: SqlModel, keys: str | None = None) -> str:
    """The incremental key of every upstream row (only those of the key values in `keys`, if given)."""
    key = model.incremental_key
    where = f" where {key} in (select key from {keys})" if keys else ""
    return " union all ".join(f"select {key} from {table}{where}" for table in model.upstream_tables)


def _build_in_ranges(con: duckdb.DuckDBPyConnection, model: SqlModel) -> None:
    """A full build of an incremental model in ranges of whole key values (`_insert_in_ranges`); the table
    comes out ordered by the key."""
    con.execute(f"create or replace table {model.table} as select * from ({model.sql}) limit 0")
    upstream = _upstream_key_rows(model)
    # The keys once, so that a range's keys come from them and not from another scan of every upstream row
    con.execute(
        "create or replace temp table _upstream_keys as "
        f"select distinct {model.incremental_key} as key from ({upstream})"
    )
    _insert_in_ranges(con, model, "_upstream_keys", upstream, model.table)
    con.execute("drop table _upstream_keys")


def _run(con, model: SqlModel, code_version: str, full_refresh: bool) -> ModelRun:
    key = model.incremental_key
    reason = "no incremental key"
    if key is not None:
        reason = table_digests.plan_refresh(
            con, model.table, model.upstream_tables, key, code_version, full_refresh
        )
        if reason is None and not table_digests.is_tracked(con, model.table, key):
            reason = f"{model.table} changed outside its runs"
    if reason is not None:
        existed = con.execute(
            "select count(*) from information_schema.tables where table_catalog = current_database() "
            "and table_schema = ? and table_name = ?",
            [model.schema, model.name],
        ).fetchone()[0]
        removed = con.execute(f"select count(*) from {model.table}").fetchone()[0] if existed else 0
        if key is None:
            con.execute(f"create or replace table {model.table} as {model.sql}")
        else:
            _build_in_ranges(con, model)
        table_digests.record_full(con, model.table, key)
        recomputed = None
        if key is not None:
            table_digests.record_inputs(con, model.table, code_version)
            recomputed = con.execute(f"select count(distinct {key}) from {model.table}").fetchone()[0]
        digest, rows = table_digests.tracked_digest(con, model.table)
        return ModelRun("full", reason, recomputed, removed, rows, rows, digest)

    changed = con.execute("select count(*) from _changed_keys").fetchone()[0]
    removed = added = 0
    if changed:
        old_rows = f"(select * from {model.table} where {key} in (select key from _changed_keys))"
        removed = con.execute(f"select count(*) from {old_rows}").fetchone()[0]
        table_digests.apply_delta(con, model.table, key, old_rows, -1)
        con.execute(f"delete from {model.table} where {key} in (select key from _changed_keys)")
        # In the table's own types, so that the digest parts are those of the stored rows
        con.execute(f"create or replace temp table _new_rows as select * from {model.table} limit 0")
        _insert_in_ranges(
            con, model, "_changed_keys", _upstream_key_rows(model, "_changed_keys"), "_new_rows"
        )
        con.execute(f"insert into {model.table} by name select * from _new_rows")
        added = con.execute("select count(*) from _new_rows").fetchone()[0]
        table_digests.apply_delta(con, model.table, key, "_new_rows", 1)
        con.execute("drop table _new_rows")
    table_digests.record_inputs(con, model.table, code_version)
    digest, rows = table_digests.tracked_digest(con, model.table)
    return ModelRun("incremental", "upstream rows changed", changed, removed, added, rows, digest)
