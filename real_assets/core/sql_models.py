"""The SQL models in `dbt_like_sql/`: one `select` per file, `<schema>/<table>.sql`, whose first line
names its key columns (`-- key: a, b`), in the order its content is digested.

They ship as package data (`real_assets/dbt_like_sql`, a link to the top-level folder in a checkout), so an
installed wheel finds them beside the package, never through the source tree.

Upstream tables and column lineage come from parsing the SQL with sqlglot, never from regexes, so the
asset graph follows the files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import sqlglot
from sqlglot import exp
from sqlglot.lineage import lineage

DIALECT = "duckdb"
SQL_ROOT = Path(__file__).resolve().parents[1] / "dbt_like_sql"
"""Package data: `real_assets/dbt_like_sql`, installed with the package (a link to the top-level folder in a
checkout)."""
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
_KEY_LINE = re.compile(r"^--\s*key:(.*)$", re.MULTILINE)


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

    @property
    def table(self) -> str:
        return f"{self.schema}.{self.name}"


def validate_identifier(name: str, what: str = "identifier") -> str:
    """A lower-case SQL identifier, or ValueError: every user-facing name that reaches SQL text goes here."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"invalid {what} {name!r}: use lower-case letters, digits and underscores")
    return name


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
    return SqlModel(
        schema=validate_identifier(path.parent.name, "schema"),
        name=validate_identifier(path.stem, "table name"),
        path=path,
        sql=sql,
        upstream_tables=tuple(upstream),
        columns=columns,
        keys=keys,
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
