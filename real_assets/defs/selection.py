"""Selection domain: `selected_pairs`, one partition per strategy and seed."""

import dagster as dg
import numpy as np
import pandas as pd

from real_assets.core.annotation.requests import requested_pairs
from real_assets.core.hashing import digest
from real_assets.core.reference_scores import reference_pair_scores
from real_assets.core.selection import STRATEGY_REGISTRY, SelectionConfig, select_pairs, selection_summary
from real_assets.defs.annotation import read_requested_pairs
from real_assets.defs.common import Step, step_asset, step_config
from real_assets.defs.conditions import EAGER
from real_assets.defs.features import response_embeddings
from real_assets.defs.partitions import strategy_seed_partitions
from real_assets.defs.training import recorded_checkpoint, reference_policy
from real_assets.defs.versions import (
    Content,
    WarehouseTable,
    content_version,
    context_partition,
    table_metadata,
)
from real_assets.resources import Compute, Warehouse, replace_rows, table_exists

SELECTED_PAIRS = WarehouseTable(
    "selection.selected_pairs", ("strategy", "seed", "prompt_id", "chosen_id", "rejected_id")
)

_DDL = """
create table if not exists selection.selected_pairs (
    strategy varchar not null, seed bigint not null, prompt_id varchar not null, chosen_id varchar not null,
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

SelectionStepConfig = step_config(SelectionConfig, "SelectionStepConfig")


def drop_if_unseeded(con, table: str) -> None:
    """A table from before the seed dimension (no `seed` column) is dropped, to be rebuilt per seed."""
    schema, name = table.split(".")
    if (
        table_exists(con, table)
        and not con.execute(
            "select count(*) from information_schema.columns where table_schema = ? and table_name = ? "
            "and column_name = 'seed'",
            [schema, name],
        ).fetchone()[0]
    ):
        con.execute(f"drop table {schema}.{name}")


def read_train_candidates(warehouse: Warehouse, with_embeddings: bool, with_texts: bool = False):
    """Candidate pairs of the train split (with their prompt and response texts when asked), and the
    embeddings of their responses when asked."""
    texts = ", p.prompt, c.response as chosen, r.response as rejected" if with_texts else ""
    joins = (
        " join raw.prompts as p using (prompt_id)"
        " join raw.responses as c on c.response_id = k.chosen_id"
        " join raw.responses as r on r.response_id = k.rejected_id"
        if with_texts
        else ""
    )
    columns = ", ".join(f"k.{c}" for c in PAIR_COLUMNS)
    with warehouse.connect(read_only=True) as con:
        candidates = con.execute(
            f"select {columns}, k.labelled_pair{texts} from selection.pair_candidates as k{joins} "
            "where k.split = 'train' order by k.prompt_id, k.chosen_id, k.rejected_id"
        ).df()
        embeddings = {}
        if with_embeddings:
            rows = con.execute(
                "select e.response_id, e.embedding from features.response_embeddings as e "
                "join raw.prompts as p using (prompt_id) where p.split = 'train'"
            ).fetchall()
            embeddings = {rid: np.asarray(vec, dtype=np.float32) for rid, vec in rows}
    return candidates, embeddings


_SCORES_CACHE: dict[tuple[str | None, str], pd.DataFrame] = {}
"""The last reference scores computed in this process: `margin` and `ches` on every seed share them."""


def with_reference_scores(
    warehouse: Warehouse, candidates: pd.DataFrame, reference_version: str | None, compute: Compute, report
) -> pd.DataFrame:
    """The candidates (with texts) plus `ref_margin` and `ches` under the reference version the input
    names, fitted to the max_length the reference was trained with."""
    key = (
        reference_version,
        digest(*candidates["prompt_id"], *candidates["chosen_id"], *candidates["rejected_id"]),
    )
    if key not in _SCORES_CACHE:
        _SCORES_CACHE.clear()
        _SCORES_CACHE[key] = _reference_scores(warehouse, candidates, reference_version, compute, report)
    return pd.concat([candidates.reset_index(drop=True), _SCORES_CACHE[key]], axis=1)


def _reference_scores(warehouse, candidates, reference_version, compute, report) -> pd.DataFrame:
    reference, training = recorded_checkpoint(warehouse, "reference_policy", reference_version)
    scores, _ = compute.run(
        reference_pair_scores,
        reference,
        candidates[["prompt", "chosen", "rejected"]],
        max_length=training["max_length"],
        min_response_tokens=training.get("min_response_tokens", 4),
        report=report,
    )
    return scores


def write_selection(
    warehouse: Warehouse, strategy: str, seed: int, selected: pd.DataFrame, partition: dict
) -> Content:
    """Replace one strategy and seed's rows; returns the partition's content."""
    frame = selected[PAIR_COLUMNS].assign(strategy=strategy, seed=seed)[["strategy", "seed", *PAIR_COLUMNS]]
    with warehouse.connect() as con:
        drop_if_unseeded(con, SELECTED_PAIRS.name)
        con.execute(_DDL)
        replace_rows(con, SELECTED_PAIRS.name, frame, partition=partition)
        return content_version(con, [SELECTED_PAIRS], partition)


@step_asset(
    config=SelectionStepConfig,
    kinds={"duckdb", "python"},
    deps=["pair_candidates", response_embeddings, reference_policy],
    partitions_def=strategy_seed_partitions,
    automation_condition=EAGER,
    metadata=table_metadata(SELECTED_PAIRS),
)
def selected_pairs(step: Step, warehouse: Warehouse, compute: Compute) -> dg.MaterializeResult:
    """The preference pairs each strategy keeps from the train split (selection.selected_pairs), per seed:
    easy = least similar (REAL), hard = most similar, random (varies with the seed), centroid (k-means k=2
    per prompt), all (every pair), margin and ches (scores under the reference policy)."""
    cfg: SelectionConfig = step.config
    strategy, seed, upstream = step.strategy, step.seed, step.upstream
    needs = None if cfg.from_requests else STRATEGY_REGISTRY[strategy].needs
    candidates, embeddings = read_train_candidates(
        warehouse, with_embeddings=needs == "embeddings", with_texts=needs == "reference_scores"
    )
    if candidates.empty:
        raise dg.Failure("selection.pair_candidates has no train pairs: is every label tied?")
    extra = {}
    if needs == "reference_scores":
        reference_version = upstream.get("reference_policy")
        candidates = with_reference_scores(warehouse, candidates, reference_version, compute, step.log.info)
        extra["reference_version"] = reference_version
    if cfg.from_requests:
        selected = requested_pairs(candidates, read_requested_pairs(warehouse, strategy))
    else:
        selected = select_pairs(candidates, strategy, cfg, seed, embeddings)
    content = write_selection(warehouse, strategy, seed, selected, context_partition(step.context))
    summary = selection_summary(selected, candidates)
    metadata = {
        **{k: v for k, v in summary.items() if v is not None},
        **extra,
        **content.metadata(),
        "dagster/row_count": content.rows,
    }
    return step.finish(content.version, metadata)
