"""The code location loads as the Dagster UI and daemon load it: `dagster definitions validate` on
workspace.yaml, in a fresh process. (The UI itself is driven in a real browser by the browser test.)"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_the_workspace_loads_and_validates(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "REAL_ASSETS_HOME": str(tmp_path / "home")}
    dagster = [sys.executable, "-m", "dagster"]
    result = subprocess.run(
        [*dagster, "definitions", "validate", "-w", str(ROOT / "workspace.yaml")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful" in result.stdout + result.stderr
