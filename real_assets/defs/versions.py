"""Content versions of the warehouse assets: one definition, used by the assets and by the audit."""

import duckdb

from real_assets.core.hashing import digest
from real_assets.resources import table_digest

CONTENT_TABLES: dict[str, list[tuple[str, list[str], str | None]]] = {
    "raw_responses": [
        ("raw.responses", ["response_id"], None),
        ("raw.prompts", ["prompt_id"], None),
        ("raw.comparisons", ["source_file", "row_number"], None),
    ],
    "response_embeddings": [("features.response_embeddings", ["response_id"], None)],
    "response_similarity": [
        ("features.response_similarity", ["prompt_id", "response_id_a", "response_id_b"], None)
    ],
    "pair_candidates": [("selection.pair_candidates", ["prompt_id", "chosen_id", "rejected_id"], None)],
    "selected_pairs": [("selection.selected_pairs", ["prompt_id", "chosen_id", "rejected_id"], "strategy")],
    "eval_scores": [("eval.eval_scores", ["strategy"], "strategy")],
    "strategy_comparison": [("eval.strategy_comparison", ["strategy"], None)],
}
"""For each warehouse asset: (table, key columns in digest order, partition column or None)."""


def content_version(
    con: duckdb.DuckDBPyConnection, asset: str, partition: str | None = None
) -> tuple[str, int]:
    """(data version, rows of the first table) of an asset from the current content of its tables."""
    if asset not in CONTENT_TABLES:
        raise ValueError(f"{asset} has no warehouse content version; known: {', '.join(CONTENT_TABLES)}")
    digests, rows = [], None
    for table, keys, partition_column in CONTENT_TABLES[asset]:
        where = (partition_column, partition) if partition_column else None
        content, count = table_digest(con, table, keys, where=where)
        digests.append(content)
        rows = count if rows is None else rows
    return digest(*digests)[:16], rows or 0
