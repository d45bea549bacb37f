"""Evaluation domain: held-out scores per strategy and seed, the comparison across strategies (means,
intervals, paired differences vs random) and the annotation-budget sweep."""

import base64
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from real_assets.core.device import OnDevice
from real_assets.core.evaluation import (
    EvalConfig,
    HeldOutPair,
    Scoring,
    evaluate_policy,
    gold_scorer,
    reward_model_scorer,
    train_and_score,
)
from real_assets.core.policy import DpoConfig
from real_assets.core.report import (
    budget_plot,
    comparison_plot,
    display_table,
    markdown_table,
    smallest_budget_within,
    summarize_strategies,
    tie_note,
    with_tie_shares,
)
from real_assets.core.selection import STRATEGIES, BudgetSweepConfig, SelectionConfig, select_pairs
from real_assets.core.stats import paired_bootstrap
from real_assets.defs.common import Step, step_asset, step_config
from real_assets.defs.conditions import EAGER, on_new_training_data
from real_assets.defs.data_shape import no_pairs_reason, too_few_held_out_pairs
from real_assets.defs.partitions import strategy_seed_partitions
from real_assets.defs.selection import drop_if_unseeded, read_train_candidates
from real_assets.defs.training import dpo_checkpoint, recorded_checkpoint, reference_policy
from real_assets.defs.versions import WarehouseTable, content_version, context_partition, table_metadata
from real_assets.mixed_data import stored_ingestions
from real_assets.resources import Compute, Warehouse, replace_rows
from real_assets.settings import home_dir

EVAL_SCORES = WarehouseTable("eval.eval_scores", ("strategy", "seed"))
EVAL_OUTCOMES = WarehouseTable("eval.eval_outcomes", ("strategy", "seed", "metric", "item"))
COMPARISON = WarehouseTable("eval.strategy_comparison", ("strategy",))
DIFFERENCES = WarehouseTable("eval.strategy_differences", ("strategy", "metric"))
SWEEP = WarehouseTable("eval.budget_sweep", ("strategy", "keep_fraction", "seed"))
POLICY_NOT_WORSE = "policy_not_worse_than_reference"

_DDL = """
create table if not exists eval.eval_scores (
    strategy varchar not null, seed bigint not null, checkpoint_version varchar, reference_version varchar,
    beta double, max_length bigint, eval_pairs bigint, eval_pairs_truncated bigint,
    eval_pairs_dropped_too_long bigint, preference_accuracy double, preference_ties double,
    reward_margin double, win_rate double, win_rate_ci_low double, win_rate_ci_high double,
    win_comparisons bigint, policy_quality double, reference_quality double, judge varchar
);
create table if not exists eval.eval_outcomes (
    strategy varchar not null, seed bigint not null, metric varchar not null, prompt_id varchar,
    item bigint not null, value double
)
"""
EVAL_COLUMNS = [
    "strategy",
    "seed",
    "checkpoint_version",
    "reference_version",
    "beta",
    "max_length",
    "eval_pairs",
    "eval_pairs_truncated",
    "eval_pairs_dropped_too_long",
    "preference_accuracy",
    "preference_ties",
    "reward_margin",
    "win_rate",
    "win_rate_ci_low",
    "win_rate_ci_high",
    "win_comparisons",
    "policy_quality",
    "reference_quality",
    "judge",
]
OUTCOME_COLUMNS = ["strategy", "seed", "metric", "prompt_id", "item", "value"]

EvalStepConfig = step_config(EvalConfig, "EvalStepConfig")
BudgetSweepStepConfig = step_config(BudgetSweepConfig, "BudgetSweepStepConfig")


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
    return Scoring(training["beta"], training["max_length"], training.get("min_response_tokens", 4))


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
    frame = pd.DataFrame([row])[EVAL_COLUMNS]
    items = outcomes.assign(strategy=strategy, seed=seed)[OUTCOME_COLUMNS]
    partition = context_partition(step.context)
    with warehouse.connect() as con:
        for table in (EVAL_SCORES, EVAL_OUTCOMES):
            drop_if_unseeded(con, table.name)
        con.execute(_DDL)
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


def _png_markdown(path: Path, title: str) -> dg.MetadataValue:
    image = base64.b64encode(path.read_bytes()).decode()
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{image})")


def _reports_dir() -> Path:
    reports = home_dir() / "reports"
    reports.mkdir(exist_ok=True)
    return reports


@step_asset(
    kinds={"duckdb", "python"},
    deps=[eval_scores],
    automation_condition=EAGER,
    metadata=table_metadata(COMPARISON, DIFFERENCES),
)
def strategy_comparison(step: Step, warehouse: Warehouse) -> dg.MaterializeResult:
    """The paper's comparison across strategies (eval.strategy_comparison): per strategy the mean and 95%
    interval across seeds of pairs, similarity, label error, preference accuracy, margin and win rate; the
    paired difference of each strategy vs random with a bootstrap interval and p-value over seeds and
    held-out prompts (eval.strategy_differences); with a PNG plot."""
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
        outcomes = con.execute("select strategy, seed, metric, prompt_id, value from eval.eval_outcomes").df()
        table, diffs = summarize_strategies(per_seed, outcomes, list(STRATEGIES))
        table = with_tie_shares(table, outcomes)
        con.register("comparison_frame", table)
        con.register("differences_frame", diffs)
        con.execute("create or replace table eval.strategy_comparison as select * from comparison_frame")
        con.execute("create or replace table eval.strategy_differences as select * from differences_frame")
        content = content_version(con, [COMPARISON, DIFFERENCES])
    png = comparison_plot(table, _reports_dir() / f"strategy_comparison-{content.version}.png")
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
        "plot": _png_markdown(png, "strategy comparison"),
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


def _all_reference(warehouse: Warehouse) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The `all` strategy's eval rows and per-item preference outcomes."""
    with warehouse.connect(read_only=True) as con:
        rows = con.execute(
            "select seed, checkpoint_version, preference_accuracy from eval.eval_scores "
            "where strategy = 'all' order by seed"
        ).df()
        outcomes = con.execute(
            "select seed, prompt_id, value from eval.eval_outcomes where strategy = 'all' "
            "and metric = 'preference'"
        ).df()
    return rows, outcomes


@step_asset(
    config=BudgetSweepStepConfig,
    kinds={"pytorch", "duckdb"},
    deps=[eval_scores, reference_policy],
    automation_condition=on_new_training_data(),
    metadata=table_metadata(SWEEP),
)
def budget_sweep(step: Step, warehouse: Warehouse, compute: Compute) -> dg.MaterializeResult:
    """The annotation-budget sweep (eval.budget_sweep): for easy and random, label-error rate and held-out
    preference accuracy of a real DPO run at each keep fraction, against the full budget (`all`); reports
    the smallest budget at which easy is within the interval of `all`."""
    cfg: BudgetSweepConfig = step.config
    all_rows, all_outcomes = _all_reference(warehouse)
    if all_rows.empty:
        # No `all` partition evaluated (e.g. a demo of one strategy): train the full budget here too.
        step.log.warning("no eval_scores[<seed>|all]: the sweep trains the full budget itself")
        training = {"reference_version": step.upstream.get("reference_policy")}
        dpo = DpoConfig()
    else:
        # The `all` checkpoints' own training record: the sweep trains with exactly those settings.
        _, training = recorded_checkpoint(
            warehouse,
            "dpo_checkpoint",
            all_rows["checkpoint_version"].iloc[0],
            f"{all_rows['seed'].iloc[0]}|all",
        )
        dpo = DpoConfig(**{f.name: training[f.name] for f in dataclasses.fields(DpoConfig)})
    reference, _ = recorded_checkpoint(warehouse, "reference_policy", training["reference_version"])
    candidates, _ = read_train_candidates(warehouse, with_embeddings=False, with_texts=True)
    pairs, _, _ = held_out(warehouse, EvalConfig())
    all_by_seed = dict(zip(all_rows["seed"], all_rows["preference_accuracy"]))
    trained: dict[tuple[int, float], tuple[float, pd.DataFrame]] = {}
    rows = []
    for seed in cfg.seeds:
        for strategy in cfg.strategies:
            for fraction in sorted(cfg.keep_fractions):
                picked = select_pairs(
                    candidates, strategy, SelectionConfig(mode="global", keep_fraction=fraction), seed
                )
                label_error = float(picked["label_error"].astype(float).mean())
                step.log.info(f"budget sweep: {strategy} keep {fraction} seed {seed}: {len(picked)} pairs")
                # At 1.0 every strategy keeps every pair: that is `all` (evaluated, or trained once).
                key = (seed, fraction) if fraction == 1.0 else (seed, fraction, strategy)
                if fraction == 1.0 and seed in all_by_seed:
                    accuracy, source = all_by_seed[seed], "eval_scores[all]"
                else:
                    if key not in trained:
                        (metrics, outcomes, _), _ = compute.run(
                            train_and_score,
                            reference,
                            list(zip(picked["prompt"], picked["chosen"], picked["rejected"])),
                            dpo,
                            seed,
                            pairs,
                            report=step.log.info,
                        )
                        trained[key] = (metrics["preference_accuracy"], outcomes.assign(seed=seed))
                    accuracy, source = trained[key][0], "trained"
                rows.append(
                    {
                        "strategy": strategy,
                        "keep_fraction": fraction,
                        "seed": seed,
                        "pairs": len(picked),
                        "label_error_rate": label_error,
                        "preference_accuracy": accuracy,
                        "source": source,
                    }
                )
    if all_outcomes.empty:
        full = [o for k, (_, o) in trained.items() if len(k) == 2]
        all_outcomes = pd.concat(full)[lambda o: o["metric"] == "preference"] if full else all_outcomes
    sweep = pd.DataFrame(rows)
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
        sweep, (band.diff, band.low, band.high), _reports_dir() / f"budget_sweep-{content.version}.png"
    )
    step.log_table(sweep, "budget_sweep.json")
    step.log_artifact(png)
    for record in sweep.to_dict("records"):
        prefix = f"{record['strategy']}/keep_{record['keep_fraction']}/seed_{record['seed']}"
        step.log_metrics(
            {
                f"{prefix}/label_error_rate": record["label_error_rate"],
                f"{prefix}/preference_accuracy": record["preference_accuracy"],
            }
        )
    metadata = {
        "sweep": dg.MetadataValue.md(markdown_table(sweep)),
        "plot": _png_markdown(png, "budget sweep"),
        "plot_path": dg.MetadataValue.path(str(png)),
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
