"""Embedding benchmark: the `response_embeddings` step against a bare SentenceTransformer.encode.

    python bench/bench_embeddings.py [--n 2000] [--repeats 3] [--batch-size 128] [--seed 0]

Both sides run in this process on the same N synthetic response texts (real_assets.core.synthetic):

* ours: `embed_new_responses(Warehouse(path=<tmp db>), Compute(), EmbeddingConfig())` on a warehouse whose
  raw.responses holds the N responses and which has no features.response_embeddings yet (dropped, untimed,
  before every repeat). It reads the texts from DuckDB, loads the model (it does so on every call: there is
  no model cache), encodes, writes FLOAT[384] rows, deletes orphans and digests the whole table.
* baseline: `SentenceTransformer(path).encode(texts, batch_size=128, normalize_embeddings=True)`, the model
  loaded once before the timed encodes; its load time is measured separately.

One untimed warm-up (model load plus an encode of 256 texts) runs first so torch, the tokenizer and the
OS page cache are warm for both. Each side is repeated --repeats times, alternating; medians are reported.
Ratios are ours/baseline (above 1 means ours is slower): against the encode alone, and against the
baseline's load + encode (the like-for-like figure, since ours loads the model every call).
Memory: the peak RSS above the RSS at the start of each timed call, sampled every 5 ms by a thread
(psutil), so the figure does not depend on which side ran first. Writes bench/out/embeddings.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import psutil
from peak_rss import PeakRss

from real_assets.core.embedding import DEFAULT_EMBEDDER, resolve_model_path
from real_assets.core.synthetic import iter_synthetic
from real_assets.defs.features import EmbeddingConfig, embed_new_responses
from real_assets.resources import Compute, Warehouse

OUT = Path(__file__).resolve().parent / "out"


def synthetic_rows(n: int, seed: int) -> list[tuple[str, str, str]]:
    """N (response_id, prompt_id, response) rows from the synthetic source (4-8 responses a prompt)."""
    rows: list[tuple[str, str, str]] = []
    for batch in iter_synthetic(n_prompts=math.ceil(n / 5) + 1, seed=seed):
        rows.extend((r.response_id, r.prompt_id, r.response) for r in batch.responses)
    if len(rows) < n:
        raise RuntimeError(f"synthetic source gave {len(rows)} rows, wanted {n}")
    return rows[:n]


def populate(warehouse: Warehouse, rows: list[tuple[str, str, str]]) -> None:
    with warehouse.connect() as con:
        con.execute(
            "create table raw.responses (response_id varchar primary key, prompt_id varchar not null, "
            "response varchar not null)"
        )
        con.executemany("insert into raw.responses values (?, ?, ?)", rows)


def drop_embeddings(warehouse: Warehouse) -> None:
    with warehouse.connect() as con:
        con.execute("drop table if exists features.response_embeddings")


def stored_embeddings(warehouse: Warehouse) -> np.ndarray:
    with warehouse.connect(read_only=True) as con:
        table = con.sql(
            "select embedding from features.response_embeddings order by response_id"
        ).to_arrow_table()
    col = table.column("embedding").combine_chunks()
    return col.flatten().to_numpy().reshape(len(col), -1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="responses to embed")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128, help="for both sides (Compute.embed_batch_size)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    transformers.utils.logging.disable_progress_bar()

    rows = synthetic_rows(args.n, args.seed)
    # The order embed_new_responses reads them in, so the two outputs line up row for row.
    rows.sort(key=lambda r: r[0])
    texts = [r[2] for r in rows]
    chars = sum(map(len, texts))
    path = resolve_model_path(DEFAULT_EMBEDDER)
    compute = Compute(embed_batch_size=args.batch_size)
    config = EmbeddingConfig()
    device = compute.choice()
    print(
        f"{args.n} responses ({chars / args.n:.0f} chars avg, {len(set(texts))} distinct texts), "
        f"model {path}, device {device.device}/{device.dtype_name}, torch threads {torch.get_num_threads()}"
    )

    # Warm-up, untimed: imports, torch kernels, tokenizer, OS page cache of the weights.
    t0 = time.perf_counter()
    warm = SentenceTransformer(path, device=device.device)
    warm.encode(texts[:256], batch_size=args.batch_size, normalize_embeddings=True, show_progress_bar=False)
    print(f"warm-up (first load + 256 texts): {time.perf_counter() - t0:.2f} s")
    del warm
    gc.collect()

    with tempfile.TemporaryDirectory() as tmp:
        warehouse = Warehouse(path=str(Path(tmp) / "bench.duckdb"))
        populate(warehouse, rows)

        load_s: list[float] = []
        base_s: list[float] = []
        ours_s: list[float] = []
        ours_embed_s: list[float] = []
        base_mem: list[float] = []
        ours_mem: list[float] = []
        base_vectors = ours_vectors = None
        result: dict = {}
        for i in range(args.repeats):
            # Baseline: load (timed apart), then encode.
            gc.collect()
            t0 = time.perf_counter()
            model = SentenceTransformer(path, device=device.device)
            load_s.append(time.perf_counter() - t0)
            with PeakRss() as mem:
                t0 = time.perf_counter()
                base_vectors = model.encode(
                    texts, batch_size=args.batch_size, normalize_embeddings=True, show_progress_bar=False
                )
                base_s.append(time.perf_counter() - t0)
            base_mem.append(mem.delta_mib)
            del model
            gc.collect()

            # Ours: the asset's embedding step on an empty features schema.
            drop_embeddings(warehouse)
            with PeakRss() as mem:
                t0 = time.perf_counter()
                result = embed_new_responses(warehouse, compute, config)
                ours_s.append(time.perf_counter() - t0)
            ours_mem.append(mem.delta_mib)
            ours_embed_s.append(result["embed_seconds"])
            if result["embedded_now"] != args.n or result["rows"] != args.n:
                raise AssertionError(f"embed_new_responses embedded {result['embedded_now']}, want {args.n}")
            print(
                f"repeat {i + 1}: baseline load {load_s[-1]:.2f} s + encode {base_s[-1]:.2f} s | "
                f"ours {ours_s[-1]:.2f} s (embed_texts {ours_embed_s[-1]:.2f} s)"
            )
        ours_vectors = stored_embeddings(warehouse)

    diff = float(np.abs(ours_vectors - base_vectors).max())
    if ours_vectors.shape != base_vectors.shape or diff > 1e-4:
        raise AssertionError(f"outputs differ: shapes {ours_vectors.shape} {base_vectors.shape}, max {diff}")

    med = statistics.median
    load, base, ours, ours_embed = med(load_s), med(base_s), med(ours_s), med(ours_embed_s)
    report = {
        "benchmark": "embeddings",
        "n": args.n,
        "repeats": args.repeats,
        "batch_size": args.batch_size,
        "model": path,
        "device": device.device,
        "dtype": device.dtype_name,
        "torch_threads": torch.get_num_threads(),
        "avg_chars": chars / args.n,
        "dimensions": int(base_vectors.shape[1]),
        "baseline_load_s": load,
        "baseline_encode_s": base,
        "baseline_load_plus_encode_s": load + base,
        "ours_s": ours,
        "ours_embed_texts_s": ours_embed,
        "ours_outside_embed_texts_s": ours - ours_embed,
        "baseline_rows_per_s": args.n / base,
        "ours_rows_per_s": args.n / ours,
        "ratio_vs_encode": ours / base,
        "ratio_vs_load_plus_encode": ours / (load + base),
        "baseline_peak_rss_delta_mib": med(base_mem),
        "ours_peak_rss_delta_mib": med(ours_mem),
        "max_abs_diff": diff,
        "runs": {
            "baseline_load_s": load_s,
            "baseline_encode_s": base_s,
            "ours_s": ours_s,
            "ours_embed_texts_s": ours_embed_s,
            "baseline_rss_mib": base_mem,
            "ours_rss_mib": ours_mem,
        },
        "machine": {
            "cpus": psutil.cpu_count(),
            "loadavg_1_5_15_at_end": os.getloadavg(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }
    print()
    print(f"{'':34}{'seconds':>9}{'rows/s':>10}{'peak RSS +MiB':>15}")
    print(f"{'baseline load (once per call)':34}{load:9.2f}")
    print(f"{'baseline encode':34}{base:9.2f}{args.n / base:10.0f}{med(base_mem):15.0f}")
    print(f"{'baseline load + encode':34}{load + base:9.2f}{args.n / (load + base):10.0f}")
    print(f"{'ours embed_new_responses':34}{ours:9.2f}{args.n / ours:10.0f}{med(ours_mem):15.0f}")
    print(f"{'  of which embed_texts':34}{ours_embed:9.2f}")
    print(f"{'  of which DuckDB read/write/digest':34}{ours - ours_embed:9.2f}")
    print(
        f"ratio ours/baseline: {ours / base:.2f}x vs encode, {ours / (load + base):.2f}x vs load + encode; "
        f"max abs diff of the vectors {diff:.1e}"
    )
    print("load average at the end (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    OUT.mkdir(exist_ok=True)
    (OUT / "embeddings.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {OUT / 'embeddings.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
