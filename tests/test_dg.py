"""The `dg` project that pyproject.toml declares ([tool.dg]): `dg check defs` passes and `dg list defs` lists
the code location's assets, loaded the way `dg` loads them."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _dg(*args: str) -> subprocess.CompletedProcess:
    dg = Path(sys.executable).parent / "dg"
    assert dg.exists(), "dg missing: install the dev extras (dagster-dg-cli)"
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [str(dg), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_dg_checks_and_lists_the_definitions():
    from real_assets.definitions import defs

    check = _dg("check", "defs")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "All definitions loaded successfully" in check.stdout + check.stderr
    listed = _dg("list", "defs", "--json")
    assert listed.returncode == 0, listed.stderr
    keys = {asset["asset_key"] for asset in json.loads(listed.stdout)["assets"]}
    graph = defs.resolve_asset_graph()
    assert keys == {key.to_user_string() for key in graph.get_all_asset_keys()}
