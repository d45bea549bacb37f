"""A home on disk: its Dagster instance config and stores, prepared once under a lock (or copied from a
prepared template), and the Dagster instance of a home without DAGSTER_HOME."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from real_assets.settings import HOME_ENV, Locations

DAGSTER_YAML_HEADER = "# Written by real-assets."
DAGSTER_YAML = f"""\
{DAGSTER_YAML_HEADER} Every pool (warehouse, gpu) admits one step at a time, across runs too.
# A run whose worker process died is failed by the daemon's run monitoring (the launcher can tell), and
# the pool slots of ended runs are freed, so a killed run never blocks the next one.
concurrency:
  pools:
    default_limit: 1
run_launcher:
  module: real_assets.recovery
  class: PidCheckingRunLauncher
run_monitoring:
  enabled: true
  poll_interval_seconds: 10
  free_slots_after_run_end_seconds: 5
telemetry:
  enabled: false
"""


INSTANCE_CONFIG_ENV = "REAL_ASSETS_INSTANCE_CONFIG"
"""A Dagster instance config (e.g. deploy/dagster.yaml: Postgres storage, queued runs) for demo and ui."""
HOME_TEMPLATE_ENV = "REAL_ASSETS_HOME_TEMPLATE"
"""A prepared, empty home (`prepare_home` ran there) whose embedded stores a new home starts from: its
Dagster SQLite storage and MLflow SQLite store are copied, already migrated, instead of migrated again (for
test suites and scripts that make many homes)."""
EMBEDDED_STORES = ("dagster/history", "dagster/schedules", "mlflow.db")
"""What `HOME_TEMPLATE_ENV` copies: the embedded Dagster storage and the MLflow SQLite store."""


@contextlib.contextmanager
def init_lock(root: Path):
    """One process at a time sets up a home (Dagster and MLflow storage run their schema migrations on
    first use; two at once corrupt them): an exclusive lock on `<home>/.init.lock`."""
    import fcntl

    with open(root / ".init.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def prepare_home(
    home: str | None, instance_config: str | None = None, storage: bool = True, read_only: bool = False
) -> Locations:
    """The home's `Locations` (`--home`, else `$REAL_ASSETS_HOME`, ...), with its Dagster instance config
    written: the given file (`--instance-config`, else `$REAL_ASSETS_INSTANCE_CONFIG`) copied as is, so its
    `env:` values are read by Dagster at startup and no secret is written; else the embedded default. With
    `storage`, create the Dagster and MLflow storage, all under a lock, so that concurrent first runs are
    safe. With `read_only` (a command that only reads, on a home it may not write), nothing is written,
    locked or created. Fails fast when a configured MLflow tracking server does not answer. The environment
    is not changed: commands hand the locations on explicitly."""
    from real_assets.resources import check_tracking_server

    locations = Locations.resolve(home)
    root = locations.home
    dagster_home = locations.dagster_home
    tracking_uri = locations.tracking_uri
    check_tracking_server(tracking_uri)
    if read_only:
        return locations
    root.mkdir(parents=True, exist_ok=True)
    with init_lock(root):
        dagster_home.mkdir(exist_ok=True)
        config = dagster_home / "dagster.yaml"
        source = instance_config or os.environ.get(INSTANCE_CONFIG_ENV)
        if source:
            config.write_text(Path(source).read_text())
        elif not config.exists() or config.read_text().startswith(DAGSTER_YAML_HEADER):
            config.write_text(DAGSTER_YAML)
        if storage:
            template = os.environ.get(HOME_TEMPLATE_ENV)
            if template and not source and not (dagster_home / "history").exists():
                copy_embedded_stores(Path(template), root, tracking_uri)
            _create_storage(dagster_home, tracking_uri)
    return locations


def instance_of(locations: Locations):
    """The home's Dagster instance (its `dagster/dagster.yaml`), without DAGSTER_HOME."""
    import dagster as dg

    return dg.DagsterInstance.from_config(str(locations.dagster_home))


def server_environment(locations: Locations) -> None:
    """For a command that replaces itself with a server (`dagster dev`, `mlflow server`): the server and
    the code location it loads find the home through REAL_ASSETS_HOME and DAGSTER_HOME."""
    os.environ[HOME_ENV] = str(locations.home)
    os.environ["DAGSTER_HOME"] = str(locations.dagster_home)


def copy_embedded_stores(template: Path, root: Path, tracking_uri: str) -> None:
    """Start the home `root`, which has no Dagster storage yet, from a prepared empty home's migrated
    stores (`EMBEDDED_STORES`); the MLflow store only when tracking into the home's own SQLite file."""
    import shutil

    if not (template / "dagster" / "history" / "runs.db").is_file():
        raise FileNotFoundError(
            f"{HOME_TEMPLATE_ENV}={template} is not a prepared home: run prepare_home there"
        )
    for name in EMBEDDED_STORES:
        source, target = template / name, root / name
        if name == "mlflow.db":
            if tracking_uri != f"sqlite:///{target}" or target.exists() or not source.is_file():
                continue
            shutil.copy2(source, target)
        else:
            shutil.copytree(source, target)


def _create_storage(dagster_home: Path, tracking_uri: str) -> None:
    import dagster as dg

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.get_runs(limit=1)  # run, event and schedule storage exist and are migrated
        instance.all_instigator_state()
    if tracking_uri.startswith("sqlite:///"):
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)


def copy_home(source: Path, target: Path) -> Path:
    """Copy a home (its lock files left out) and move the absolute paths it records to the copy: the
    checkpoint folders in `models.checkpoints` and MLflow's artifact locations and model sources of its
    SQLite store. Dagster's event metadata keeps the paths it showed, as in any moved home."""
    import shutil
    import sqlite3

    import duckdb

    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.lock"))
    old, new = str(source), str(target)
    with duckdb.connect(str(target / "warehouse.duckdb")) as con:
        con.execute("update models.checkpoints set path = replace(path, ?, ?)", [old, new])
    with contextlib.closing(sqlite3.connect(target / "mlflow.db")) as con, con:
        for table, column in (
            ("experiments", "artifact_location"),
            ("runs", "artifact_uri"),
            ("model_versions", "source"),
            ("model_versions", "storage_location"),
        ):
            con.execute(f"update {table} set {column} = replace({column}, ?, ?)", [old, new])
    return target
