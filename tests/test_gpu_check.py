"""bench/gpu_check.sh, the one command for a lent GPU, runs end to end on CPU with tiny sizes."""

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_the_core_path_on_cpu_and_reports_ratios_and_throughputs(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    result = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--device", "cpu", "--quick", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for section in ("embedding ", "sft ", "dpo ", "eval ", "total "):
        assert any(line.startswith(section) for line in result.stdout.splitlines()), section
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["dtype"] == "float32"
    embedding = report["embedding"]
    # ours and the bare encode embed the same texts with the same weights: the same vectors
    assert embedding["texts"] == report["sizes"]["texts"] and embedding["max_abs_diff"] < 1e-4
    assert embedding["ratio_vs_encode"] > 0 and embedding["ours_texts_per_s"] > 0
    assert embedding["progress_lines"] >= 2
    for name in ("sft", "dpo"):
        assert report[name]["steps"] > 0 and report[name]["tokens_per_s"] > 0, name
        assert report[name]["final_loss"] is not None and report[name]["peak_gpu_gib"] is None
    assert report["eval"]["pairs"] > 0 and 0 <= report["eval"]["preference_accuracy"] <= 1
