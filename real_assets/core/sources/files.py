"""Where a source's rows come from: a local file (JSONL, CSV, Parquet; gzip allowed), a local dataset
folder or a hub dataset id; what columns it has."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from pathlib import Path
from typing import Any

from real_assets.core.records import SourceError
from real_assets.core.sources.spec import SourceSpec

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
_CSV_SUFFIXES = (".csv",)
_PARQUET_SUFFIXES = (".parquet", ".pq")
_SCHEMA_SAMPLE_LINES = 1000
_SCHEMA_SAMPLE_OBJECTS = 100
JSONL, CSV, PARQUET, DATASETS = "jsonl", "csv", "parquet", "datasets"


def locate(spec: SourceSpec) -> tuple[str, str]:
    """(kind, where): kind is jsonl | csv | parquet | datasets; SourceError if there is nothing to read."""
    if not spec.path:
        raise SourceError(
            f"{spec.source}: needs a path: a local .jsonl/.jsonl.gz/.csv/.parquet file, "
            "a local dataset directory, or a hub dataset id (owner/name)"
        )
    p = Path(spec.path).expanduser()
    if p.is_dir():
        return DATASETS, str(p)
    name = p.name.lower()
    base = name[:-3] if name.endswith(".gz") else name
    kind = (
        JSONL
        if base.endswith(_JSONL_SUFFIXES)
        else CSV
        if base.endswith(_CSV_SUFFIXES)
        else PARQUET
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
        return DATASETS, spec.path
    raise SourceError(f"{spec.source}: file not found: {spec.path}")


def open_binary(path: str) -> io.BufferedIOBase:
    """The file's bytes, gunzipped if it starts with the gzip magic."""
    f = open(path, "rb")  # noqa: SIM115 - returned to the caller's with-block
    if f.peek(2)[:2] == b"\x1f\x8b":
        return io.BufferedReader(gzip.GzipFile(fileobj=f), buffer_size=1 << 20)  # type: ignore[arg-type]
    return f


def unreadable(spec: SourceSpec, where: str, e: BaseException, row: int | None = None) -> SourceError:
    """The error for a file that cannot be read on (after `row` rows)."""
    at = f" after row {row}" if row is not None else ""
    return SourceError(f"{spec.source}: cannot read {where}{at}: {type(e).__name__}: {e}")


def load_dataset(spec: SourceSpec, where: str) -> Any:
    """A streaming `datasets` split of a local folder or hub id."""
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


def _jsonl_columns(spec: SourceSpec, where: str) -> list[str]:
    keys: dict[str, None] = {}
    lines = objects = 0
    with open_binary(where) as f:
        for line in f:
            raw = line.strip()
            if not raw:
                continue
            lines += 1
            if lines == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
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


def csv_header(first_line: bytes) -> list[str]:
    """The header fields of a CSV file's first line (BOM dropped)."""
    header = next(csv.reader([first_line.decode("utf-8", "replace")]))
    if header and header[0].startswith("\ufeff"):
        header[0] = header[0][1:]
    return header


def peek_columns(spec: SourceSpec, kind: str, where: str) -> list[str]:
    """Column names, from the header / parquet schema / the first rows; SourceError if unreadable."""
    try:
        if kind == JSONL:
            return _jsonl_columns(spec, where)
        if kind == CSV:
            with open_binary(where) as f:
                first = f.readline()
            if not first.strip():
                raise SourceError(f"{spec.source}: {where} is empty (no CSV header)")
            return csv_header(first)
        if kind == PARQUET:
            import pyarrow.parquet as pq

            return list(pq.ParquetFile(where).schema_arrow.names)
        ds = load_dataset(spec, where)
        if ds.column_names:
            return list(ds.column_names)
        first_row = next(iter(ds), None)
        if first_row is None:
            raise SourceError(f"{spec.source}: dataset {where!r} split {spec.split!r} is empty")
        return list(first_row)
    except SourceError:
        raise
    except Exception as e:
        raise unreadable(spec, where, e) from e
