"""Ingest domain: `raw_responses` from the configured source, with every input row accepted or rejected."""

import time
import uuid

import dagster as dg
import pyarrow as pa
from pydantic import Field

from real_assets.core.records import SourceBatch
from real_assets.core.sources import SourceSpec, check_source, iter_source
from real_assets.defs.common import WAREHOUSE_POOL, finish
from real_assets.defs.versions import WarehouseTable, content_version, table_metadata
from real_assets.resources import Tracking, Warehouse

RAW_TABLES = (
    WarehouseTable("raw.responses", ("response_id",)),
    WarehouseTable("raw.prompt_texts", ("prompt_id",)),
    WarehouseTable("raw.prompts", ("prompt_id",)),
    WarehouseTable("raw.comparisons", ("source_file", "row_number")),
    WarehouseTable("raw.rejects", ("ingestion_id", "source_file", "row_number", "field", "reason"), False),
    WarehouseTable("raw.ingestions", ("ingestion_id",), False),
)

# No primary keys on the raw tables: DuckDB keeps index keys in memory (they do not spill), which would
# bound an ingest by RAM. Uniqueness comes from the set-based merge below and is checked by asset checks.
_DDL = """
create table if not exists raw.responses (
    response_id varchar not null, prompt_id varchar not null, response varchar not null,
    score double not null, gold double, source varchar not null, source_file varchar not null,
    row_number bigint not null
);
create table if not exists raw.prompt_texts (
    prompt_id varchar not null, prompt varchar not null, split varchar not null, source varchar not null
);
create table if not exists raw.comparisons (
    prompt_id varchar not null, chosen_id varchar not null, rejected_id varchar not null,
    source_file varchar not null, row_number bigint not null
);
create table if not exists raw.rejects (
    source varchar not null, source_file varchar not null, row_number bigint not null,
    field varchar not null, reason varchar not null, excerpt varchar, ingestion_id varchar not null
);
create table if not exists raw.ingestions (
    ingestion_id varchar not null, source varchar, source_file varchar, input_rows bigint,
    accepted_rows bigint, rejected_rows bigint, new_responses bigint, new_rejects bigint,
    ingested_at timestamp default current_timestamp
);
"""

# Batches are appended to staging tables, then merged once: only rows whose key is not there yet are
# added (first occurrence in the file wins), so re-ingesting a file adds nothing.
_STAGING = """
create or replace temp table staged_responses (
    response_id varchar, prompt_id varchar, response varchar, score double, gold double, source varchar,
    source_file varchar, row_number bigint, prompt varchar, split varchar, labelled_pair boolean
);
create or replace temp table staged_rejects as select * from raw.rejects limit 0;
"""
_MERGE_RESPONSES = """
insert into raw.responses
select distinct on (response_id)
    response_id, prompt_id, response, score, gold, source, source_file, row_number
from staged_responses as s
where not exists (select 1 from raw.responses as r where r.response_id = s.response_id)
order by response_id, row_number
"""
_MERGE_PROMPTS = """
insert into raw.prompt_texts
select distinct on (prompt_id) prompt_id, prompt, split, source
from staged_responses as s
where not exists (select 1 from raw.prompt_texts as p where p.prompt_id = s.prompt_id)
order by prompt_id, row_number
"""
# A chosen/rejected label with no scores compares one pair only (HH-RLHF): kept as a comparison, so that
# pair_candidates forms no other pair for its prompt.
_MERGE_COMPARISONS = """
insert into raw.comparisons
select prompt_id, arg_max(response_id, score), arg_min(response_id, score), source_file, row_number
from staged_responses as s
where labelled_pair
group by prompt_id, source_file, row_number
having count(*) = 2 and not exists (
    select 1 from raw.comparisons as c where c.source_file = s.source_file and c.row_number = s.row_number
)
"""
_MERGE_REJECTS = """
insert into raw.rejects
select distinct on (source_file, row_number, field, reason) *
from staged_rejects as s
where not exists (
    select 1 from raw.rejects as r
    where r.source_file = s.source_file and r.row_number = s.row_number and r.field = s.field
      and r.reason = s.reason
)
order by source_file, row_number, field, reason
"""

# `raw.prompts` is derived: one row per prompt with its response count and whether it can form a pair.
_PROMPTS = """
create or replace table raw.prompts as
select t.prompt_id, t.prompt, t.split, t.source,
       count(r.response_id) as n_responses, count(r.response_id) >= 2 as pairable
from raw.prompt_texts as t
left join raw.responses as r using (prompt_id)
group by all
"""


class IngestConfig(dg.Config):
    """Which source to read. `path` is a local file or a hub dataset id; `column_map` is for `table`."""

    source: str = "synthetic"
    path: str | None = None
    revision: str | None = None
    split: str = "train"
    limit: int | None = None
    seed: int = 0
    n_prompts: int = 360
    test_fraction: float = 0.2
    max_chars: int = 8000
    column_map: dict[str, str] = Field(default_factory=dict)

    def spec(self) -> SourceSpec:
        """The pure-logic source spec (same field names)."""
        return SourceSpec(**{**self.model_dump(), "column_map": dict(self.column_map) or None})


def _responses_table(batch: SourceBatch) -> pa.Table:
    rs = batch.responses
    return pa.table(
        {
            "response_id": [r.response_id for r in rs],
            "prompt_id": [r.prompt_id for r in rs],
            "prompt": [r.prompt for r in rs],
            "response": [r.response for r in rs],
            "score": pa.array([r.score for r in rs], pa.float64()),
            "gold": pa.array([r.gold for r in rs], pa.float64()),
            "split": [r.split for r in rs],
            "source": [r.source for r in rs],
            "source_file": [r.source_file for r in rs],
            "row_number": pa.array([r.row_number for r in rs], pa.int64()),
            "labelled_pair": pa.array([r.labelled_pair for r in rs], pa.bool_()),
        }
    )


def _rejects_table(batch: SourceBatch, ingestion_id: str) -> pa.Table:
    rj = batch.rejects
    return pa.table(
        {
            "source": [r.source for r in rj],
            "source_file": [r.source_file for r in rj],
            "row_number": pa.array([r.row_number for r in rj], pa.int64()),
            "field": [r.field for r in rj],
            "reason": [r.reason for r in rj],
            "excerpt": [r.excerpt for r in rj],
            "ingestion_id": [ingestion_id] * len(rj),
        }
    )


def ingest(warehouse: Warehouse, spec: SourceSpec) -> dict:
    """Stream a source into the raw layer in one transaction: a source that fails mid-way changes nothing.
    Returns the counts; responses and rejects already present are left as they are (idempotent)."""
    check_source(spec)
    ingestion_id = uuid.uuid4().hex
    counts = {"input_rows": 0, "accepted_rows": 0, "rejected_rows": 0, "new_responses": 0, "new_rejects": 0}
    reasons: dict[str, int] = {}
    started = time.perf_counter()
    with warehouse.connect() as con:
        con.execute(_DDL)
        con.execute("begin transaction")
        con.execute(_STAGING)
        try:
            for batch in iter_source(spec):
                counts["input_rows"] += batch.input_rows
                counts["accepted_rows"] += batch.accepted_rows
                counts["rejected_rows"] += len(batch.rejects)
                for r in batch.rejects:
                    reasons[r.reason] = reasons.get(r.reason, 0) + 1
                staged = _responses_table(batch)  # noqa: F841 - DuckDB reads local Arrow tables by name
                con.execute(
                    "insert into staged_responses select response_id, prompt_id, response, score, gold, "
                    "source, source_file, row_number, prompt, split, labelled_pair from staged"
                )
                rejected = _rejects_table(batch, ingestion_id)  # noqa: F841 - read by DuckDB by name
                con.execute("insert into staged_rejects select * from rejected")
            if counts["input_rows"] != counts["accepted_rows"] + counts["rejected_rows"]:
                raise RuntimeError(f"row accounting broke: {counts}")
            counts["new_responses"] = con.execute(_MERGE_RESPONSES).fetchone()[0]
            con.execute(_MERGE_PROMPTS)
            con.execute(_MERGE_COMPARISONS)
            counts["new_rejects"] = con.execute(_MERGE_REJECTS).fetchone()[0]
            con.execute("drop table staged_responses; drop table staged_rejects")
            con.execute(_PROMPTS)
            con.execute(
                "insert into raw.ingestions (ingestion_id, source, source_file, input_rows, accepted_rows, "
                "rejected_rows, new_responses, new_rejects) values (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    ingestion_id,
                    spec.source,
                    spec.path or f"{spec.source}:seed={spec.seed}",
                    counts["input_rows"],
                    counts["accepted_rows"],
                    counts["rejected_rows"],
                    counts["new_responses"],
                    counts["new_rejects"],
                ],
            )
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
        stats = con.execute("""
            select count(*), count(distinct prompt_id),
                   (select count(*) from raw.prompts where not pairable),
                   (select avg((n_responses >= 3)::int) from raw.prompts where pairable)
            from raw.responses""").fetchone()
        content = content_version(con, RAW_TABLES)
    seconds = time.perf_counter() - started
    return {
        **counts,
        "reasons": reasons,
        "ingestion_id": ingestion_id,
        "responses": stats[0],
        "prompts": stats[1],
        "prompts_not_pairable": stats[2],
        "share_prompts_3plus_responses": float(stats[3] or 0.0),
        "rows_per_second": counts["input_rows"] / seconds if seconds else 0.0,
        "data_version": content.version,
        "table_digests": content.digests,
    }


@dg.asset(
    group_name="ingest",
    kinds={"duckdb", "python"},
    pool=WAREHOUSE_POOL,
    metadata=table_metadata(*RAW_TABLES),
    description="Prompts and candidate responses with label scores (raw.responses, raw.prompts); "
    "rows that fail validation go to raw.rejects with their reason.",
)
def raw_responses(
    context: dg.AssetExecutionContext, config: IngestConfig, warehouse: Warehouse, tracking: Tracking
) -> dg.MaterializeResult:
    with tracking.step(context) as step:
        step.log_params(config.model_dump(exclude={"column_map"}) | {"column_map": dict(config.column_map)})
        result = ingest(warehouse, config.spec())
        reasons = result.pop("reasons")
        step.log_metrics({f"rejects/{reason}": n for reason, n in reasons.items()})
        version = result.pop("data_version")
        digests = result.pop("table_digests")
        metadata = {
            **result,
            "table_digests": dg.MetadataValue.json(digests),
            "rejects_by_reason": dg.MetadataValue.json(reasons),
            "dagster/row_count": result["responses"],
        }
        return finish(context, tracking, step, version, metadata)


UNIQUE_IDS = "unique_response_and_prompt_ids"
ROWS_ACCOUNTED = "every_input_row_accepted_or_rejected"


@dg.asset_check(
    asset=raw_responses,
    name=UNIQUE_IDS,
    blocking=True,
    description="one row per response id and per prompt id (the raw tables have no index that enforces it)",
)
def unique_ids(warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.connect(read_only=True) as con:
        duplicates = con.execute("""
            select (select count(*) - count(distinct response_id) from raw.responses)
                 + (select count(*) - count(distinct prompt_id) from raw.prompt_texts)""").fetchone()[0]
    return dg.AssetCheckResult(passed=duplicates == 0, metadata={"duplicate_ids": int(duplicates)})


@dg.asset_check(
    asset=raw_responses,
    name=ROWS_ACCOUNTED,
    blocking=True,
    description="for every ingestion, input rows = accepted + rejected",
)
def rows_accounted(warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.connect(read_only=True) as con:
        broken = con.execute(
            "select count(*) from raw.ingestions where input_rows <> accepted_rows + rejected_rows"
        ).fetchone()[0]
    return dg.AssetCheckResult(passed=broken == 0, metadata={"unbalanced_ingestions": int(broken)})


ingest_checks = [unique_ids, rows_accounted]
