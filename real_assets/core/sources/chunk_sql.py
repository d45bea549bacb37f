"""A chunk of a source as DuckDB sees it: its rows as read, each layout column as a type tag, text and
number (parsed once per row), and the key that makes two input rows the same row. What the SQL checks of a
layout (`registry.Vectorized`) are written against; the staging runs them (`staging.py`)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pyarrow as pa

import real_assets.core.sources.sqlchecks as sq
from real_assets.core.sources.files import CSV
from real_assets.core.sources.readers import JSON_FORM, Chunk

LINE_WHITESPACE_CHARS = " \t\n\r\x0b\x0c"
"""What bytes.strip() removes around a line."""
LINE_WHITESPACE = sq.literal(LINE_WHITESPACE_CHARS)


def row_key(form: str) -> str:
    """What makes two input rows the same row: their text as read (a JSONL line without the whitespace
    around it, CSV fields, a Parquet row)."""
    if form == JSON_FORM:
        return f"(case when padded then md5_number(trim(raw, {LINE_WHITESPACE})) else md5_number(raw) end)"
    return "md5_number(raw)"


NULL_COLUMN = sq.Col("'null'", "NULL::varchar", "NULL::double")


def typed_columns(i: int, t: str, v: str, n: str) -> str:
    return f"{t} as t{i}, {v} as v{i}, {n} as n{i}"


def chunk_rows(chunk: Chunk, kind: str) -> str:
    """The chunk's rows as read: row_number, pre_reason, raw (the row's text), padded (JSON: whitespace
    around the line) and, in column form, the layout columns c0, c1, ..."""
    if chunk.form == JSON_FORM:
        return "select row_number, pre_reason, line as raw, padded from _chunk"
    if kind == CSV:
        raw = "raw"
    else:
        packed = ", ".join(f"{sq.identifier(n)} := c{i}" for i, n in enumerate(chunk.columns))
        raw = f"to_json(struct_pack({packed}))::varchar"
    data = "".join(f", c{i}" for i in range(len(chunk.columns)))
    return f"select row_number, pre_reason, {raw} as raw, false as padded{data} from _chunk"


def json_typed(chunk: Chunk, columns: tuple[str, ...]) -> str:
    """Each layout column of a JSON line as t{i} (type tag), v{i} (text), n{i} (number), parsed once."""
    structure = json.dumps(dict.fromkeys(columns, "JSON"))
    typed = []
    for i, name in enumerate(columns):
        f = f"struct_extract(j, {sq.literal(name)})"
        # A JSON text that starts with a quote is a string: json_type is asked only about the others.
        is_str = f"starts_with({f}, '\"')"
        t = (
            f"(case when {f} is null then 'null' when {is_str} then 'str' "
            f"else (case json_type({f}) when 'BIGINT' then 'num' when 'UBIGINT' then 'num' "
            f"when 'DOUBLE' then 'num' when 'NULL' then 'null' else 'other' end) end)"
        )
        typed.append(
            typed_columns(
                i, t, f"({f} ->> '$')", f"(case when not {is_str} then try_cast({f} as double) end)"
            )
        )
    # A row that yyjson reads but Python refuses (a trailing comma) goes to the row-wise checks. A key
    # repeated in an object: the first one counts on both sides (yyjson's rule; see parse_json).
    json_ok = "coalesce(j is not null and not regexp_matches(raw, ',[ \\t\\n\\r]*[\\]}]'), false) as json_ok"
    return (
        f"select row_number, pre_reason, raw, padded, {', '.join([*typed, json_ok])} from ("
        "select *, "
        f"case when pre_reason is null then try(json_transform(raw, {sq.literal(structure)})) end as j "
        f"from ({chunk_rows(chunk, JSON_FORM)}))"
    )


def column_typed(chunk: Chunk, kind: str) -> str:
    """Each layout column of a CSV / Parquet chunk as t{i}, v{i}, n{i}, with the column itself as c{i}."""
    typed = []
    for i, typ in enumerate(chunk.types):
        c = f"c{i}"
        if pa.types.is_string(typ) or pa.types.is_large_string(typ):
            tag, v, n = "str", c, "NULL::double"
        elif pa.types.is_integer(typ) or pa.types.is_floating(typ):
            tag, v, n = "num", "NULL::varchar", f"{c}::double"
        else:
            tag, v, n = "other", "NULL::varchar", "NULL::double"
        t = f"(case when {c} is null then 'null' else '{tag}' end)"
        typed.append(f"{c}, {typed_columns(i, t, v, n)}")
    return (
        f"select row_number, pre_reason, raw, padded, {', '.join([*typed, 'true as json_ok'])} "
        f"from ({chunk_rows(chunk, kind)})"
    )


def col_of(columns: tuple[str, ...]) -> Callable[[str], sq.Col]:
    index = {name: i for i, name in enumerate(columns)}

    def col(name: str) -> sq.Col:
        i = index.get(name)
        return NULL_COLUMN if i is None else sq.Col(f"t{i}", f"v{i}", f"n{i}")

    return col
