"""Similarity benchmark: the `response_similarity` SQL model on DuckDB against batched numpy.

    python bench/bench_similarity.py [--responses 100000] [--per-prompt 8] [--dim 384] [--repeats 3]
                                     [--digest]

Input, built once (untimed): --responses random unit vectors (float32) in features.response_embeddings of
a file-backed DuckDB warehouse, in the table the embeddings step creates (`defs.features._DDL`: response_id,
prompt_id, model_id varchar, embedding FLOAT[] list, no key), --per-prompt responses to each prompt, ids 16
hex characters like the real ones, rows inserted in response_id order (as embed_new_responses does)
through a pyarrow FixedSizeListArray.

* ours: what the SQL asset's full build runs, on a fresh `Warehouse.connect()`:
  `create or replace table features.response_similarity as <dbt_like_sql/features/response_similarity.sql>`
  (norms once per response, then a self-join on prompt_id with response_id_a < response_id_b and
  list_dot_product over the norms, written to the database file). With --digest, the asset's follow-up
  full count of the table digest is timed too, once, outside the ratio.
* baseline: read (prompt_id, response_id, embedding) from the same table into Arrow, sort by (prompt_id,
  response_id), reshape to (prompts, k, dim), one batched matmul, take the upper-triangle pairs and
  materialize the same pair rows as Arrow arrays (prompt_id, response_id_a, response_id_b, cosine) in memory.
  The compute part alone (after the read) is reported too. As a diagnostic, the same SQL is also timed as
  `select count(*), sum(cosine) from (<sql>)` (computed, not written).

Both must give the same number of pairs, the same (a, b) pairs and cosines within 1e-4 (checked on every
pair through a DuckDB join, untimed). Each side is repeated --repeats times, alternating; medians reported.
Ratio is ours/baseline (above 1 means ours is slower). Memory: peak RSS above the RSS at the start of each
timed pass, sampled every 5 ms by a thread (psutil). Writes bench/out/similarity.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb
import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
from peak_rss import PeakRss

from real_assets.core.hashing import digest
from real_assets.core.sql_models import load_sql_models
from real_assets.defs.features import EMBEDDINGS
from real_assets.resources import Warehouse, table_digest

OUT = Path(__file__).resolve().parent / "out"
MODEL = "response_similarity"


def hex_ids(prefix: str, n: int) -> list[str]:
    return [digest(prefix, str(i))[:16] for i in range(n)]


def build_input(warehouse: Warehouse, responses: int, per_prompt: int, dim: int, seed: int) -> None:
    prompts = responses // per_prompt
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((responses, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    prompt_ids = np.repeat(np.array(hex_ids("prompt", prompts), dtype=object), per_prompt)
    response_ids = np.array(hex_ids("response", responses), dtype=object)
    order = np.argsort(response_ids.astype(str), kind="stable")
    staged = pa.table(
        {
            "response_id": pa.array(response_ids[order], pa.string()),
            "prompt_id": pa.array(prompt_ids[order], pa.string()),
            "model_id": pa.array(["bench/random-unit"] * responses, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(vectors[order].reshape(-1), pa.float32()), dim
            ),
        }
    )
    with warehouse.connect() as con:
        con.execute(EMBEDDINGS.ddl())
        con.register("staged", staged)
        con.execute("insert into features.response_embeddings select * from staged")


def ours(warehouse: Warehouse, sql: str) -> int:
    with warehouse.connect() as con:
        con.execute(f"create or replace table features.response_similarity as {sql}")
        return con.execute("select count(*) from features.response_similarity").fetchone()[0]


def ours_query_only(warehouse: Warehouse, sql: str) -> int:
    """The same SQL aggregated instead of written (sum(cosine) keeps the cosine from being pruned)."""
    with warehouse.connect(read_only=True) as con:
        return con.execute(f"select count(*), sum(cosine) from ({sql})").fetchone()[0]


def baseline_read(warehouse: Warehouse) -> pa.Table:
    with warehouse.connect(read_only=True) as con:
        return con.sql(
            "select prompt_id, response_id, embedding from features.response_embeddings"
        ).to_arrow_table()


def baseline_pairs(table: pa.Table, per_prompt: int) -> pa.Table:
    """All unordered pairs of responses to one prompt, id_a < id_b, with their cosine, as Arrow columns."""
    table = table.take(pc.sort_indices(table, [("prompt_id", "ascending"), ("response_id", "ascending")]))
    counts = pc.value_counts(table.column("prompt_id")).field("counts")
    if pc.min_max(counts)["min"].as_py() != per_prompt or pc.min_max(counts)["max"].as_py() != per_prompt:
        raise ValueError(f"the batched baseline needs exactly {per_prompt} responses per prompt")
    k = per_prompt
    n_prompts = table.num_rows // k
    emb = table.column("embedding").combine_chunks()
    x = emb.flatten().to_numpy().reshape(n_prompts, k, -1)
    sims = np.clip(x @ x.transpose(0, 2, 1), -1.0, 1.0)  # (prompts, k, k)
    ia, ib = np.triu_indices(k, 1)
    cosine = sims[:, ia, ib].reshape(-1)
    base = (np.arange(n_prompts, dtype=np.int64) * k)[:, None]
    take_a = pa.array((base + ia).reshape(-1))
    take_b = pa.array((base + ib).reshape(-1))
    response_ids = table.column("response_id")
    return pa.table(
        {
            "prompt_id": table.column("prompt_id").take(take_a),
            "response_id_a": response_ids.take(take_a),
            "response_id_b": response_ids.take(take_b),
            "cosine": pa.array(cosine),
        }
    )


def verify(warehouse: Warehouse, pairs: pa.Table) -> dict:
    with warehouse.connect(read_only=True) as con:
        con.register("baseline_pairs", pairs)
        ours_rows = con.execute("select count(*) from features.response_similarity").fetchone()[0]
        matched, prompt_mismatch, max_diff = con.execute(
            """select count(*), count(*) filter (where s.prompt_id <> b.prompt_id),
                      max(abs(s.cosine - b.cosine))
               from features.response_similarity as s
               join baseline_pairs as b using (response_id_a, response_id_b)"""
        ).fetchone()
    checks = {
        "ours_rows": ours_rows,
        "baseline_rows": pairs.num_rows,
        "matched_pairs": matched,
        "prompt_mismatches": prompt_mismatch,
        "max_abs_diff": float(max_diff),
    }
    if not (ours_rows == pairs.num_rows == matched) or prompt_mismatch or max_diff >= 1e-4:
        raise AssertionError(f"ours and the baseline disagree: {checks}")
    return checks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--responses", type=int, default=100_000)
    ap.add_argument("--per-prompt", type=int, default=8)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--digest", action="store_true", help="also time the asset's table_digest, once")
    args = ap.parse_args(argv)
    if args.responses % args.per_prompt:
        ap.error("--responses must be a multiple of --per-prompt")
    k = args.per_prompt
    n_prompts = args.responses // k
    expected_pairs = n_prompts * k * (k - 1) // 2
    sql = next(m for m in load_sql_models() if m.name == MODEL).sql

    with tempfile.TemporaryDirectory() as tmp:
        warehouse = Warehouse(path=str(Path(tmp) / "bench.duckdb"))
        t0 = time.perf_counter()
        build_input(warehouse, args.responses, k, args.dim, args.seed)
        print(
            f"{args.responses} responses, {n_prompts} prompts x {k}, dim {args.dim}: "
            f"{expected_pairs} pairs; input built in {time.perf_counter() - t0:.1f} s; "
            f"duckdb {duckdb.__version__}, threads {psutil.cpu_count()}"
        )

        runs: dict[str, list[float]] = {
            k_: []
            for k_ in (
                "ours_s",
                "ours_rss",
                "ours_query_s",
                "base_s",
                "base_read_s",
                "base_compute_s",
                "base_rss",
            )
        }
        pairs = None
        for i in range(args.repeats):
            with PeakRss() as mem:
                t0 = time.perf_counter()
                table = baseline_read(warehouse)
                t1 = time.perf_counter()
                pairs = baseline_pairs(table, k)
                t2 = time.perf_counter()
            del table
            runs["base_s"].append(t2 - t0)
            runs["base_read_s"].append(t1 - t0)
            runs["base_compute_s"].append(t2 - t1)
            runs["base_rss"].append(mem.delta_mib)
            if pairs.num_rows != expected_pairs:
                raise AssertionError(f"baseline made {pairs.num_rows} pairs, want {expected_pairs}")
            with PeakRss() as mem:
                t0 = time.perf_counter()
                rows = ours(warehouse, sql)
                runs["ours_s"].append(time.perf_counter() - t0)
            runs["ours_rss"].append(mem.delta_mib)
            t0 = time.perf_counter()
            ours_query_only(warehouse, sql)
            runs["ours_query_s"].append(time.perf_counter() - t0)
            if rows != expected_pairs:
                raise AssertionError(f"the SQL model made {rows} pairs, want {expected_pairs}")
            print(
                f"repeat {i + 1}: baseline {runs['base_s'][-1]:.2f} s "
                f"(read {runs['base_read_s'][-1]:.2f} s + compute {runs['base_compute_s'][-1]:.2f} s) "
                f"| ours {runs['ours_s'][-1]:.2f} s (query alone {runs['ours_query_s'][-1]:.2f} s)"
            )

        checks = verify(warehouse, pairs)
        print(
            f"verified: {checks['matched_pairs']} pairs match, "
            f"max abs cosine diff {checks['max_abs_diff']:.1e}"
        )
        digest_s = None
        if args.digest:
            with warehouse.connect(read_only=True) as con:
                t0 = time.perf_counter()
                table_digest(con, "features.response_similarity")
                digest_s = time.perf_counter() - t0
            print(f"asset follow-up table_digest: {digest_s:.2f} s")
        db_mib = (Path(tmp) / "bench.duckdb").stat().st_size / 2**20

    med = {name: statistics.median(values) for name, values in runs.items()}
    ours_s, base_s, compute_s = med["ours_s"], med["base_s"], med["base_compute_s"]
    report = {
        "benchmark": "similarity",
        "responses": args.responses,
        "per_prompt": k,
        "prompts": n_prompts,
        "dim": args.dim,
        "pairs": expected_pairs,
        "repeats": args.repeats,
        "ours_s": ours_s,
        "baseline_s": base_s,
        "baseline_read_s": med["base_read_s"],
        "baseline_compute_s": compute_s,
        "ours_pairs_per_s": expected_pairs / ours_s,
        "baseline_pairs_per_s": expected_pairs / base_s,
        "ours_query_only_s": med["ours_query_s"],
        "ratio": ours_s / base_s,
        "ratio_vs_compute_only": ours_s / compute_s,
        "ours_peak_rss_delta_mib": med["ours_rss"],
        "baseline_peak_rss_delta_mib": med["base_rss"],
        "asset_table_digest_s": digest_s,
        "database_file_mib": db_mib,
        "checks": checks,
        "runs": runs,
        "machine": {
            "cpus": psutil.cpu_count(),
            "loadavg_1_5_15_at_end": os.getloadavg(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "duckdb": duckdb.__version__,
            "numpy": np.__version__,
            "pyarrow": pa.__version__,
        },
    }
    print()
    print(f"{'':34}{'seconds':>9}{'pairs/s':>12}{'peak RSS +MiB':>15}")
    print(
        f"{'baseline (read + numpy + arrow)':34}{base_s:9.2f}{expected_pairs / base_s:12.0f}"
        f"{med['base_rss']:15.0f}"
    )
    print(f"{'  of which read from DuckDB':34}{med['base_read_s']:9.2f}")
    print(f"{'  of which compute + materialize':34}{compute_s:9.2f}{expected_pairs / compute_s:12.0f}")
    print(
        f"{'ours (create or replace table)':34}{ours_s:9.2f}{expected_pairs / ours_s:12.0f}"
        f"{med['ours_rss']:15.0f}"
    )
    print(f"{'  query alone, not written (diag.)':34}{med['ours_query_s']:9.2f}")
    print(f"ratio ours/baseline: {ours_s / base_s:.2f}x (vs compute only: {ours_s / compute_s:.2f}x)")
    print("load average at the end (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    OUT.mkdir(exist_ok=True)
    (OUT / "similarity.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {OUT / 'similarity.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
