"""A prompts-only source: a JSONL or Parquet file of prompt texts with an optional id.

Every input row is accepted or rejected with a reason (`core.sources.reasons`), naming the file, the row
and the field, as the other sources do. The prompt id is the hash of the text (`core.hashing.prompt_id`), as
for every source, so a prompt given here and in a labelled source is one prompt; the file's own id is kept
beside it as `external_id`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from real_assets.core.hashing import normalise_text, prompt_id, split_for
from real_assets.core.records import RejectRecord, SourceError
from real_assets.core.sources.reasons import (
    DUPLICATE_ROW,
    INVALID_JSON,
    NOT_AN_OBJECT,
    ROW_FIELD,
    UNDECODABLE_BYTES,
    WRONG_TYPE,
)
from real_assets.core.sources.rowchecks import Reject, text
from real_assets.core.sources.rowwise import excerpt

SOURCE_NAME = "prompts"
PROMPT_FIELD = "prompt"
ID_FIELD = "id"


@dataclass(frozen=True)
class Prompt:
    """One accepted prompt row."""

    prompt_id: str
    prompt: str
    split: str
    external_id: str | None
    row_number: int


@dataclass
class PromptFile:
    """A read prompts file: input rows = accepted + rejected."""

    path: str
    prompts: list[Prompt] = field(default_factory=list)
    rejects: list[RejectRecord] = field(default_factory=list)
    input_rows: int = 0

    @property
    def accepted_rows(self) -> int:
        return len(self.prompts)


def _external_id(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise Reject(ID_FIELD, WRONG_TYPE)
    return str(value)


def _rows(path: Path) -> list[tuple[int, dict | None, str | None, str]]:
    """(row number, the row as a dict or None, a reject reason found while reading, the raw text)."""
    suffix = "".join(path.suffixes[-1:]).lower()
    if suffix == ".parquet":
        try:
            table = pq.read_table(path)
        except Exception as e:  # pyarrow raises several types for a broken file
            raise SourceError(f"{SOURCE_NAME}: cannot read {path} as Parquet: {e}") from None
        if PROMPT_FIELD not in table.column_names:
            raise SourceError(
                f"{SOURCE_NAME}: {path} has no `{PROMPT_FIELD}` column; found {sorted(table.column_names)}"
            )
        columns = [c for c in (PROMPT_FIELD, ID_FIELD) if c in table.column_names]
        rows = table.select(columns).to_pylist()
        return [(i, row, None, json.dumps(row, default=str)) for i, row in enumerate(rows, start=1)]
    if suffix not in (".jsonl", ".ndjson"):
        raise SourceError(f"{SOURCE_NAME}: {path}: expected a .jsonl, .ndjson or .parquet file")
    out: list[tuple[int, dict | None, str | None, str]] = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                out.append((number, None, UNDECODABLE_BYTES, raw.decode("utf-8", "replace")))
                continue
            if not line:
                continue  # a blank line is not a row (its number still counts, as in the other sources)
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                out.append((number, None, INVALID_JSON, line))
                continue
            if not isinstance(row, dict):
                out.append((number, None, NOT_AN_OBJECT, line))
                continue
            out.append((number, row, None, line))
    return out


def read_prompts(path: str | Path, max_chars: int = 8000, test_fraction: float = 0.2) -> PromptFile:
    """Read a prompts file: field `prompt` (a non-empty string of at most `max_chars` characters) and an
    optional `id` (string or integer). A repeat of an earlier accepted prompt text (after normalisation) is
    rejected as a duplicate row. Raises SourceError (naming the file) when the file cannot be read at all."""
    where = Path(path)
    if not where.is_file():
        raise SourceError(f"{SOURCE_NAME}: {where} does not exist or is not a file")
    result = PromptFile(str(where))
    seen: set[str] = set()
    for number, row, reason, raw in _rows(where):
        result.input_rows += 1
        try:
            if reason is not None:
                raise Reject(ROW_FIELD, reason)
            assert row is not None
            prompt = text(row.get(PROMPT_FIELD), PROMPT_FIELD, max_chars)
            external = _external_id(row.get(ID_FIELD))
            key = normalise_text(prompt)
            if key in seen:
                raise Reject(ROW_FIELD, DUPLICATE_ROW)
            seen.add(key)
        except Reject as r:
            result.rejects.append(
                RejectRecord(SOURCE_NAME, str(where), number, r.field, r.reason, excerpt(raw))
            )
            continue
        pid = prompt_id(prompt)
        result.prompts.append(Prompt(pid, prompt, split_for(pid, test_fraction), external, number))
    return result
