"""The row-wise path of staging, in Python, for the rows the SQL checks did not accept: a JSON line parsed
as DuckDB reads it, a row's excerpt for `raw.rejects`, and the ids SQL would give it."""

from __future__ import annotations

import json

from real_assets.core.hashing import prompt_id, response_id, split_for
from real_assets.core.sources.chunk_sql import LINE_WHITESPACE_CHARS
from real_assets.core.sources.readers import FIELD_SEPARATOR
from real_assets.core.sources.reasons import INVALID_JSON, NOT_AN_OBJECT, ROW_FIELD, TOO_DEEPLY_NESTED
from real_assets.core.sources.rowchecks import Reject

EXCERPT_CHARS = 200


def _first_key_wins(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object whose key repeats keeps the first value, as DuckDB's reader does."""
    row: dict = {}
    for key, value in pairs:
        row.setdefault(key, value)
    return row


def parse_json(raw: str) -> dict:
    try:
        row = json.loads(raw.strip(LINE_WHITESPACE_CHARS), object_pairs_hook=_first_key_wins)
    except RecursionError:
        raise Reject(ROW_FIELD, TOO_DEEPLY_NESTED) from None
    except ValueError:
        raise Reject(ROW_FIELD, INVALID_JSON) from None
    if not isinstance(row, dict):
        raise Reject(ROW_FIELD, NOT_AN_OBJECT)
    return row


def excerpt(raw: str | None) -> str:
    """The first EXCERPT_CHARS characters of a row as read (CSV fields joined by commas)."""
    if not raw:
        return ""
    text = raw[: 4 * EXCERPT_CHARS].strip().replace(FIELD_SEPARATOR, ",")
    return text.encode("utf-8", "replace").decode("utf-8")[:EXCERPT_CHARS]


def ids_of(prompt: str, response: str, test_fraction: float) -> tuple[str, str, str]:
    """(prompt id, response id, split) in Python: what `staging._with_ids` computes in SQL."""
    pid = prompt_id(prompt)
    return pid, response_id(pid, response), split_for(pid, test_fraction)
