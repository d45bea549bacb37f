"""The paper's embedder beside ours: mean cosine and label-error rate of the pairs that easy, hard and
random select on the synthetic set, with each response embedder.

    python bench/embedders.py [--n-prompts 120] [--seeds 3]

Embedders: the default all-MiniLM-L6-v2 (sentence-transformers, packaged) and
`policy-lm:packaged:smollm2-135m-instruct` (the packaged SmolLM2's mean-pooled last hidden state, the
paper's way: it used phi-1.5 and pythia-2.8b). Each runs the data steps of the graph (ingest, embeddings,
similarity, candidates, selected_pairs for easy/hard/random; no training) in a fresh home through
`real-assets demo`, and reads `selection.selected_pairs`. Label error: the selected pair's label disagrees
with gold quality (the synthetic annotator is Bradley-Terry on the gold gap). Writes bench/out/embedders.json
and prints a markdown table.
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
os.environ.setdefault("HF_HUB_OFFLINE", "1")

EMBEDDERS = {
    "all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2",
    "SmolLM2-135M (policy LM, mean-pooled)": "policy-lm:packaged:smollm2-135m-instruct",
}
STRATEGIES = ["easy", "hard", "random"]
TRAINING = [
    "reference_policy",
    "dpo_checkpoint",
    "eval_scores",
    "strategy_comparison",
    "budget_point",
    "budget_sweep",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-prompts", type=int, default=120)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()

    import duckdb

    from real_assets import cli

    rows = []
    for label, model in EMBEDDERS.items():
        home = Path(tempfile.mkdtemp(prefix="bench_embedders_")) / "home"
        saved = dict(os.environ)
        started = time.perf_counter()
        try:
            argv = ["demo", "--home", str(home), "--n-prompts", str(args.n_prompts)]
            argv += ["--seeds", str(args.seeds), "--strategies", ",".join(STRATEGIES)]
            argv += [f"--skip={asset}" for asset in TRAINING]
            argv += ["--config", f"response_embeddings={json.dumps({'model': model})}"]
            if cli.main(argv) != 0:
                return 1
        finally:
            os.environ.clear()
            os.environ.update(saved)
        seconds = time.perf_counter() - started
        with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
            found = con.execute(
                """
                select strategy, count(*) / count(distinct seed) as pairs, avg(cosine) as mean_cosine,
                       avg(label_error::double) as label_error
                from selection.selected_pairs where strategy in ('easy', 'hard', 'random')
                group by strategy order by list_position(['easy', 'hard', 'random'], strategy)"""
            ).fetchall()
        rows += [
            {
                "embedder": label,
                "strategy": s,
                "pairs": p,
                "mean_cosine": c,
                "label_error": e,
                "seconds": seconds,
            }
            for s, p, c, e in found
        ]
    out_dir = Path(__file__).resolve().parent / "out"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "embedders.json").write_text(json.dumps(rows, indent=2))
    print("| embedder | strategy | pairs | mean cosine | label error |")
    print("| --- | --- | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['embedder']} | {r['strategy']} | {r['pairs']:.0f} | {r['mean_cosine']:.3f} "
            f"| {r['label_error']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
