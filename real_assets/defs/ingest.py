"""Ingest domain: `raw_responses` from the configured source, with every input row accepted or rejected.

Every ingestion keeps its own rejects and comparisons (keyed by ingestion_id), so a changed file
re-ingested at the same path loses nothing; responses and prompt texts are keyed by content (a response
already stored is not stored twice).
"""

import time
import uuid
from collections.abc import Callable

import dagster as dg

from real_assets.core import table_digests
from real_assets.core.progress import Progress
from real_assets.core.records import SourceError
from real_assets.core.sources import SourceSpec, cap_responses, check_source, stage_source
from real_assets.core.sources import sqlchecks as sq
from real_assets.core.sources.dedup import FIRST_PER_RESPONSE_ID, later_occurrences
from real_assets.defs.common import RangeChecked, Step, step_asset
from real_assets.defs.versions import (
    WarehouseTable,
    digest_metadata,
    table_metadata,
    tracked_content_version,
)
from real_assets.resources import Warehouse

RAW_RESPONSES_JOB = "refresh_raw_responses"
RESPONSES = WarehouseTable(  # a null score: a candidate nobody has labelled yet (the `generated` source)
    "raw.responses",
    ("response_id",),
    columns=(
        ("response_id", "varchar not null"),
        ("prompt_id", "varchar not null"),
        ("response", "varchar not null"),
        ("score", "double"),
        ("gold", "double"),
        ("source", "varchar not null"),
        ("source_file", "varchar not null"),
        ("row_number", "bigint not null"),
    ),
)
PROMPT_TEXTS = WarehouseTable(
    "raw.prompt_texts",
    ("prompt_id",),
    columns=(
        ("prompt_id", "varchar not null"),
        ("prompt", "varchar not null"),
        ("split", "varchar not null"),
        ("source", "varchar not null"),
    ),
)
PROMPTS = WarehouseTable(
    "raw.prompts",
    ("prompt_id",),
    columns=(
        ("prompt_id", "varchar"),
        ("prompt", "varchar"),
        ("split", "varchar"),
        ("source", "varchar"),
        ("n_responses", "bigint"),
        ("pairable", "boolean"),
    ),
)
COMPARISON_PAIRS = WarehouseTable("raw.comparison_pairs", ("prompt_id", "chosen_id", "rejected_id"))
"""A view: the distinct compared pairs of `raw.comparisons`."""
COMPARISONS = WarehouseTable(
    "raw.comparisons",
    ("ingestion_id", "row_number"),
    False,
    columns=(
        ("prompt_id", "varchar not null"),
        ("chosen_id", "varchar not null"),
        ("rejected_id", "varchar not null"),
        ("source_file", "varchar not null"),
        ("row_number", "bigint not null"),
        ("ingestion_id", "varchar"),
    ),
)
REJECTS = WarehouseTable(
    "raw.rejects",
    ("ingestion_id", "source_file", "row_number", "field", "reason"),
    False,
    columns=(
        ("source", "varchar not null"),
        ("source_file", "varchar not null"),
        ("row_number", "bigint not null"),
        ("field", "varchar not null"),
        ("reason", "varchar not null"),
        ("excerpt", "varchar"),
        ("ingestion_id", "varchar not null"),
    ),
)
INGESTIONS = WarehouseTable(
    "raw.ingestions",
    ("ingestion_id",),
    False,
    columns=(
        ("ingestion_id", "varchar"),
        ("source", "varchar"),
        ("source_file", "varchar"),
        ("input_rows", "bigint"),
        ("accepted_rows", "bigint"),
        ("rejected_rows", "bigint"),
        ("new_responses", "bigint"),
        ("new_rejects", "bigint"),
        ("ingested_at", "timestamp default current_timestamp"),
        ("comparisons", "bigint"),
        ("responses_over_cap", "bigint"),
    ),
)
RAW_TABLES = (RESPONSES, PROMPT_TEXTS, PROMPTS, COMPARISON_PAIRS, COMPARISONS, REJECTS, INGESTIONS)
"""The data version covers the content (responses, prompts, the distinct comparisons); the per-ingestion
records (comparison rows, rejects, ingestions) are audited by their digests in the metadata."""

# No primary keys on the raw tables: DuckDB keeps index keys in memory (they do not spill), which would
# bound an ingest by RAM, and DuckLake has no constraints. Uniqueness comes from the set-based merge
# below and is checked by asset checks.
_DDL = ";\n".join(
    [
        *(table.ddl() for table in (RESPONSES, PROMPT_TEXTS, COMPARISONS, REJECTS, INGESTIONS, PROMPTS)),
        "create or replace view raw.comparison_pairs as "
        "select distinct prompt_id, chosen_id, rejected_id from raw.comparisons",
    ]
)

# First occurrence in file order wins (row, then item): the later ones are found first (staging's window
# over ids and positions), then left out by an anti join.
_LATER_OCCURRENCES = "create or replace temp table _later_occurrences as " + later_occurrences(
    "staged_responses", FIRST_PER_RESPONSE_ID
)
# New rows are staged in temp tables of the raw tables' own types (so that their digest parts are the
# ones the stored rows will have), then appended.
_NEW_RESPONSES = """
create or replace temp table _new_responses as select * from raw.responses limit 0;
insert into _new_responses
select response_id, prompt_id, response, score, gold, ? as source, ? as source_file, row_number
from staged_responses as s
anti join _later_occurrences as l on l.row_number = s.row_number and l.item = s.item
anti join raw.responses as r on r.response_id = s.response_id
"""
# Prompts are a quarter of the responses or fewer, so here a grouped arg_min fits the memory limit (and
# costs a fifth of the window).
_NEW_PROMPT_TEXTS = """
create or replace temp table _new_prompt_texts as select * from raw.prompt_texts limit 0;
insert into _new_prompt_texts
select prompt_id, arg_min(prompt, (row_number, item)), arg_min(split, (row_number, item)), ? as source
from staged_responses as s
where not exists (select 1 from raw.prompt_texts as p where p.prompt_id = s.prompt_id)
group by prompt_id
"""
# A chosen/rejected label with no scores compares one pair only (HH-RLHF): kept as a comparison, so that
# pair_candidates forms no other pair for its prompt. Every ingestion stores its own.
_INSERT_COMPARISONS = """
insert into raw.comparisons
select prompt_id, arg_max(response_id, score), arg_min(response_id, score), ? as source_file, row_number,
       ? as ingestion_id
from staged_responses
where labelled_pair
group by prompt_id, row_number
having count(*) = 2
"""
_INSERT_REJECTS = """
insert into raw.rejects
select ? as source, ? as source_file, row_number, field, reason, excerpt, ? as ingestion_id
from staged_rejects order by row_number
"""
# `raw.prompts` is derived: one row per prompt with its response count and whether it can form a pair. Only
# the prompts of this ingestion are recomputed.
_PROMPT_ROWS = """
select t.prompt_id, t.prompt, t.split, t.source,
       coalesce(n.n, 0) as n_responses, coalesce(n.n, 0) >= 2 as pairable
from raw.prompt_texts as t
left join (select prompt_id, count(*) as n from raw.responses
           where prompt_id in (select prompt_id from _touched_prompts) group by prompt_id) as n
    using (prompt_id)
where t.prompt_id in (select prompt_id from _touched_prompts)
"""
PROMPT_KEY = "prompt_id"
"""The raw tables' digests are tracked per prompt (`core.table_digests`), so the SQL models downstream find
the prompts that changed without reading the tables."""


class IngestConfig(dg.Config, SourceSpec, RangeChecked):
    """Which source to read: the fields and defaults of `core.sources.SourceSpec`, nothing else; its numbers
    checked against `SETTING_RANGES` (stricter than SourceSpec: `limit` 0 is refused, not an empty read)."""


class TamperedWarehouse(RuntimeError):
    """Stored raw rows whose ids do not match their text: the ingest will not carry them forward."""


def _check_stored_prompts(con) -> None:
    """Every stored prompt text must hash to its id; raw.prompts is rebuilt from them."""
    pid = sq.prompt_id_sql(sq.normalised("prompt"))
    bad = con.execute(
        f"select count(*), min(prompt_id) from raw.prompt_texts where prompt_id <> {pid}"
    ).fetchone()
    if bad[0]:
        raise TamperedWarehouse(
            f"raw.prompt_texts holds {bad[0]} prompt text(s) that do not hash to their prompt_id "
            f"(e.g. {bad[1]}): it was changed outside the ingest. Restore the warehouse or re-ingest "
            "into a fresh one; `real-assets audit` names every mismatch."
        )


def _key_of(table: WarehouseTable) -> str | None:
    return None if table.name in ("raw.rejects", "raw.ingestions") else PROMPT_KEY


def _append(con, table: str, new_rows: str) -> int:
    """Append the staged rows to `table` and to its tracked digest; returns how many."""
    con.execute(f"insert into {table} select * from {new_rows}")
    table_digests.apply_delta(con, table, PROMPT_KEY, new_rows, 1)
    count = con.execute(f"select count(*) from {new_rows}").fetchone()[0]
    con.execute(f"drop table {new_rows}")
    return count


def _refresh_prompts(con) -> None:
    """Recompute the raw.prompts rows of the prompts this ingestion touched, and their tracked digest."""
    old = "(select * from raw.prompts where prompt_id in (select prompt_id from _touched_prompts))"
    table_digests.apply_delta(con, "raw.prompts", PROMPT_KEY, old, -1)
    con.execute("delete from raw.prompts where prompt_id in (select prompt_id from _touched_prompts)")
    con.execute("create or replace temp table _new_prompts as select * from raw.prompts limit 0")
    con.execute(f"insert into _new_prompts {_PROMPT_ROWS}")
    _append(con, "raw.prompts", "_new_prompts")
    con.execute("drop table _touched_prompts")


def ingest(warehouse: Warehouse, spec: SourceSpec, report: Callable[[str], None] | None = None) -> dict:
    """Read a source into the raw layer in one transaction: a source that fails mid-way changes nothing
    (not even the tables of a first ingestion). Returns the counts; responses and prompt texts already
    present are left as they are (idempotent); rejects and comparisons are stored per ingestion."""
    plan = check_source(spec)
    ingestion_id = uuid.uuid4().hex
    started = time.perf_counter()
    progress = Progress("ingest", total=spec.limit, unit="rows", report=report) if report else None
    with warehouse.connect() as con:
        con.execute("set enable_progress_bar = false")
        # Staging writes only this connection's temp tables; the raw tables change in one transaction.
        staged = stage_source(con, plan, progress.update if progress else None)
        if staged.input_rows != staged.accepted_rows + staged.rejected_rows:
            raise RuntimeError(f"row accounting broke: {staged}")
        con.execute("begin transaction")
        try:
            con.execute(_DDL)
            tracked = {t.name: _key_of(t) for t in RAW_TABLES if t.name != "raw.comparison_pairs"}
            for table, key in tracked.items():
                table_digests.ensure_tracked(con, table, key)
            _check_stored_prompts(con)
            over_cap = cap_responses(con, spec.max_responses_per_prompt, stored="raw.responses")
            source_file = plan.source_file
            con.execute(_LATER_OCCURRENCES)
            con.execute(_NEW_RESPONSES, [spec.source, source_file])
            con.execute(_NEW_PROMPT_TEXTS, [spec.source])
            new_responses = _append(con, "raw.responses", "_new_responses")
            _append(con, "raw.prompt_texts", "_new_prompt_texts")
            comparisons = con.execute(_INSERT_COMPARISONS, [source_file, ingestion_id]).fetchone()[0]
            new_rejects = con.execute(_INSERT_REJECTS, [spec.source, source_file, ingestion_id]).fetchone()[0]
            con.execute(
                "create or replace temp table _touched_prompts as "
                "select distinct prompt_id from staged_responses"
            )
            con.execute(
                "drop table staged_responses; drop table staged_rejects; drop table staged_rows; "
                "drop table _later_occurrences"
            )
            _refresh_prompts(con)
            con.execute(
                "insert into raw.ingestions (ingestion_id, source, source_file, input_rows, accepted_rows, "
                "rejected_rows, new_responses, new_rejects, comparisons, responses_over_cap) "
                "values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    ingestion_id,
                    spec.source,
                    source_file,
                    staged.input_rows,
                    staged.accepted_rows,
                    staged.rejected_rows,
                    new_responses,
                    new_rejects,
                    comparisons,
                    over_cap,
                ],
            )
            for table in ("raw.comparisons", "raw.rejects", "raw.ingestions"):
                rows = f"(select * from {table} where ingestion_id = '{ingestion_id}')"
                table_digests.apply_delta(con, table, tracked[table], rows, 1)
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
        stats = con.execute("""
            select coalesce(sum(n_responses), 0), count(*) filter (where n_responses > 0),
                   count(*) filter (where not pairable), avg((n_responses >= 3)::int) filter (where pairable)
            from raw.prompts""").fetchone()
        content = tracked_content_version(con, RAW_TABLES)
    seconds = time.perf_counter() - started
    return {
        "input_rows": staged.input_rows,
        "accepted_rows": staged.accepted_rows,
        "rejected_rows": staged.rejected_rows,
        "new_responses": new_responses,
        "new_rejects": new_rejects,
        "comparisons": comparisons,
        "responses_over_cap": over_cap,
        "max_responses_per_prompt": spec.max_responses_per_prompt,
        "reasons": staged.reasons,
        "ingestion_id": ingestion_id,
        "responses": stats[0],
        "prompts": stats[1],
        "prompts_not_pairable": stats[2],
        "share_prompts_3plus_responses": float(stats[3] or 0.0),
        "rows_per_second": staged.input_rows / seconds if seconds else 0.0,
        "data_version": content.version,
        "table_digests": content.digests,
    }


@step_asset(
    config=IngestConfig,
    kinds={"duckdb", "python"},
    metadata=table_metadata(*RAW_TABLES),
)
def raw_responses(step: Step, warehouse: Warehouse) -> dg.MaterializeResult:
    """Prompts and candidate responses with label scores (raw.responses, raw.prompts); rows that fail
    validation go to raw.rejects with their reason."""
    config: IngestConfig = step.config
    try:
        result = ingest(warehouse, config, report=step.log.info)
    except (SourceError, TamperedWarehouse) as e:
        # The message names the file (and row); a stack trace would only repeat it.
        raise dg.Failure(description=str(e), allow_retries=False) from None
    reasons = result.pop("reasons")
    step.log_metrics({f"rejects/{reason}": n for reason, n in reasons.items()})
    if result["responses_over_cap"]:
        step.log.warning(
            f"{result['responses_over_cap']} response(s) dropped: over max_responses_per_prompt="
            f"{config.max_responses_per_prompt} for their prompt (kept the first in file order)"
        )
    version = result.pop("data_version")
    digests = result.pop("table_digests")
    metadata = {
        **result,
        **digest_metadata(digests),
        "rejects_by_reason": dg.MetadataValue.json(reasons),
        "dagster/row_count": result["responses"],
    }
    return step.finish(version, metadata)


UNIQUE_IDS = "unique_response_and_prompt_ids"
ROWS_ACCOUNTED = "every_input_row_accepted_or_rejected"


@dg.asset_check(
    asset=raw_responses,
    name=UNIQUE_IDS,
    blocking=True,
)
def unique_ids(warehouse: Warehouse) -> dg.AssetCheckResult:
    """one row per response id and per prompt id (the raw tables have no index that enforces it)"""
    with warehouse.connect(read_only=True) as con:
        duplicates = con.execute("""
            select (select count(*) - count(distinct response_id) from raw.responses)
                 + (select count(*) - count(distinct prompt_id) from raw.prompt_texts)""").fetchone()[0]
    return dg.AssetCheckResult(passed=duplicates == 0, metadata={"duplicate_ids": int(duplicates)})


@dg.asset_check(
    asset=raw_responses,
    name=ROWS_ACCOUNTED,
    blocking=True,
)
def rows_accounted(warehouse: Warehouse) -> dg.AssetCheckResult:
    """for every ingestion, input rows = accepted + rejected, and the rejects and comparisons it reported
    are the ones stored under its ingestion_id"""
    with warehouse.connect(read_only=True) as con:
        broken = con.execute("""
            select count(*) from raw.ingestions as i
            where i.input_rows <> i.accepted_rows + i.rejected_rows
               or i.rejected_rows
                  <> (select count(*) from raw.rejects as r where r.ingestion_id = i.ingestion_id)
               or coalesce(i.comparisons, 0)
                  <> (select count(*) from raw.comparisons as c where c.ingestion_id = i.ingestion_id)
            """).fetchone()[0]
    return dg.AssetCheckResult(passed=broken == 0, metadata={"unbalanced_ingestions": int(broken)})


ingest_checks = [unique_ids, rows_accounted]
