"""The largest allowed prompt: time and peak memory of one prompt through ingest -> embeddings -> similarity
-> pair candidates, at the responses-per-prompt cap and far above it.

    python bench/bench_prompt_cap.py [--over 4000] [--cap 128] [--raised-cap 512]

Cases, each on a fresh warehouse (`table` JSONL: one prompt, N distinct responses, distinct scores):
- `at cap`: N = cap responses (the most a prompt may keep);
- `over cap`: N = --over responses with the same cap: the ingest keeps the first `cap` in file order and
  reports the rest as `responses_over_cap`, so every later step sees the `at cap` size;
- `raised cap` (skipped with --raised-cap 0): N = --over with cap = --raised-cap, to show how pairs grow
  when the cap is raised (n*(n-1)/2 similarity rows).
After an untimed warm-up (torch import, first model load), steps are the code the assets run:
`defs.ingest.ingest`, `defs.features.embed_new_responses` (the packaged all-MiniLM-L6-v2 on CPU, model load
included), and the two SQL models written with `create or replace table ... as <sql>`. Memory: peak RSS
above the start of each step (psutil, every 5 ms), and the process's peak RSS (model and torch included).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import transformers
from peak_rss import PeakRss

from real_assets.core.sources import DEFAULT_MAX_RESPONSES_PER_PROMPT, SourceSpec
from real_assets.core.sql_models import load_sql_models
from real_assets.defs.features import EmbeddingConfig, embed_new_responses
from real_assets.defs.ingest import ingest
from real_assets.resources import Compute, Warehouse

SQL_STEPS = ("features.response_similarity", "selection.pair_candidates")


def write_prompt(path: Path, n: int) -> Path:
    """One prompt with n distinct responses (varied lengths) and distinct scores, as `table` JSONL."""
    words = ["soil", "water", "light", "basil", "leaf", "stem", "root", "pot", "sun", "shade", "prune"]
    with open(path, "w") as f:
        for i in range(n):
            text = " ".join(words[(i * 7 + k) % len(words)] for k in range(8 + i % 24))
            row = {"prompt": "How do I keep basil alive on a windowsill?", "response": f"{text} ({i})"}
            f.write(json.dumps(row | {"score": float(i % 997) + i / (n + 1)}) + "\n")
    return path


def run_case(name: str, n: int, cap: int, tmp: Path) -> dict:
    warehouse = Warehouse(path=str(tmp / f"{name.replace(' ', '_')}.duckdb"), memory_limit="256MB")
    source = write_prompt(tmp / f"{name.replace(' ', '_')}.jsonl", n)
    models = {m.table: m.sql for m in load_sql_models()}
    steps: dict[str, dict] = {}

    def step(label: str, fn) -> object:
        with PeakRss() as peak:
            t0 = time.perf_counter()
            out = fn()
            seconds = time.perf_counter() - t0
        steps[label] = {
            "seconds": round(seconds, 3),
            "peak_rss_mib": round(peak.delta_mib, 1),
            "process_peak_rss_mib": round(peak.peak / 2**20, 1),
        }
        return out

    def sql_step(table: str) -> int:
        with warehouse.connect() as con:
            con.execute(f"create or replace table {table} as {models[table]}")
            return con.execute(f"select count(*) from {table}").fetchone()[0]

    spec = SourceSpec(source="table", path=str(source), max_responses_per_prompt=cap)
    ingested = step("ingest", lambda: ingest(warehouse, spec))
    step("embeddings", lambda: embed_new_responses(warehouse, Compute(device="cpu"), EmbeddingConfig()))
    similarity = step("similarity", lambda: sql_step(SQL_STEPS[0]))
    candidates = step("pair_candidates", lambda: sql_step(SQL_STEPS[1]))
    kept = ingested["responses"]
    assert kept == min(n, cap), ingested
    assert similarity == kept * (kept - 1) // 2, (similarity, kept)
    return {
        "case": name,
        "responses_in_file": n,
        "cap": cap,
        "responses_kept": kept,
        "responses_over_cap": ingested["responses_over_cap"],
        "similarity_rows": similarity,
        "pair_candidates": candidates,
        "seconds_total": round(sum(s["seconds"] for s in steps.values()), 2),
        "peak_rss_mib_max": max(s["peak_rss_mib"] for s in steps.values()),
        "process_peak_rss_mib": max(s["process_peak_rss_mib"] for s in steps.values()),
        "steps": steps,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cap", type=int, default=DEFAULT_MAX_RESPONSES_PER_PROMPT)
    ap.add_argument("--over", type=int, default=4000, help="responses of the over-cap prompt")
    ap.add_argument("--raised-cap", type=int, default=512, help="0 skips the raised-cap case")
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "out" / "bench_prompt_cap.json")
    args = ap.parse_args(argv)
    transformers.utils.logging.disable_progress_bar()
    print(f"load average {os.getloadavg()[0]:.1f} at start", flush=True)
    cases = [("at cap", args.cap, args.cap), ("over cap", args.over, args.cap)]
    if args.raised_cap:
        cases.append(("raised cap", args.over, args.raised_cap))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        # Untimed warm-up: torch import and the model load's first-time allocations stay out of the cases.
        run_case("warm up", 2, args.cap, Path(tmp))
        for name, n, cap in cases:
            results.append(run_case(name, n, cap, Path(tmp)))
            print(json.dumps(results[-1]), flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at end\n")
    head = ("case", "in file", "cap", "kept", "similarity rows", "candidates", "seconds", "peak RSS +MiB")
    print(" | ".join(head))
    for r in results:
        cells = (r["case"], r["responses_in_file"], r["cap"], r["responses_kept"], r["similarity_rows"])
        tail = (r["pair_candidates"], r["seconds_total"], r["peak_rss_mib_max"])
        print(" | ".join(str(c) for c in (*cells, *tail)))
        steps = (f"{k} {v['seconds']} s / +{v['peak_rss_mib']} MiB" for k, v in r["steps"].items())
        print("    " + ", ".join(steps) + f"; process peak RSS {r['process_peak_rss_mib']} MiB")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
