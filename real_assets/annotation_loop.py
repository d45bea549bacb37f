"""The annotation loop end to end, offline: labelled seed data and a reference policy, prompts, candidates
sampled from the reference, pairs chosen per strategy before any label, tasks to annotators (simulated,
answering through Label Studio's file format or its API), annotations read back, agreement and noise, DPO on
each strategy's labelled pairs, eval. `real-assets demo --loop` runs it; the slow tests run it against a
real Label Studio server."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import dagster as dg

from real_assets.core.annotation.simulated import SimulatedAnnotators, annotate_import_file
from real_assets.demo import materialize
from real_assets.resources import Warehouse
from real_assets.settings import Locations

SEED_PARTITION = "0"


@dataclass
class LoopSettings:
    """What the loop runs: the synthetic seed data (`n_prompts`; its train prompts are the prompts file),
    K candidates per prompt, the strategies, rounds and budget per round, the overlap, the annotators, the
    DPO loss, and tiny model settings that keep it to minutes on a CPU."""

    n_prompts: int = 48
    k: int = 4
    strategies: list[str] = field(default_factory=lambda: ["easy", "hard", "random"])
    rounds: int = 2
    budget: int = 12
    overlap: float = 0.5
    annotators: SimulatedAnnotators = field(default_factory=SimulatedAnnotators)
    route: str = "file"
    """`file` (import file out, JSON export back) or `label_studio` (the API, as a browser would)."""
    loss_type: str = "sigmoid"
    reference: dict = field(
        default_factory=lambda: {"epochs": 3.0, "n_layer": 1, "n_embd": 64, "vocab_size": 600}
    )
    sampling: dict = field(default_factory=lambda: {"max_new_tokens": 24, "temperature": 1.0, "top_p": 0.95})
    dpo: dict = field(default_factory=lambda: {"epochs": 2.0, "batch_size": 4, "learning_rate": 5e-4})
    evaluation: dict = field(default_factory=lambda: {"samples_per_prompt": 1, "max_new_tokens": 16})


class LoopFailed(RuntimeError):
    """A step of the loop failed (its message names the step)."""


@dataclass
class LoopRun:
    """What the loop produced: metadata of the last materialization of each step, and the log of steps."""

    home: Path
    metadata: dict[str, dict] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)


def _meta(result: dg.ExecuteInProcessResult, name: str) -> dict:
    mats = [m for m in result.get_asset_materialization_events() if m.asset_key.to_user_string() == name]
    return {k: getattr(v, "value", v) for k, v in mats[-1].materialization.metadata.items()} if mats else {}


def step(
    run: LoopRun, instance, name: str, ops: dict | None = None, partition: str | None = None, resources=None
) -> dict:
    """Materialize one asset (or partition) with its config; LoopFailed with the step's error."""
    config = {name: ops} if ops is not None else None
    result = materialize(
        [name], instance, partition, config, resources=resources, raise_on_error=False, home=run.home
    )
    label = f"{name}[{partition}]" if partition else name
    if not result.success:
        from real_assets.demo import failure_summary

        raise LoopFailed(f"{label} failed: {failure_summary(result, run.home)}")
    run.steps.append(label)
    run.metadata[label] = _meta(result, name)
    return run.metadata[label]


def write_prompts_file(warehouse: Warehouse, path: Path) -> int:
    """The train prompts of the seed data as a prompts-only file (prompt, id)."""
    with warehouse.connect(read_only=True) as con:
        rows = con.execute(
            "select prompt_id, prompt from raw.prompts where split = 'train' order by prompt_id"
        ).fetchall()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": pid, "prompt": prompt}) + "\n" for pid, prompt in rows))
    return len(rows)


def double_labelled(warehouse: Warehouse) -> set[str]:
    """The request ids to be labelled twice (the file route: Label Studio decides on the server)."""
    with warehouse.connect(read_only=True) as con:
        rows = con.execute(
            "select request_id from selection.annotation_requests where double_label"
        ).fetchall()
    return {r[0] for r in rows}


def annotate_file_round(run: LoopRun, instance, settings: LoopSettings, warehouse: Warehouse) -> None:
    """The file route: the tasks file out, the simulated annotators' Label Studio JSON export back."""
    tasks_meta = step(run, instance, "annotation_tasks", {"destination": "file", "overlap": settings.overlap})
    tasks_file = tasks_meta.get("tasks_file")
    if not tasks_file:
        return
    tasks = json.loads(Path(str(tasks_file)).read_text())
    twice = double_labelled(warehouse)
    export = annotate_import_file(
        tasks, settings.annotators, lambda t: 2 if t["data"]["request_id"] in twice else 1
    )
    out = run.home / "annotation_exports" / (Path(str(tasks_file)).stem + "__export.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(export))
    step(run, instance, "raw_annotations", {"origin": "file", "export_path": str(out)})


def run_loop(
    home: Path,
    settings: LoopSettings,
    annotate_round: Callable[[LoopRun, dg.DagsterInstance], None] | None = None,
    resources: dict | None = None,
    stream: TextIO | None = None,
) -> LoopRun:
    """Run the loop into a prepared home (`homes.prepare_home`); `annotate_round` replaces the file route's
    annotation of each round (e.g. annotators answering in Label Studio, then the sensor)."""
    out = stream or sys.stdout
    locations = Locations.resolve(home)
    instance = dg.DagsterInstance.from_config(str(locations.dagster_home))
    warehouse = Warehouse(path=locations.warehouse, data_path=locations.warehouse_data)
    run = LoopRun(locations.home)

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    say("seed data and reference policy")
    step(run, instance, "raw_responses", {"source": "synthetic", "n_prompts": settings.n_prompts})
    step(run, instance, "reference_policy", settings.reference)
    prompts = run.home / "loop" / "prompts.jsonl"
    say(f"prompts file: {write_prompts_file(warehouse, prompts)} prompts")
    generated = step(
        run,
        instance,
        "generated_responses",
        {"prompts_path": str(prompts), "k": settings.k, **settings.sampling},
    )
    say(f"generated {generated['samples_drawn']} candidates from reference {generated['policy_version']}")
    step(run, instance, "raw_responses", {"source": "generated", "path": str(generated["candidates_file"])})
    step(run, instance, "response_embeddings")
    step(run, instance, "response_similarity")
    for round_ in range(settings.rounds):
        requests = step(
            run,
            instance,
            "annotation_requests",
            {
                "round": round_,
                "strategies": settings.strategies,
                "budget": settings.budget,
                "overlap": settings.overlap,
            },
            resources=resources,
        )
        say(
            f"round {round_}: {requests['rows']} requests so far, "
            f"{requests['double_labelled']} of this round labelled twice"
        )
        if annotate_round is None:
            annotate_file_round(run, instance, settings, warehouse)
        else:
            annotate_round(run, instance)
    annotations = run.metadata.get("raw_annotations", {})
    step(run, instance, "raw_responses", {"source": "table", "path": str(annotations["labels_file"])})
    step(run, instance, "response_embeddings")
    step(run, instance, "response_similarity")
    step(run, instance, "pair_candidates")
    step(run, instance, "annotation_quality")
    for strategy in settings.strategies:
        partition = f"{SEED_PARTITION}|{strategy}"
        step(run, instance, "selected_pairs", {"from_requests": True}, partition)
        step(run, instance, "dpo_checkpoint", {**settings.dpo, "loss_type": settings.loss_type}, partition)
        step(run, instance, "eval_scores", settings.evaluation, partition)
        say(f"{strategy}: trained and evaluated")
    step(run, instance, "strategy_comparison")
    return run


def loop_report(warehouse: Warehouse, strategies: list[str]) -> tuple[list[dict], list[dict]]:
    """(annotation quality per strategy over every round, eval per strategy of seed 0)."""
    with warehouse.connect(read_only=True) as con:
        quality = con.execute(
            "select strategy, tasks, annotations, double_labelled, agreement, estimated_flip_rate, "
            "true_error_rate, gold_ties from eval.annotation_quality where round = -1 order by strategy"
        ).df()
        evals = con.execute(
            "select e.strategy, s.pairs, e.preference_accuracy, e.reward_margin, e.win_rate "
            "from eval.eval_scores as e "
            "left join (select strategy, seed, count(*) as pairs from selection.selected_pairs "
            "group by all) as s "
            "using (strategy, seed) where e.seed = 0 order by e.strategy"
        ).df()
    keep = set(strategies)
    return (
        [r for r in quality.to_dict("records") if r["strategy"] in keep],
        [r for r in evals.to_dict("records") if r["strategy"] in keep],
    )


DEMO_REFERENCE = {"epochs": 40.0}
"""The demo's reference: the default small GPT-2 trained long enough that its samples are advice-like text
the gold function can tell apart. Tried on 48 prompts: at 8 epochs and temperature 1.0 the samples were
noise (147 of 148 with gold 0, so every annotator answered at chance); at 40 epochs and 0.7 they are
sentences of the topics' advice, some on topic, some off, gold from -2 to 5."""
DEMO_SAMPLING = {"max_new_tokens": 32, "temperature": 0.7, "top_p": 0.9}


def demo_loop(args, locations: Locations) -> int:
    """`real-assets demo --loop`: the loop on the synthetic seed data with simulated annotators, offline;
    prints the agreement and flip rate per strategy and the eval of each strategy's DPO checkpoint."""
    import os
    import time

    import pandas as pd

    from real_assets.core.report import markdown_table

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = LoopSettings(
        n_prompts=args.n_prompts or LoopSettings.n_prompts,
        strategies=args.strategies or LoopSettings().strategies,
        annotators=SimulatedAnnotators(seed=args.seed),
        reference=DEMO_REFERENCE | ({"epochs": args.sft_epochs} if args.sft_epochs else {}),
        sampling=dict(DEMO_SAMPLING),
    )
    if args.dpo_epochs:
        settings.dpo = settings.dpo | {"epochs": args.dpo_epochs}
    for entry in args.config or []:  # --config dpo_checkpoint='{"loss_type": "robust"}' and the like
        name, _, text = entry.partition("=")
        target = {"dpo_checkpoint": settings.dpo, "eval_scores": settings.evaluation}.get(name)
        if target is None:
            print(f"--config with --loop takes dpo_checkpoint or eval_scores, not {name!r}", file=sys.stderr)
            return 2
        target.update(json.loads(text))
    settings.loss_type = settings.dpo.pop("loss_type", settings.loss_type)
    root = locations.home
    print(f"real-assets demo --loop: home {root}", flush=True)
    started = time.perf_counter()
    try:
        run_loop(root, settings)
    except LoopFailed as e:
        print(str(e), file=sys.stderr)
        return 1
    warehouse = Warehouse(path=locations.warehouse, data_path=locations.warehouse_data)
    quality, evals = loop_report(warehouse, settings.strategies)
    print(f"\nloop done in {time.perf_counter() - started:.1f} s\n")
    print(
        "annotation quality (every round; flip rate estimated from the agreement of double-labelled tasks; "
        "gold_ties: annotations of pairs whose answers tie on gold, labels that can only be coin flips):\n"
    )
    print(markdown_table(pd.DataFrame(quality).round(3)))
    print("\nDPO on each strategy's labelled pairs (seed 0), evaluated on the held-out synthetic pairs:\n")
    print(markdown_table(pd.DataFrame(evals).round(3)))
    print(f"\naudit: real-assets audit --home {root}")
    return 0
