"""Cost curve: each per-response stage at 10k, 100k and 1M responses, on the local engine and on Ray.

    python bench/scale.py [--sizes 10000 100000 1000000] [--engines local ray] [--embedder tiny|minilm]
                          [--embed-max N]

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
    from real_assets.defs.selection import read_train_candidates
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
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    OUT.mkdir(exist_ok=True)
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


if __name__ == "__main__":
    sys.exit(main())
