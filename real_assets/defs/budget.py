"""The annotation-budget sweep: one partition per budget point (strategy at a keep fraction, and seed), each
its own retryable step with its own MLflow run, and a cheap summary over them.

At each point every candidate pair is ranked globally by the strategy and the fraction is kept; DPO (with
the settings the `all` checkpoints were trained with) and eval run on it. Fraction 1.0 is the `all` strategy
itself: its eval rows are the reference band, not retrained.
"""

import dataclasses

import dagster as dg
import numpy as np
import pandas as pd

from real_assets.core.evaluation import EvalConfig, train_and_score
from real_assets.core.report import budget_plot, markdown_table, smallest_budget_within
from real_assets.core.selection import SelectionConfig, select_pairs
from real_assets.core.stats import paired_bootstrap
from real_assets.core.train_config import DpoConfig
from real_assets.defs.common import Step, step_asset
from real_assets.defs.conditions import EAGER, on_new_training_data
from real_assets.defs.evaluation import eval_scores, held_out, png_markdown
from real_assets.defs.partitions import SEEDS
from real_assets.defs.train_candidates import read_train_candidates
from real_assets.defs.training import recorded_checkpoint, reference_policy
from real_assets.defs.versions import WarehouseTable, content_version, context_partition, table_metadata
from real_assets.resources import Compute, Home, Warehouse, replace_rows, table_exists

SWEEP_STRATEGIES = ("easy", "random")
KEEP_FRACTIONS = (0.1, 0.25, 0.5)
"""Budgets below the full one; 1.0 is `all`, evaluated by eval_scores."""
budget_partitions = dg.MultiPartitionsDefinition(
    {
        "point": dg.StaticPartitionsDefinition(
            [f"{strategy}@{fraction}" for strategy in SWEEP_STRATEGIES for fraction in KEEP_FRACTIONS]
        ),
        "seed": dg.StaticPartitionsDefinition(list(SEEDS)),
    }
)
"""Keys read `<strategy>@<keep fraction>|<seed>`, e.g. `easy@0.1|0`."""

POINTS = WarehouseTable(
    "eval.budget_points",
    ("point", "seed"),
    columns=(
        ("point", "varchar not null"),
        ("seed", "varchar not null"),
        ("strategy", "varchar"),
        ("keep_fraction", "double"),
        ("pairs", "bigint"),
        ("label_error_rate", "double"),
        ("preference_accuracy", "double"),
        ("reference_version", "varchar"),
    ),
)
POINT_OUTCOMES = WarehouseTable(
    "eval.budget_point_outcomes",
    ("point", "seed", "prompt_id", "item"),
    columns=(
        ("point", "varchar not null"),
        ("seed", "varchar not null"),
        ("prompt_id", "varchar"),
        ("item", "bigint"),
        ("value", "double"),
    ),
)
SWEEP = WarehouseTable(
    "eval.budget_sweep",
    ("strategy", "keep_fraction", "seed"),
    columns=(
        ("strategy", "varchar"),
        ("keep_fraction", "double"),
        ("seed", "integer"),
        ("pairs", "bigint"),
        ("label_error_rate", "double"),
        ("preference_accuracy", "double"),
        ("source", "varchar"),
    ),
)


def _all_reference(warehouse: Warehouse) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The `all` strategy's eval rows and per-item preference outcomes (empty before any eval ran)."""
    with warehouse.connect(read_only=True) as con:
        if not (table_exists(con, "eval.eval_scores") and table_exists(con, "eval.eval_outcomes")):
            rows = ["seed", "checkpoint_version", "preference_accuracy", "label_error_rate"]
            return pd.DataFrame(columns=rows), pd.DataFrame(columns=["seed", "prompt_id", "value"])
        rows = con.execute(
            """
            select e.seed, e.checkpoint_version, e.preference_accuracy, s.label_error_rate
            from eval.eval_scores as e left join (
                select seed, avg(label_error::double) as label_error_rate from selection.selected_pairs
                where strategy = 'all' group by seed
            ) as s using (seed)
            where e.strategy = 'all' order by e.seed"""
        ).df()
        outcomes = con.execute(
            "select seed, prompt_id, value from eval.eval_outcomes where strategy = 'all' "
            "and metric = 'preference'"
        ).df()
    return rows, outcomes


def _sweep_training(step: Step, warehouse: Warehouse) -> tuple[DpoConfig, str]:
    """The DPO settings and reference version of the sweep: those of the `all` checkpoints (so every budget
    trains as the full budget did), else the defaults on the current reference."""
    all_rows, _ = _all_reference(warehouse)
    if all_rows.empty:
        step.log.warning("no eval_scores[<seed>|all]: the sweep trains with the default DPO settings")
        return DpoConfig(), step.upstream.get("reference_policy")
    _, training = recorded_checkpoint(
        warehouse, "dpo_checkpoint", all_rows["checkpoint_version"].iloc[0], f"{all_rows['seed'].iloc[0]}|all"
    )
    dpo = DpoConfig(**{f.name: training[f.name] for f in dataclasses.fields(DpoConfig)})
    return dpo, training["reference_version"]


@step_asset(
    kinds={"pytorch", "duckdb"},
    deps=[eval_scores, reference_policy],
    partitions_def=budget_partitions,
    automation_condition=on_new_training_data(),
    metadata=table_metadata(POINTS, POINT_OUTCOMES),
)
def budget_point(step: Step, warehouse: Warehouse, compute: Compute) -> dg.MaterializeResult:
    """One point of the budget sweep: the strategy's globally ranked candidate pairs cut at the keep
    fraction, their label-error rate, and held-out preference accuracy of a DPO run on them
    (eval.budget_points, per-item outcomes in eval.budget_point_outcomes)."""
    strategy, fraction = step.partition["point"].split("@")
    seed = step.seed
    dpo, reference_version = _sweep_training(step, warehouse)
    reference, _ = recorded_checkpoint(warehouse, "reference_policy", reference_version)
    candidates, _ = read_train_candidates(warehouse, with_embeddings=False, with_texts=True)
    picked = select_pairs(
        candidates, strategy, SelectionConfig(mode="global", keep_fraction=float(fraction)), seed
    )
    pairs, _, _ = held_out(warehouse, EvalConfig())
    step.log.info(f"budget point {strategy} keep {fraction} seed {seed}: {len(picked)} pairs")
    (metrics, outcomes, _), device = compute.run(
        train_and_score,
        reference,
        list(zip(picked["prompt"], picked["chosen"], picked["rejected"])),
        dpo,
        seed,
        pairs,
        report=step.log.info,
    )
    partition = context_partition(step.context)
    row = {
        **partition,
        "strategy": strategy,
        "keep_fraction": float(fraction),
        "pairs": len(picked),
        "label_error_rate": float(picked["label_error"].astype(float).mean()) if len(picked) else None,
        "preference_accuracy": metrics["preference_accuracy"],
        "reference_version": reference_version,
    }
    items = outcomes[outcomes["metric"] == "preference"][["prompt_id", "item", "value"]].assign(**partition)
    with warehouse.connect() as con:
        for table in (POINTS, POINT_OUTCOMES):
            con.execute(table.ddl())
        replace_rows(con, POINTS.name, pd.DataFrame([row]), partition=partition)
        replace_rows(con, POINT_OUTCOMES.name, items, partition=partition)
        content = content_version(con, [POINTS, POINT_OUTCOMES], partition)
    return step.finish(
        content.version,
        {k: v for k, v in row.items() if v is not None} | {"device": device} | content.metadata(),
    )


@step_asset(
    kinds={"duckdb", "python"},
    deps=[budget_point, eval_scores],
    automation_condition=EAGER,
    metadata=table_metadata(SWEEP),
)
def budget_sweep(step: Step, home: Home, warehouse: Warehouse) -> dg.MaterializeResult:
    """The annotation-budget sweep (eval.budget_sweep, no training): every budget point materialized so far
    beside the full budget (`all`, from eval_scores), with `all`'s interval over seeds and held-out prompts
    and the smallest budget at which easy is within it."""
    all_rows, all_outcomes = _all_reference(warehouse)
    with warehouse.connect() as con:
        con.execute(POINTS.ddl())  # no point materialized yet: the sweep is the full budget alone
        points = con.execute(
            "select strategy, keep_fraction, seed::integer as seed, pairs, label_error_rate, "
            "preference_accuracy, 'trained' as source from eval.budget_points"
        ).df()
        all_pairs = dict(
            con.execute(
                "select seed, count(*) from selection.selected_pairs where strategy = 'all' group by seed"
            ).fetchall()
        )
    full = [  # the full budget is `all` itself, for every strategy of the sweep
        {
            "strategy": strategy,
            "keep_fraction": 1.0,
            "seed": int(r.seed),
            "pairs": int(all_pairs.get(r.seed, 0)),
            "label_error_rate": r.label_error_rate,
            "preference_accuracy": r.preference_accuracy,
            "source": "eval_scores[all]",
        }
        for r in all_rows.itertuples()
        for strategy in SWEEP_STRATEGIES
    ]
    sweep = pd.concat([points, pd.DataFrame(full)], ignore_index=True)
    if sweep.empty:  # a run without the full budget and without points (one strategy, points skipped)
        step.log.warning("no budget_point and no eval_scores[<seed>|all] yet: the sweep is empty")
        with warehouse.connect() as con:
            con.execute(f"drop table if exists {SWEEP.name}")
            con.execute(SWEEP.ddl())
            content = content_version(con, [SWEEP])
        reading = "nothing to sweep: no budget point and no full budget (`all`) evaluated yet"
        return step.finish(content.version, {"rows": 0, "reading": reading, **content.metadata()})
    sweep = sweep.sort_values(["strategy", "keep_fraction", "seed"], ignore_index=True)
    grid = np.zeros((0, 0))
    if not all_outcomes.empty:
        means = all_outcomes.groupby(["seed", "prompt_id"])["value"].mean().unstack("prompt_id")
        grid = means.to_numpy(dtype=float)
    band = paired_bootstrap(grid, grid * 0)  # the interval of `all`'s mean over seeds and prompts
    smallest = smallest_budget_within(sweep, "easy", band.low, band.high)
    with warehouse.connect() as con:
        con.register("sweep_frame", sweep)
        con.execute("create or replace table eval.budget_sweep as select * from sweep_frame")
        content = content_version(con, [SWEEP])
    png = budget_plot(
        sweep, (band.diff, band.low, band.high), home.reports / f"budget_sweep-{content.version}.png"
    )
    step.log_table(sweep, "budget_sweep.json")
    step.log_artifact(png)
    metadata = {
        "sweep": dg.MetadataValue.md(markdown_table(sweep)),
        "plot": png_markdown(png, "budget sweep"),
        "plot_path": dg.MetadataValue.path(str(png)),
        "points": len(points),
        "all_preference_accuracy": band.diff,
        "all_interval_low": band.low,
        "all_interval_high": band.high,
        "easy_smallest_budget_within_all": smallest if smallest is not None else float("nan"),
        "easy_smallest_budget_reading": (
            f"easy reaches the interval of `all` at keep fraction {smallest} "
            f"(saves {1 - smallest:.0%} of the annotation budget)"
            if smallest is not None
            else "easy is within the interval of `all` at no budget below 1.0 in this sweep"
        ),
        "rows": content.rows,
        **content.metadata(),
    }
    return step.finish(content.version, metadata)
