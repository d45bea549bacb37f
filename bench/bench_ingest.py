"""Ingest benchmark: stream an N-row `table` JSONL through iter_source against a bare json.loads loop.

    python bench/bench_ingest.py [--rows 1000000] [--batch-size 50000] [--keep DIR] [--no-warehouse]

Both passes run in this process on the same file. Throughput is input rows per second of wall time.
Memory: the peak RSS of each pass (ru_maxrss is a high-water mark, so the baseline runs first and the
source pass reports how far it pushed the mark above the baseline's); with --tracemalloc, also the peak of
Python allocations in each pass, which does not depend on order. The source pass holds one batch of
records plus the duplicate-row table (8 bytes a slot), so its memory grows with --batch-size, not --rows.
A third pass runs the whole `raw_responses` write path (`defs.ingest.ingest`: source, DuckDB staging
insert in one transaction, raw.prompts, the content digest) into a fresh warehouse file.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from real_assets.core.sample_files import write_large_table_jsonl
from real_assets.core.sources import SourceSpec, iter_source
from real_assets.defs.ingest import ingest
from real_assets.resources import Warehouse


def rss_mib() -> float:
    # Linux reports ru_maxrss in KiB, macOS in bytes.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def baseline(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        for line in f:
            json.loads(line)
            n += 1
    return n


def through_source(path: Path, batch_size: int) -> tuple[int, int, int]:
    rows = responses = rejects = 0
    for batch in iter_source(SourceSpec(source="table", path=str(path)), batch_size=batch_size):
        rows += batch.input_rows
        responses += len(batch.responses)
        rejects += len(batch.rejects)
    return rows, responses, rejects


def into_warehouse(path: Path, db: Path, memory_limit: str) -> dict:
    return ingest(
        Warehouse(path=str(db), memory_limit=memory_limit), SourceSpec(source="table", path=str(path))
    )


def measure(fn, *args, trace: bool):
    gc.collect()
    if trace:
        tracemalloc.start()
    rss0 = rss_mib()
    t0 = time.perf_counter()
    result = fn(*args)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20 if trace else float("nan")
    if trace:
        tracemalloc.stop()
    return result, seconds, rss0, rss_mib(), peak


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=50_000)
    ap.add_argument("--keep", type=Path, default=None, help="write the file here and keep it")
    ap.add_argument("--tracemalloc", action="store_true", help="also measure tracemalloc peaks (slow)")
    ap.add_argument("--no-warehouse", action="store_true", help="skip the full ingest into DuckDB")
    ap.add_argument(
        "--memory-limit", default="", help='DuckDB memory_limit for the ingest pass, e.g. "256MB"'
    )
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        path = (args.keep or Path(tmp)) / f"bench_table_{args.rows}.jsonl"
        t0 = time.perf_counter()
        write_large_table_jsonl(path, args.rows)
        size = path.stat().st_size / 2**20
        print(f"wrote {args.rows:,} rows ({size:.0f} MiB) in {time.perf_counter() - t0:.1f}s: {path}")
        print(f"python {sys.version.split()[0]}, start RSS {rss_mib():.0f} MiB")

        # Timed passes without tracemalloc (it slows allocation-heavy code), baseline first for RSS.
        n_base, t_base, r0_base, r1_base, _ = measure(baseline, path, trace=False)
        (n_src, n_resp, n_rej), t_src, _, r1_src, _ = measure(
            through_source, path, args.batch_size, trace=False
        )
        assert n_base == n_src == args.rows and n_rej == 0 and n_resp == args.rows, (n_base, n_src, n_rej)
        warehouse = None
        if not args.no_warehouse:
            result, t_wh, _, r1_wh, _ = measure(
                into_warehouse, path, Path(tmp) / "w.duckdb", args.memory_limit, trace=False
            )
            assert result["input_rows"] == args.rows == result["accepted_rows"], result
            warehouse = (args.rows / t_wh, t_wh, r1_wh, result["responses"])
        peak_base = peak_src = float("nan")
        if args.tracemalloc:
            _, _, _, _, peak_base = measure(baseline, path, trace=True)
            _, _, _, _, peak_src = measure(through_source, path, args.batch_size, trace=True)

    base_rate, src_rate = n_base / t_base, n_src / t_src
    grow_base, grow_src = r1_base - r0_base, r1_src - r0_base
    print()
    print(
        f"{'pass':<26}{'rows/s':>12}{'seconds':>10}{'peak RSS MiB':>14}{'RSS growth':>12}{'tracemalloc':>13}"
    )
    print(
        f"{'baseline json.loads':<26}{base_rate:>12,.0f}{t_base:>10.2f}{r1_base:>14.0f}"
        f"{grow_base:>12.0f}{peak_base:>13.1f}"
    )
    print(
        f"{'iter_source(table)':<26}{src_rate:>12,.0f}{t_src:>10.2f}{r1_src:>14.0f}"
        f"{grow_src:>12.0f}{peak_src:>13.1f}"
    )
    if warehouse:
        rate, seconds, rss, _ = warehouse
        print(f"{'ingest() into DuckDB':<26}{rate:>12,.0f}{seconds:>10.2f}{rss:>14.0f}{rss - r0_base:>12.0f}")
    print()
    if warehouse:
        print(
            f"throughput ratio (warehouse ingest / baseline): {warehouse[0] / base_rate:.3f}; "
            f"{warehouse[3]:,} responses stored"
        )
    print(
        f"throughput ratio (source / baseline): {src_rate / base_rate:.3f}",
        f"(slowdown x{base_rate / src_rate:.1f})",
    )
    print(f"peak RSS ratio (source / baseline):   {r1_src / r1_base:.2f}")
    if args.tracemalloc:
        print(f"tracemalloc peak ratio:               {peak_src / peak_base:.1f}")
    print(f"responses: {n_resp:,}, rejects: {n_rej:,}, batch_size: {args.batch_size:,}, rows: {args.rows:,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
