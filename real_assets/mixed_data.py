"""A home accumulates: every ingestion adds to the same raw tables, and every later step (selection,
training, the comparison) is built from all of them. The demo says so when a run reads another source,
path or seed than the home already holds."""

from __future__ import annotations

import duckdb
import pandas as pd

from real_assets.core.sources import SourceSpec
from real_assets.core.sources.staging import source_label
from real_assets.resources import Warehouse, table_exists


def stored_ingestions(warehouse: Warehouse) -> pd.DataFrame:
    """Every ingestion the home's raw tables hold (source, what it read, rows, when), oldest first; empty
    when nothing was ingested yet."""
    columns = ["source", "source_file", "input_rows", "ingested_at"]
    if not warehouse.is_lake and not warehouse.database().exists():
        return pd.DataFrame(columns=columns)
    with warehouse.connect(read_only=True) as con:
        if not table_exists(con, "raw.ingestions"):
            return pd.DataFrame(columns=columns)
        return con.execute(
            f"select {', '.join(columns)} from raw.ingestions order by ingested_at, ingestion_id"
        ).df()


def mixing_notice(warehouse: Warehouse, config: dict) -> str | None:
    """A line for a run about to ingest another source, path or seed than the home holds, or None."""
    try:
        held = stored_ingestions(warehouse)
    except duckdb.Error:
        return None  # a damaged warehouse: the ingest step itself reports it
    label = source_label(SourceSpec(**{k: v for k, v in config.items() if k in SourceSpec.model_fields}))
    others = sorted(set(held["source_file"]) - {label})
    if not others:
        return None
    return (
        f"this home already holds {', '.join(others)}; this run adds {label} to the same raw tables, and "
        "every step after the ingest (selection, training, the comparison) is built from all of them. "
        "For a comparison of this data alone, use a new --home"
    )
