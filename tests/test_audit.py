"""`real-assets audit` on a small populated home (a copy of the fake-trained golden home for each test):
clean passes, a tampered row or checkpoint fails."""

import contextlib
import dataclasses
import json
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from conftest import GOLDEN_SEEDS, demo_partitions

from real_assets import cli
from real_assets.audit import audit
from real_assets.definitions import definitions, defs
from real_assets.defs.annotation import LOOP_GROUPS
from real_assets.defs.versions import CHECKPOINT_MATCHES_MANIFEST
from real_assets.settings import Locations

pytestmark = pytest.mark.slow


@pytest.fixture
def home(golden_copy) -> Path:
    """A copy of the golden home (the shared demo's graph, fake-trained) for this test to tamper with."""
    return golden_copy


def _cli(home: Path, *extra: str) -> int:
    return cli.main(["audit", "--home", str(home), *extra])


@contextlib.contextmanager
def _warehouse(home: Path):
    con = duckdb.connect(str(home / "warehouse.duckdb"))
    try:
        yield con
    finally:
        con.close()


DPO = dg.AssetKey("dpo_checkpoint")
DPO_PARTITIONS = demo_partitions(defs.get_assets_def(DPO).partitions_def.get_partition_keys(), GOLDEN_SEEDS)


def _label(asset: str, partition: str | None = None) -> str:
    return f"{asset}[{partition}]" if partition else asset


def test_clean_home_passes(home, capsys):
    assert _cli(home) == 0
    out = capsys.readouterr().out
    assert "audit passed" in out
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        if graph.get(key).group_name in LOOP_GROUPS:
            continue  # the annotation loop does not run in a demo home
        partitions = graph.get(key).partitions_def
        for partition in (
            demo_partitions(partitions.get_partition_keys(), GOLDEN_SEEDS) if partitions else [None]
        ):
            assert _label(key.to_user_string(), partition) in out

    first, second = DPO_PARTITIONS[:2]
    assert _cli(home, "--json", "--partition", first) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and first in report["partitions"] and report["problems"] == []
    steps = {(s["asset"], s["partition"]): s for s in report["steps"]}
    assert ("dpo_checkpoint", first) in steps and ("dpo_checkpoint", second) not in steps
    assert ("strategy_comparison", None) not in steps  # built from every partition
    for step in report["steps"]:
        assert step["data_version"] == step["recomputed_version"]
        assert step["dagster_run_id"] and step["mlflow_run_id"] and step["materialized_at"]
        assert step["code_version"] and step["rows"] > 0


def _tamper(home: Path, table: str, column: str, expression: str) -> None:
    """Change one row of a warehouse table."""
    with _warehouse(home) as con:
        [rowid] = con.execute(f"select rowid from {table} order by rowid limit 1").fetchone()
        con.execute(f"update {table} set {column} = {expression} where rowid = ?", [rowid])


@pytest.mark.parametrize(
    ("table", "column", "expression", "problem"),
    [
        ("raw.responses", "score", "score + 1", "raw_responses: raw.responses content hashes to"),
        ("raw.prompt_texts", "prompt", "prompt || '!'", "raw_responses: raw.prompt_texts content hashes to"),
        ("raw.ingestions", "accepted_rows", "accepted_rows + 1", "raw_responses: raw.ingestions differs"),
        # values the row cannot already hold (a cosine or a fake win rate may be 0, which halving leaves)
        (
            "selection.pair_candidates",
            "cosine",
            "case when cosine > 0 then -0.5 else 0.5 end",
            "pair_candidates: selection.pair_candidates",
        ),
        ("eval.eval_scores", "win_rate", "case when win_rate > 0.5 then 0 else 1 end", "eval_scores["),
    ],
)
def test_a_tampered_table_fails_naming_its_asset(home, capsys, table, column, expression, problem):
    _tamper(home, table, column, expression)
    assert _cli(home) == 1
    out = capsys.readouterr().out
    assert f"PROBLEM  {problem}" in out
    assert "audit FAILED: 1 problem(s)" in out


def test_a_tampered_mlflow_metric_fails(home, capsys):
    from mlflow import MlflowClient

    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        [record] = instance.fetch_materializations(dg.AssetKey("raw_responses"), limit=1).records
    run_id = record.asset_materialization.metadata["mlflow_run_id"].value
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    original = client.get_run(run_id).data.metrics["accepted_rows"]
    client.log_metric(run_id, "accepted_rows", original + 1, step=0)
    assert _cli(home) == 1
    assert "PROBLEM  raw_responses: MLflow metric accepted_rows=" in capsys.readouterr().out


def _run_check(home: Path, partition: str) -> bool:
    defs = definitions(Locations.resolve(home))
    check = defs.get_asset_checks_def(dg.AssetCheckKey(DPO, CHECKPOINT_MATCHES_MANIFEST))
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        # A check-only run names its partition by tag (materialize's partition_key wants an asset).
        result = dg.materialize(
            [*defs.assets, check],
            selection=dg.AssetSelection.checks(check),
            tags={"dagster/partition": partition},
            instance=instance,
            resources=defs.resources,
            raise_on_error=False,  # the check is blocking: a failed one fails the run
        )
    [evaluation] = result.get_asset_check_evaluations()
    assert (evaluation.check_name, evaluation.partition) == (CHECKPOINT_MATCHES_MANIFEST, partition)
    return evaluation.passed


def test_tampered_checkpoint_fails_naming_partition(home, capsys):
    tampered, intact = DPO_PARTITIONS[-1], DPO_PARTITIONS[0]
    [folder] = (home / "checkpoints" / "dpo_checkpoint" / tampered).iterdir()
    with open(folder / "model.safetensors", "ab") as f:
        f.write(b"\0")
    assert _cli(home) == 1
    out = capsys.readouterr().out
    assert f"PROBLEM  dpo_checkpoint[{tampered}]: checkpoint file model.safetensors: sha256 differs" in out
    assert f"dpo_checkpoint[{intact}]" in out and f"PROBLEM  dpo_checkpoint[{intact}]" not in out
    assert not _run_check(home, tampered)
    assert _run_check(home, intact)


def test_missing_mlflow_run_and_home(home, tmp_path):
    empty_store = f"sqlite:///{tmp_path / 'empty.db'}"
    locations = dataclasses.replace(Locations.resolve(home), tracking_uri=empty_store)
    report = audit(definitions(locations), DPO_PARTITIONS[0])
    assert not report.ok
    assert any(p.startswith("raw_responses: MLflow run") and "not found" in p for p in report.all_problems())
    missing = audit(definitions(Locations.resolve(tmp_path / "nowhere")))
    assert not missing.ok and "does not exist" in missing.all_problems()[0]


def test_digests_of_an_older_format_ask_for_a_rematerialization(home, capsys, monkeypatch):
    """A home written by a real-assets whose table digests were computed differently: the audit says so,
    instead of reporting every table as changed (simulated by a newer format on this side)."""
    import real_assets.audit

    monkeypatch.setattr(real_assets.audit, "TABLE_DIGEST_FORMAT", 3)
    assert _cli(home) == 1
    out = capsys.readouterr().out
    assert "PROBLEM  raw_responses: its table digests are in format 2" in out
    assert "this one computes format 3" in out and "content hashes to" not in out
