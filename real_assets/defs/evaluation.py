"""Evaluation domain: held-out scores per strategy and seed, the comparison across strategies (means,
intervals, paired differences vs random) and the annotation-budget sweep."""

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd

from real_assets.core.device import OnDevice
from real_assets.core.evaluation import (
    EvalConfig,
    HeldOutPair,
    Scoring,
    evaluate_policy,
    gold_scorer,
    reward_model_scorer,
)
from real_assets.core.report import (
    comparison_plot,
    display_table,
    markdown_table,
    summarize_strategies,
    tie_note,
    with_tie_shares,
)
from real_assets.core.selection import STRATEGIES
from real_assets.defs.common import Step, step_asset, step_config
from real_assets.defs.conditions import EAGER, on_new_training_data
from real_assets.defs.data_shape import no_pairs_reason, too_few_held_out_pairs
from real_assets.defs.partitions import strategy_seed_partitions
from real_assets.defs.training import dpo_checkpoint, recorded_checkpoint
from real_assets.defs.versions import WarehouseTable, content_version, context_partition, table_metadata
from real_assets.mixed_data import stored_ingestions
from real_assets.resources import Compute, Home, Warehouse, replace_rows

EVAL_SCORES = WarehouseTable(
    "eval.eval_scores",
    ("strategy", "seed"),
    columns=(
        ("strategy", "varchar not null"),
        ("seed", "bigint not null"),
        ("checkpoint_version", "varchar"),
        ("reference_version", "varchar"),
        ("beta", "double"),
        ("max_length", "bigint"),
        ("eval_pairs", "bigint"),
        ("eval_pairs_truncated", "bigint"),
        ("eval_pairs_dropped_too_long", "bigint"),
        ("preference_accuracy", "double"),
        ("preference_ties", "double"),
        ("reward_margin", "double"),
        ("win_rate", "double"),
        ("win_rate_ci_low", "double"),
        ("win_rate_ci_high", "double"),
        ("win_comparisons", "bigint"),
        ("policy_quality", "double"),
        ("reference_quality", "double"),
        ("judge", "varchar"),
    ),
)
EVAL_OUTCOMES = WarehouseTable(
    "eval.eval_outcomes",
    ("strategy", "seed", "metric", "item"),
    columns=(
        ("strategy", "varchar not null"),
        ("seed", "bigint not null"),
        ("metric", "varchar not null"),
        ("prompt_id", "varchar"),
        ("item", "bigint not null"),
        ("value", "double"),
    ),
)
COMPARISON = WarehouseTable("eval.strategy_comparison", ("strategy",))
DIFFERENCES = WarehouseTable("eval.strategy_differences", ("strategy", "metric"))
POLICY_NOT_WORSE = "policy_not_worse_than_reference"

EvalStepConfig = step_config(EvalConfig, "EvalStepConfig")


def held_out(
    warehouse: Warehouse, config: EvalConfig
) -> tuple[list[HeldOutPair], list[tuple[str, str]], bool]:
    """Test-split pairs directed by gold quality (by label where gold is unknown; gold ties left out),
    the test prompts (id, text), and whether every test response has a gold quality."""
    with warehouse.connect(read_only=True) as con:
        rows = con.execute(
            """
            select k.prompt_id, p.prompt, c.response, r.response, c.gold, r.gold
            from selection.pair_candidates as k
            join raw.prompts as p using (prompt_id)
            join raw.responses as c on c.response_id = k.chosen_id
            join raw.responses as r on r.response_id = k.rejected_id
            where k.split = 'test' and (k.gold_gap is null or k.gold_gap <> 0)
            order by k.prompt_id, k.chosen_id, k.rejected_id limit ?""",
            [config.max_eval_pairs],
        ).fetchall()
        prompts = con.execute(
            "select prompt_id, prompt from raw.prompts where split = 'test' and pairable "
            "order by prompt_id limit ?",
            [config.max_eval_prompts],
        ).fetchall()
        all_gold = con.execute("""
            select count(*) > 0 and count(*) = count(r.gold)
            from raw.responses as r join raw.prompts as p using (prompt_id)
            where p.split = 'test'""").fetchone()[0]
    pairs = [
        HeldOutPair(prompt, c, r, pid) if cg is None or cg > rg else HeldOutPair(prompt, r, c, pid)
        for pid, prompt, c, r, cg, rg in rows
    ]
    return pairs, [tuple(p) for p in prompts], bool(all_gold)


def _scorer(config: EvalConfig, all_gold: bool):
    judge = config.judge
    if judge == "auto":
        judge = "gold" if all_gold else ("reward_model" if config.reward_model else "none")
    if judge == "gold":
        if not all_gold:
            raise dg.Failure("judge='gold' needs gold quality on every test response (synthetic source)")
        return "gold", gold_scorer
    if judge == "reward_model":
        if not config.reward_model:
            raise dg.Failure("judge='reward_model' needs `reward_model` (a model id or path)")
        scorer = OnDevice(
            reward_model_scorer, config.reward_model, trust_remote_code=config.trust_remote_code
        )
        return config.reward_model, scorer
    if judge == "none":
        return "none", None
    raise dg.Failure(f"unknown judge {config.judge!r}: use auto, gold, reward_model or none")


def _scoring(training: dict) -> Scoring:
    return Scoring(training["beta"], training["max_length"], training["min_response_tokens"])


@step_asset(
    config=EvalStepConfig,
    kinds={"pytorch", "duckdb"},
    deps=[dpo_checkpoint],
    partitions_def=strategy_seed_partitions,
    automation_condition=on_new_training_data(),
    metadata=table_metadata(EVAL_SCORES, EVAL_OUTCOMES),
    check_specs=[
        dg.AssetCheckSpec(
            POLICY_NOT_WORSE,
            asset="eval_scores",
            description="warns when the DPO policy loses to its reference",
        )
    ],
)
def eval_scores(
    step: Step, warehouse: Warehouse, compute: Compute
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Held-out scores of one strategy and seed's DPO policy against the reference it was trained from
    (eval.eval_scores, per-item outcomes in eval.eval_outcomes): implicit-reward preference accuracy (beta
    as trained; ties half) and margin against gold, and win rate with a 95% interval."""
    cfg: EvalConfig = step.config
    strategy, seed, upstream = step.strategy, step.seed, step.upstream
    checkpoint_version = upstream.get("dpo_checkpoint")
    policy, training = recorded_checkpoint(
        warehouse, "dpo_checkpoint", checkpoint_version, step.context.partition_key
    )
    reference_version = training.get("reference_version")
    reference, _ = recorded_checkpoint(warehouse, "reference_policy", reference_version)
    scoring = _scoring(training)
    pairs, prompts, all_gold = held_out(warehouse, cfg)
    if len(pairs) < cfg.min_eval_pairs:
        cause = (
            no_pairs_reason(warehouse, "test")
            if not pairs
            else "the held-out split is that small: ingest more prompts, or raise raw_responses test_fraction"
        )
        raise too_few_held_out_pairs(len(pairs), cfg.min_eval_pairs, cause)
    judge, scorer = _scorer(cfg, all_gold)
    (metrics, outcomes), _ = compute.run(
        evaluate_policy,
        policy,
        reference,
        pairs,
        prompts,
        scorer,
        cfg,
        scoring,
        seed_offset=seed,
        report=step.log.info,
    )
    if metrics["eval_pairs"] < cfg.min_eval_pairs:
        dropped = len(pairs) - metrics["eval_pairs"]
        raise too_few_held_out_pairs(
            metrics["eval_pairs"],
            cfg.min_eval_pairs,
            f"{dropped} of {len(pairs)} could not keep min_response_tokens of their responses within the "
            f"checkpoint's max_length {scoring.max_length} (train with a larger dpo_checkpoint max_length)",
        )
    row = {
        "strategy": strategy,
        "seed": seed,
        "checkpoint_version": checkpoint_version,
        "reference_version": reference_version,
        "beta": scoring.beta,
        "max_length": scoring.max_length,
        **metrics,
        "judge": judge if metrics["win_comparisons"] else "none",  # the judge actually used
    }
    reading = win_rate_reading(metrics)
    if reading:
        step.log.warning(f"eval_scores[{step.context.partition_key}]: {reading}")
    frame = pd.DataFrame([row])[EVAL_SCORES.column_names]
    items = outcomes.assign(strategy=strategy, seed=seed)[EVAL_OUTCOMES.column_names]
    partition = context_partition(step.context)
    with warehouse.connect() as con:
        for table in (EVAL_SCORES, EVAL_OUTCOMES):
            con.execute(table.ddl())
        replace_rows(con, EVAL_SCORES.name, frame, partition=partition)
        replace_rows(con, EVAL_OUTCOMES.name, items, partition=partition)
        content = content_version(con, [EVAL_SCORES, EVAL_OUTCOMES], partition)
    result = step.finish(
        content.version,
        {k: v for k, v in row.items() if v is not None}
        | ({"win_rate_reading": reading} if reading else {})
        | content.metadata(),
    )
    yield result
    win, high = metrics.get("win_rate"), metrics.get("win_rate_ci_high")
    yield dg.AssetCheckResult(
        check_name=POLICY_NOT_WORSE,
        passed=win is None or high >= 0.5,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "win_rate": win if win is not None else float("nan"),
            "win_rate_ci_high": high if high is not None else float("nan"),
        },
    )


def win_rate_reading(metrics: dict) -> str | None:
    """What a win rate made only of ties means (None for any other win rate)."""
    ties = metrics.get("win_ties")
    if ties is None or ties < 1.0:
        return None
    return (
        f"all {metrics['win_comparisons']} win-rate comparisons were ties (tie share {ties:.2f}): the judge "
        "did not tell the policy's samples from the reference's, so the win rate of 0.5 says nothing about "
        "either (sample more, longer: eval_scores samples_per_prompt, max_new_tokens)"
    )


def png_markdown(path: Path, title: str) -> dg.MetadataValue:
    image = base64.b64encode(path.read_bytes()).decode()
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{image})")


_COMPARISON_ITEMS = """
    select strategy, seed, metric, prompt_id, value from eval.eval_outcomes
    union all
    select strategy, seed, 'cosine', prompt_id, cosine from selection.selected_pairs
    union all
    select strategy, seed, 'label_error', prompt_id, label_error::double from selection.selected_pairs
"""
"""Every item the comparison's intervals resample (`core.report.ITEM_METRICS`): held-out outcomes and the
cosine and label error of each kept pair."""


@step_asset(
    kinds={"duckdb", "python"},
    deps=[eval_scores],
    automation_condition=EAGER,
    metadata=table_metadata(COMPARISON, DIFFERENCES),
)
def strategy_comparison(step: Step, home: Home, warehouse: Warehouse) -> dg.MaterializeResult:
    """The paper's comparison across strategies (eval.strategy_comparison): per strategy the mean over seeds
    of pairs, similarity, label error, preference accuracy, margin and win rate, each but pairs with a 95%
    two-way bootstrap interval over seeds and prompts (kept pairs by train prompt, held-out outcomes by
    held-out prompt); the paired difference of each strategy vs random with a bootstrap interval and p-value
    over seeds and held-out prompts (eval.strategy_differences); with a PNG plot."""
    with warehouse.connect() as con:
        per_seed = con.execute("""
            select e.strategy, e.seed, s.pairs, s.mean_cosine, s.label_error_rate, e.preference_accuracy,
                   e.reward_margin, e.win_rate
            from eval.eval_scores as e
            left join (
                select strategy, seed, count(*) as pairs, avg(cosine) as mean_cosine,
                       avg(label_error::double) as label_error_rate
                from selection.selected_pairs group by strategy, seed
            ) as s using (strategy, seed)
            order by e.strategy, e.seed""").df()
        items = con.execute(_COMPARISON_ITEMS).df()
        table, diffs = summarize_strategies(per_seed, items, list(STRATEGIES))
        wins = con.execute("select strategy, metric, value from eval.eval_outcomes where metric = 'win'").df()
        table = with_tie_shares(table, wins)
        con.register("comparison_frame", table)
        con.register("differences_frame", diffs)
        con.execute("create or replace table eval.strategy_comparison as select * from comparison_frame")
        con.execute("create or replace table eval.strategy_differences as select * from differences_frame")
        content = content_version(con, [COMPARISON, DIFFERENCES])
    png = comparison_plot(table, home.reports / f"strategy_comparison-{content.version}.png")
    step.log_table(table, "strategy_comparison.json")
    step.log_table(diffs, "strategy_differences.json")
    step.log_artifact(png)
    for record in table.to_dict("records"):
        step.log_metrics({f"{record['strategy']}/{k}": v for k, v in record.items() if k != "strategy"})
    for record in diffs.to_dict("records"):
        prefix = f"{record['strategy']}/{record['metric']}"
        step.log_metrics(
            {
                f"{prefix}_diff_vs_random": record["diff_vs_random"],
                f"{prefix}_diff_low": record["diff_low"],
                f"{prefix}_diff_high": record["diff_high"],
                f"{prefix}_p_value": record["p_value"],
            }
        )
    note = tie_note(table)
    ingestions = stored_ingestions(warehouse)
    metadata = {
        "comparison": dg.MetadataValue.md(
            markdown_table(display_table(table, diffs)) + (f"\n\n{note}" if note else "")
        ),
        "plot": png_markdown(png, "strategy comparison"),
        "plot_path": dg.MetadataValue.path(str(png)),
        "rows": content.rows,
        **content.metadata(),
        "ingestions": dg.MetadataValue.md(markdown_table(ingestions)),
        "sources": int(ingestions["source_file"].nunique()),
        "seeds": int(table["seeds"].max()) if len(table) else 0,
        "table_json": dg.MetadataValue.json(json.loads(table.to_json(orient="records"))),
        "differences_json": dg.MetadataValue.json(json.loads(diffs.to_json(orient="records"))),
    }
    return step.finish(content.version, metadata)
