"""Every bench script still imports against the package: a bench is run by hand, rarely, so a renamed
name it uses (`defs.features._DDL`, `defs.ingest.content_version`) broke two of them unnoticed."""

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"

IMPORT_EACH = """
import runpy, sys
sys.path.insert(0, sys.argv[1])
for path in sys.argv[2:]:
    runpy.run_path(path, run_name="imported")  # module level only: `main()` is behind `__main__`
"""


def test_every_bench_script_imports():
    scripts = sorted(str(p) for p in BENCH.glob("*.py"))
    assert len(scripts) >= 8
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH, str(BENCH), *scripts], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
