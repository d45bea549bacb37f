"""The warehouse on DuckLake (Postgres catalog, local data path): the same assets and SQL give the same
content as on the DuckDB file, and processes that write at once all land."""

import os
import subprocess
import sys
import textwrap
import time

import duckdb
import pandas as pd
import pytest
from postgres_server import lake_unavailable, running_postgres

from real_assets.demo import materialize
from real_assets.resources import Tracking, Warehouse, extension_file, replace_rows

pytestmark = pytest.mark.skipif(bool(lake_unavailable()), reason=str(lake_unavailable()))

LAKE_ASSETS = ["raw_responses", "response_embeddings", "response_similarity", "pair_candidates"]


@pytest.fixture(scope="module")
def postgres():
    with running_postgres() as server:
        yield server


def _lake(postgres, tmp_path, name: str) -> Warehouse:
    postgres.create_database(name)
    return Warehouse(path=f"ducklake:postgres:{postgres.libpq(name)}", data_path=str(tmp_path / name))


def test_extensions_come_from_the_wheels_for_this_duckdb():
    for name in ("ducklake", "postgres_scanner"):
        path = extension_file(name)
        assert f"v{duckdb.__version__}" in str(path) and path.stat().st_size > 1_000_000


def _materialize(warehouse: Warehouse, home) -> dict[str, str]:
    tracking = Tracking(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    result = materialize(
        LAKE_ASSETS,
        ops={"raw_responses": {"n_prompts": 12, "test_fraction": 0.25}},
        resources={"warehouse": warehouse, "tracking": tracking},
    )
    assert result.success
    versions = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        versions[materialization.asset_key.to_user_string()] = materialization.tags["dagster/data_version"]
    return versions


@pytest.mark.slow
def test_the_same_assets_and_sql_give_the_same_content_on_a_file_and_on_ducklake(
    postgres, tmp_path, monkeypatch
):
    monkeypatch.setenv("REAL_ASSETS_HOME", str(tmp_path / "home"))
    on_file = _materialize(Warehouse(path=str(tmp_path / "warehouse.duckdb")), tmp_path)
    lake = _lake(postgres, tmp_path, "lake_same")
    on_lake = _materialize(lake, tmp_path)
    assert set(on_file) == set(LAKE_ASSETS)
    assert on_lake == on_file  # content versions: same rows, same values, both engines
    with lake.connect(read_only=True) as con:
        catalog = con.execute("select current_database()").fetchone()[0]
        rows = con.execute("select count(*) from features.response_similarity").fetchone()[0]
    assert catalog == "lake" and rows > 0
    assert list((tmp_path / "lake_same").rglob("*.parquet")), "DuckLake wrote no data files"


def test_replace_rows_replaces_by_key_in_one_transaction(tmp_path):
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    with warehouse.connect() as con:
        con.execute("create table eval.t (strategy varchar, seed bigint, value double)")
        replace_rows(
            con,
            "eval.t",
            pd.DataFrame({"strategy": ["a", "b"], "seed": [0, 0], "value": [1.0, 2.0]}),
            ["strategy", "seed"],
        )
        replace_rows(
            con,
            "eval.t",
            pd.DataFrame({"value": [3.0], "seed": [0], "strategy": ["a"]}),
            ["strategy", "seed"],
        )
        assert con.execute("select * from eval.t order by strategy").fetchall() == [
            ("a", 0, 3.0),
            ("b", 0, 2.0),
        ]
        with pytest.raises(duckdb.Error):  # a failing insert leaves the old rows in place
            replace_rows(
                con,
                "eval.t",
                pd.DataFrame({"strategy": ["a"], "seed": [0], "nope": [1]}),
                ["strategy", "seed"],
            )
        assert con.execute("select count(*) from eval.t").fetchone()[0] == 2
        with pytest.raises(ValueError):
            replace_rows(con, "eval.t; drop table eval.t", pd.DataFrame({"a": [1]}), ["a"])


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import pandas as pd
    from real_assets.definitions import resources_for
    from real_assets.resources import replace_rows
    from real_assets.settings import Locations

    partition, start, rounds = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    warehouse = resources_for(Locations.resolve())["warehouse"]  # the lake $REAL_ASSETS_WAREHOUSE names
    with warehouse.connect(read_only=True) as con:  # the lake attached: ready
        pass
    (start.parent / f"ready-{partition}").touch()
    while not start.exists():
        time.sleep(0.01)
    print("began", time.time())
    for round_number in range(rounds):
        frame = pd.DataFrame({"strategy": [partition] * 40, "prompt_id": [f"p{i:02d}" for i in range(40)],
                              "round": [round_number] * 40})
        with warehouse.connect() as con:
            replace_rows(con, "selection.pairs_at_once", frame, ["strategy"])
            values = [partition, round_number, time.time()]
            con.execute("insert into raw.writes_at_once values (?, ?, ?)", values)
    print("done", partition)
    """
)


@pytest.mark.slow
def test_two_processes_writing_at_once_both_land_with_every_row(postgres, tmp_path):
    lake = _lake(postgres, tmp_path, "lake_concurrent")
    with lake.connect() as con:
        con.execute(
            "create table selection.pairs_at_once (strategy varchar, prompt_id varchar, round bigint)"
        )
        con.execute("create table raw.writes_at_once (strategy varchar, round bigint, written_at double)")
    env = {
        **os.environ,
        "REAL_ASSETS_WAREHOUSE": lake.path,
        "REAL_ASSETS_WAREHOUSE_DATA": lake.data_path,
        "REAL_ASSETS_HOME": str(tmp_path / "home"),
    }
    start, rounds = tmp_path / "start", 8
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, partition, str(start), str(rounds)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for partition in ("easy", "hard")
    ]
    deadline = time.monotonic() + 300
    while not all((tmp_path / f"ready-{p}").exists() for p in ("easy", "hard")):
        assert time.monotonic() < deadline and all(w.poll() is None for w in writers), (
            "a writer did not start"
        )
        time.sleep(0.1)
    start.touch()
    outputs = [w.communicate(timeout=300) for w in writers]
    for writer, (_out, err) in zip(writers, outputs):
        assert writer.returncode == 0, err[-3000:]
    easy_began, hard_began = (float(out.split("began ")[1].split()[0]) for out, _ in outputs)
    with lake.connect(read_only=True) as con:
        per_partition = con.execute(
            "select strategy, count(*), count(distinct prompt_id), min(round), max(round) "
            "from selection.pairs_at_once group by strategy order by strategy"
        ).fetchall()
        writes = con.execute(
            "select strategy, count(*), min(written_at), max(written_at) from raw.writes_at_once "
            "group by 1 order by 1"
        ).fetchall()
    assert per_partition == [
        ("easy", 40, 40, rounds - 1, rounds - 1),
        ("hard", 40, 40, rounds - 1, rounds - 1),
    ]
    assert [w[:2] for w in writes] == [("easy", rounds), ("hard", rounds)]
    # Both were writing at once: each began before the other's last commit. (Their commits need not
    # interleave: a writer that loses a commit conflict backs off, and may only land after the other.)
    (_, _, _, easy_last), (_, _, _, hard_last) = writes
    assert easy_began < hard_last and hard_began < easy_last, "the writers did not run at the same time"


def test_object_storage_loads_httpfs_and_takes_the_s3_secret_from_the_environment(monkeypatch):
    from real_assets.resources.warehouse import _object_storage

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    con = duckdb.connect(config={"autoinstall_known_extensions": False})
    _object_storage(con)
    (secret,) = con.execute(
        "select secret_string from duckdb_secrets() where name = 'real_assets_s3'"
    ).fetchone()
    assert "AKIAEXAMPLE" in secret and "127.0.0.1:9000" in secret and "use_ssl=false" in secret.lower()
    assert "not-a-real-secret" not in secret  # DuckDB redacts it
