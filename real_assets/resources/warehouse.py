"""The warehouse: an embedded DuckDB file or a DuckLake catalog, and the SQL helpers every writer uses."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb

from real_assets.core.hashing import table_digest_sql
from real_assets.core.sql_models import validate_identifier

SCHEMAS = ("raw", "features", "selection", "models", "eval")
DUCKLAKE_PREFIX = "ducklake:"


class CheckpointWarning(RuntimeWarning):
    """DuckDB did not checkpoint the warehouse file when the process's last connection to it closed."""


_OPEN_FILES: Counter[str] = Counter()
"""Open connections per DuckDB file in this process: DuckDB checkpoints a file when the last one closes."""
_OPEN_FILES_LOCK = threading.Lock()


class Warehouse(dg.ConfigurableResource):
    """The warehouse: one embedded DuckDB file (default), or a DuckLake catalog that many processes write at
    once (catalog in Postgres, data files in a folder or object storage). The same SQL runs on both.
    Connections are short-lived; read-only where a step only reads."""

    path: str
    """A DuckDB file, or a DuckLake catalog `ducklake:<metadata>` such as
    `ducklake:postgres:dbname=lake host=db user=dagster` (password from `PGPASSWORD` or a DuckDB secret,
    never here). The code location's is `Locations.warehouse` (`$REAL_ASSETS_WAREHOUSE`, else
    `<home>/warehouse.duckdb`)."""
    data_path: str = ""
    """DuckLake only: where its Parquet files live (a folder shared by every process, or `s3://...`);
    the code location's is `Locations.warehouse_data`."""
    lock_timeout_s: float = 120.0
    """DuckDB file only: how long to wait for another process's write lock before failing."""
    memory_limit: str = ""
    """DuckDB `memory_limit` (e.g. "2GB"); past it DuckDB spills to disk. Empty: its default, 80% of RAM."""

    def location(self) -> str:
        """The configured file path or `ducklake:` catalog string."""
        return self.path

    @property
    def is_lake(self) -> bool:
        return self.location().startswith(DUCKLAKE_PREFIX)

    def database(self) -> Path:
        """The DuckDB file (embedded mode only)."""
        if self.is_lake:
            raise ValueError("the warehouse is a DuckLake catalog, not a DuckDB file")
        return Path(self.location())

    def describe(self) -> str:
        """Where the warehouse's data is, as a path or URI that MLflow resolves as a dataset source: the
        DuckDB file, or the DuckLake data path (the catalog string may hold credentials: never shown)."""
        return self.lake_data_path() if self.is_lake else str(self.database())

    def lake_data_path(self) -> str:
        if not self.data_path:
            raise ValueError("a DuckLake warehouse needs data_path: where its Parquet files live")
        data = self.data_path
        if "://" not in data:
            Path(data).mkdir(parents=True, exist_ok=True)
            data = str(Path(data).resolve()) + "/"
        return data

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for one short piece of work; never hold one across GPU or training work.
        On DuckLake every connection reads the latest snapshot and writes in its own transaction, so
        `read_only` only skips the schema set-up there."""
        if self.is_lake:
            con = self._lake_connection()
        else:
            db = self.database()
            db.parent.mkdir(parents=True, exist_ok=True)
            if read_only and not db.exists():
                raise FileNotFoundError(f"warehouse {db} does not exist yet: materialize raw_responses first")
            con = self._open(db, read_only)
            with _OPEN_FILES_LOCK:
                _OPEN_FILES[os.path.abspath(db)] += 1
        try:
            if not read_only:
                for schema in SCHEMAS:
                    con.execute(f"create schema if not exists {schema}")
            yield con
        finally:
            con.close()
            if not self.is_lake:
                self._closed(db, read_only)

    def _closed(self, db: Path, read_only: bool) -> None:
        # DuckDB checkpoints a file when the last connection of the process closes, and says nothing when
        # that fails: the write-ahead log then stays, grows, and is replayed into memory at every open.
        with _OPEN_FILES_LOCK:
            key = os.path.abspath(db)
            _OPEN_FILES[key] -= 1
            last = _OPEN_FILES[key] <= 0
            if last:
                del _OPEN_FILES[key]
        wal = db.with_name(db.name + ".wal")
        if last and not read_only and wal.exists():
            limit = self.memory_limit or "DuckDB's default, 80% of RAM"
            warnings.warn(
                f"warehouse {db}: DuckDB did not checkpoint it when its last connection closed, so its "
                f"write-ahead log {wal.name} ({wal.stat().st_size / 2**20:.1f} MiB) stays and is replayed "
                f"into memory at every open. The likely cause is the warehouse's memory_limit ({limit}): "
                "on DuckDB 1.5 a table with deleted rows all over (every refresh leaves such tables) needs "
                "about 8-10 bytes a row to checkpoint (docs/scale.md, item 6). Nothing is lost; raise "
                "memory_limit, and the next connection to close checkpoints it.",
                CheckpointWarning,
                stacklevel=4,
            )

    def _config(self) -> dict[str, Any]:
        # No replacement scans: a table name that does not exist is an error naming it, never a Python
        # variable of that name in some caller's frame (frames are registered with `con.register`).
        config: dict[str, Any] = {"python_enable_replacements": False}
        return config | ({"memory_limit": self.memory_limit} if self.memory_limit else {})

    def _open(self, db: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
        # DuckDB allows one writing process per file. The `warehouse` pool serialises the writing assets;
        # steps in the `gpu` pool write briefly too, so a held lock is waited for rather than failed on.
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                return duckdb.connect(str(db), read_only=read_only, config=self._config())
            except duckdb.IOException as e:
                if "lock" not in str(e).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _lake_connection(self) -> duckdb.DuckDBPyConnection:
        # One in-memory DuckDB per process with the extensions loaded and the lake attached (about a
        # second to set up); each piece of work gets a connection of its own on it. Other processes'
        # commits are seen by every new transaction: the catalog in Postgres holds the snapshots.
        key = (os.getpid(), self.location(), self.lake_data_path(), self.memory_limit)
        with _LAKES_LOCK:
            base = _LAKES.get(key)
            if base is None:
                base = duckdb.connect(config={**self._config(), "autoinstall_known_extensions": False})
                try:
                    for extension in LAKE_EXTENSIONS:
                        base.load_extension(str(extension_file(extension)))
                    if "://" in self.lake_data_path():
                        _object_storage(base)
                    data = _quote(self.lake_data_path())
                    base.execute(f"attach '{_quote(self.location())}' as {LAKE_CATALOG} (DATA_PATH '{data}')")
                except Exception:
                    base.close()
                    raise
                _LAKES[key] = base
        con = base.cursor()
        con.execute(f"use {LAKE_CATALOG}")
        return con

    def lineage_schema(self) -> dict[str, dict[str, dict[str, str]]]:
        """{schema: {table: {column: type}}} for sqlglot, from information_schema."""
        out: dict[str, dict[str, dict[str, str]]] = {}
        with self.connect(read_only=True) as con:
            rows = con.execute(
                "select table_schema, table_name, column_name, data_type from information_schema.columns "
                "where table_catalog = current_database() "
                "order by table_schema, table_name, ordinal_position"
            ).fetchall()
        for schema, table, column, dtype in rows:
            out.setdefault(schema, {}).setdefault(table, {})[column] = dtype
        return out


LAKE_CATALOG = "lake"
_LAKES: dict[tuple, duckdb.DuckDBPyConnection] = {}
_LAKES_LOCK = threading.Lock()
LAKE_EXTENSIONS = ("postgres_scanner", "ducklake")
"""Loaded from the `duckdb-extension-*` wheels (DuckDB's signed binaries), so nothing is downloaded."""


def extension_file(name: str) -> Path:
    """The signed extension binary that the `duckdb-extension-<name>` wheel ships for this duckdb."""
    package = f"duckdb_extension_{name}"
    fix = (
        f"install duckdb and duckdb-extension-{name.replace('_', '-')} of one release, as pyproject.toml "
        f"pins them (duckdb {duckdb.__version__} is installed)"
    )
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"DuckDB extension {name} is not installed: {fix}")
    found = Path(spec.origin).parent / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not found.is_file():
        raise RuntimeError(f"{package} has no build for this duckdb: {fix}")
    return found


S3_SECRET_ENV = {
    "KEY_ID": "AWS_ACCESS_KEY_ID",
    "SECRET": "AWS_SECRET_ACCESS_KEY",
    "SESSION_TOKEN": "AWS_SESSION_TOKEN",
    "REGION": "AWS_REGION",
    "ENDPOINT": "AWS_ENDPOINT_URL",
}
"""DuckDB S3 secret fields taken from the usual AWS environment variables, when set."""


def _object_storage(con: duckdb.DuckDBPyConnection) -> None:
    """Data files on object storage (`s3://...`): httpfs from its wheel (the `object-storage` extra), and an
    S3 secret from the AWS environment variables when they are set (else DuckDB's own defaults)."""
    con.load_extension(str(extension_file("httpfs")))
    fields = {key: os.environ[env] for key, env in S3_SECRET_ENV.items() if os.environ.get(env)}
    if "ENDPOINT" in fields:
        endpoint = fields["ENDPOINT"]
        fields["ENDPOINT"] = endpoint.split("://", 1)[-1]
        if endpoint.startswith("http://"):
            fields["USE_SSL"] = "false"
    if fields:
        options = ", ".join(f"{k} {v}" if k == "USE_SSL" else f"{k} '{_quote(v)}'" for k, v in fields.items())
        con.execute(f"create or replace secret real_assets_s3 (type s3, {options})")


def _quote(text: str) -> str:
    return text.replace("'", "''")


COMMIT_ATTEMPTS = 12
"""How often a write that lost a DuckLake commit race is retried (with growing, jittered waits)."""


def replace_rows(
    con: duckdb.DuckDBPyConnection,
    table: str,
    rows: Any,
    keys: Sequence[str] = (),
    partition: Mapping[str, Any] | None = None,
) -> int:
    """Replace rows of `table` by `rows` (a DataFrame or Arrow table, inserted by column name): first delete
    the rows whose `keys` match a row of `rows`, or, with `partition` ({column: value}), every row of that
    partition (so an empty `rows` empties it); then insert; in one transaction. The one upsert of the
    warehouse: no primary key needed, so it runs on the DuckDB file and on DuckLake alike. A transaction that
    loses a commit race with another process on DuckLake is retried whole. Returns the rows inserted."""
    _split_table(table)
    params: list[Any] = []
    if partition and not keys:
        match = " and ".join(f"t.{validate_identifier(c, 'column')} = ?" for c in partition)
        delete = f"delete from {table} as t where {match}"
        params = list(partition.values())
    elif keys and not partition:
        match = " and ".join(f"t.{validate_identifier(k, 'column')} = r.{k}" for k in keys)
        delete = f"delete from {table} as t where exists (select 1 from _replacement_rows as r where {match})"
    else:
        raise ValueError("replace_rows takes either key columns or a partition")
    con.register("_replacement_rows", rows)
    try:
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            con.execute("begin transaction")
            try:
                con.execute(delete, params)
                con.execute(f"insert into {table} by name select * from _replacement_rows")
                count = con.execute("select count(*) from _replacement_rows").fetchone()[0]
                con.execute("commit")
                return int(count)
            except duckdb.Error as e:
                with contextlib.suppress(duckdb.Error):  # a failed commit has ended the transaction already
                    con.execute("rollback")
                if "conflict" not in str(e).lower() or attempt == COMMIT_ATTEMPTS:
                    raise
                time.sleep(random.uniform(0.05, 0.1) * 2 ** min(attempt, 6))
    finally:
        con.unregister("_replacement_rows")
    raise AssertionError("unreachable")


def table_digest(
    con: duckdb.DuckDBPyConnection,
    table: str,
    where: Mapping[str, Any] | None = None,
) -> tuple[str, int]:
    """Content digest and row count of a table (or of the rows where every `column = value` of `where`),
    independent of row order; DuckDB computes it (`core.hashing.table_digest_sql`)."""
    schema, name = _split_table(table)
    columns = [validate_identifier(column, "column") for column in where or {}]
    sql = table_digest_sql(f"{schema}.{name}", columns)
    # A cursor of its own: DuckDB 2 refuses new work on a connection while another result is open.
    with same_catalog_cursor(con) as cursor:
        count, content = cursor.execute(sql, list((where or {}).values())).fetchone()
    return content, int(count)


def same_catalog_cursor(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A new cursor on the connection's database, on the same default catalog (a cursor starts on the
    in-memory one, which matters on DuckLake)."""
    catalog = con.execute("select current_database()").fetchone()[0]
    cursor = con.cursor()
    cursor.execute("use " + '"' + catalog.replace('"', '""') + '"')
    return cursor


def table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether `schema.name` exists in the warehouse the connection points at."""
    schema, name = _split_table(table)
    return bool(
        con.execute(
            "select count(*) from information_schema.tables "
            "where table_catalog = current_database() and table_schema = ? and table_name = ?",
            [schema, name],
        ).fetchone()[0]
    )


def _split_table(table: str) -> tuple[str, str]:
    schema, _, name = table.partition(".")
    return validate_identifier(schema, "schema"), validate_identifier(name, "table")
