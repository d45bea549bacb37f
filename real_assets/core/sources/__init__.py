"""Preference-data sources: read, validate and stage rows in bounded memory, every input row accepted
or rejected with a reason.

Sources live one per module in `catalog/` (the registry finds them): `synthetic`, `hh_rlhf`, `shp2`,
`ultrafeedback`, `table`. A file source reads a local .jsonl / .jsonl.gz / .ndjson / .csv / .csv.gz /
.parquet file, a local dataset folder or a hub dataset id (`owner/name`, through `datasets` streaming).

`stage_source` does the work in DuckDB (checks as column expressions, ids, duplicate rows);
`iter_source` gives the same result as batches of Python records, for tests and small callers.
"""

from __future__ import annotations

from collections.abc import Iterator

import duckdb

from real_assets.core.records import RejectRecord, ResponseRecord, SourceBatch, SourceError
from real_assets.core.sources.dedup import cap_responses
from real_assets.core.sources.reasons import REASONS, ROW_FIELD
from real_assets.core.sources.registry import file_source_names, get_source, source_names
from real_assets.core.sources.spec import DEFAULT_MAX_RESPONSES_PER_PROMPT, SourceSpec
from real_assets.core.sources.staging import (
    EXCERPT_CHARS,
    Plan,
    StageCounts,
    plan_source,
    stage_source,
)

SOURCE_NAMES = source_names()
FILE_SOURCE_NAMES = file_source_names()

__all__ = [
    "DEFAULT_MAX_RESPONSES_PER_PROMPT",
    "EXCERPT_CHARS",
    "FILE_SOURCE_NAMES",
    "REASONS",
    "ROW_FIELD",
    "SOURCE_NAMES",
    "Plan",
    "SourceError",
    "SourceSpec",
    "StageCounts",
    "cap_responses",
    "check_source",
    "get_source",
    "iter_source",
    "plan_source",
    "stage_source",
]


def check_source(spec: SourceSpec) -> Plan:
    """Raise SourceError (naming the file) if the source cannot be read: unknown source name, missing,
    unreadable or unsupported file, wrong schema (required columns absent in the header, parquet schema
    or the first rows), bad column_map or bad spec values. Reads only the first rows."""
    return plan_source(spec)


def iter_source(spec: SourceSpec, batch_size: int = 50_000) -> Iterator[SourceBatch]:
    """The staged source as batches of at most `batch_size` input rows (and about as many responses), in
    file order. Every input row is counted once: accepted (one or more ResponseRecords, at most
    `max_responses_per_prompt` per prompt) or rejected (exactly one RejectRecord). Blank lines are not
    input rows. Checks the source before yielding anything."""
    if batch_size <= 0:
        raise SourceError(f"batch_size must be > 0, got {batch_size}")
    yield from _batches(plan_source(spec), batch_size)


def _batches(plan: Plan, batch_size: int) -> Iterator[SourceBatch]:
    spec, source_file = plan.spec, plan.source_file
    with duckdb.connect() as con:
        con.execute("set enable_progress_bar = false")
        stage_source(con, plan)
        cap_responses(con, spec.max_responses_per_prompt)
        rows = con.execute("""
            select row_number, null as field, null as reason, null as excerpt from staged_rows
            union all select row_number, field, reason, excerpt from staged_rejects
            order by row_number""").fetchall()
        responses = con.execute("""
            select row_number, prompt_id, response_id, prompt, response, score, gold, split, labelled_pair
            from staged_responses order by row_number, item""").fetchall()
    batch, i = SourceBatch(), 0
    for row_number, field, reason, excerpt in rows:
        batch.input_rows += 1
        if reason is not None:
            batch.rejects.append(RejectRecord(spec.source, source_file, row_number, field, reason, excerpt))
        else:
            batch.accepted_rows += 1
        while i < len(responses) and responses[i][0] == row_number:
            r = responses[i]
            batch.responses.append(
                ResponseRecord(
                    prompt_id=r[1],
                    response_id=r[2],
                    prompt=r[3],
                    response=r[4],
                    score=r[5],
                    gold=r[6],
                    split=r[7],
                    source=spec.source,
                    source_file=source_file,
                    row_number=row_number,
                    labelled_pair=r[8],
                )
            )
            i += 1
        if batch.input_rows >= batch_size or len(batch.responses) >= batch_size:
            yield batch
            batch = SourceBatch()
    if batch.input_rows:
        yield batch
