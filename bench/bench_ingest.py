"""Ingest benchmark: the whole `raw_responses` write path against a bare json.loads loop, same file.

    python bench/bench_ingest.py [--rows 1000000] [--memory-limit 256MB] [--keep DIR] [--repeats 1]
                                  [--profile]

Input: a generated `table` JSONL of N rows (prompt, response, score; 4 responses per prompt).
- baseline: read the file line by line with `json.loads`, nothing else (one Python thread).
- ours: `defs.ingest.ingest` into a fresh warehouse file: read (one chunk ahead, in a thread), vectorized
  checks and ids in DuckDB, duplicate rows, the response cap, the merge into raw.*, raw.prompts and the
  content version, in one transaction.
Throughput is input rows per second of wall time; memory is the peak RSS above the start of each pass
(psutil, sampled every 5 ms: tracemalloc sees no DuckDB allocation). Passes alternate, baseline first;
medians over --repeats. Also printed: process CPU seconds of each pass (all threads: DuckDB uses every core,
json.loads one; steadier than wall time on a loaded machine), the 1-minute load average around each pass,
and how much of ours was the content version of the raw tables (`tracked_content_version`, diagnostic).
--profile adds one more ingest with DuckDB on one thread (`threads=1`, so that each statement's CPU is its
own) and prints the CPU seconds of each kind of statement it ran, largest first (diagnostic, not timed).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
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

import real_assets.defs.ingest as ingest_module
from real_assets.core.sources import SourceSpec
from real_assets.defs.ingest import ingest
from real_assets.resources import Warehouse

DIGEST_SECONDS: list[float] = []
DIGEST_CPU: list[float] = []


def _timed_content_version(*args, **kwargs):
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        return _content_version(*args, **kwargs)
    finally:
        DIGEST_SECONDS.append(time.perf_counter() - t0)
        DIGEST_CPU.append(time.process_time() - c0)


_content_version = ingest_module.tracked_content_version
ingest_module.tracked_content_version = _timed_content_version


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


class _StatementClock:
    """A connection whose `execute` adds each statement's CPU seconds to `cpu[first words]`."""

    def __init__(self, con, cpu: dict[str, float]):
        self._con, self._cpu = con, cpu

    def execute(self, sql, *args, **kwargs):
        c0 = time.process_time()
        try:
            return self._con.execute(sql, *args, **kwargs)
        finally:
            self._cpu[" ".join(re.sub(r"[(,]", " ", sql).split()[:6])] += time.process_time() - c0

    def __getattr__(self, name):
        return getattr(self._con, name)


def profile(path: Path, db: Path, memory_limit: str) -> None:
    """One ingest on one DuckDB thread; CPU seconds per kind of statement."""
    cpu: dict[str, float] = collections.defaultdict(float)
    connect = Warehouse.connect

    @contextlib.contextmanager
    def clocked(self, read_only=False):
        with connect(self, read_only) as con:
            con.execute("set threads = 1")
            yield _StatementClock(con, cpu)

    Warehouse.connect = clocked
    try:
        c0 = time.process_time()
        into_warehouse(path, db, memory_limit)
        total = time.process_time() - c0
    finally:
        Warehouse.connect = connect
    # content_version's statements run on a cursor of its own: timed as a whole, less what went through `con`
    cpu["content_version (whole)"] = DIGEST_CPU[-1] - cpu.pop("select current_database )", 0.0)
    print(f"\nprofile, DuckDB threads=1: {total:.2f} CPU s in all; statements:")
    for what, seconds in sorted(cpu.items(), key=lambda kv: -kv[1])[:15]:
        print(f"{seconds:8.2f}  {what}")
    # The reader thread's CPU counts in the statements it overlaps (mostly the chunk pass).
    print(f"{total - sum(cpu.values()):8.2f}  the rest (outside the statements)")


def timed(fn, *args):
    load = os.getloadavg()[0]
    with PeakRss() as peak:
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn(*args)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return result, {"seconds": seconds, "cpu": cpu, "mib": peak.delta_mib, "load": [load, os.getloadavg()[0]]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--keep", type=Path, default=None, help="write the file here and keep it")
    ap.add_argument(
        "--memory-limit", default="256MB", help='DuckDB memory_limit for the ingest, e.g. "256MB"'
    )
    ap.add_argument("--profile", action="store_true", help="also profile one ingest on one DuckDB thread")
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "out" / "bench_ingest.json")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        path = (args.keep or Path(tmp)) / f"bench_table_{args.rows}.jsonl"
        if not path.exists():
            write_large_table_jsonl(path, args.rows)
        print(f"{args.rows:,} rows ({path.stat().st_size / 2**20:.0f} MiB): {path}")
        print(f"python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f} at start")
        base, ours = [], []
        for i in range(args.repeats):
            n, m = timed(baseline, path)
            assert n == args.rows
            base.append(m)
            db = Path(tmp) / f"w{i}.duckdb"
            result, m = timed(into_warehouse, path, db, args.memory_limit)
            assert result["input_rows"] == args.rows == result["accepted_rows"], result
            ours.append(m | {"digest": DIGEST_SECONDS[-1]})
            db.unlink()
            print(f"repeat {i + 1}: baseline {base[-1]}, ours {ours[-1]}", flush=True)
        print(f"load average {os.getloadavg()[0]:.1f} at end")
        if args.profile:
            profile(path, Path(tmp) / "profile.duckdb", args.memory_limit)

    def med(passes: list[dict], key: str) -> float:
        return statistics.median(p[key] for p in passes)

    t_base, t_ours = med(base, "seconds"), med(ours, "seconds")
    print()
    print(f"{'pass':<34}{'rows/s':>12}{'seconds':>10}{'CPU s':>8}{'peak RSS +MiB':>15}")
    ours_label = f"ingest() into DuckDB ({args.memory_limit})"
    for label, passes in (("baseline json.loads", base), (ours_label, ours)):
        t = med(passes, "seconds")
        peak = max(p["mib"] for p in passes)
        print(f"{label:<34}{args.rows / t:>12,.0f}{t:>10.2f}{med(passes, 'cpu'):>8.2f}{peak:>15.0f}")
    print(f"{'  of which content digest':<34}{'':>12}{med(ours, 'digest'):>10.2f}")
    ratio = t_ours / t_base
    print(f"\nratio ours/baseline (ingest s / json.loads s): {ratio:.3f}x; {result['responses']:,} responses")
    loads = [x for p in base + ours for x in p["load"]]
    print(f"1-minute load average during the passes: {min(loads):.1f} to {max(loads):.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"rows": args.rows, "baseline": base, "ours": ours, "ratio": ratio}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
