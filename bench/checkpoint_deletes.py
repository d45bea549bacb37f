"""What a DuckDB checkpoint holds in memory once a refresh has deleted rows all over a table.

    python bench/checkpoint_deletes.py [--rows 1000000 4000000 16000000] [--memory-limit 128MB]

A refresh deletes the rows of its changed prompts from every table it recomputes (delete and insert). The
changed prompts are spread over the whole key space, so after one refresh nearly every 2,048-row vector of
a big table holds a deleted row. This bench builds that state on its own, per size, in a fresh database
file: a table of `rows` rows in 16-row "prompts" (the shape of `selection.selected_pairs`), one delete of
2% of the prompts chosen at random (committed and checkpointed with no limit), then, under `--memory-limit`, a
second small delete (10 prompts) and a checkpoint, as the next refresh's partition deletes, commits and
closes its connection. It reports DuckDB's own peak memory by tag during those two statements
(`duckdb_memory()`, sampled every 5 ms from a second cursor) and whether they fit.

It imports nothing from the package, so the same file runs under another DuckDB (a venv with
`pip install duckdb==X`): the checkpoint's memory is DuckDB's behaviour, not this project's SQL.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import duckdb

ROWS_PER_PROMPT = 16


def _peak_by_tag(con: duckdb.DuckDBPyConnection, work) -> tuple[dict[str, int], str | None]:
    """DuckDB's peak memory (MiB) by tag while `work()` runs, and its error (None if it succeeded)."""
    peak: dict[str, int] = {}
    stop = threading.Event()
    cursor = con.cursor()

    def poll() -> None:
        while not stop.is_set():
            try:
                rows = cursor.execute("select tag, memory_usage_bytes from duckdb_memory()").fetchall()
            except duckdb.Error:
                rows = []
            for tag, used in rows:
                peak[tag] = max(peak.get(tag, 0), used >> 20)
            time.sleep(0.005)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    error = None
    try:
        work()
    except duckdb.Error as e:
        error = str(e).splitlines()[0]
    finally:
        stop.set()
        thread.join()
    return {tag: mib for tag, mib in peak.items() if mib}, error


def run(rows: int, memory_limit: str) -> dict:
    """One size, in a fresh database file: the second checkpoint's peak memory and outcome."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "t.duckdb")
        with duckdb.connect(path) as con:
            con.execute(
                "create table pairs as select (i // ?)::varchar as prompt_id, i as pair, random() as score "
                "from range(?) as t(i)",
                [ROWS_PER_PROMPT, rows],
            )
            prompts = rows // ROWS_PER_PROMPT
            con.execute("select setseed(0.5)")
            con.execute(
                "create table changed as select (i)::varchar as prompt_id from range(?) as t(i) "
                "where random() < 0.02",
                [prompts],
            )
            vectors = con.execute(
                "select count(distinct rowid // 2048) from pairs "
                "where prompt_id in (select prompt_id from changed)"
            ).fetchone()[0]
            con.execute("delete from pairs where prompt_id in (select prompt_id from changed)")
            con.execute("checkpoint")
        with duckdb.connect(path, config={"memory_limit": memory_limit}) as con:
            step = ["delete"]

            def delete_and_checkpoint() -> None:
                con.execute(
                    "delete from pairs where prompt_id in (select prompt_id from pairs using sample 10 rows)"
                )
                step[0] = "checkpoint"
                con.execute("checkpoint")

            peak, error = _peak_by_tag(con, delete_and_checkpoint)
    return {
        "rows": rows,
        "vectors": vectors,
        "second_delete_and_checkpoint": "ok" if error is None else f"{step[0]} failed: {error}",
        "peak_mib_by_tag": peak,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000, 16_000_000])
    parser.add_argument("--memory-limit", default="128MB")
    args = parser.parse_args()
    print(f"duckdb {duckdb.__version__}, memory_limit {args.memory_limit}", flush=True)
    print("| rows | vectors with a deleted row | second delete and checkpoint | DuckDB peak MiB by tag |")
    print("| ---: | ---: | --- | --- |")
    for rows in args.rows:
        result = run(rows, args.memory_limit)
        tags = ", ".join(f"{tag} {mib}" for tag, mib in sorted(result["peak_mib_by_tag"].items()))
        outcome = result["second_delete_and_checkpoint"]
        print(f"| {rows:,} | {result['vectors']:,} | {outcome} | {tags} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
