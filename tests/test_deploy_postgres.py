"""Running as a service: the whole graph with the Dagster instance on Postgres (deploy/dagster.yaml), MLflow
on Postgres and the warehouse on DuckLake; the audit passes on it; two runs writing at once both land."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
from conftest import SHORT_EVAL, SMALL_SWEEP
from postgres_server import lake_unavailable, running_postgres

from real_assets import cli
from real_assets.definitions import defs, resources_for
from real_assets.homes import instance_of
from real_assets.resources import Warehouse
from real_assets.settings import Locations

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(lake_unavailable()), reason=str(lake_unavailable())),
]
TINY = [
    *shlex.split("--n-prompts 16 --seeds 1 --strategies easy,random"),  # about the stores: two strategies
    *(*SMALL_SWEEP, "--config", SHORT_EVAL),
]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """(postgres, home, env) after `real-assets demo --instance-config deploy/dagster.yaml` on the service."""
    root = tmp_path_factory.mktemp("service")
    with running_postgres() as pg:
        for database in ("dagster", "mlflow", "lake"):
            pg.create_database(database)
        env = {
            "DAGSTER_POSTGRES_URL": pg.url("dagster"),
            "MLFLOW_TRACKING_URI": pg.url("mlflow"),
            "REAL_ASSETS_MLFLOW_ARTIFACTS": str(root / "artifacts"),
            "REAL_ASSETS_WAREHOUSE": f"ducklake:postgres:{pg.libpq('lake')}",
            "REAL_ASSETS_WAREHOUSE_DATA": str(root / "lake"),
            "REAL_ASSETS_HOME": str(root / "home"),
            "REAL_ASSETS_MODEL_BACKEND": "fake",  # about the service's stores, not the models
        }
        with pytest.MonkeyPatch.context() as mp:
            for name, value in env.items():
                if name != "REAL_ASSETS_HOME":  # the service's own settings; the home is --home
                    mp.setenv(name, value)
            config = str(ROOT / "deploy" / "dagster.yaml")
            assert cli.main(["demo", "--home", str(root / "home"), "--instance-config", config, *TINY]) == 0
            yield pg, root / "home", env


def _warehouse(home: Path) -> Warehouse:
    """The warehouse the code location of this home writes (here the DuckLake catalog on Postgres)."""
    return resources_for(Locations.resolve(home))["warehouse"]


def _count(pg, database: str, sql: str) -> int:
    con = psycopg2.connect(host=pg.host, port=pg.port, user=pg.user, dbname=database)
    try:
        with con.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0]
    finally:
        con.close()


def test_every_store_of_the_run_is_the_service(service):
    pg, home, _ = service
    with instance_of(Locations.resolve(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        runs = instance.get_runs()
    assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    assert _count(pg, "dagster", "select count(*) from runs") == len(runs)
    assert _count(pg, "mlflow", "select count(*) from runs where status = 'FINISHED'") >= len(runs)
    assert not (home / "warehouse.duckdb").exists() and not (home / "mlflow.db").exists()
    assert list((home.parent / "lake").rglob("*.parquet")) and list((home.parent / "artifacts").rglob("*"))
    with _warehouse(home).connect(read_only=True) as con:
        assert con.execute("select count(*) from eval.strategy_comparison").fetchone()[0] > 0
    assert _count(pg, "lake", "select count(*) from ducklake_snapshot") > len(runs)


def test_the_audit_passes_on_the_service(service):
    _, home, _ = service
    assert cli.main(["audit", "--home", str(home)]) == 0


PAIRS_PER_PARTITION = """
select seed::varchar || '|' || strategy, count(*) from selection.selected_pairs group by 1
"""
"""Selected pairs per partition key of selected_pairs (strategy x seed: `<seed>|<strategy>`)."""


def test_two_runs_writing_two_partitions_at_once_both_land(service):
    _, home, env = service
    with _warehouse(home).connect(read_only=True) as con:
        before = dict(con.execute(PAIRS_PER_PARTITION).fetchall())
    partitions = sorted(before)
    assert set(partitions) <= set(
        defs.resolve_assets_def("selected_pairs").partitions_def.get_partition_keys()
    )
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dagster",
                "asset",
                "materialize",
                "-m",
                "real_assets.definitions",
                "--select",
                "selected_pairs",
                "--partition",
                partition,
            ],
            env={**os.environ, **env, "DAGSTER_HOME": str(home / "dagster")},
            cwd=home,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for partition in partitions
    ]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    for run, output in zip(runs, outputs):
        assert run.returncode == 0, output[-4000:]
    with _warehouse(home).connect(read_only=True) as con:
        after = dict(con.execute(PAIRS_PER_PARTITION).fetchall())
    assert after == before and all(after[p] > 0 for p in partitions)
    with instance_of(Locations.resolve(home)) as instance:
        for partition in partitions:
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("selected_pairs"), asset_partitions=[partition]),
                2,
            ).records
            assert len(records) == 2 and records[0].run_id != records[1].run_id
    assert cli.main(["audit", "--home", str(home)]) == 0
