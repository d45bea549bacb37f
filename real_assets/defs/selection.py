"""Selection domain: `selected_pairs`, one partition per strategy and seed."""

import dagster as dg
import numpy as np
import pandas as pd

from real_assets.core import table_digests
from real_assets.core.hashing import digest
from real_assets.core.reference_scores import reference_pair_scores
from real_assets.core.selection import (
    KEY_COLUMNS,
    SelectionConfig,
    n_keep,
    resolve_mode,
    select_pairs,
    selection_sql,
    selection_summary,
    strategy_entry,
)
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
from real_assets.resources import Compute, Warehouse, table_exists

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


CANDIDATES_TABLE = "selection.pair_candidates"
TRAIN_CANDIDATES = f"(select * from {CANDIDATES_TABLE} where split = 'train')"
SIMILARITY = "features.response_similarity"
PROMPT_KEY = "prompt_id"
CENTROID_PROMPTS_PER_CHUNK = 20_000
"""Prompts whose candidates and response vectors `centroid` holds at once (per-prompt mode)."""


def _partition_rows(strategy: str, seed: int) -> str:
    return f"(select * from {SELECTED_PAIRS.name} where strategy = '{strategy}' and seed = {int(seed)})"


def _insert_sql(strategy: str, seed: int, select: str) -> str:
    columns = ", ".join(PAIR_COLUMNS)
    return (
        f"insert into {SELECTED_PAIRS.name} (strategy, seed, {columns}) "
        f"select '{strategy}', {int(seed)}, {columns} from ({select})"
    )


def select_in_warehouse(
    warehouse: Warehouse,
    strategy: str,
    seed: int,
    config: SelectionConfig,
    partition: dict,
    version: str,
    picks: pd.DataFrame | None = None,
) -> tuple[Content, dict]:
    """Write one strategy and seed's rows in one transaction: selected by SQL over the warehouse (no pair
    passes through Python), or, for a strategy that picks in Python, the `picks` (key columns) joined back
    to the candidates. One pair per prompt (per-prompt mode) is recomputed only for the prompts whose
    candidates or similarities changed since this partition's last run at this `version` (code and
    config); a global ranking, a Python pick or a new version recompute every prompt. Returns the
    partition's content and summary (with `refresh`, and `prompts_recomputed`)."""
    entry = strategy_entry(strategy)
    step = f"{SELECTED_PAIRS.name}/{strategy}/{int(seed)}"
    with warehouse.connect() as con:
        if picks is not None:
            con.register("picks_frame", picks)
        drop_if_unseeded(con, SELECTED_PAIRS.name)
        con.execute(_DDL)
        pairs = con.execute(f"select count(*) from {TRAIN_CANDIDATES}").fetchone()[0]
        if not pairs:
            raise dg.Failure("selection.pair_candidates has no train pairs: is every label tied?")
        mode = resolve_mode(con, TRAIN_CANDIDATES, config.mode)
        con.execute("begin transaction")
        try:
            reason = table_digests.plan_refresh(
                con, step, (CANDIDATES_TABLE, SIMILARITY), PROMPT_KEY, f"{version}/{mode}"
            )
            if picks is not None:
                reason = "picked in Python"
            elif mode == "global":
                reason = "global ranking"
            elif (
                reason is None
                and not con.execute(f"select count(*) from {_partition_rows(strategy, seed)}").fetchone()[0]
            ):
                reason = "no rows yet"
            changed = "(select key from _changed_keys)"
            candidates, similarity = TRAIN_CANDIDATES, SIMILARITY
            if reason is None:
                candidates = f"(select * from {TRAIN_CANDIDATES} where prompt_id in {changed})"
                similarity = f"(select * from {SIMILARITY} where prompt_id in {changed})"
            if picks is not None:
                select = (
                    f"select c.* from {TRAIN_CANDIDATES} as c semi join picks_frame as k on k.prompt_id = "
                    "c.prompt_id and k.chosen_id = c.chosen_id and k.rejected_id = c.rejected_id"
                )
            else:
                keep = n_keep(pairs, config.keep_fraction) if mode == "global" and entry.order else None
                select = selection_sql(strategy, mode, config, seed, candidates, similarity, keep)
            only_changed = f" and prompt_id in {changed}" if reason is None else ""
            con.execute(
                f"delete from {SELECTED_PAIRS.name} where strategy = ? and seed = ?{only_changed}",
                [strategy, seed],
            )
            con.execute(_insert_sql(strategy, seed, select))
            recomputed = con.execute(
                f"select count(*) from {changed}"
                if reason is None
                else f"select count(distinct prompt_id) from {TRAIN_CANDIDATES}"
            ).fetchone()[0]
            table_digests.record_inputs(con, step, f"{version}/{mode}", full=reason is not None)
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
        content = content_version(con, [SELECTED_PAIRS], partition)
        summary = selection_summary(con, _partition_rows(strategy, seed), TRAIN_CANDIDATES)
    refresh = {
        "refresh": "incremental" if reason is None else "full",
        "refresh_reason": reason or "candidates or similarities changed",
        "prompts_recomputed": int(recomputed),
    }
    return content, {**summary, "mode": mode, **refresh}


def centroid_picks(warehouse: Warehouse, config: SelectionConfig, seed: int, report) -> pd.DataFrame:
    """`centroid`'s picks (key columns). Per prompt: a range of `CENTROID_PROMPTS_PER_CHUNK` prompts at a
    time, so memory holds one range's candidates and vectors (prompts x responses x dimensions x 4 B).
    Globally (one pair per prompt): k-means over every train pair's mean vector at once, pairs x
    dimensions x 4 B, plus as many centres as pairs kept."""
    with warehouse.connect(read_only=True) as con:
        mode = resolve_mode(con, TRAIN_CANDIDATES, config.mode)
    if mode == "global":
        candidates, embeddings = read_train_candidates(warehouse, with_embeddings=True)
        picked = select_pairs(candidates, "centroid", config, seed, embeddings)
        return picked[KEY_COLUMNS]
    picks, after = [], ""
    while True:
        with warehouse.connect(read_only=True) as con:
            last = con.execute(
                f"select max(prompt_id) from (select distinct prompt_id from {TRAIN_CANDIDATES} "
                f"where prompt_id > ? order by prompt_id limit {CENTROID_PROMPTS_PER_CHUNK})",
                [after],
            ).fetchone()[0]
            if last is None:
                break
            window = [after, last]
            columns = ", ".join(f"k.{c}" for c in PAIR_COLUMNS)
            candidates = con.execute(
                f"select {columns} from {TRAIN_CANDIDATES} as k where k.prompt_id > ? and k.prompt_id <= ?",
                window,
            ).df()
            rows = con.execute(
                "select response_id, embedding from features.response_embeddings "
                "where prompt_id > ? and prompt_id <= ?",
                window,
            ).fetchall()
        embeddings = {rid: np.asarray(vec, dtype=np.float32) for rid, vec in rows}
        picked = select_pairs(candidates, "centroid", SelectionConfig(mode="per_prompt"), seed, embeddings)
        picks.append(picked[KEY_COLUMNS])
        report(f"centroid: prompts up to {last}: {len(picked)} pairs")
        after = last
    return pd.concat(picks, ignore_index=True) if picks else pd.DataFrame(columns=KEY_COLUMNS)


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
    per prompt), all (every pair), margin and ches (scores under the reference policy), aepo (central yet
    unlike each other). SQL strategies rank in the warehouse; no pair passes through Python."""
    cfg: SelectionConfig = step.config
    strategy, seed = step.strategy, step.seed
    needs = strategy_entry(strategy).needs
    partition = context_partition(step.context)
    extra, picks = {}, None
    if needs == "reference_scores":
        # The reference model scores every train pair (their texts in memory), then the pick is SQL.
        candidates, _ = read_train_candidates(warehouse, with_embeddings=False, with_texts=True)
        if candidates.empty:
            raise dg.Failure("selection.pair_candidates has no train pairs: is every label tied?")
        reference_version = step.upstream.get("reference_policy")
        scored = with_reference_scores(warehouse, candidates, reference_version, compute, step.log.info)
        picks = select_pairs(scored, strategy, cfg, seed)[KEY_COLUMNS]
        extra["reference_version"] = reference_version
    elif needs == "embeddings":
        picks = centroid_picks(warehouse, cfg, seed, step.log.info)
    version = step.context.assets_def.code_versions_by_key[step.context.asset_key]
    config_version = digest(version or "", repr(cfg))[:16]
    content, summary = select_in_warehouse(warehouse, strategy, seed, cfg, partition, config_version, picks)
    metadata = {
        **{k: v for k, v in summary.items() if v is not None},
        **extra,
        **content.metadata(),
        "dagster/row_count": content.rows,
    }
    return step.finish(content.version, metadata)
