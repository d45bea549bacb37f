"""One asset per file in `dbt_like_sql/`: upstream assets and column lineage come from the parsed SQL."""

from collections.abc import Iterable

import dagster as dg

from real_assets.core.hashing import code_digest, digest
from real_assets.core.sql_models import SqlModel, column_lineage, load_sql_models, run_sql_model
from real_assets.defs.common import Step, step_asset
from real_assets.defs.conditions import EAGER
from real_assets.defs.versions import Content, WarehouseTable, table_metadata, tables_of
from real_assets.resources import Warehouse


def table_owners(assets: Iterable[dg.AssetsDefinition], models: Iterable[SqlModel]) -> dict[str, dg.AssetKey]:
    """Which asset writes each warehouse table: from the tables the assets declare, and the SQL models."""
    owners = {
        table.name: key
        for asset in assets
        for key, metadata in asset.metadata_by_key.items()
        for table in tables_of(metadata)
    }
    return owners | {m.table: dg.AssetKey(m.name) for m in models}


def _lineage_metadata(model: SqlModel, warehouse: Warehouse, owners: dict[str, dg.AssetKey]) -> dict:
    lineage = column_lineage(model, warehouse.lineage_schema())
    deps = {
        column: [dg.TableColumnDep(asset_key=owners[t], column_name=c) for t, c in sources]
        for column, sources in lineage.items()
    }
    rows = ["| column | computed from |", "| --- | --- |"] + [
        f"| `{column}` | {', '.join(f'`{t}.{c}`' for t, c in sources) or '(constant)'} |"
        for column, sources in lineage.items()
    ]
    return {
        "dagster/column_lineage": dg.TableColumnLineage(deps_by_column=deps),
        "column_lineage": dg.MetadataValue.md("\n".join(rows)),
    }


class SqlModelConfig(dg.Config):
    """`full_refresh`: rebuild the whole table even where only some prompts changed upstream."""

    full_refresh: bool = False


def build_sql_asset(model: SqlModel, owners: dict[str, dg.AssetKey]) -> dg.AssetsDefinition:
    """An asset that builds `<schema>.<name>` from its `<select>` with `core.sql_models.run_sql_model`:
    only the prompts whose upstream rows changed when the model declares an incremental key, else
    `create or replace table`. Its code version is the digest of the SQL and of the code that runs it; a
    new code version rebuilds in full."""
    unknown = sorted(set(model.upstream_tables) - set(owners))
    if unknown:
        raise ValueError(f"{model.path}: reads {', '.join(unknown)}, which no asset writes")
    table = WarehouseTable(model.table, model.keys)
    code_version = digest(model.sql, code_digest(build_sql_asset, "real_assets"))[:12]

    @step_asset(
        config=SqlModelConfig,
        name=model.name,
        group_name=model.schema,
        deps=sorted({owners[t] for t in model.upstream_tables}, key=lambda k: k.to_user_string()),
        kinds={"duckdb", "sql"},
        code_version=code_version,
        automation_condition=EAGER,
        description=f"`{model.table}`, built by `dbt_like_sql/{model.schema}/{model.path.name}`.",
        metadata={"sql": dg.MetadataValue.md(f"```sql\n{model.sql.strip()}\n```"), **table_metadata(table)},
    )
    def _sql_asset(step: Step, warehouse: Warehouse) -> dg.MaterializeResult:
        step.log_params({"sql_file": f"dbt_like_sql/{model.schema}/{model.path.name}"})
        with warehouse.connect() as con:
            run = run_sql_model(con, model, code_version, step.config.full_refresh)
        content = Content(digest(run.digest)[:16], run.rows, {table.name: run.digest})
        step.log.info(f"{model.table}: {run.mode} ({run.reason}), {run.recomputed_keys} prompts recomputed")
        metadata = {
            "rows": content.rows,
            "dagster/row_count": content.rows,
            "refresh": run.mode,
            "refresh_reason": run.reason,
            "rows_removed": run.rows_removed,
            "rows_added": run.rows_added,
            **({"prompts_recomputed": run.recomputed_keys} if run.recomputed_keys is not None else {}),
            **content.metadata(),
            **_lineage_metadata(model, warehouse, owners),
        }
        return step.finish(content.version, metadata)

    return _sql_asset


def sql_definitions(writers: Iterable[dg.AssetsDefinition]) -> dg.Definitions:
    """The SQL assets and their checks; `writers` are the other assets, whose tables the SQL reads."""
    models = load_sql_models()
    owners = table_owners(writers, models)
    checks = [_build_check(asset, name, desc, sql) for (asset, name), (desc, sql) in _CHECKS.items()]
    return dg.Definitions(assets=[build_sql_asset(m, owners) for m in models], asset_checks=checks)


# Asset checks beside the SQL assets they check. Each query counts the offending rows.
SIMILARITY_RANGE = "similarity_within_bounds"
NO_SELF_PAIRS = "no_self_pairs"
ONE_ROW_PER_PAIR = "one_row_per_unordered_pair"
NO_ORPHAN_IDS = "no_orphan_ids"
CANDIDATES_DIRECTED = "chosen_scores_above_rejected"

_CHECKS: dict[tuple[str, str], tuple[str, str]] = {
    ("response_similarity", SIMILARITY_RANGE): (
        "cosine within [-1, 1] and not null",
        "select count(*) from features.response_similarity "
        "where cosine is null or cosine not between -1 and 1",
    ),
    ("response_similarity", NO_SELF_PAIRS): (
        "no response paired with itself",
        "select count(*) from features.response_similarity where response_id_a = response_id_b",
    ),
    ("response_similarity", ONE_ROW_PER_PAIR): (
        "exactly one row per unordered pair of responses to a prompt",
        """select (select count(*) from features.response_similarity where response_id_a >= response_id_b)
           + (select count(*) - count(distinct (response_id_a, response_id_b))
              from features.response_similarity)
           + abs((select count(*) from features.response_similarity)
                 - (select coalesce(sum(n * (n - 1) / 2), 0) from
                    (select count(*) as n from features.response_embeddings group by prompt_id)))""",
    ),
    ("response_similarity", NO_ORPHAN_IDS): (
        "every response id and prompt id exists in raw.responses",
        """select count(*) from features.response_similarity as s
           left join raw.responses as a on a.response_id = s.response_id_a and a.prompt_id = s.prompt_id
           left join raw.responses as b on b.response_id = s.response_id_b and b.prompt_id = s.prompt_id
           where a.response_id is null or b.response_id is null""",
    ),
    ("pair_candidates", NO_ORPHAN_IDS): (
        "every chosen and rejected id exists in raw.responses",
        """select count(*) from selection.pair_candidates as c
           left join raw.responses as a on a.response_id = c.chosen_id
           left join raw.responses as b on b.response_id = c.rejected_id
           where a.response_id is null or b.response_id is null""",
    ),
    ("pair_candidates", CANDIDATES_DIRECTED): (
        "chosen has the higher label score in every pair",
        "select count(*) from selection.pair_candidates where chosen_score <= rejected_score",
    ),
}


def _build_check(asset_name: str, check_name: str, description: str, sql: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=dg.AssetKey(asset_name), name=check_name, description=description, blocking=True)
    def _check(warehouse: Warehouse) -> dg.AssetCheckResult:
        with warehouse.connect(read_only=True) as con:
            bad = con.execute(sql).fetchone()[0]
        return dg.AssetCheckResult(passed=bad == 0, metadata={"offending_rows": int(bad)})

    return _check
