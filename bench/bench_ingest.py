"""Ingest benchmark: the whole `raw_responses` write path against a bare json.loads loop, same file.

    python bench/bench_ingest.py [--rows 1000000] [--memory-limit 256MB] [--keep DIR] [--repeats 1]

Input: a generated `table` JSONL of N rows (prompt, response, score; 4 responses per prompt).
- baseline: read the file line by line with `json.loads`, nothing else (one Python thread).
- ours: `defs.ingest.ingest` into a fresh warehouse file: read, vectorized checks and ids in DuckDB, duplicate
  rows, the response cap, the merge into raw.*, raw.prompts and the content version, in one transaction.
Throughput is input rows per second of wall time; memory is the peak RSS above the start of each pass
(psutil, sampled every 5 ms: tracemalloc sees no DuckDB allocation). Passes alternate, baseline first;
medians over --repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from peak_rss import PeakRss
from sample_files import write_large_table_jsonl

from real_assets.core.sources import SourceSpec
from real_assets.defs.ingest import ingest
from real_assets.resources import Warehouse


def baseline(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        for line in f:
            json.loads(line)
            n += 1
    return n


def into_warehouse(path: Path, db: Path, memory_limit: str) -> dict:
    return ingest(
        Warehouse(path=str(db), memory_limit=memory_limit), SourceSpec(source="table", path=str(path))
    )


def timed(fn, *args):
    with PeakRss() as peak:
        t0 = time.perf_counter()
        result = fn(*args)
        seconds = time.perf_counter() - t0
    return result, seconds, peak.delta_mib


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--keep", type=Path, default=None, help="write the file here and keep it")
    ap.add_argument(
        "--memory-limit", default="256MB", help='DuckDB memory_limit for the ingest, e.g. "256MB"'
    )
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        path = (args.keep or Path(tmp)) / f"bench_table_{args.rows}.jsonl"
        if not path.exists():
            write_large_table_jsonl(path, args.rows)
        print(f"{args.rows:,} rows ({path.stat().st_size / 2**20:.0f} MiB): {path}")
        print(f"python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f} at start")
        base, ours = [], []
        for i in range(args.repeats):
            n, seconds, mib = timed(baseline, path)
            assert n == args.rows
            base.append((seconds, mib))
            db = Path(tmp) / f"w{i}.duckdb"
            result, seconds, mib = timed(into_warehouse, path, db, args.memory_limit)
            assert result["input_rows"] == args.rows == result["accepted_rows"], result
            ours.append((seconds, mib))
            db.unlink()
        print(f"load average {os.getloadavg()[0]:.1f} at end")

    t_base = statistics.median(s for s, _ in base)
    t_ours = statistics.median(s for s, _ in ours)
    print()
    print(f"{'pass':<34}{'rows/s':>12}{'seconds':>10}{'peak RSS +MiB':>15}")
    peak_base, peak_ours = max(m for _, m in base), max(m for _, m in ours)
    print(f"{'baseline json.loads':<34}{args.rows / t_base:>12,.0f}{t_base:>10.2f}{peak_base:>15.0f}")
    label = f"ingest() into DuckDB ({args.memory_limit})"
    print(f"{label:<34}{args.rows / t_ours:>12,.0f}{t_ours:>10.2f}{peak_ours:>15.0f}")
    print(
        f"\nthroughput ratio (ingest / json.loads): {t_base / t_ours:.3f}x; {result['responses']:,} responses"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
