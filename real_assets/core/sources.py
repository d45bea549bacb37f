"""Preference-data sources, streamed in bounded batches, with one reject per input row that is not accepted.

Every source turns input rows into `ResponseRecord`s (prompt, response, label score) and `RejectRecord`s.
For every yielded `SourceBatch`, `input_rows == accepted_rows + len(rejects)`; one accepted row may
yield several responses (a chosen/rejected pair yields two, an UltraFeedback row one per completion).

Sources (`SourceSpec.source`):

* `synthetic`      the deterministic generator in `synthetic.py` (gold quality known).
* `hh_rlhf`        Anthropic/hh-rlhf: `chosen` / `rejected` full transcripts that share a prompt.
* `shp2`           stanfordnlp/SHP-2: `history`, `human_ref_A/B`, `score_A/B` (the reference's score).
* `ultrafeedback`  openbmb/UltraFeedback (`instruction`, `completions`) or the binarized layout
                   (`prompt`, `chosen`, `rejected` message lists, optional `score_chosen/score_rejected`).
* `table`          any JSONL / CSV / Parquet with a `column_map`: prompt+response+score or
                   prompt+chosen+rejected (optionally score_chosen+score_rejected).

`SourceSpec.path` is a local file (.jsonl, .jsonl.gz, .ndjson, .json lines, .csv, .csv.gz, .parquet),
a local dataset directory, or a hub dataset id (`owner/name`); directories and hub ids are read through
`datasets.load_dataset(..., streaming=True)`. Local files are read row by row, so memory stays bounded by
the batch size, the duplicate-row table (8 bytes a slot) and the longest single row.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
import zlib
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from real_assets.core.hashing import digest, normalise_text, prompt_id, response_id, split_for
from real_assets.core.records import RejectRecord, ResponseRecord, SourceBatch, SourceError
from real_assets.core.synthetic import iter_synthetic

SOURCE_NAMES = ("synthetic", "hh_rlhf", "shp2", "ultrafeedback", "table")

# Reject reason codes (RejectRecord.reason), with what each means.
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
UNDECODABLE_BYTES = "undecodable_bytes"
BAD_CSV_ROW = "bad_csv_row"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
EMPTY_TEXT = "empty_text"
TEXT_TOO_LONG = "text_too_long"
NON_FINITE_SCORE = "non_finite_score"
NO_ASSISTANT_TURN = "no_assistant_turn"
PROMPT_MISMATCH = "prompt_mismatch"
IDENTICAL_RESPONSES = "identical_responses"
EMPTY_COMPLETIONS = "empty_completions"
BAD_MESSAGE_LIST = "bad_message_list"
DUPLICATE_ROW = "duplicate_row"

REASONS: dict[str, str] = {
    INVALID_JSON: "a JSONL line that is not valid JSON",
    NOT_AN_OBJECT: "a JSONL line that is valid JSON but not an object",
    UNDECODABLE_BYTES: "a line or CSV record that is not valid UTF-8",
    BAD_CSV_ROW: "a CSV record with more fields than the header, or that the csv module cannot parse",
    MISSING_FIELD: "a required field is absent, null, or (CSV) an empty score cell",
    WRONG_TYPE: "a field of the wrong type (text not a string, score not a number, completions not a list)",
    EMPTY_TEXT: "a prompt or response that is empty or whitespace only",
    TEXT_TOO_LONG: "a prompt or response longer than SourceSpec.max_chars characters",
    NON_FINITE_SCORE: "a score that is NaN or infinite",
    NO_ASSISTANT_TURN: "an hh-rlhf transcript without a '\\n\\nAssistant:' turn",
    PROMPT_MISMATCH: "chosen and rejected do not share the same prompt / conversation",
    IDENTICAL_RESPONSES: "chosen and rejected are the same text after normalisation",
    EMPTY_COMPLETIONS: "an UltraFeedback row whose completions list is empty",
    BAD_MESSAGE_LIST: "chosen/rejected is not a [{role, content}, ...] list ending with an assistant message",
    DUPLICATE_ROW: "an exact duplicate of an earlier accepted input row in this run",
}

EXCERPT_CHARS = 200
DEDUP_MAX_ROWS = 4_000_000
"""Row hashes remembered for `duplicate_row` (8 bytes a slot, load <= 1/2: at most 64 MiB). Past it,
later rows are still checked against the remembered ones, but no new ones are added."""
ROW_FIELD = "row"
"""RejectRecord.field for defects of the whole row (bad bytes, bad JSON, duplicate)."""

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
_CSV_SUFFIXES = (".csv",)
_PARQUET_SUFFIXES = (".parquet", ".pq")
_SCHEMA_SAMPLE_LINES = 1000
_SCHEMA_SAMPLE_OBJECTS = 100
_ASSISTANT = "\n\nAssistant:"
_TABLE_POINT = ("prompt", "response", "score")
_TABLE_PAIR = ("prompt", "chosen", "rejected")
_TABLE_PAIR_OPTIONAL = ("score_chosen", "score_rejected")


@dataclass(frozen=True)
class SourceSpec:
    source: str = "synthetic"
    path: str | None = None
    """Local file path, local dataset directory, or a hub dataset id (owner/name)."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) for hub ids."""
    split: str = "train"
    """Split for directories and hub ids."""
    limit: int | None = None
    """Read at most this many input rows (synthetic: at most this many prompts)."""
    seed: int = 0
    test_fraction: float = 0.2
    max_chars: int = 8000
    """Longer prompt or response text is rejected with reason `text_too_long`."""
    column_map: dict[str, str] | None = None
    """`table` only: {prompt, response, score} or {prompt, chosen, rejected[, score_chosen, score_rejected]}
    -> column names. Default: identity names, layout detected from the columns."""
    n_prompts: int = 360
    """`synthetic` only."""


class _Reject(Exception):
    __slots__ = ("field", "reason")

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason


# ---------------------------------------------------------------------------------------------- fields


def _text(value: Any, field: str, max_chars: int | None) -> str:
    if value is None:
        raise _Reject(field, MISSING_FIELD)
    if not isinstance(value, str):
        raise _Reject(field, WRONG_TYPE)
    if not value.strip():
        raise _Reject(field, EMPTY_TEXT)
    if max_chars is not None and len(value) > max_chars:
        raise _Reject(field, TEXT_TOO_LONG)
    return value


def _score(value: Any, field: str) -> float:
    if value is None or value == "":
        raise _Reject(field, MISSING_FIELD)
    if isinstance(value, bool):
        raise _Reject(field, WRONG_TYPE)
    if isinstance(value, (int, float)):
        try:
            x = float(value)
        except OverflowError:
            raise _Reject(field, NON_FINITE_SCORE) from None
    elif isinstance(value, str):
        try:
            x = float(value.strip())
        except ValueError:
            raise _Reject(field, WRONG_TYPE) from None
    else:
        raise _Reject(field, WRONG_TYPE)
    if not math.isfinite(x):
        raise _Reject(field, NON_FINITE_SCORE)
    return x


def _same_text(a: str, b: str) -> bool:
    return a == b or normalise_text(a) == normalise_text(b)


# ---------------------------------------------------------------------------------------------- sources
# A row validator returns ([(prompt, response, score), ...], kind) or raises _Reject. `kind`: SCORED (scores
# comparable across rows of a prompt), PAIR (two scored responses) or LABELLED_PAIR (a chosen/rejected
# label and nothing more: only that pair was compared, so no other pair of the prompt may be formed).

Item = tuple[str, str, float]
SCORED, PAIR, LABELLED_PAIR = "scored", "pair", "labelled_pair"
Validator = Callable[[dict], tuple[list[Item], str]]


def _split_hh(value: Any, field: str, max_chars: int) -> tuple[str, str]:
    text = _text(value, field, None)
    i = text.rfind(_ASSISTANT)
    if i < 0:
        raise _Reject(field, NO_ASSISTANT_TURN)
    cut = i + len(_ASSISTANT)
    prompt, response = text[:cut], text[cut:].strip()
    if not response:
        raise _Reject(field, EMPTY_TEXT)
    if len(prompt) > max_chars or len(response) > max_chars:
        raise _Reject(field, TEXT_TOO_LONG)
    return prompt, response


def _hh_validator(spec: SourceSpec) -> Validator:
    max_chars = spec.max_chars

    def validate(row: dict) -> tuple[list[Item], str]:
        prompt, chosen = _split_hh(row.get("chosen"), "chosen", max_chars)
        prompt_r, rejected = _split_hh(row.get("rejected"), "rejected", max_chars)
        if not _same_text(prompt, prompt_r):
            raise _Reject("rejected", PROMPT_MISMATCH)
        return [(prompt, chosen, 1.0), (prompt, rejected, 0.0)], LABELLED_PAIR

    return validate


def _shp2_validator(spec: SourceSpec) -> Validator:
    max_chars = spec.max_chars

    def validate(row: dict) -> tuple[list[Item], str]:
        history = _text(row.get("history"), "history", max_chars)
        ref_a = _text(row.get("human_ref_A"), "human_ref_A", max_chars)
        ref_b = _text(row.get("human_ref_B"), "human_ref_B", max_chars)
        score_a = _score(row.get("score_A"), "score_A")
        score_b = _score(row.get("score_B"), "score_B")
        return [(history, ref_a, score_a), (history, ref_b, score_b)], PAIR

    return validate


def _uf_score(completion: dict, field: str) -> float:
    if completion.get("overall_score") is not None:
        return _score(completion["overall_score"], f"{field}.overall_score")
    if completion.get("fine-grained_score") is not None:
        return _score(completion["fine-grained_score"], f"{field}.fine-grained_score")
    ratings: list[Any] = []
    annotations = completion.get("annotations")
    if isinstance(annotations, dict):
        for aspect in annotations.values():
            ratings.append(aspect.get("Rating") if isinstance(aspect, dict) else aspect)
    raw = completion.get("ratings")
    if isinstance(raw, dict):
        ratings.extend(raw.values())
    elif isinstance(raw, list):
        ratings.extend(raw)
    numeric = []
    for r in ratings:
        try:
            x = float(r) if isinstance(r, (int, float, str)) and not isinstance(r, bool) else math.nan
        except ValueError:  # e.g. "N/A"
            continue
        if math.isfinite(x):
            numeric.append(x)
    if not numeric:
        raise _Reject(f"{field}.overall_score", MISSING_FIELD)
    return sum(numeric) / len(numeric)


def _uf_original_validator(spec: SourceSpec) -> Validator:
    max_chars = spec.max_chars

    def validate(row: dict) -> tuple[list[Item], str]:
        prompt = _text(row.get("instruction"), "instruction", max_chars)
        completions = row.get("completions")
        if completions is None:
            raise _Reject("completions", MISSING_FIELD)
        if not isinstance(completions, list):
            raise _Reject("completions", WRONG_TYPE)
        if not completions:
            raise _Reject("completions", EMPTY_COMPLETIONS)
        items = []
        for i, completion in enumerate(completions):
            field = f"completions[{i}]"
            if not isinstance(completion, dict):
                raise _Reject(field, WRONG_TYPE)
            response = _text(completion.get("response"), f"{field}.response", max_chars)
            items.append((prompt, response, _uf_score(completion, field)))
        return items, SCORED

    return validate


def _messages(value: Any, field: str, max_chars: int) -> tuple[list[tuple[str, str]] | None, str]:
    """(context messages before the last one, last assistant content). A plain string is the response."""
    if value is None:
        raise _Reject(field, MISSING_FIELD)
    if isinstance(value, str):
        return None, _text(value, field, max_chars)
    if not isinstance(value, list) or not value:
        raise _Reject(field, BAD_MESSAGE_LIST)
    msgs = []
    for m in value:
        if not isinstance(m, dict):
            raise _Reject(field, BAD_MESSAGE_LIST)
        role, content = m.get("role"), m.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise _Reject(field, BAD_MESSAGE_LIST)
        msgs.append((role, content))
    if msgs[-1][0] != "assistant":
        raise _Reject(field, BAD_MESSAGE_LIST)
    return msgs[:-1], _text(msgs[-1][1], field, max_chars)


def _render_context(context: list[tuple[str, str]]) -> str:
    if len(context) == 1 and context[0][0] == "user":
        return context[0][1]
    return "\n\n".join(f"{role}: {content}" for role, content in context)


def _pair_validator(
    spec: SourceSpec, prompt_col: str, chosen_col: str, rejected_col: str, sc_col: str, sr_col: str
) -> Validator:
    """Shared by the UltraFeedback binarized layout and the table pair layout."""
    max_chars = spec.max_chars

    def validate(row: dict) -> tuple[list[Item], str]:
        ctx_c, chosen = _messages(row.get(chosen_col), chosen_col, max_chars)
        ctx_r, rejected = _messages(row.get(rejected_col), rejected_col, max_chars)
        if (
            ctx_c is not None
            and ctx_r is not None
            and (
                len(ctx_c) != len(ctx_r)
                or any(
                    rc != rr or not _same_text(cc, cr)
                    for (rc, cc), (rr, cr) in zip(ctx_c, ctx_r, strict=True)
                )
            )
        ):
            raise _Reject(rejected_col, PROMPT_MISMATCH)
        raw_prompt = row.get(prompt_col)
        if raw_prompt is None and ctx_c:
            prompt = _text(_render_context(ctx_c), prompt_col, max_chars)
        else:
            prompt = _text(raw_prompt, prompt_col, max_chars)
        sc = row.get(sc_col)
        sr = row.get(sr_col)
        score_c = 1.0 if sc is None else _score(sc, sc_col)
        score_r = 0.0 if sr is None else _score(sr, sr_col)
        kind = LABELLED_PAIR if sc is None and sr is None else PAIR
        return [(prompt, chosen, score_c), (prompt, rejected, score_r)], kind

    return validate


def _point_validator(spec: SourceSpec, prompt_col: str, response_col: str, score_col: str) -> Validator:
    max_chars = spec.max_chars

    def validate(row: dict) -> tuple[list[Item], str]:
        prompt = _text(row.get(prompt_col), prompt_col, max_chars)
        response = _text(row.get(response_col), response_col, max_chars)
        return [(prompt, response, _score(row.get(score_col), score_col))], SCORED

    return validate


@dataclass(frozen=True)
class _Plan:
    kind: str  # jsonl | csv | parquet | datasets
    where: str  # resolved local path or hub id
    source_file: str
    columns: tuple[str, ...]  # the columns the validator reads
    validate: Validator
    pair_field: str = ""  # the rejected-side column, named in identical_responses rejects


def _schema_error(spec: SourceSpec, where: str, need: str, found: list[str]) -> SourceError:
    return SourceError(
        f"{spec.source}: {where} does not have the {spec.source} schema: needs {need}; "
        f"found columns {sorted(found)}"
    )


def _build_plan(spec: SourceSpec, kind: str, where: str, found: list[str]) -> _Plan:
    cols = set(found)

    def plan(columns: tuple[str, ...], validate: Validator, pair_field: str = "") -> _Plan:
        return _Plan(kind, where, spec.path or where, columns, validate, pair_field)

    if spec.source == "hh_rlhf":
        if not {"chosen", "rejected"} <= cols:
            raise _schema_error(spec, where, "columns chosen, rejected (full transcripts)", found)
        return plan(("chosen", "rejected"), _hh_validator(spec), "rejected")
    if spec.source == "shp2":
        need = ("history", "human_ref_A", "human_ref_B", "score_A", "score_B")
        if not set(need) <= cols:
            raise _schema_error(spec, where, "columns " + ", ".join(need), found)
        return plan(need, _shp2_validator(spec), "human_ref_B")
    if spec.source == "ultrafeedback":
        if {"instruction", "completions"} <= cols:
            return plan(("instruction", "completions"), _uf_original_validator(spec))
        if {"chosen", "rejected"} <= cols:
            columns = ("prompt", "chosen", "rejected", "score_chosen", "score_rejected")
            return plan(
                columns,
                _pair_validator(spec, "prompt", "chosen", "rejected", "score_chosen", "score_rejected"),
                "rejected",
            )
        raise _schema_error(
            spec,
            where,
            "columns instruction, completions (openbmb/UltraFeedback) or "
            "chosen, rejected [prompt, score_chosen, score_rejected] (binarized)",
            found,
        )
    # table
    cmap = _table_column_map(spec, found)
    missing = [c for k, c in cmap.items() if c not in cols and k not in _TABLE_PAIR_OPTIONAL]
    if missing:
        raise SourceError(
            f"table: {where} lacks the mapped column(s) {missing} (column_map={cmap}); "
            f"found columns {sorted(found)}"
        )
    if "response" in cmap:
        columns = tuple(cmap[k] for k in _TABLE_POINT)
        return plan(columns, _point_validator(spec, *columns))
    sc, sr = cmap.get("score_chosen", "\0score_chosen"), cmap.get("score_rejected", "\0score_rejected")
    columns = tuple(cmap[k] for k in _TABLE_PAIR) + tuple(c for c in (sc, sr) if c in cols)
    validate = _pair_validator(spec, cmap["prompt"], cmap["chosen"], cmap["rejected"], sc, sr)
    return plan(columns, validate, cmap["rejected"])


def _table_column_map(spec: SourceSpec, found: list[str]) -> dict[str, str]:
    cmap = spec.column_map
    if cmap is None:
        cols = set(found)
        if set(_TABLE_POINT) <= cols:
            return {k: k for k in _TABLE_POINT}
        if set(_TABLE_PAIR) <= cols:
            return {k: k for k in _TABLE_PAIR + _TABLE_PAIR_OPTIONAL}
        raise _schema_error(
            spec,
            spec.path or "",
            "columns prompt, response, score or prompt, chosen, rejected (or pass a column_map)",
            found,
        )
    return cmap


def _check_column_map(spec: SourceSpec) -> None:
    cmap = spec.column_map
    if cmap is None:
        return
    if spec.source != "table":
        if cmap:
            raise SourceError(f"column_map is only used by the table source, not {spec.source!r}")
        return
    if not isinstance(cmap, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in cmap.items()
    ):
        raise SourceError(f"table: bad column_map {cmap!r}: expected a dict of key -> non-empty column name")
    keys = set(cmap)
    point, pair = set(_TABLE_POINT), set(_TABLE_PAIR)
    if keys == point or (pair <= keys and keys <= pair | set(_TABLE_PAIR_OPTIONAL)):
        return
    raise SourceError(
        f"table: bad column_map keys {sorted(keys)}: expected exactly prompt, response, score "
        "or prompt, chosen, rejected (optionally score_chosen, score_rejected)"
    )


# ---------------------------------------------------------------------------------------------- loading


def _locate(spec: SourceSpec) -> tuple[str, str]:
    """(kind, where): kind is jsonl | csv | parquet | datasets."""
    if not spec.path:
        raise SourceError(
            f"{spec.source}: needs a path: a local .jsonl/.jsonl.gz/.csv/.parquet file, "
            "a local dataset directory, or a hub dataset id (owner/name)"
        )
    p = Path(spec.path).expanduser()
    if p.is_dir():
        return "datasets", str(p)
    name = p.name.lower()
    base = name[:-3] if name.endswith(".gz") else name
    kind = (
        "jsonl"
        if base.endswith(_JSONL_SUFFIXES)
        else "csv"
        if base.endswith(_CSV_SUFFIXES)
        else "parquet"
        if base.endswith(_PARQUET_SUFFIXES) and not name.endswith(".gz")
        else None
    )
    if p.is_file():
        if kind is None:
            raise SourceError(
                f"{spec.source}: unsupported file type: {p} (expected .jsonl, .jsonl.gz, .ndjson, .csv, "
                ".csv.gz or .parquet)"
            )
        return kind, str(p)
    if p.exists():
        raise SourceError(f"{spec.source}: not a regular file or directory: {p}")
    if kind is None and _HUB_ID.match(spec.path):
        return "datasets", spec.path
    raise SourceError(f"{spec.source}: file not found: {spec.path}")


def _open_binary(path: str) -> io.BufferedIOBase:
    f = open(path, "rb")  # noqa: SIM115 - returned to the caller's with-block
    if f.peek(2)[:2] == b"\x1f\x8b":
        return io.BufferedReader(gzip.GzipFile(fileobj=f), buffer_size=1 << 20)  # type: ignore[arg-type]
    return f


def _unreadable(spec: SourceSpec, where: str, e: BaseException, row: int | None = None) -> SourceError:
    at = f" after row {row}" if row is not None else ""
    return SourceError(f"{spec.source}: cannot read {where}{at}: {type(e).__name__}: {e}")


RawRow = tuple[int, "bytes | str | None", "dict | None", "str | None"]
"""(1-based row number, raw bytes / text of the row or None, the row as a dict or None, loader reject)."""


def _jsonl_rows(spec: SourceSpec, path: str) -> Iterator[RawRow]:
    n = 0
    try:
        with _open_binary(path) as f:
            for n, line in enumerate(f, 1):
                raw = line.strip()
                if not raw:
                    continue  # blank lines are not rows
                if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    yield n, raw, None, UNDECODABLE_BYTES
                    continue
                try:
                    obj = json.loads(text)
                except ValueError:
                    yield n, raw, None, INVALID_JSON
                    continue
                if not isinstance(obj, dict):
                    yield n, raw, None, NOT_AN_OBJECT
                    continue
                yield n, raw, obj, None
    except (OSError, EOFError, zlib.error) as e:
        raise _unreadable(spec, path, e, n) from e


def _csv_rows(spec: SourceSpec, path: str) -> Iterator[RawRow]:
    n = 0
    try:
        with _open_binary(path) as f:
            reader = csv.reader(line.decode("utf-8", "surrogateescape") for line in f)
            header = next(reader, None)
            if header is None:
                return
            if header and header[0].startswith("\ufeff"):
                header[0] = header[0][1:]
            width = len(header)
            while True:
                try:
                    fields = next(reader)
                except StopIteration:
                    return
                except csv.Error:
                    n += 1
                    yield n, None, None, BAD_CSV_ROW
                    continue
                if not fields:
                    continue  # blank line
                n += 1
                raw = "\x1f".join(fields)
                try:
                    raw.encode("utf-8")
                except UnicodeEncodeError:
                    yield n, raw, None, UNDECODABLE_BYTES
                    continue
                if len(fields) > width:
                    yield n, raw, None, BAD_CSV_ROW
                    continue
                yield n, raw, dict(zip(header, fields, strict=False)), None
    except (OSError, EOFError, zlib.error) as e:
        raise _unreadable(spec, path, e, n) from e


def _parquet_rows(spec: SourceSpec, path: str, columns: tuple[str, ...], batch_size: int) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    n = 0
    try:
        pf = pq.ParquetFile(path)
        names = set(pf.schema_arrow.names)
        read = [c for c in columns if c in names]
        for record_batch in pf.iter_batches(batch_size=min(batch_size, 10_000), columns=read):
            for row in record_batch.to_pylist():
                n += 1
                yield n, None, row, None
    except (OSError, ValueError) as e:  # pyarrow.ArrowException subclasses these
        raise _unreadable(spec, path, e, n) from e


def _load_dataset(spec: SourceSpec, where: str) -> Any:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a dependency
        raise SourceError(f"{spec.source}: reading {where} needs the `datasets` package") from e
    kwargs: dict[str, Any] = {"split": spec.split, "streaming": True}
    if spec.revision is not None and not Path(where).is_dir():
        kwargs["revision"] = spec.revision
    try:
        return datasets.load_dataset(where, **kwargs)
    except Exception as e:
        raise SourceError(
            f"{spec.source}: cannot load dataset {where!r} (split={spec.split!r}, "
            f"revision={spec.revision!r}): {type(e).__name__}: {e}"
        ) from e


def _dataset_rows(spec: SourceSpec, where: str, columns: tuple[str, ...]) -> Iterator[RawRow]:
    ds = _load_dataset(spec, where)
    n = 0
    try:
        for n, row in enumerate(ds, 1):
            yield n, None, {c: row[c] for c in columns if c in row}, None
    except SourceError:
        raise
    except Exception as e:
        raise _unreadable(spec, where, e, n) from e


def _peek_columns(spec: SourceSpec, kind: str, where: str) -> list[str]:
    """Column names, from the header / parquet schema / the first rows; SourceError if unreadable."""
    try:
        if kind == "jsonl":
            keys: dict[str, None] = {}
            lines = objects = 0
            with _open_binary(where) as f:
                for line in f:
                    raw = line.strip()
                    if not raw:
                        continue
                    lines += 1
                    if lines == 1 and raw.startswith(b"\xef\xbb\xbf"):
                        raw = raw[3:]
                    try:
                        obj = json.loads(raw.decode("utf-8"))
                    except ValueError:  # UnicodeDecodeError is a ValueError
                        obj = None
                    if isinstance(obj, dict):
                        objects += 1
                        keys.update(dict.fromkeys(obj))
                    if objects >= _SCHEMA_SAMPLE_OBJECTS or lines >= _SCHEMA_SAMPLE_LINES:
                        break
            if not lines:
                raise SourceError(f"{spec.source}: {where} is empty")
            if not objects:
                raise SourceError(
                    f"{spec.source}: {where} is not a JSON Lines file: no JSON object in its first "
                    f"{lines} non-blank line(s)"
                )
            return list(keys)
        if kind == "csv":
            with _open_binary(where) as f:
                first = f.readline()
                if not first.strip():
                    raise SourceError(f"{spec.source}: {where} is empty (no CSV header)")
                header = next(csv.reader([first.decode("utf-8", "replace")]))
            if header and header[0].startswith("\ufeff"):
                header[0] = header[0][1:]
            return header
        if kind == "parquet":
            import pyarrow.parquet as pq

            return list(pq.ParquetFile(where).schema_arrow.names)
        ds = _load_dataset(spec, where)
        if ds.column_names:
            return list(ds.column_names)
        first_row = next(iter(ds), None)
        if first_row is None:
            raise SourceError(f"{spec.source}: dataset {where!r} split {spec.split!r} is empty")
        return list(first_row)
    except SourceError:
        raise
    except Exception as e:
        raise _unreadable(spec, where, e) from e


# ---------------------------------------------------------------------------------------------- checks


def _check(spec: SourceSpec) -> _Plan | None:
    if spec.source not in SOURCE_NAMES:
        raise SourceError(f"unknown source {spec.source!r}; valid sources: {', '.join(SOURCE_NAMES)}")
    if spec.limit is not None and spec.limit < 0:
        raise SourceError(f"{spec.source}: limit must be >= 0, got {spec.limit}")
    if not 0.0 <= spec.test_fraction < 1.0:
        raise SourceError(f"{spec.source}: test_fraction must be in [0, 1), got {spec.test_fraction}")
    if spec.max_chars <= 0:
        raise SourceError(f"{spec.source}: max_chars must be > 0, got {spec.max_chars}")
    _check_column_map(spec)
    if spec.source == "synthetic":
        if spec.n_prompts <= 0:
            raise SourceError(f"synthetic: n_prompts must be > 0, got {spec.n_prompts}")
        return None
    kind, where = _locate(spec)
    return _build_plan(spec, kind, where, _peek_columns(spec, kind, where))


def check_source(spec: SourceSpec) -> None:
    """Raise SourceError (naming the file) if the source cannot be read: unknown source name, missing,
    unreadable or unsupported file, wrong schema (required columns absent in the header, parquet schema
    or the first rows), bad column_map or bad spec values. Reads only the first rows."""
    _check(spec)


# ---------------------------------------------------------------------------------------------- streaming


class _HashSet:
    """Bounded open-addressing set of 64-bit hashes: 8 bytes a slot, load factor <= 1/2."""

    def __init__(self, max_items: int, initial_slots: int = 1 << 16) -> None:
        self.max_items = max_items
        self.size = 0
        self.full = False
        self._slots = array("Q", bytes(8 * initial_slots))
        self._mask = initial_slots - 1

    def add(self, h: int) -> bool:
        """Add h; False if it was already there. Once full, only membership is checked."""
        h = h or 1  # 0 marks an empty slot
        slots, mask = self._slots, self._mask
        i = h & mask
        while True:
            v = slots[i]
            if v == h:
                return False
            if v == 0:
                break
            i = (i + 1) & mask
        if self.size >= self.max_items:
            self.full = True
            return True
        slots[i] = h
        self.size += 1
        if 2 * self.size > mask + 1:
            self._grow()
        return True

    def _grow(self) -> None:
        old = self._slots
        n = 2 * len(old)
        slots, mask = array("Q", bytes(8 * n)), n - 1
        for h in old:
            if h:
                i = h & mask
                while slots[i]:
                    i = (i + 1) & mask
                slots[i] = h
        self._slots, self._mask = slots, mask


def _row_hash(raw: bytes | str | None, row: dict, columns: tuple[str, ...]) -> int:
    if raw is None:
        raw = repr([row.get(c) for c in columns])
    return int(digest(raw)[:16], 16)


def _excerpt(raw: bytes | str | None, row: dict | None) -> str:
    if isinstance(raw, bytes):
        return raw[: 4 * EXCERPT_CHARS].decode("utf-8", "replace")[:EXCERPT_CHARS]
    if isinstance(raw, str):
        text = raw[: 4 * EXCERPT_CHARS].replace("\x1f", ",")
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")[:EXCERPT_CHARS]
    if row is None:
        return ""
    try:
        return json.dumps(row, ensure_ascii=False, default=str)[:EXCERPT_CHARS]
    except ValueError:  # circular structures cannot come from a loader, but be safe
        return repr(row)[:EXCERPT_CHARS]


def iter_source(spec: SourceSpec, batch_size: int = 50_000) -> Iterator[SourceBatch]:
    """Stream a source in batches of at most `batch_size` input rows (and about as many responses).

    Calls `check_source` first, so a source that cannot be read fails before anything is yielded.
    Every input row is counted once: accepted (yielding one or more ResponseRecords) or rejected
    (exactly one RejectRecord). Blank lines in JSONL / CSV files are not input rows.
    """
    if batch_size <= 0:
        raise SourceError(f"batch_size must be > 0, got {batch_size}")
    plan = _check(spec)
    if plan is None:  # synthetic
        n = spec.n_prompts if spec.limit is None else min(spec.n_prompts, spec.limit)
        if n > 0:
            yield from iter_synthetic(
                n_prompts=n, seed=spec.seed, test_fraction=spec.test_fraction, batch_size=batch_size
            )
        return
    yield from _stream(spec, plan, batch_size)


def _stream(spec: SourceSpec, plan: _Plan, batch_size: int) -> Iterator[SourceBatch]:
    if plan.kind == "jsonl":
        rows = _jsonl_rows(spec, plan.where)
    elif plan.kind == "csv":
        rows = _csv_rows(spec, plan.where)
    elif plan.kind == "parquet":
        rows = _parquet_rows(spec, plan.where, plan.columns, batch_size)
    else:
        rows = _dataset_rows(spec, plan.where, plan.columns)

    source, source_file, columns, validate = spec.source, plan.source_file, plan.columns, plan.validate
    test_fraction, limit = spec.test_fraction, spec.limit
    seen_rows = _HashSet(DEDUP_MAX_ROWS)
    # SHP-2 repeats each comment in many pair rows: yield each response id once per run.
    seen_responses = _HashSet(DEDUP_MAX_ROWS) if source == "shp2" else None
    prompt_cache: dict[str, tuple[str, str]] = {}
    batch = SourceBatch()
    count = 0
    try:
        for row_number, raw, row, error in rows:
            if limit is not None and count >= limit:
                break
            count += 1
            batch.input_rows += 1
            field = ROW_FIELD
            if error is None:
                try:
                    items, kind = validate(row)  # type: ignore[arg-type]
                except _Reject as r:
                    field, error = r.field, r.reason
            if error is None:
                records = []
                for prompt, response, score in items:
                    cached = prompt_cache.get(prompt)
                    if cached is None:
                        if len(prompt_cache) >= 1024:
                            prompt_cache.clear()
                        pid = prompt_id(prompt)
                        cached = prompt_cache[prompt] = (pid, split_for(pid, test_fraction))
                    records.append((cached, response_id(cached[0], response), prompt, response, score))
                if kind != SCORED and records[0][1] == records[1][1]:
                    field, error = plan.pair_field, IDENTICAL_RESPONSES
                elif not seen_rows.add(_row_hash(raw, row, columns)):  # type: ignore[arg-type]
                    error = DUPLICATE_ROW
            if error is not None:
                batch.rejects.append(
                    RejectRecord(source, source_file, row_number, field, error, _excerpt(raw, row))
                )
            else:
                batch.accepted_rows += 1
                emitted: set[str] = set()
                for (pid, split), rid, prompt, response, score in records:
                    if rid in emitted:
                        continue  # the same text twice in one row (e.g. two UltraFeedback models)
                    emitted.add(rid)
                    if seen_responses is not None and not seen_responses.add(int(rid, 16)):
                        continue
                    batch.responses.append(
                        ResponseRecord(
                            prompt_id=pid,
                            response_id=rid,
                            prompt=prompt,
                            response=response,
                            score=score,
                            gold=None,
                            split=split,
                            source=source,
                            source_file=source_file,
                            row_number=row_number,
                            labelled_pair=kind == LABELLED_PAIR,
                        )
                    )
            if batch.input_rows >= batch_size or len(batch.responses) >= batch_size:
                yield batch
                batch = SourceBatch()
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()
    if batch.input_rows:
        yield batch
