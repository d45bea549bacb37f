"""A home accumulates ingestions: a demo that reads another source, path or seed than the home holds says
so before it starts, and the comparison lists the ingestions it is built from."""

from pathlib import Path

import dagster as dg
import pytest
from conftest import FAKE_MODELS, run_cli

QUICK = [
    *("--n-prompts", "12", "--seeds", "1", "--partition", "0|easy", *FAKE_MODELS),
    *("--skip", "budget_point"),
]


def _demo(capsys, home: Path, *args: str) -> str:
    """The output of `real-assets demo` in this process; it must succeed."""
    code, out, err = run_cli(capsys, ["demo", "--home", str(home), *QUICK, *args])
    assert code == 0, out + err
    return out


@pytest.mark.slow
def test_a_demo_with_another_seed_says_the_data_is_mixed(tmp_path, home_template, capsys):
    home = tmp_path / "home"
    first = _demo(capsys, home, "--seed", "0")
    assert "note: this home already holds" not in first
    assert "built from" not in first

    second = _demo(capsys, home, "--seed", "1")
    lines = second.splitlines()
    [note] = [i for i, line in enumerate(lines) if line.startswith("note: this home already holds")]
    assert "synthetic:seed=0" in lines[note] and "this run adds synthetic:seed=1" in lines[note]
    assert note < next(i for i, line in enumerate(lines) if line.strip().startswith("raw_responses"))
    assert "built from 2 ingestions of this home" in second

    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        [record] = instance.fetch_materializations(dg.AssetKey("strategy_comparison"), limit=1).records
        metadata = record.asset_materialization.metadata
    assert metadata["sources"].value == 2
    assert "synthetic:seed=0" in metadata["ingestions"].value
    assert "synthetic:seed=1" in metadata["ingestions"].value
