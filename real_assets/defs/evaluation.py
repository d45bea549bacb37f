"""Evaluation domain: held-out scores per strategy and the paper's comparison across strategies."""

import base64
import json

import dagster as dg
import pandas as pd

from real_assets.core.evaluation import (
    EvalConfig,
    HeldOutPair,
    evaluate_policy,
    gold_scorer,
    reward_model_scorer,
)
from real_assets.core.report import comparison_plot, markdown_table
from real_assets.core.selection import STRATEGIES
from real_assets.defs.common import GPU_POOL, WAREHOUSE_POOL, finish, strategy_partitions, upstream_versions
from real_assets.defs.conditions import EAGER, on_new_training_data
from real_assets.defs.training import dpo_checkpoint, latest_checkpoint
from real_assets.defs.versions import WarehouseTable, content_version, context_partition, table_metadata
from real_assets.resources import Compute, Tracking, Warehouse, replace_rows
from real_assets.settings import home_dir

EVAL_SCORES = WarehouseTable("eval.eval_scores", ("strategy",))
COMPARISON = WarehouseTable("eval.strategy_comparison", ("strategy",))
POLICY_NOT_WORSE = "policy_not_worse_than_reference"

_DDL = """
create table if not exists eval.eval_scores (
    strategy varchar not null, checkpoint_version varchar, eval_pairs bigint,
    preference_accuracy double, reward_margin double, win_rate double, win_rate_ci_low double,
    win_rate_ci_high double, win_comparisons bigint, policy_quality double, reference_quality double,
    judge varchar, seed bigint, beta double
)
"""
EVAL_COLUMNS = [
    "strategy",
    "checkpoint_version",
    "eval_pairs",
    "preference_accuracy",
    "reward_margin",
    "win_rate",
    "win_rate_ci_low",
    "win_rate_ci_high",
    "win_comparisons",
    "policy_quality",
    "reference_quality",
    "judge",
    "seed",
    "beta",
]


class EvalParams(dg.Config):
    """`judge`: `auto` (gold scorer when every held-out response has gold quality, else `reward_model`
    when set, else no win rate), `gold`, or `reward_model`."""

    beta: float = 0.2
    samples_per_prompt: int = 4
    max_new_tokens: int = 48
    temperature: float = 0.7
    seed: int = 1234
    judge: str = "auto"
    reward_model: str = ""
    trust_remote_code: bool = False
    max_eval_pairs: int = 2000
    max_eval_prompts: int = 200


def _held_out(warehouse: Warehouse, params: EvalParams) -> tuple[list[HeldOutPair], list[str], bool]:
    """Test-split pairs directed by gold quality (by label where gold is unknown; gold ties left out),
    the test prompts, and whether every test response has a gold quality."""
    with warehouse.connect(read_only=True) as con:
        rows = con.execute(
            """
            select p.prompt, c.response, r.response, c.gold, r.gold
            from selection.pair_candidates as k
            join raw.prompts as p using (prompt_id)
            join raw.responses as c on c.response_id = k.chosen_id
            join raw.responses as r on r.response_id = k.rejected_id
            where k.split = 'test' and (k.gold_gap is null or k.gold_gap <> 0)
            order by k.prompt_id, k.chosen_id, k.rejected_id limit ?""",
            [params.max_eval_pairs],
        ).fetchall()
        prompts = [
            r[0]
            for r in con.execute(
                "select prompt from raw.prompts where split = 'test' and pairable order by prompt_id limit ?",
                [params.max_eval_prompts],
            ).fetchall()
        ]
        all_gold = con.execute("""
            select count(*) = count(r.gold) from raw.responses as r join raw.prompts as p using (prompt_id)
            where p.split = 'test'""").fetchone()[0]
    pairs = [
        HeldOutPair(prompt, c, r) if cg is None or cg > rg else HeldOutPair(prompt, r, c)
        for prompt, c, r, cg, rg in rows
    ]
    return pairs, prompts, bool(all_gold)


def _scorer(params: EvalParams, all_gold: bool, compute: Compute):
    judge = params.judge
    if judge == "auto":
        judge = "gold" if all_gold else ("reward_model" if params.reward_model else "none")
    if judge == "gold":
        if not all_gold:
            raise dg.Failure("judge='gold' needs gold quality on every test response (synthetic source)")
        return "gold", gold_scorer
    if judge == "reward_model":
        if not params.reward_model:
            raise dg.Failure("judge='reward_model' needs `reward_model` (a model id or path)")
        return params.reward_model, reward_model_scorer(
            params.reward_model, compute.choice(), params.trust_remote_code
        )
    if judge == "none":
        return "none", None
    raise dg.Failure(f"unknown judge {params.judge!r}: use auto, gold, reward_model or none")


@dg.asset(
    group_name="evaluation",
    kinds={"pytorch", "duckdb"},
    deps=[dpo_checkpoint],
    partitions_def=strategy_partitions,
    pool=GPU_POOL,
    automation_condition=on_new_training_data(),
    metadata=table_metadata(EVAL_SCORES, partition_column="strategy"),
    check_specs=[
        dg.AssetCheckSpec(
            POLICY_NOT_WORSE,
            asset="eval_scores",
            description="warns when the DPO policy loses to its reference",
        )
    ],
    description="Held-out scores of one strategy's DPO policy (eval.eval_scores): implicit-reward "
    "preference accuracy and margin against gold, and win rate over the reference with a 95% interval.",
)
def eval_scores(
    context: dg.AssetExecutionContext,
    config: EvalParams,
    warehouse: Warehouse,
    compute: Compute,
    tracking: Tracking,
):
    strategy = context.partition_key
    with tracking.step(context, upstream_versions(context)) as step:
        step.log_params(config.model_dump() | {"strategy": strategy})
        policy = latest_checkpoint(warehouse, "dpo_checkpoint", strategy)
        reference = latest_checkpoint(warehouse, "reference_policy")
        pairs, prompts, all_gold = _held_out(warehouse, config)
        judge, scorer = _scorer(config, all_gold, compute)
        eval_cfg = EvalConfig(
            beta=config.beta,
            samples_per_prompt=config.samples_per_prompt,
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            seed=config.seed,
        )
        metrics = evaluate_policy(policy, reference, pairs, prompts, scorer, eval_cfg, compute.choice())
        row = {
            "strategy": strategy,
            "checkpoint_version": policy.name,
            **metrics,
            "judge": judge,
            "seed": config.seed,
            "beta": config.beta,
        }
        frame = pd.DataFrame([row])[EVAL_COLUMNS]
        with warehouse.connect() as con:
            con.execute(_DDL)
            replace_rows(con, "eval.eval_scores", frame, ["strategy"])
            content = content_version(con, [EVAL_SCORES], context_partition(context))
        result = finish(
            context,
            tracking,
            step,
            content.version,
            {k: v for k, v in row.items() if v is not None} | content.metadata(),
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


@dg.asset(
    group_name="evaluation",
    kinds={"duckdb", "python"},
    deps=[eval_scores],
    pool=WAREHOUSE_POOL,
    automation_condition=EAGER,
    metadata=table_metadata(COMPARISON),
    description="The paper's comparison across strategies (eval.strategy_comparison): pairs, mean "
    "similarity, label error, preference accuracy, margin and win rate; with a PNG plot.",
)
def strategy_comparison(
    context: dg.AssetExecutionContext, warehouse: Warehouse, tracking: Tracking
) -> dg.MaterializeResult:
    with tracking.step(context, upstream_versions(context)) as step:
        with warehouse.connect() as con:
            con.execute("""
                create or replace table eval.strategy_comparison as
                select e.strategy, s.pairs, s.mean_cosine, s.label_error_rate, e.preference_accuracy,
                       e.reward_margin, e.win_rate, e.win_rate_ci_low, e.win_rate_ci_high, e.judge
                from eval.eval_scores as e
                left join (
                    select strategy, count(*) as pairs, avg(cosine) as mean_cosine,
                           avg(label_error::double) as label_error_rate
                    from selection.selected_pairs group by strategy
                ) as s using (strategy)""")
            table = con.execute(
                "select * from eval.strategy_comparison order by list_position(?, strategy)",
                [list(STRATEGIES)],
            ).df()
            content = content_version(con, [COMPARISON])
        reports = home_dir() / "reports"
        reports.mkdir(exist_ok=True)
        png = comparison_plot(table, reports / f"strategy_comparison-{content.version}.png")
        step.log_table(table, "strategy_comparison.json")
        step.log_artifact(png)
        for record in table.to_dict("records"):
            step.log_metrics({f"{record['strategy']}/{k}": v for k, v in record.items() if k != "strategy"})
        image = base64.b64encode(png.read_bytes()).decode()
        metadata = {
            "comparison": dg.MetadataValue.md(markdown_table(table)),
            "plot": dg.MetadataValue.md(f"![strategy comparison](data:image/png;base64,{image})"),
            "plot_path": dg.MetadataValue.path(str(png)),
            "rows": content.rows,
            **content.metadata(),
            "table_json": dg.MetadataValue.json(json.loads(table.to_json(orient="records"))),
        }
        return finish(context, tracking, step, content.version, metadata)
