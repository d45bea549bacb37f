"""Cost curve: each per-response stage at 10k, 100k and 1M responses, on the local engine and on Ray; and
(`--refresh`) the cost of a refresh after 2% new rows against a full build, with each stage's peak RSS.

    python bench/scale.py [--sizes 10000 100000 1000000] [--engines local ray] [--embedder tiny|minilm]
                          [--embed-max N]
    python bench/scale.py --refresh [--sizes 100000 1000000] [--seeds 5] [--memory-limit 1GB]

`--refresh`, per size in a fresh process on a fresh warehouse file (DuckDB `memory_limit` as given), as
the assets run them, every stage timed and its peak RSS (this process, above the RSS before the stage)
sampled every 20 ms:

* full build: ingest (synthetic source), embed (every response: random unit vectors of MiniLM's width,
  384, through `embed_new_responses` with a `Compute` whose encoder is a seeded random generator: the
  model is not the point here, the reading, writing and digests are), response_similarity and
  pair_candidates (`run_sql_model`), selected_pairs for every strategy x seed partition but `centroid`
  (`select_in_warehouse`; margin and ches score their pairs with a seeded random stand-in of the reference
  model through `score_pending_pairs`);
* refresh: a `table` CSV of 2% new rows (half new responses to existing prompts, half new prompts with
  three responses each; written untimed), then the same stages again, each incremental.

`centroid` runs a k-means per prompt in Python (tens of ms a prompt): at 1M responses its full build takes
hours, so it is measured on its own with `--centroid` (one seed) at the sizes given.

Each size runs in a fresh process (so memory figures do not carry over) on a fresh warehouse file:

* ingest: the synthetic source (short texts, 4-8 responses a prompt, ~87 characters) into raw.*, through
  `defs.ingest.ingest` as the `raw_responses` asset runs it;
* embed (local | ray): `defs.features.embed_new_responses` on every response, with `Compute()` (in this
  process, torch on the machine's cores) or `Compute(engine="ray")` (a Ray Data actor pool on a local Ray
  instance with the machine's CPUs, started before the timer); the table is dropped between the two;
* above `--embed-max` responses the embed stages are skipped and random vectors of the embedder's width
  (written untimed by DuckDB) feed the stages after;
* response_similarity, pair_candidates: the SQL models (`dbt_like_sql/`) as their assets run them
  (`create or replace table ... as <sql>`), without the follow-up content digest;
* select (easy): `read_train_candidates` + `select_pairs(..., "easy")`, as `selected_pairs` does.

The embedder: `tiny` (default) is a 1-layer BERT built from a config (hidden 64, 2 heads, intermediate
128, seeded random weights) with all-MiniLM-L6-v2's tokenizer, as a sentence-transformers folder (mean
pooling, normalized): the work per text has the shape of MiniLM's (tokenizer, attention, pooling) at a
fraction of its cost. `minilm` is the packaged all-MiniLM-L6-v2 itself (use it at 10k/100k).

Seconds are wall time; memory is the peak RSS of this process and its children (the Ray workers of a
local instance included) above the RSS before the stage, sampled every 20 ms. Writes bench/out/scale.json
and prints a markdown table with seconds per 1k responses and the slope between sizes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peak_rss import PeakRss

OUT = Path(__file__).resolve().parent / "out"
TINY = {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 128}


def tiny_embedder(folder: Path) -> str:
    """A sentence-transformers folder: a seeded random BERT of `TINY` size with MiniLM's tokenizer."""
    if (folder / "modules.json").exists():
        return str(folder)
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    from real_assets.core.embedding import DEFAULT_EMBEDDER, resolve_model_path

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(DEFAULT_EMBEDDER))
    config = BertConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=256, **TINY)
    base = folder / "base"
    BertModel(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    word = models.Transformer(str(base), max_seq_length=128)
    pooling = models.Pooling(word.get_word_embedding_dimension(), "mean")
    SentenceTransformer(modules=[word, pooling, models.Normalize()]).save(str(folder))
    return str(folder)


def run_size(n: int, engines: list[str], model: str, embed_max: int) -> list[dict]:
    """Every stage at `n` responses in this process; one row per stage."""
    import ray

    from real_assets.core.embedding import DEFAULT_EMBEDDER
    from real_assets.core.selection import SelectionConfig, select_pairs
    from real_assets.core.sources import SourceSpec
    from real_assets.core.sql_models import load_sql_models
    from real_assets.defs.features import EmbeddingConfig, embed_new_responses
    from real_assets.defs.ingest import ingest
    from real_assets.defs.train_candidates import read_train_candidates
    from real_assets.resources import Compute, Warehouse

    rows: list[dict] = []

    def stage(name: str, fn, engine: str = "local"):
        with PeakRss(interval_s=0.02, children=True) as mem:
            started = time.perf_counter()
            out = fn()
            seconds = time.perf_counter() - started
        rows.append(
            {"size": n, "stage": name, "engine": engine, "seconds": seconds, "peak_mib": mem.delta_mib}
        )
        print(f"{n:>9} {name:<20} {engine:<6} {seconds:8.2f} s {mem.delta_mib:8.0f} MiB", flush=True)
        return out

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["REAL_ASSETS_HOME"] = tmp
        warehouse = Warehouse(path=str(Path(tmp) / "w.duckdb"))
        report = stage(
            "ingest", lambda: ingest(warehouse, SourceSpec(source="synthetic", n_prompts=math.ceil(n / 6)))
        )
        responses = report["responses"]
        for row in rows:
            row["responses"] = responses
        config = EmbeddingConfig(model=model, progress_every_s=3600)
        if n > embed_max:  # not embedded at this size: random vectors of the embedder's width, untimed
            engines = []
            with warehouse.connect() as con:
                con.execute(
                    "create table features.response_embeddings as select response_id, prompt_id, "
                    "'random' as model_id, list_transform(range(?), x -> random()::float) as embedding "
                    "from raw.responses",
                    [TINY["hidden_size"] if model != DEFAULT_EMBEDDER else 384],
                )
        for engine in engines:
            with warehouse.connect() as con:
                con.execute("drop table if exists features.response_embeddings")
            if engine == "ray":
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
            compute = Compute(device="cpu", engine=engine)
            stage("embed", lambda compute=compute: embed_new_responses(warehouse, compute, config), engine)
        sql = {m.table.split(".")[1]: m.sql for m in load_sql_models()}
        for table, schema in (("response_similarity", "features"), ("pair_candidates", "selection")):

            def build(table=table, schema=schema) -> None:
                with warehouse.connect() as con:
                    con.execute(f"create or replace table {schema}.{table} as {sql[table]}")

            stage(table, build)

        def select() -> None:
            candidates, _ = read_train_candidates(warehouse, with_embeddings=False)
            select_pairs(candidates, "easy", SelectionConfig(), 0)

        stage("select (easy)", select)
        if ray.is_initialized():
            ray.shutdown()
    for row in rows:
        row["responses"] = responses
    return rows


def random_vectors_compute():
    """`Compute` whose embedder returns seeded random unit vectors (384 wide), chunk by chunk."""
    import numpy as np

    from real_assets.resources import Compute

    class RandomVectors(Compute):
        def embed_chunks(self, chunks, model_id, trust_remote_code=False, progress=None):
            def vectors():
                for i, chunk in enumerate(chunks):
                    rng = np.random.default_rng(i)
                    v = rng.standard_normal((len(chunk), 384), dtype=np.float32)
                    yield v / np.linalg.norm(v, axis=1, keepdims=True)

            return vectors(), "random"

    return RandomVectors(device="cpu")


def random_reference_scores(_warehouse, pairs, _reference_version, _compute, _report):
    """Stand-in for the reference model's scores: seeded by the pair ids, so reruns agree."""
    import numpy as np
    import pandas as pd

    seeds = pd.util.hash_pandas_object(pairs[["prompt_id", "chosen_id", "rejected_id"]], index=False)
    rng = np.random.default_rng(int(seeds.sum()) % 2**32)
    return pd.DataFrame({"ref_margin": rng.normal(size=len(pairs)), "ches": rng.normal(size=len(pairs))})


def more_rows_csv(warehouse, path: Path, fraction: float = 0.02) -> int:
    """A `table` CSV of `fraction` new rows: half new responses to existing prompts, half new prompts
    with three responses each. Returns the rows written."""
    import csv

    with warehouse.connect(read_only=True) as con:
        responses = con.execute("select count(*) from raw.responses").fetchone()[0]
        n = round(responses * fraction)
        prompts = con.execute(
            "select prompt from raw.prompts using sample 100% (reservoir, 7) limit ?", [n // 2]
        )
        prompts = [p for (p,) in prompts.fetchall()]
    rows = [{"prompt": p, "response": f"A late answer to: {p[:40]}", "score": 3.5} for p in prompts]
    rows += [
        {"prompt": f"A question that came later, number {i}?", "response": f"Answer {k} to {i}.", "score": k}
        for i in range((n - len(rows)) // 3)
        for k in range(3)
    ]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["prompt", "response", "score"])
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def run_refresh(n: int, seeds: int, memory_limit: str, centroid: bool) -> list[dict]:
    """Full build and refresh after 2% new rows at `n` responses; one row per stage and phase."""
    import real_assets.defs.pair_scores as pair_scores
    import real_assets.defs.selection as selection
    import real_assets.defs.train_candidates as train_candidates
    from real_assets.core.selection import STRATEGIES, SelectionConfig
    from real_assets.core.sources import SourceSpec
    from real_assets.core.sql_models import load_sql_models, run_sql_model
    from real_assets.defs.features import EmbeddingConfig, embed_new_responses
    from real_assets.defs.ingest import ingest
    from real_assets.resources import Warehouse

    pair_scores._reference_scores = random_reference_scores
    models = {m.name: m for m in load_sql_models()}
    rows: list[dict] = []
    strategies = ["centroid"] if centroid else [s for s in STRATEGIES if s != "centroid"]
    config = SelectionConfig()

    def stage(phase: str, name: str, fn):
        with PeakRss(interval_s=0.02) as mem:
            started = time.perf_counter()
            out = fn()
            seconds = time.perf_counter() - started
        rows.append({"size": n, "phase": phase, "stage": name, "seconds": seconds, "peak_mib": mem.delta_mib})
        print(f"{n:>9} {phase:<8} {name:<22} {seconds:8.2f} s {mem.delta_mib:8.0f} MiB", flush=True)
        return out

    def select_all(phase: str) -> None:
        def run() -> None:
            recomputed = []
            for strategy in strategies:
                for seed in range(seeds):
                    reference = "bench-reference" if strategy in ("margin", "ches") else None
                    if reference:
                        selection.score_pending_pairs(warehouse, reference, None, print)
                    picks = prompts = None
                    if strategy == "centroid":
                        mode, prompts = selection.plan_selection(warehouse, strategy, seed, config, "bench")
                        picks = train_candidates.centroid_picks(
                            warehouse, config, seed, mode, prompts, lambda _: None
                        )
                    _, summary = selection.select_in_warehouse(
                        warehouse, strategy, seed, config, "bench", picks, prompts, reference
                    )
                    recomputed.append(summary["prompts_recomputed"])
            print(
                f"{'':>9} {phase:<8} selected_pairs: {len(recomputed)} partitions, prompts recomputed "
                f"{min(recomputed)}-{max(recomputed)}",
                flush=True,
            )

        stage(phase, "selected_pairs (all)", run)

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["REAL_ASSETS_HOME"] = tmp
        warehouse = Warehouse(path=str(Path(tmp) / "w.duckdb"), memory_limit=memory_limit)
        compute = random_vectors_compute()
        compute.choice()  # imports torch (seconds, once per process): not a cost of either phase's data
        embed = EmbeddingConfig(model="bench/random-unit-384", progress_every_s=3600)
        for phase in ("full", "refresh"):
            if phase == "full":
                spec = SourceSpec(source="synthetic", n_prompts=math.ceil(n / 6))
            else:
                csv_path = Path(tmp) / "more.csv"
                print(f"{n:>9} refresh  {more_rows_csv(warehouse, csv_path)} new rows", flush=True)
                spec = SourceSpec(source="table", path=str(csv_path))
            report = stage(phase, "ingest", lambda spec=spec: ingest(warehouse, spec))
            stage(phase, "embed", lambda: embed_new_responses(warehouse, compute, embed))
            for name in ("response_similarity", "pair_candidates"):

                def build(name=name):
                    with warehouse.connect() as con:
                        return run_sql_model(con, models[name], "bench")

                run = stage(phase, name, build)
                print(f"{'':>9} {phase:<8} {name}: {run.mode}, {run.recomputed_keys} prompts", flush=True)
            select_all(phase)
            for row in rows:
                row.setdefault("responses", report["responses"])
    return rows


def refresh_table(rows: list[dict]) -> str:
    """Markdown: seconds and peak MiB per stage, full build and refresh, per size; the refresh/full ratio."""
    sizes = sorted({r["size"] for r in rows})
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    find = {(r["size"], r["phase"], r["stage"]): r for r in rows}
    head = ["stage", *[f"{s:,}: full s / refresh s / ratio / full MiB / refresh MiB" for s in sizes]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in [*stages, "total"]:
        cells = []
        for size in sizes:
            if name == "total":
                full = sum(r["seconds"] for r in rows if r["size"] == size and r["phase"] == "full")
                ref = sum(r["seconds"] for r in rows if r["size"] == size and r["phase"] == "refresh")
                cells.append(f"{full:.1f} / {ref:.1f} / {ref / full:.3f} / - / -")
                continue
            f, r = find.get((size, "full", name)), find.get((size, "refresh", name))
            cells.append(
                f"{f['seconds']:.2f} / {r['seconds']:.2f} / {r['seconds'] / f['seconds']:.3f} / "
                f"{f['peak_mib']:.0f} / {r['peak_mib']:.0f}"
                if f and r
                else "not run"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    """Markdown: seconds, peak MiB and seconds per 1k responses per stage and size, and the slope."""
    keys = list(dict.fromkeys((r["stage"], r["engine"]) for r in rows))
    sizes = sorted({r["size"] for r in rows})
    head = ["stage", "engine", *[f"{s:,}: s / MiB / s per 1k" for s in sizes], "slope s per 1k (last two)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for stage, engine in keys:
        found = {r["size"]: r for r in rows if r["stage"] == stage and r["engine"] == engine}
        cells = []
        for size in sizes:
            r = found.get(size)
            per_1k = r["seconds"] / (r["responses"] / 1000) if r else None
            cells.append(f"{r['seconds']:.2f} / {r['peak_mib']:.0f} / {per_1k:.4f}" if r else "not run")
        measured = [found[s] for s in sizes if s in found]
        slope = "-"
        if len(measured) >= 2:
            a, b = measured[-2], measured[-1]
            slope = f"{(b['seconds'] - a['seconds']) / ((b['responses'] - a['responses']) / 1000):.4f}"
        lines.append(f"| {stage} | {engine} | " + " | ".join(cells) + f" | {slope} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--engines", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    parser.add_argument("--embedder", default="tiny", choices=["tiny", "minilm"])
    parser.add_argument(
        "--embed-max",
        type=int,
        default=10**9,
        help="larger sizes skip the embed stages (random vectors feed the SQL stages instead)",
    )
    parser.add_argument("--refresh", action="store_true", help="full build vs refresh after 2%% new rows")
    parser.add_argument("--seeds", type=int, default=5, help="--refresh: seeds per strategy")
    parser.add_argument(
        "--memory-limit", default="1GB", help="--refresh: the warehouse's DuckDB memory_limit"
    )
    parser.add_argument("--centroid", action="store_true", help="--refresh: only the centroid partitions")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    OUT.mkdir(exist_ok=True)
    if args.refresh:
        return refresh_main(args)
    if args.embedder == "tiny":
        model = tiny_embedder(OUT / "tiny-embedder")
    else:
        from real_assets.core.embedding import DEFAULT_EMBEDDER

        model = DEFAULT_EMBEDDER
    if args.one:
        print(json.dumps(run_size(args.one, args.engines, model, args.embed_max)))
        return 0
    rows: list[dict] = []
    for size in args.sizes:
        command = [
            sys.executable,
            __file__,
            "--one",
            str(size),
            "--embedder",
            args.embedder,
            "--engines",
            *args.engines,
            "--embed-max",
            str(args.embed_max),
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        sys.stderr.write(done.stderr[-2000:] if done.returncode else "")
        for line in done.stdout.splitlines():
            if line.startswith("["):
                rows += json.loads(line)
            else:
                print(line, flush=True)
        if done.returncode:
            print(f"size {size} failed (exit {done.returncode})", flush=True)
            break
        (OUT / "scale.json").write_text(
            json.dumps(
                {"embedder": args.embedder, "tiny": TINY, "cpus": os.cpu_count(), "rows": rows}, indent=1
            )
        )
    print(table(rows))
    return 0


def refresh_main(args) -> int:
    if args.one:
        print(json.dumps(run_refresh(args.one, args.seeds, args.memory_limit, args.centroid)))
        return 0
    rows: list[dict] = []
    name = "refresh_centroid.json" if args.centroid else "refresh.json"
    for size in args.sizes:
        command = [sys.executable, __file__, "--refresh", "--one", str(size), "--seeds", str(args.seeds)]
        command += ["--memory-limit", args.memory_limit, *(["--centroid"] if args.centroid else [])]
        done = subprocess.run(command, capture_output=True, text=True)
        sys.stderr.write(done.stderr[-3000:] if done.returncode else "")
        for line in done.stdout.splitlines():
            if line.startswith("["):
                rows += json.loads(line)
            else:
                print(line, flush=True)
        if done.returncode:
            print(f"size {size} failed (exit {done.returncode})", flush=True)
            break
        (OUT / name).write_text(
            json.dumps(
                {
                    "seeds": args.seeds,
                    "memory_limit": args.memory_limit,
                    "cpus": os.cpu_count(),
                    "rows": rows,
                },
                indent=1,
            )
        )
    print(refresh_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
