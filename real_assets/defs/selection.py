"""Selection domain: `selected_pairs`, one partition per strategy and seed."""

import json
import uuid

import dagster as dg
import pandas as pd

from real_assets.core import table_digests
from real_assets.core.annotation.requests import requested_pairs
from real_assets.core.hashing import digest
from real_assets.core.selection import (
    SelectionConfig,
    candidate_stats,
    n_keep,
    resolve_mode,
    selection_sql,
    selection_summary,
    strategy_entry,
)
from real_assets.defs.candidates import read_requested_pairs
from real_assets.defs.common import Step, step_asset, step_config
from real_assets.defs.conditions import EAGER
from real_assets.defs.data_shape import no_pairs_reason
from real_assets.defs.features import response_embeddings
from real_assets.defs.pair_scores import (
    CANDIDATES_TABLE,
    REFERENCE_SCORES,
    SCORES_DDL,
    TRAIN_CANDIDATES,
    score_pending_pairs,
)
from real_assets.defs.partitions import strategy_seed_partitions
from real_assets.defs.train_candidates import PAIR_COLUMNS, centroid_picks, read_train_candidates
from real_assets.defs.training import reference_policy
from real_assets.defs.versions import (
    Content,
    WarehouseTable,
    content_of,
    table_metadata,
)
from real_assets.resources import Compute, Warehouse, table_exists

SELECTED_PAIRS = WarehouseTable(
    "selection.selected_pairs",
    ("strategy", "seed", "prompt_id", "chosen_id", "rejected_id"),
    columns=(
        ("strategy", "varchar not null"),
        ("seed", "bigint not null"),
        ("prompt_id", "varchar not null"),
        ("chosen_id", "varchar not null"),
        ("rejected_id", "varchar not null"),
        ("chosen_score", "double"),
        ("rejected_score", "double"),
        ("score_gap", "double"),
        ("gold_gap", "double"),
        ("label_error", "boolean"),
        ("cosine", "double"),
        ("n_responses", "bigint"),
    ),
)
"""The pair columns (`PAIR_COLUMNS`, as `selection.pair_candidates` has them) of every selected pair."""

SelectionStepConfig = step_config(SelectionConfig, "SelectionStepConfig")


SIMILARITY = "features.response_similarity"
PROMPT_KEY = "prompt_id"


CHANGED_PROMPTS = "selection.changed_prompts"
CHANGED_CANDIDATES = "selection.changed_candidates"
CHANGED_SIMILARITY = "selection.changed_similarity"
CHANGED_FROM = "selection.changed_from"
"""The train candidates and similarities of the prompts one refresh changed, with those prompts and the
digests of the tables they were copied from: read once and shared by every partition's incremental run.
Each partition reading them from the whole tables scanned both (0.4 s a partition at 1M responses, of 40
partitions). Replaced whenever a partition's changed prompts are not all in it or the tables moved on."""


def _changed_rows(con) -> tuple[str, str]:
    """(candidates, similarity): relations holding at least the train candidates and similarities of the
    prompts in `_changed_keys` (the shared copy, refreshed here if it does not cover them), in the
    partition's transaction, after `_plan` (whose `plan_refresh` has both tables tracked)."""
    digests = [table_digests.tracked_digest(con, t)[0] for t in (CANDIDATES_TABLE, SIMILARITY)]
    con.execute(f"create table if not exists {CHANGED_FROM} (candidates varchar, similarity varchar)")
    con.execute(f"create table if not exists {CHANGED_PROMPTS} (prompt_id varchar)")
    covered = (
        con.execute(f"select candidates, similarity from {CHANGED_FROM}").fetchall() == [tuple(digests)]
        and all(table_exists(con, copy) for copy in (CHANGED_CANDIDATES, CHANGED_SIMILARITY))
        and not con.execute(
            f"select 1 from _changed_keys where key not in (select prompt_id from {CHANGED_PROMPTS}) limit 1"
        ).fetchone()
    )
    if not covered:
        changed = "(select key from _changed_keys)"
        con.execute(f"delete from {CHANGED_FROM}")
        con.execute(f"delete from {CHANGED_PROMPTS}")
        con.execute(f"insert into {CHANGED_PROMPTS} select key from _changed_keys")
        for copy, rows in ((CHANGED_CANDIDATES, TRAIN_CANDIDATES), (CHANGED_SIMILARITY, SIMILARITY)):
            con.execute(f"create or replace table {copy} as from {rows} where prompt_id in {changed}")
        con.execute(f"insert into {CHANGED_FROM} values (?, ?)", digests)
    return CHANGED_CANDIDATES, CHANGED_SIMILARITY


def _partition_rows(strategy: str, seed: int) -> str:
    return f"(select * from {SELECTED_PAIRS.name} where strategy = '{strategy}' and seed = {int(seed)})"


def _insert_sql(strategy: str, seed: int, select: str) -> str:
    columns = ", ".join(PAIR_COLUMNS)
    return (
        f"insert into {SELECTED_PAIRS.name} (strategy, seed, {columns}) "
        f"select '{strategy}', {int(seed)}, {columns} from ({select})"
    )


def _step(strategy: str, seed: int) -> str:
    return f"{SELECTED_PAIRS.name}/{strategy}/{int(seed)}"


CANDIDATE_STATS = "selection.candidate_stats"
"""`candidate_stats` of the train candidates, by the digest of `selection.pair_candidates` they were
counted from: the partitions of one refresh count them once."""


def _train_candidate_stats(con) -> dict:
    if not table_digests.is_tracked(con, CANDIDATES_TABLE, PROMPT_KEY):
        return candidate_stats(con, TRAIN_CANDIDATES)
    candidates_digest, _ = table_digests.tracked_digest(con, CANDIDATES_TABLE)
    con.execute(f"create table if not exists {CANDIDATE_STATS} (candidates_digest varchar, stats json)")
    row = con.execute(
        f"select stats from {CANDIDATE_STATS} where candidates_digest = ?", [candidates_digest]
    ).fetchone()
    if row is not None:
        return json.loads(row[0])
    stats = candidate_stats(con, TRAIN_CANDIDATES)
    con.execute(f"delete from {CANDIDATE_STATS}")
    con.execute(f"insert into {CANDIDATE_STATS} values (?, ?)", [candidates_digest, json.dumps(stats)])
    return stats


def _plan(
    con, strategy: str, seed: int, config: SelectionConfig, version: str
) -> tuple[str, str | None, dict]:
    """(mode, why every prompt is recomputed or None: only those in `_changed_keys`, the train candidates'
    `candidate_stats`), in a transaction."""
    con.execute(SELECTED_PAIRS.ddl())
    stats = _train_candidate_stats(con)
    if not stats["pairs"]:
        raise dg.Failure("selection.pair_candidates has no train pairs: is every label tied?")
    mode = resolve_mode(con, TRAIN_CANDIDATES, config.mode, stats)
    reason = table_digests.plan_refresh(
        con, _step(strategy, seed), (CANDIDATES_TABLE, SIMILARITY), PROMPT_KEY, f"{version}/{mode}"
    )
    if mode == "global":
        reason = "global ranking"
    elif reason is None:
        held = con.execute(f"select count(*) from {_partition_rows(strategy, seed)}").fetchone()[0]
        reason = None if held else "no rows yet"
    return mode, reason, stats


def plan_selection(
    warehouse: Warehouse, strategy: str, seed: int, config: SelectionConfig, version: str
) -> tuple[str, list[str] | None]:
    """For a strategy that picks in Python: the mode, and the prompts to pick for (None: every prompt),
    planned as `select_in_warehouse` will write them."""
    with warehouse.connect() as con:
        con.execute("begin transaction")
        try:
            mode, reason, _ = _plan(con, strategy, seed, config, version)
            changed = [k for (k,) in con.execute("select key from _changed_keys").fetchall()]
        finally:
            con.execute("rollback")
    return mode, (changed if reason is None else None)


def select_in_warehouse(
    warehouse: Warehouse,
    strategy: str,
    seed: int,
    config: SelectionConfig,
    version: str,
    picks: pd.DataFrame | None = None,
    picked_for: list[str] | None = None,
    reference_version: str | None = None,
) -> tuple[Content, dict]:
    """Write one strategy and seed's rows in one transaction: selected by SQL over the warehouse (no pair
    passes through Python; `margin` and `ches` read the scores of `reference_version`), or, for a strategy
    that picks in Python, the `picks` (key columns) made for `plan_selection`'s prompts (`picked_for`;
    None: every prompt) joined back to the candidates. One pair per prompt (per-prompt mode) is
    recomputed only for the prompts whose candidates or similarities changed since this partition's last
    run at this `version` (code, config, reference); a global ranking or a new version recomputes every
    prompt. Returns the partition's content and summary (with `refresh`, its reason, and
    `prompts_recomputed`)."""
    entry = strategy_entry(strategy)
    with warehouse.connect() as con:
        if picks is not None:
            con.register("picks_frame", picks)
        if entry.needs == "reference_scores":
            con.execute(SCORES_DDL)
        con.execute("begin transaction")
        try:
            mode, reason, stats = _plan(con, strategy, seed, config, version)
            changed = "(select key from _changed_keys)"
            if picks is not None:
                keys = con.execute(f"select * from {changed}").fetchall()
                now = None if reason else sorted(k for (k,) in keys)
                if now != (sorted(picked_for) if picked_for is not None else None):
                    raise dg.Failure(f"the candidates changed while {strategy} picked: materialize it again")
            candidates, similarity = TRAIN_CANDIDATES, SIMILARITY
            only_changed = f" and prompt_id in {changed}" if reason is None else ""
            params: dict[str, str] = {}  # a data version reaches the SQL bound, never as text
            if reason is None:
                candidates, similarity = _changed_rows(con)
                candidates = f"(select * from {candidates} where prompt_id in {changed})"
                similarity = f"(select * from {similarity} where prompt_id in {changed})"
            if picks is not None:
                select = (
                    f"select c.* from {candidates} as c semi join picks_frame as k on k.prompt_id = "
                    "c.prompt_id and k.chosen_id = c.chosen_id and k.rejected_id = c.rejected_id"
                )
            else:
                if entry.needs == "reference_scores":
                    # the scores of the changed prompts alone in a refresh: a join against every stored
                    # score ran out of a 128MB memory_limit at 1M responses
                    candidates = (
                        f"(select c.*, s.ref_margin, s.ches from {candidates} as c left join (select * from "
                        f"{REFERENCE_SCORES} where reference_version = $reference_version{only_changed}) "
                        "as s using (prompt_id, chosen_id, rejected_id))"
                    )
                    params = {"reference_version": reference_version}
                ranked = mode == "global" and entry.order
                keep = n_keep(stats["pairs"], config.keep_fraction) if ranked else None
                select = selection_sql(strategy, mode, config, seed, candidates, similarity, keep)
            # The partition's digest from the rows removed and added, not from all of its rows
            step, rows = _step(strategy, seed), _partition_rows(strategy, seed)
            kept = table_digests.kept_partition_parts(con, step, rows) if reason is None else None
            touched = f"(select * from {rows} where prompt_id in {changed})"
            removed = table_digests.parts_of(con, touched) if kept else None
            con.execute(
                f"delete from {SELECTED_PAIRS.name} where strategy = ? and seed = ?{only_changed}",
                [strategy, seed],
            )
            con.execute(_insert_sql(strategy, seed, select), params)
            parts = table_digests.parts_of(con, touched if kept else rows)
            if kept:
                parts = tuple(k - r + a for k, r, a in zip(kept, removed, parts, strict=True))
            partition_digest = table_digests.keep_partition_parts(con, step, parts)
            recomputed = stats["prompts"]
            if reason is None:
                recomputed = con.execute(f"select count(*) from {changed}").fetchone()[0]
            table_digests.record_inputs(con, step, f"{version}/{mode}")
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
        content = content_of([(SELECTED_PAIRS, partition_digest, parts[0])])
        summary = selection_summary(con, _partition_rows(strategy, seed), stats)
    refresh = {
        "refresh": "incremental" if reason is None else "full",
        "refresh_reason": reason or "candidates or similarities changed",
        "prompts_recomputed": int(recomputed),
    }
    return content, {**summary, "mode": mode, **refresh}


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
    needs = None if cfg.from_requests else strategy_entry(strategy).needs
    code_version = step.context.assets_def.code_versions_by_key[step.context.asset_key]
    version = digest(code_version or "", repr(cfg))[:16]
    extra, picks, prompts = {}, None, None
    with warehouse.connect(read_only=True) as con:
        train_pairs = con.execute(
            "select count(*) from selection.pair_candidates where split = 'train'"
        ).fetchone()[0]
    if not train_pairs:
        raise dg.Failure(
            f"selection.pair_candidates has no train pairs: {no_pairs_reason(warehouse, 'train')}",
            allow_retries=False,
        )
    if needs == "reference_scores":
        reference_version = step.upstream.get("reference_policy")
        if reference_version is None:
            raise dg.Failure("margin and ches need a materialized reference_policy")
        extra["pairs_scored_now"] = score_pending_pairs(warehouse, reference_version, compute, step.log.info)
        extra["reference_version"] = reference_version
        version = digest(version, reference_version)[:16]
    elif needs == "embeddings":
        mode, prompts = plan_selection(warehouse, strategy, seed, cfg, version)
        picks = centroid_picks(warehouse, cfg, seed, mode, prompts, step.log.info)
    if cfg.from_requests:
        # The pairs chosen before their labels existed (annotation_requests), now directed by the labels.
        # Labels arriving change directions without changing the candidates' keys: always recomputed in full.
        candidates, _ = read_train_candidates(warehouse, with_embeddings=False)
        requested = requested_pairs(candidates, read_requested_pairs(warehouse, strategy))
        picks, prompts = requested[["prompt_id", "chosen_id", "rejected_id"]], None
        version = digest(version, "from_requests", uuid.uuid4().hex)[:16]
        extra["requested_pairs_directed"] = len(picks)
    content, summary = select_in_warehouse(
        warehouse,
        strategy,
        seed,
        cfg,
        version,
        picks,
        picked_for=prompts if picks is not None else None,
        reference_version=extra.get("reference_version"),
    )
    metadata = {
        **{k: v for k, v in summary.items() if v is not None},
        **extra,
        **content.metadata(),
        "dagster/row_count": content.rows,
    }
    return step.finish(content.version, metadata)
