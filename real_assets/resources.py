"""Resources for every outside system: the DuckDB warehouse, MLflow tracking and the compute device."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import dagster as dg
import duckdb
import numpy as np

from real_assets.core.device import DeviceChoice, on_device, pick_device
from real_assets.core.embedding import embed_chunks
from real_assets.core.hashing import table_digest_sql
from real_assets.core.progress import Progress
from real_assets.core.sql_models import validate_identifier
from real_assets.settings import (
    WAREHOUSE_DATA_ENV,
    WAREHOUSE_ENV,
    artifact_root,
    default_tracking_uri,
    home_dir,
    warehouse_path,
)

T = TypeVar("T")
SCHEMAS = ("raw", "features", "selection", "models", "eval")
DUCKLAKE_PREFIX = "ducklake:"


class Warehouse(dg.ConfigurableResource):
    """The warehouse: one embedded DuckDB file (default), or a DuckLake catalog that many processes write at
    once (catalog in Postgres, data files in a folder or object storage). The same SQL runs on both.
    Connections are short-lived; read-only where a step only reads."""

    path: str = ""
    """A DuckDB file, or a DuckLake catalog `ducklake:<metadata>` such as
    `ducklake:postgres:dbname=lake host=db user=dagster` (password from `PGPASSWORD` or a DuckDB secret,
    never here). Empty means `$REAL_ASSETS_WAREHOUSE`, else `<home>/warehouse.duckdb`."""
    data_path: str = ""
    """DuckLake only: where its Parquet files live (a folder shared by every process, or `s3://...`).
    Empty means `$REAL_ASSETS_WAREHOUSE_DATA`, else `<home>/lake/`."""
    lock_timeout_s: float = 120.0
    """DuckDB file only: how long to wait for another process's write lock before failing."""
    memory_limit: str = ""
    """DuckDB `memory_limit` (e.g. "2GB"); past it DuckDB spills to disk. Empty: its default, 80% of RAM."""

    def location(self) -> str:
        """The configured file path or `ducklake:` catalog string."""
        return self.path or os.environ.get(WAREHOUSE_ENV) or str(warehouse_path())

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
        data = self.data_path or os.environ.get(WAREHOUSE_DATA_ENV) or str(home_dir() / "lake")
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
        try:
            if not read_only:
                for schema in SCHEMAS:
                    con.execute(f"create schema if not exists {schema}")
            yield con
        finally:
            con.close()

    def _config(self) -> dict[str, Any]:
        return {"memory_limit": self.memory_limit} if self.memory_limit else {}

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


class Compute(dg.ConfigurableResource):
    """Where the torch steps run: in this process (`engine="local"`, the default) on CUDA when present (half
    precision there), else CPU; or on a Ray cluster (`engine="ray"`): embeddings by a Ray Data actor pool,
    each model step (SFT, every DPO partition, eval) as a Ray task with the GPUs it asks for, so partitions
    that Dagster runs side by side train on different GPUs. The asset, its MLflow run and its metadata stay
    in the Dagster step either way."""

    device: str = "auto"
    """auto, cuda or cpu; on Ray it is resolved on the worker that runs the step."""
    half_precision: bool = True
    embed_batch_size: int = 128
    engine: Literal["local", "ray"] = "local"
    ray_address: str = ""
    """The cluster (`ray://head:10001`, or `auto` on a cluster node); empty: `$RAY_ADDRESS`, else a Ray
    instance started in the step's process."""
    step_gpus: float = -1.0
    """GPUs a model step asks Ray for; -1: one when the cluster has GPUs, else none."""
    step_cpus: float = 1.0
    """CPUs a model step asks Ray for."""
    embed_actors: int = 0
    """Embedding actors on Ray; 0: one per GPU, or one per two CPUs on a CPU-only cluster."""
    dpo_launcher: Literal["in_process", "accelerate"] = "in_process"
    """`accelerate`: each DPO partition runs under `accelerate launch` with `launch_processes` processes
    (DDP over GPUs; CPU processes over gloo without CUDA), through Dagster Pipes: a subprocess on the
    local engine, a Ray job on `ray`."""
    launch_processes: int = 2
    accelerate_config: str = ""
    """An accelerate config file (FSDP, DeepSpeed, several machines); empty: DDP on this machine."""
    ray_dashboard: str = ""
    """The Ray job server for launched steps (`http://head:8265`); empty: Ray's own lookup
    (`$RAY_API_SERVER_ADDRESS`, `$RAY_ADDRESS`, then the local default)."""
    model_backend: Literal["torch", "fake"] = "torch"
    """`fake`: every model step runs its stand-in from `core.fake_models` (a small real checkpoint and
    deterministic figures, no torch), for tests and dry runs of the orchestration."""

    def choice(self) -> DeviceChoice:
        return pick_device(self.device, self.half_precision)

    def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> tuple[T, str]:
        """`fn(*args, device=..., **kwargs)` where the engine puts it (`OnDevice` arguments built there),
        and a description of where it ran (device, and Ray resources on Ray). Callable keyword arguments
        (`report`, and those in a `Reporting`) are called in this process as the step goes, on either
        engine. With the fake model backend, `fn`'s fake runs instead (and `OnDevice` arguments are not
        built)."""
        if self.model_backend == "fake":
            from real_assets.core.fake_models import fake_for

            fn = fake_for(fn)
            if self.engine == "local":
                return fn(*args, device=None, **kwargs), "fake"
        if self.engine == "local":
            device = self.choice()
            return fn(*on_device(args, device), device=device, **on_device(kwargs, device)), device.device
        from real_assets.core import distributed

        resources = distributed.connect(self.ray_address)
        result, placement = distributed.run_step(
            fn,
            args,
            kwargs,
            device=self.device,
            half_precision=self.half_precision,
            num_cpus=self.step_cpus,
            num_gpus=distributed.gpus_per_step(self.step_gpus, resources),
        )
        return result, placement.describe()

    def embed_chunks(
        self,
        chunks: Sequence[Sequence[str]],
        model_id: str,
        trust_remote_code: bool = False,
        progress: Progress | None = None,
    ) -> tuple[Iterator[np.ndarray], str]:
        """The embeddings of each chunk in turn, on this engine, and where they are computed."""
        if self.engine == "local":
            device = self.choice()
            vectors = embed_chunks(
                chunks, model_id, device, self.embed_batch_size, trust_remote_code, progress
            )
            return vectors, device.device
        from real_assets.core import distributed

        return distributed.embed_chunks_on_ray(
            chunks,
            model_id,
            device=self.device,
            half_precision=self.half_precision,
            batch_size=self.embed_batch_size,
            trust_remote_code=trust_remote_code,
            actors=self.embed_actors,
            resources=distributed.connect(self.ray_address),
            progress=progress,
        )


class StepRun:
    """The MLflow run of one materialization: what an asset may log (its own params, metrics, artifacts)."""

    def __init__(self, run_id: str, experiment_id: str):
        self.run_id = run_id
        self.experiment_id = experiment_id

    def log_params(self, params: dict[str, Any]) -> None:
        import mlflow

        mlflow.log_params({k: _param(v) for k, v in params.items()})

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        import mlflow

        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and v == v}
        if clean:
            mlflow.log_metrics(clean, step=step)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        import mlflow

        mlflow.log_artifact(str(path), artifact_path)

    def log_table(self, frame, artifact_file: str) -> None:
        import mlflow

        mlflow.log_table(frame, artifact_file)

    def log_dataset(self, frame, name: str, source: str, context: str = "training") -> str:
        """Log a DataFrame as an MLflow dataset input; returns its digest."""
        import mlflow

        dataset = mlflow.data.from_pandas(frame, source=source, name=name)
        mlflow.log_input(dataset, context=context)
        return dataset.digest

    def set_tags(self, tags: dict[str, str]) -> None:
        import mlflow

        mlflow.set_tags(tags)

    def register_model(self, name: str, source: Path, tags: dict[str, str]) -> str:
        """Register a checkpoint folder as a new version of a registered model; returns the version."""
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        client = MlflowClient()
        with contextlib.suppress(MlflowException):
            client.create_registered_model(name)
        version = client.create_model_version(name, source=source.as_uri(), run_id=self.run_id, tags=tags)
        return str(version.version)

    @property
    def url_path(self) -> str:
        return f"#/experiments/{self.experiment_id}/runs/{self.run_id}"


def _param(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 500 else text[:497] + "..."


_REACHABLE: set[str] = set()


class TrackingServerUnreachable(RuntimeError):
    """The MLflow tracking server does not answer."""


def check_tracking_server(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, with a message that says what to do, when an http(s) tracking server does not answer its
    health endpoint within `timeout_s` (MLflow itself retries for minutes). Also bounds MLflow's own
    retries for the rest of the process. Local stores (sqlite, file) need no check."""
    if not uri.startswith(("http://", "https://")) or uri in _REACHABLE:
        return
    import os
    import urllib.error
    import urllib.request

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(int(timeout_s) * 2, 10)))
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):
            pass
    except urllib.error.HTTPError:
        pass  # it answered: a server without /health (or behind a proxy) is still a server
    except (OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise TrackingServerUnreachable(
            f"MLflow tracking server {uri} did not answer within {timeout_s:g} s ({reason}). "
            "Start it, fix MLFLOW_TRACKING_URI, or unset it to track into <home>/mlflow.db."
        ) from None
    _REACHABLE.add(uri)


class Tracking(dg.ConfigurableResource):
    """MLflow: one run per materialization (and partition), started and tagged in one place."""

    tracking_uri: str = ""
    """Empty means `$MLFLOW_TRACKING_URI`, else a SQLite store under the home."""
    experiment: str = "real-assets"
    ui_url: str = "http://127.0.0.1:5000"
    """The MLflow UI, for links in the materialization metadata."""
    dagster_ui_url: str = "http://127.0.0.1:3000"
    """The Dagster UI, for links from the MLflow run back to the run and the asset."""

    connect_timeout_s: float = 5.0
    """How long to wait for a tracking server before failing with a clear message."""

    def uri(self) -> str:
        return self.tracking_uri or default_tracking_uri()

    def _experiment_id(self) -> str:
        import mlflow

        check_tracking_server(self.uri(), self.connect_timeout_s)
        mlflow.set_tracking_uri(self.uri())
        found = mlflow.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        return mlflow.create_experiment(self.experiment, artifact_location=artifact_root(self.uri()))

    @contextlib.contextmanager
    def step(
        self, context: dg.AssetExecutionContext, upstream_versions: dict[str, str] | None = None
    ) -> Iterator[StepRun]:
        """Start the MLflow run of this materialization, tagged with its Dagster identity (code version
        included), and end it FINISHED or FAILED; the asset sets the `dagster.data_version` tag once it
        knows its content; a step stopped by SIGINT or SIGTERM ends KILLED."""
        import mlflow

        experiment_id = self._experiment_id()
        asset_key = context.asset_key.to_user_string()
        code_version = context.assets_def.code_versions_by_key.get(context.asset_key)
        partition = context.partition_key if context.has_partition_key else ""
        tags = {
            "dagster.run_id": context.run_id,
            "dagster.asset_key": asset_key,
            "dagster.partition": partition,
            "dagster.code_version": code_version or "",
            "dagster.run_url": f"{self.dagster_ui_url}/runs/{context.run_id}",
            "dagster.asset_url": f"{self.dagster_ui_url}/assets/{'/'.join(context.asset_key.path)}",
            **{f"dagster.upstream.{k}": v for k, v in (upstream_versions or {}).items()},
        }
        run_name = f"{asset_key}[{partition}]" if partition else asset_key
        started = time.perf_counter()
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
            step = StepRun(run.info.run_id, experiment_id)
            try:
                yield step
            except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError):
                mlflow.end_run("KILLED")  # stopped by a signal, not failed by its own error
                raise
            mlflow.log_metric("step/seconds", time.perf_counter() - started)

    def run_url(self, step: StepRun) -> str:
        return f"{self.ui_url}/{step.url_path}"
