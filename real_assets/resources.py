"""Resources for every outside system: the DuckDB warehouse, MLflow tracking and the compute device."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb

from real_assets.core.device import DeviceChoice, pick_device
from real_assets.core.hashing import digest_rows
from real_assets.core.sql_models import validate_identifier
from real_assets.settings import default_tracking_uri, warehouse_path

SCHEMAS = ("raw", "features", "selection", "models", "eval")


class Warehouse(dg.ConfigurableResource):
    """The one DuckDB file. Connections are short-lived; read-only where a step only reads."""

    path: str = ""
    """Database file; empty means `<home>/warehouse.duckdb`."""
    lock_timeout_s: float = 120.0
    """How long to wait for another process's write lock before failing."""
    memory_limit: str = ""
    """DuckDB `memory_limit` (e.g. "2GB"); past it DuckDB spills to disk. Empty: its default, 80% of RAM."""

    def database(self) -> Path:
        return Path(self.path) if self.path else warehouse_path()

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for one short piece of work; never hold one across GPU or training work."""
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

    def _open(self, db: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
        # DuckDB allows one writing process per file. The `warehouse` pool serialises the writing assets;
        # steps in the `gpu` pool write briefly too, so a held lock is waited for rather than failed on.
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                config = {"memory_limit": self.memory_limit} if self.memory_limit else {}
                return duckdb.connect(str(db), read_only=read_only, config=config)
            except duckdb.IOException as e:
                if "lock" not in str(e).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def lineage_schema(self) -> dict[str, dict[str, dict[str, str]]]:
        """{schema: {table: {column: type}}} for sqlglot, from information_schema."""
        out: dict[str, dict[str, dict[str, str]]] = {}
        with self.connect(read_only=True) as con:
            rows = con.execute(
                "select table_schema, table_name, column_name, data_type from information_schema.columns "
                "order by table_schema, table_name, ordinal_position"
            ).fetchall()
        for schema, table, column, dtype in rows:
            out.setdefault(schema, {}).setdefault(table, {})[column] = dtype
        return out


def table_digest(
    con: duckdb.DuckDBPyConnection,
    table: str,
    order_by: Sequence[str],
    where: tuple[str, Any] | None = None,
) -> tuple[str, int]:
    """Content digest and row count of a table (or of the rows where `column = value`), rows in key order."""
    schema, name = _split_table(table)
    for column in order_by:
        validate_identifier(column, "column")
    sql = f"select * from {schema}.{name}"
    params: list[Any] = []
    if where is not None:
        sql += f" where {validate_identifier(where[0], 'column')} = ?"
        params.append(where[1])
    sql += " order by " + ", ".join(order_by)
    # A cursor of its own: DuckDB 2 refuses new work on a connection while another result is open.
    count = 0
    with con.cursor() as cursor:
        reader = cursor.sql(sql, params=params).to_arrow_reader(50_000)

        def rows():
            nonlocal count
            for batch in reader:
                count += batch.num_rows
                yield from (tuple(r.values()) for r in batch.to_pylist())

        return digest_rows(rows()), count


def table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether `schema.name` exists in the warehouse the connection points at."""
    schema, name = _split_table(table)
    return bool(
        con.execute(
            "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
            [schema, name],
        ).fetchone()[0]
    )


def _split_table(table: str) -> tuple[str, str]:
    schema, _, name = table.partition(".")
    return validate_identifier(schema, "schema"), validate_identifier(name, "table")


class Compute(dg.ConfigurableResource):
    """Device choice for torch steps: CUDA when present (half precision there), else CPU."""

    device: str = "auto"
    half_precision: bool = True
    embed_batch_size: int = 128

    def choice(self) -> DeviceChoice:
        return pick_device(self.device, self.half_precision)


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


class Tracking(dg.ConfigurableResource):
    """MLflow: one run per materialization (and partition), started and tagged in one place."""

    tracking_uri: str = ""
    """Empty means `$MLFLOW_TRACKING_URI`, else a SQLite store under the home."""
    experiment: str = "real-assets"
    ui_url: str = "http://127.0.0.1:5000"
    """The MLflow UI, for links in the materialization metadata."""
    dagster_ui_url: str = "http://127.0.0.1:3000"
    """The Dagster UI, for links from the MLflow run back to the run and the asset."""

    def uri(self) -> str:
        return self.tracking_uri or default_tracking_uri()

    def _experiment_id(self) -> str:
        import mlflow

        mlflow.set_tracking_uri(self.uri())
        found = mlflow.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        artifacts = None
        if self.uri().startswith("sqlite:///"):
            artifacts = (Path(self.uri().removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
        return mlflow.create_experiment(self.experiment, artifact_location=artifacts)

    @contextlib.contextmanager
    def step(
        self,
        context: dg.AssetExecutionContext,
        code_version: str | None,
        upstream_versions: dict[str, str] | None = None,
    ) -> Iterator[StepRun]:
        """Start the MLflow run of this materialization, tagged with its Dagster identity, and end it
        FINISHED or FAILED; the asset sets the `dagster.data_version` tag once it knows its content."""
        import mlflow

        experiment_id = self._experiment_id()
        asset_key = context.asset_key.to_user_string()
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
            yield step
            mlflow.log_metric("step/seconds", time.perf_counter() - started)

    def run_url(self, step: StepRun) -> str:
        return f"{self.ui_url}/{step.url_path}"
