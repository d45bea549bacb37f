"""A home accumulates ingestions: a demo that reads another source, path or seed than the home holds says
so before it starts, and the comparison lists the ingestions it is built from."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from conftest import FAKE_MODELS

ROOT = Path(__file__).resolve().parents[1]
QUICK = [
    *("--n-prompts", "12", "--seeds", "1", "--partition", "0|easy", *FAKE_MODELS),
    *("--skip", "budget_point"),
]


def _demo(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    command = [sys.executable, "-c", "import sys; from real_assets.cli import main; sys.exit(main())"]
    result = subprocess.run(
        [*command, "demo", "--home", str(home), *QUICK, *args],
        env={**env, "REAL_ASSETS_HOME": str(home), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.slow
def test_a_demo_with_another_seed_says_the_data_is_mixed(tmp_path):
    home = tmp_path / "home"
    first = _demo(home, "--seed", "0")
    assert "note: this home already holds" not in first.stdout
    assert "built from" not in first.stdout

    second = _demo(home, "--seed", "1")
    lines = second.stdout.splitlines()
    [note] = [i for i, line in enumerate(lines) if line.startswith("note: this home already holds")]
    assert "synthetic:seed=0" in lines[note] and "this run adds synthetic:seed=1" in lines[note]
    assert note < next(i for i, line in enumerate(lines) if line.strip().startswith("raw_responses"))
    assert "built from 2 ingestions of this home" in second.stdout

    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        [record] = instance.fetch_materializations(dg.AssetKey("strategy_comparison"), limit=1).records
        metadata = record.asset_materialization.metadata
    assert metadata["sources"].value == 2
    assert "synthetic:seed=0" in metadata["ingestions"].value
    assert "synthetic:seed=1" in metadata["ingestions"].value
