"""`real-assets audit` on a small populated home: clean passes, a tampered row or checkpoint fails."""

import argparse
import contextlib
import json
import os
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from real_assets import cli
from real_assets.audit import CHECKPOINT_MATCHES_MANIFEST, add_audit_parser, audit, audit_checks
from real_assets.definitions import ASSETS, resources


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One demo home for the module (~40 s on CPU); environment restored afterwards."""
    root = tmp_path_factory.mktemp("audit")
    saved = dict(os.environ)
    os.environ.update(
        {
            "HF_HUB_OFFLINE": "1",
            "REAL_ASSETS_HOME": str(root / "home"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        }
    )
    try:
        rc = cli.main(
            [
                "demo",
                "--home",
                str(root / "home"),
                "--n-prompts",
                "30",
                "--sft-epochs",
                "1",
                "--dpo-epochs",
                "1",
            ]
        )
        assert rc == 0
        yield root / "home"
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _cli(home: Path, *extra: str) -> int:
    parser = argparse.ArgumentParser(prog="real-assets")
    add_audit_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["audit", "--home", str(home), *extra])
    return args.func(args)


@contextlib.contextmanager
def _warehouse(home: Path):
    con = duckdb.connect(str(home / "warehouse.duckdb"))
    try:
        yield con
    finally:
        con.close()


def test_clean_home_passes(home, capsys):
    assert _cli(home) == 0
    out = capsys.readouterr().out
    assert "audit passed" in out
    for label in (
        "raw_responses",
        "pair_candidates",
        "selected_pairs[easy]",
        "reference_policy",
        "dpo_checkpoint[centroid]",
        "eval_scores[hard]",
        "strategy_comparison",
    ):
        assert label in out

    assert _cli(home, "--json", "--strategy", "easy") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["strategies"] == ["easy"] and report["problems"] == []
    steps = {(s["asset"], s["partition"]): s for s in report["steps"]}
    assert ("dpo_checkpoint", "easy") in steps and ("dpo_checkpoint", "hard") not in steps
    for step in report["steps"]:
        assert step["data_version"] == step["recomputed_version"]
        assert step["dagster_run_id"] and step["mlflow_run_id"] and step["materialized_at"]
        assert step["code_version"] and step["rows"] > 0


def test_tampered_row_fails_naming_raw_responses(home, capsys):
    with _warehouse(home) as con:
        rid, score = con.execute(
            "select response_id, score from raw.responses order by response_id limit 1"
        ).fetchone()
        con.execute("update raw.responses set score = score + 1 where response_id = ?", [rid])
    try:
        assert _cli(home) == 1
        out = capsys.readouterr().out
        assert "PROBLEM  raw_responses: raw.responses content hashes to" in out
        assert "audit FAILED: 1 problem(s)" in out
    finally:
        with _warehouse(home) as con:
            con.execute("update raw.responses set score = ? where response_id = ?", [score, rid])
    assert audit(home).ok


def _run_check(home: Path, partition: str) -> bool:
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        # A check-only run names its partition by tag (materialize's partition_key wants an asset).
        result = dg.materialize(
            [*ASSETS, *audit_checks],
            selection=dg.AssetSelection.checks(*audit_checks),
            tags={"dagster/partition": partition},
            instance=instance,
            resources=resources(),
            raise_on_error=False,  # the check is blocking: a failed one fails the run
        )
    [evaluation] = result.get_asset_check_evaluations()
    assert (evaluation.check_name, evaluation.partition) == (CHECKPOINT_MATCHES_MANIFEST, partition)
    return evaluation.passed


def test_tampered_checkpoint_fails_naming_partition(home, capsys):
    [folder] = (home / "checkpoints" / "dpo_checkpoint" / "random").iterdir()
    weights = folder / "model.safetensors"
    original = weights.stat().st_size
    with open(weights, "ab") as f:
        f.write(b"\0")
    try:
        assert _cli(home) == 1
        out = capsys.readouterr().out
        assert "PROBLEM  dpo_checkpoint[random]: checkpoint file model.safetensors: sha256 differs" in out
        assert "dpo_checkpoint[easy]" in out and "PROBLEM  dpo_checkpoint[easy]" not in out
        assert not _run_check(home, "random")
        assert _run_check(home, "easy")
    finally:
        with open(weights, "r+b") as f:
            f.truncate(original)
    assert audit(home, "random").ok


def test_missing_mlflow_run_and_home(home, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    report = audit(home, "hard")
    assert not report.ok
    assert any(p.startswith("raw_responses: MLflow run") and "not found" in p for p in report.all_problems())
    missing = audit(tmp_path / "nowhere")
    assert not missing.ok and "does not exist" in missing.all_problems()[0]
