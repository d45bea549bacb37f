"""Selection domain: `selected_pairs`, one partition per strategy of the paper."""

import dagster as dg
import numpy as np
import pandas as pd

from real_assets.core.selection import SelectionConfig, select_pairs, selection_summary
from real_assets.defs.common import WAREHOUSE_POOL, finish, strategy_partitions, upstream_versions
from real_assets.defs.conditions import EAGER
from real_assets.defs.features import response_embeddings
from real_assets.defs.versions import (
    Content,
    WarehouseTable,
    content_version,
    context_partition,
    table_metadata,
)
from real_assets.resources import Tracking, Warehouse, replace_rows

SELECTED_PAIRS = WarehouseTable(
    "selection.selected_pairs", ("strategy", "prompt_id", "chosen_id", "rejected_id")
)

_DDL = """
create table if not exists selection.selected_pairs (
    strategy varchar not null, prompt_id varchar not null, chosen_id varchar not null,
    rejected_id varchar not null, chosen_score double, rejected_score double, score_gap double,
    gold_gap double, label_error boolean, cosine double, n_responses bigint
)
"""
PAIR_COLUMNS = [
    "prompt_id",
    "chosen_id",
    "rejected_id",
    "chosen_score",
    "rejected_score",
    "score_gap",
    "gold_gap",
    "label_error",
    "cosine",
    "n_responses",
]


class SelectionParams(dg.Config):
    """`mode`: per_prompt, global or auto; `keep_fraction` applies to global ranking only."""

    mode: str = "auto"
    keep_fraction: float = 0.5
    seed: int = 0


def read_train_candidates(warehouse: Warehouse, with_embeddings: bool):
    """Candidate pairs of the train split, and the embeddings of their responses when asked."""
    with warehouse.connect(read_only=True) as con:
        candidates = con.execute(
            f"select {', '.join(PAIR_COLUMNS)}, labelled_pair from selection.pair_candidates "
            "where split = 'train' "
            "order by prompt_id, chosen_id, rejected_id"
        ).df()
        embeddings = {}
        if with_embeddings:
            rows = con.execute(
                "select e.response_id, e.embedding from features.response_embeddings as e "
                "join raw.prompts as p using (prompt_id) where p.split = 'train'"
            ).fetchall()
            embeddings = {rid: np.asarray(vec, dtype=np.float32) for rid, vec in rows}
    return candidates, embeddings


def write_selection(warehouse: Warehouse, strategy: str, selected: pd.DataFrame, partition: dict) -> Content:
    """Replace one partition's rows; returns the partition's content."""
    frame = selected[PAIR_COLUMNS].assign(strategy=strategy)[["strategy", *PAIR_COLUMNS]]
    with warehouse.connect() as con:
        con.execute(_DDL)
        replace_rows(con, "selection.selected_pairs", frame, partition=partition)
        return content_version(con, [SELECTED_PAIRS], partition)


@dg.asset(
    group_name="selection",
    kinds={"duckdb", "python"},
    deps=["pair_candidates", response_embeddings],
    partitions_def=strategy_partitions,
    pool=WAREHOUSE_POOL,
    automation_condition=EAGER,
    metadata=table_metadata(SELECTED_PAIRS, partition_column="strategy"),
    description="The preference pairs each strategy keeps from the train split (selection.selected_pairs): "
    "easy = least similar (REAL), hard = most similar, random, centroid (k-means k=2 per prompt).",
)
def selected_pairs(
    context: dg.AssetExecutionContext, config: SelectionParams, warehouse: Warehouse, tracking: Tracking
) -> dg.MaterializeResult:
    strategy = context.partition_key
    with tracking.step(context, upstream_versions(context)) as step:
        params = SelectionConfig(
            strategy=strategy, mode=config.mode, keep_fraction=config.keep_fraction, seed=config.seed
        )
        step.log_params(config.model_dump() | {"strategy": strategy})
        candidates, embeddings = read_train_candidates(warehouse, with_embeddings=strategy == "centroid")
        if candidates.empty:
            raise dg.Failure("selection.pair_candidates has no train pairs: is every label tied?")
        selected = select_pairs(candidates, params, embeddings)
        content = write_selection(warehouse, strategy, selected, context_partition(context))
        summary = selection_summary(selected, candidates)
        metadata = {
            **{k: v for k, v in summary.items() if v is not None},
            **content.metadata(),
            "dagster/row_count": content.rows,
        }
        return finish(context, tracking, step, content.version, metadata)
