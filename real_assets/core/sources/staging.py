"""Stage a source into DuckDB temp tables: checks as column expressions, ids and dedup in SQL.

`stage_source(con, plan)` reads the source chunk by chunk and leaves on the connection:
- `staged_responses` (one row per kept response, ids computed; file order in row_number, item),
- `staged_rejects` (row_number, field, reason, excerpt): one row per rejected input row,
- `staged_rows` (row_number): the accepted input rows,
so that input rows = accepted + rejected. Rows the SQL checks accept go straight through; every other
row is checked by its source's row validator in Python, which names the field and reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

import real_assets.core.sources.sqlchecks as sq
from real_assets.core.records import SourceBatch, SourceError
from real_assets.core.sources.chunk_sql import (
    LINE_WHITESPACE,
    chunk_rows,
    col_of,
    column_typed,
    json_typed,
    row_key,
)
from real_assets.core.sources.dedup import FIRST_PER_RESPONSE_ID, later_occurrences
from real_assets.core.sources.files import locate, peek_columns
from real_assets.core.sources.readers import FIELD_SEPARATOR, JSON_FORM, Chunk, chunks, read_ahead
from real_assets.core.sources.reasons import (
    DUPLICATE_ROW,
    IDENTICAL_RESPONSES,
    ROW_FIELD,
    TOO_DEEPLY_NESTED,
)
from real_assets.core.sources.registry import Layout, Source, get_source
from real_assets.core.sources.rowchecks import LABELLED_PAIR, SCORED, Reject
from real_assets.core.sources.rowwise import EXCERPT_CHARS, excerpt, ids_of, parse_json
from real_assets.core.sources.spec import SourceSpec, check_spec_values

GENERATED_BATCH = 50_000
"""Responses a generated source yields per batch."""
SCAN_BATCH_ROWS = 16_384
"""A chunk is handed to DuckDB as Arrow record batches of this many rows: DuckDB scans the batches of
one Arrow table in parallel, but a single batch on one thread."""

# `_staged`: one row per item of an accepted input row, with its ids (row_key: the row's duplicate key);
# while a chunk is checked, also one row with a null item per row that the SQL checks did not accept.
_CREATE = """
create or replace temp table _staged (
    row_number bigint, item integer, prompt varchar, response varchar, score double, gold double,
    labelled_pair boolean, prompt_id varchar, response_id varchar, split varchar, row_key uhugeint
);
create or replace temp table staged_rejects (
    row_number bigint, field varchar, reason varchar, excerpt varchar
);
"""
_ITEMS_SCHEMA = pa.schema(
    [
        ("row_number", pa.int64()),
        ("item", pa.int32()),
        ("prompt", pa.string()),
        ("response", pa.string()),
        ("score", pa.float64()),
        ("gold", pa.float64()),
        ("labelled_pair", pa.bool_()),
        ("prompt_id", pa.string()),
        ("response_id", pa.string()),
        ("split", pa.string()),
    ]
)
_ITEM_COLUMNS = ", ".join(_ITEMS_SCHEMA.names)
_REJECTS_SCHEMA = pa.schema(
    [("row_number", pa.int64()), ("field", pa.string()), ("reason", pa.string()), ("excerpt", pa.string())]
)


@dataclass(frozen=True)
class Plan:
    """A checked source: the source, and for file sources the layout, file kind and location."""

    spec: SourceSpec
    source: Source
    layout: Layout | None = None
    kind: str = ""
    where: str = ""

    @property
    def source_file(self) -> str:
        return source_label(self.spec, self.where)


def source_label(spec: SourceSpec, where: str = "") -> str:
    """What an ingestion read, as `raw.ingestions.source_file` records it: the path, else where the source
    found its data, else `<source>:seed=<seed>` (a generated source)."""
    return spec.path or where or f"{spec.source}:seed={spec.seed}"


def plan_source(spec: SourceSpec) -> Plan:
    """Check a spec and the source's schema (reading only its first rows); SourceError naming the file."""
    source = get_source(spec.source)
    check_spec_values(spec)
    if spec.column_map and not source.takes_column_map:
        raise SourceError(f"column_map is only used by the table source, not {spec.source!r}")
    if source.layout is None:
        if source.check is not None:
            source.check(spec)
        return Plan(spec, source)
    kind, where = locate(spec)
    return Plan(spec, source, source.layout(spec, where, peek_columns(spec, kind, where)), kind, where)


@dataclass
class StageCounts:
    """What staging found: input rows = accepted + rejected."""

    input_rows: int = 0
    accepted_rows: int = 0
    rejected_rows: int = 0
    responses: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def stage_source(
    con: duckdb.DuckDBPyConnection, plan: Plan, progress: Callable[[int], None] | None = None
) -> StageCounts:
    """Read the planned source into the staged_* temp tables of `con` (see the module docstring)."""
    con.execute(_CREATE)
    if plan.layout is None:
        for batch in plan.source.records(plan.spec, GENERATED_BATCH):  # type: ignore[misc]
            _stage_records(con, batch)
            if progress:
                progress(batch.input_rows)
    else:
        for chunk in read_ahead(chunks(plan.spec, plan.kind, plan.where, plan.layout.columns)):
            _stage_chunk(con, plan, chunk)
            if progress:
                progress(chunk.table.num_rows)
    _finish(con, plan)
    accepted = con.execute("select count(*) from staged_rows").fetchone()[0]
    reasons = dict(
        con.execute("select reason, count(*) from staged_rejects group by reason order by reason").fetchall()
    )
    rejected = sum(reasons.values())
    responses = con.execute("select count(*) from staged_responses").fetchone()[0]
    return StageCounts(accepted + rejected, accepted, rejected, responses, reasons)


@contextlib.contextmanager
def _registered(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> Iterator[None]:
    """An Arrow table visible to SQL as `name` for the duration of the block."""
    con.register(name, table)
    try:
        yield
    finally:
        con.unregister(name)


def _stage_records(con: duckdb.DuckDBPyConnection, batch: SourceBatch) -> None:
    rs = batch.responses
    items = pa.table(
        [
            [r.row_number for r in rs],
            list(range(len(rs))),
            [r.prompt for r in rs],
            [r.response for r in rs],
            [r.score for r in rs],
            [r.gold for r in rs],
            [r.labelled_pair for r in rs],
            [r.prompt_id for r in rs],
            [r.response_id for r in rs],
            [r.split for r in rs],
        ],
        schema=_ITEMS_SCHEMA,
    )
    with _registered(con, "_records", items):
        con.execute(f"insert into _staged ({_ITEM_COLUMNS}) select * from _records")


# ---------------------------------------------------------------------------------------------- typing


# ---------------------------------------------------------------------------------------------- chunks


def _stage_chunk(con: duckdb.DuckDBPyConnection, plan: Plan, chunk: Chunk) -> None:
    """Check one chunk: the SQL form accepts what it can (one pass, items straight to _staged), the rest
    goes row by row; then duplicate rows are found."""
    first_row = int(chunk.table.column("row_number")[0].as_py())
    source_rows = chunk_rows(chunk, plan.kind)
    scanned = pa.Table.from_batches(chunk.table.to_batches(max_chunksize=SCAN_BATCH_ROWS), chunk.table.schema)
    with _registered(con, "_chunk", scanned):
        insert = _checked_insert(plan, chunk)
        if insert is None:
            _check_rowwise(con, plan, chunk, source_rows, None)
        else:
            fast = insert.replace("try(json_transform", "(json_transform")
            try:  # try() is slow: first without it; a chunk with a line yyjson refuses runs again with it
                con.execute(fast)
            except duckdb.InvalidInputException:
                con.execute(insert)
            pending = "item is null and row_number >= ?"
            # A relation's Arrow table: DuckDB 2 has no `.arrow()` on a connection's result any more
            pending_rows = con.sql(
                f"select row_number from _staged where {pending}", params=[first_row]
            ).to_arrow_table()
            if pending_rows.num_rows:
                con.execute(f"delete from _staged where {pending}", [first_row])
                with _registered(con, "_pending", pending_rows):
                    _check_rowwise(con, plan, chunk, source_rows, "select row_number from _pending")
        _drop_duplicate_rows(con, source_rows, first_row)


def _checked_insert(plan: Plan, chunk: Chunk) -> str | None:
    """The one statement that checks a chunk in SQL and appends to _staged every item of the rows it
    accepts (with the row's duplicate key), and one row with a null item for each row it does not accept
    (those go to the row-wise checks). None when the layout has no SQL form."""
    layout = plan.layout
    assert layout is not None
    if layout.vectorized is None:
        return None
    typed = json_typed(chunk, layout.columns) if chunk.form == JSON_FORM else column_typed(chunk, plan.kind)
    vec = layout.vectorized(col_of(layout.columns))
    query = typed
    for name, expr in vec.lets:
        query = f"select *, {expr} as {name} from ({query})"
    checked = (
        "select row_number, accepted, coalesce({labelled}, false) as labelled, {items}, "
        "case when accepted then {key} end as row_key from ("
        "select *, coalesce(pre_reason is null and json_ok and ({accept}), false) as accepted from ({query}))"
    ).format(
        labelled=vec.labelled,
        items=", ".join(
            f"{p} as p{k}, {r} as r{k}, ({s})::double as s{k}" for k, (p, r, s) in enumerate(vec.items)
        ),
        key=row_key(chunk.form),
        accept=vec.accept,
        query=query,
    )
    if len(vec.items) == 1:
        items = (
            "select row_number, case when accepted then 0 end as item, p0 as prompt, r0 as response, "
            f"s0 as score, labelled, row_key from ({checked})"
        )
    else:
        structs = ", ".join(f"{{'k': {k}, 'p': p{k}, 'r': r{k}, 's': s{k}}}" for k in range(len(vec.items)))
        none = "{'k': NULL::integer, 'p': NULL::varchar, 'r': NULL::varchar, 's': NULL::double}"
        items = (
            "select row_number, u.k as item, u.p as prompt, u.r as response, u.s as score, labelled, row_key "
            f"from (select row_number, labelled, row_key, "
            f"unnest(case when accepted then [{structs}] else [{none}] end) as u from ({checked}))"
        )
    return _with_ids(items, plan.spec.test_fraction)


def _with_ids(items: str, test_fraction: float) -> str:
    """The insert into _staged of `items` (row_number, item, prompt, response, score, labelled, row_key)
    with their prompt ids, response ids and splits: each distinct prompt of the chunk is hashed once."""
    pid = sq.prompt_id_sql(sq.normalised("prompt"))
    rid = sq.response_id_sql("p.prompt_id", sq.normalised("i.response"))
    return f"""
        insert into _staged (
            row_number, item, prompt, response, score, labelled_pair, row_key, prompt_id, response_id, split
        )
        with items as materialized ({items}),
        prompts as (
            select prompt, prompt_id, {sq.split_sql("prompt_id", test_fraction)} as split from (
                select prompt, {pid} as prompt_id
                from (select distinct prompt from items where item is not null)
            )
        )
        select i.row_number, i.item, i.prompt, i.response, i.score, i.labelled, i.row_key,
               p.prompt_id, {rid}, p.split
        from items as i left join prompts as p on p.prompt = i.prompt
    """


def _check_rowwise(
    con: duckdb.DuckDBPyConnection, plan: Plan, chunk: Chunk, source_rows: str, pending: str | None
) -> None:
    """Check the `pending` rows (a query of row numbers: those SQL did not accept; None: every row), one
    by one; stage their items (with their duplicate keys) or rejects."""
    layout = plan.layout
    assert layout is not None
    test_fraction = plan.spec.test_fraction
    item_rows: list[tuple] = []
    reject_rows: list[tuple] = []
    where = f"where row_number in ({pending})" if pending else ""
    values_of = con.execute(
        f"select * exclude (padded) from ({source_rows}) {where} order by row_number"
    ).fetchall()
    for values in values_of:
        row_number, pre_reason, raw = values[:3]
        try:
            if pre_reason is not None:
                raise Reject(ROW_FIELD, pre_reason)
            if chunk.form == JSON_FORM:
                row = parse_json(raw)
            else:
                row = {name: v for name, v in zip(chunk.columns, values[3:], strict=True) if v is not None}
            found, kind = layout.validate(row)
            ids = [ids_of(p, r, test_fraction) for p, r, _ in found]
            if kind != SCORED and ids[0][1] == ids[1][1]:
                raise Reject(layout.pair_field, IDENTICAL_RESPONSES)
        except Reject as r:
            reject_rows.append((row_number, r.field, r.reason, excerpt(raw)))
            continue
        except RecursionError:
            reject_rows.append((row_number, ROW_FIELD, TOO_DEEPLY_NESTED, excerpt(raw)))
            continue
        labelled = kind == LABELLED_PAIR
        for k, ((p, r, s), item_ids) in enumerate(zip(found, ids, strict=True)):
            item_rows.append((row_number, k, p, r, s, None, labelled, *item_ids))
    if item_rows:
        rowwise = pa.Table.from_pylist(
            [dict(zip(_ITEMS_SCHEMA.names, r, strict=True)) for r in item_rows], schema=_ITEMS_SCHEMA
        )
        with _registered(con, "_rowwise", rowwise):
            con.execute(f"""
                insert into _staged ({_ITEM_COLUMNS}, row_key)
                select i.*, k.row_key from _rowwise as i join (
                    select row_number, {row_key(chunk.form)} as row_key from ({source_rows})
                    where row_number in (select row_number from _rowwise)
                ) as k using (row_number)""")
    if reject_rows:
        rejected = pa.Table.from_pylist(
            [dict(zip(_REJECTS_SCHEMA.names, r, strict=True)) for r in reject_rows], schema=_REJECTS_SCHEMA
        )
        with _registered(con, "_rejected", rejected):
            con.execute("insert into staged_rejects select * from _rejected")


def _drop_duplicate_rows(con: duckdb.DuckDBPyConnection, source_rows: str, first_row: int) -> None:
    """An accepted row of this chunk whose exact text was accepted before in this run becomes a
    duplicate_row reject (its excerpt taken from the chunk)."""
    con.execute(f"""
        create or replace temp table _dups as
        select row_number from (
            select row_number, row_key,
                   row_number() over (partition by row_key order by row_number) as nth
            from _staged where item = 0 and row_number >= {first_row}
        ) as c
        where nth > 1 or exists (
            select 1 from _staged as s
            where s.item = 0 and s.row_number < {first_row} and s.row_key = c.row_key
        )
    """)
    if con.execute("select count(*) from _dups").fetchone()[0]:
        con.execute(f"""
            insert into staged_rejects
            select row_number, '{ROW_FIELD}', '{DUPLICATE_ROW}',
                   left(replace(trim(raw, {LINE_WHITESPACE}), '{FIELD_SEPARATOR}', ','), {EXCERPT_CHARS})
            from ({source_rows}) where row_number in (select row_number from _dups)
        """)
        con.execute(
            f"delete from _staged where row_number >= {first_row} "
            "and row_number in (select row_number from _dups)"
        )
    con.execute("drop table _dups")


# ---------------------------------------------------------------------------------------------- ids


def _finish(con: duckdb.DuckDBPyConnection, plan: Plan) -> None:
    """staged_rows, and staged_responses from _staged (every item has its ids by now): one response per
    (row, response id); for sources that repeat responses across rows, one per response id."""
    # Every accepted row of a file has its item 0; a generated batch numbers its items across rows.
    rows = "where item = 0" if plan.layout else "group by row_number"
    con.execute(f"create or replace temp table staged_rows as select row_number from _staged {rows}")
    several_per_row = con.execute("select count(*) from _staged where item > 0 limit 1").fetchone()[0]
    firsts = []
    if plan.layout is not None and several_per_row:
        firsts.append("partition by row_number, response_id order by item")
    if plan.source.unique_responses:
        firsts.append(FIRST_PER_RESPONSE_ID)
    for window in firsts:
        con.execute(f"""
            delete from _staged using ({later_occurrences("_staged", window)}) as later
            where _staged.row_number = later.row_number and _staged.item = later.item
        """)
    con.execute("alter table _staged rename to staged_responses")
