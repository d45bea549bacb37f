"""Readers: a file's rows as Arrow chunks in bounded memory, one row per input row, numbered.

Each chunk has `row_number` (int64, 1-based), `pre_reason` (a reject reason found while reading, or
null) and the data in one of two forms:
- `line` (JSON text of the row: JSONL files and `datasets` rows), or
- one column per layout column, named `c0`, `c1`, ... (CSV: strings, null where the record is too
  short; Parquet: the file's own types), plus `raw` (CSV: the record's fields joined by \\x1f).
"""

from __future__ import annotations

import csv
import json
import queue
import threading
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pyarrow as pa

from real_assets.core.sources.files import (
    CSV,
    JSONL,
    PARQUET,
    csv_header,
    load_dataset,
    open_binary,
    unreadable,
)
from real_assets.core.sources.reasons import BAD_CSV_ROW, UNDECODABLE_BYTES
from real_assets.core.sources.spec import SourceSpec

CHUNK_BYTES = 32 << 20
CHUNK_ROWS = 100_000
JSON_FORM, COLUMN_FORM = "json", "columns"
FIELD_SEPARATOR = "\x1f"
T = TypeVar("T")


@dataclass(frozen=True)
class Chunk:
    form: str
    table: pa.Table
    columns: tuple[str, ...]
    """The layout columns, in c0, c1, ... order (column form)."""
    types: tuple[pa.DataType, ...] = ()
    """Arrow types of c0, c1, ... (column form)."""


_BLANK_FIRST_BYTES = np.array([0x20, 0x09, 0x0A, 0x0D, 0x0B, 0x0C], dtype=np.uint8)


def _json_chunk(numbers: np.ndarray, lines: pa.Array, padded: np.ndarray | None = None) -> Chunk:
    """A chunk of JSON lines (binary); lines that are not UTF-8 become undecodable_bytes rows. `padded`:
    the lines with whitespace around them (their duplicate-row key is computed on the stripped text)."""
    try:
        text = lines.view(pa.large_string())
        text.validate(full=True)  # checks UTF-8 at C speed
        pre = pa.nulls(len(lines), pa.string())
    except pa.ArrowInvalid:
        decoded, reasons = [], []
        for line in lines.to_pylist():
            try:
                decoded.append(line.decode("utf-8"))
                reasons.append(None)
            except UnicodeDecodeError:
                decoded.append(line[: 4 * 200].decode("utf-8", "replace"))
                reasons.append(UNDECODABLE_BYTES)
        text, pre = pa.array(decoded, pa.large_string()), pa.array(reasons, pa.string())
    if padded is None:
        padded = np.ones(len(lines), dtype=bool)
    table = pa.table(
        {
            "row_number": pa.array(numbers, pa.int64()),
            "line": text,
            "pre_reason": pre,
            "padded": pa.array(padded, pa.bool_()),
        }
    )
    return Chunk(JSON_FORM, table, ())


def _split_lines(
    body: bytes, first_line: int, strip_bom: bool
) -> tuple[np.ndarray, pa.Array, np.ndarray, int]:
    """(line numbers, lines without their line ends, whether a line has whitespace at either end, how many
    lines the block has) of a block of whole lines, in a few vectorized passes. Blank (whitespace-only)
    lines are dropped: they are not rows, but the numbers of the lines after them still count them."""
    buf = np.frombuffer(body, dtype=np.uint8)
    newlines = np.flatnonzero(buf == 0x0A)
    ends = newlines if body.endswith(b"\n") else np.append(newlines, len(body))
    starts = np.concatenate(([0], newlines + 1))[: len(ends)]
    if strip_bom and body.startswith(b"\xef\xbb\xbf"):
        starts[0] = 3
    crlf = (ends > starts) & (buf[np.maximum(ends - 1, 0)] == 0x0D)
    ends = ends - crlf  # CRLF: the CR goes too
    lengths = ends - starts
    keep_bytes = np.ones(len(buf), dtype=bool)  # every byte but line ends and the BOM
    keep_bytes[newlines] = False
    keep_bytes[ends[crlf]] = False
    keep_bytes[: starts[0]] = False
    data = buf[keep_bytes]
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    numbers = np.arange(first_line, first_line + len(ends), dtype=np.int64)
    lines = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(ends), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    nonempty = lengths > 0
    first = np.where(nonempty, buf[np.minimum(starts, len(buf) - 1)], 0x20)
    last = np.where(nonempty, buf[np.maximum(ends - 1, 0)], 0x20)
    padded = np.isin(first, _BLANK_FIRST_BYTES) | np.isin(last, _BLANK_FIRST_BYTES)
    # Only a line with whitespace at its start (or an empty one) can be blank: check those few in Python.
    blank = [i for i in np.flatnonzero(padded).tolist() if not body[starts[i] : ends[i]].strip()]
    if blank:
        keep = np.ones(len(ends), dtype=bool)
        keep[blank] = False
        lines, numbers, padded = lines.filter(pa.array(keep)), numbers[keep], padded[keep]
    return numbers, lines, padded, len(ends)


def jsonl_chunks(spec: SourceSpec, path: str, limit: int | None) -> Iterator[Chunk]:
    """JSONL (optionally gzipped): a row per non-blank line, numbered by line; BOM on line 1 dropped."""
    line_no = rows = 0
    try:
        with open_binary(path) as f:
            carry = b""
            while limit is None or rows < limit:
                block = f.read(CHUNK_BYTES)
                data = carry + block
                if not data:
                    break
                if block:
                    cut = data.rfind(b"\n") + 1
                    if cut == 0:
                        carry = data
                        continue
                    body, carry = data[:cut], data[cut:]
                else:
                    body, carry = data, b""
                numbers, lines, padded, n_lines = _split_lines(body, line_no + 1, strip_bom=line_no == 0)
                line_no += n_lines
                if limit is not None and rows + len(lines) > limit:
                    keep = limit - rows
                    lines, numbers, padded = lines.slice(0, keep), numbers[:keep], padded[:keep]
                rows += len(lines)
                if len(lines):
                    yield _json_chunk(numbers, lines, padded)
                if not block:
                    break
    except (OSError, EOFError, zlib.error) as e:
        raise unreadable(spec, path, e, rows) from e


class _RecordTooLong(Exception):
    pass


def _printable(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class _Lines:
    """Decoded lines of a binary file with their line numbers, and a way to put lines back."""

    def __init__(self, f, max_chars: int) -> None:
        self._f = f
        self._max_chars = max_chars
        self._size = 0
        self._back: deque[tuple[int, str]] = deque()
        self.line_no = 1  # the header was line 1
        self.taken: list[tuple[int, str]] = []

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self._back:
            item = self._back.popleft()
        else:
            raw = self._f.readline()
            if not raw:
                raise StopIteration
            self.line_no += 1
            item = (self.line_no, raw.decode("utf-8", "surrogateescape"))
        self.taken.append(item)
        self._size += len(item[1])
        if len(self.taken) > 1 and self._size > self._max_chars:
            raise _RecordTooLong
        return item[1]

    def start_record(self) -> None:
        self.taken = []
        self._size = 0

    def put_back(self, items: list[tuple[int, str]]) -> None:
        self._back.extendleft(reversed(items))


def csv_chunks(
    spec: SourceSpec, path: str, columns: tuple[str, ...], limit: int | None, max_record_chars: int
) -> Iterator[Chunk]:
    """CSV (optionally gzipped), strict quoting. A record that breaks (an unbalanced quote, a quoted field
    running past `max_record_chars`) is one bad_csv_row at its first line; reading resumes on the next
    line, so the rows after a stray quote are still read. Rows are numbered by record (header excluded)."""
    n = 0
    try:
        with open_binary(path) as f:
            first = f.readline()
            if not first.strip():
                return
            header = csv_header(first)
            width = len(header)
            index = {name: i for i, name in enumerate(header)}
            positions = [index.get(c) for c in columns]
            lines = _Lines(f, max_record_chars)
            reader = csv.reader(lines, strict=True)
            numbers: list[int] = []
            raws: list[str | None] = []
            reasons: list[str | None] = []
            values: list[list[str | None]] = [[] for _ in columns]

            def add(raw: str | None, reason: str | None, fields: list[str] | None) -> None:
                numbers.append(n)
                raws.append(raw)
                reasons.append(reason)
                for col, pos in zip(values, positions, strict=True):
                    col.append(
                        fields[pos] if fields is not None and pos is not None and pos < len(fields) else None
                    )

            while limit is None or n < limit:
                lines.start_record()
                try:
                    fields = next(reader)
                    broken = len(lines.taken) > 1 and len(fields) != width
                except StopIteration:
                    break
                except (csv.Error, _RecordTooLong):
                    fields, broken = None, True
                if broken and lines.taken:
                    start = lines.taken[0][1]
                    lines.put_back(lines.taken[1:])
                    reader = csv.reader(lines, strict=True)
                    n += 1
                    add(_printable(start.rstrip("\r\n")), BAD_CSV_ROW, None)
                elif fields is None:
                    break
                elif fields:
                    n += 1
                    raw = FIELD_SEPARATOR.join(fields)
                    try:
                        raw.encode("utf-8")
                    except UnicodeEncodeError:
                        add(_printable(raw), UNDECODABLE_BYTES, None)
                    else:
                        add(raw, BAD_CSV_ROW if len(fields) > width else None, fields)
                if len(numbers) >= CHUNK_ROWS:
                    yield _column_chunk(numbers, raws, reasons, values, columns)
                    numbers, raws, reasons = [], [], []
                    values = [[] for _ in columns]
            if numbers:
                yield _column_chunk(numbers, raws, reasons, values, columns)
    except (OSError, EOFError, zlib.error) as e:
        raise unreadable(spec, path, e, n) from e


def _column_chunk(numbers, raws, reasons, values, columns) -> Chunk:
    data = {
        "row_number": pa.array(numbers, pa.int64()),
        "raw": pa.array(raws, pa.string()),
        "pre_reason": pa.array(reasons, pa.string()),
    }
    for i, col in enumerate(values):
        data[f"c{i}"] = pa.array(col, pa.string())
    return Chunk(COLUMN_FORM, pa.table(data), columns, tuple(pa.string() for _ in columns))


def parquet_chunks(
    spec: SourceSpec, path: str, columns: tuple[str, ...], limit: int | None
) -> Iterator[Chunk]:
    """Parquet in record batches; columns absent from the file are null."""
    import pyarrow.parquet as pq

    n = 0
    try:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        read = [c for c in dict.fromkeys(columns) if c in names]
        for batch in pf.iter_batches(batch_size=CHUNK_ROWS, columns=read):
            if limit is not None and n + batch.num_rows > limit:
                batch = batch.slice(0, limit - n)
            if batch.num_rows == 0:
                break
            data = {
                "row_number": pa.array(np.arange(n + 1, n + 1 + batch.num_rows, dtype=np.int64)),
                "pre_reason": pa.nulls(batch.num_rows, pa.string()),
            }
            types = []
            for i, c in enumerate(columns):
                column = batch.column(c) if c in read else pa.nulls(batch.num_rows)
                if pa.types.is_dictionary(column.type):
                    column = column.dictionary_decode()
                data[f"c{i}"] = column
                types.append(column.type)
            n += batch.num_rows
            yield Chunk(COLUMN_FORM, pa.table(data), columns, tuple(types))
            if limit is not None and n >= limit:
                break
    except (OSError, ValueError) as e:  # pyarrow.ArrowException subclasses these
        raise unreadable(spec, path, e, n) from e


def dataset_chunks(
    spec: SourceSpec, where: str, columns: tuple[str, ...], limit: int | None
) -> Iterator[Chunk]:
    """A `datasets` split, each row written as a JSON object of the layout columns (ASCII-escaped)."""
    from real_assets.core.records import SourceError

    ds = load_dataset(spec, where)
    n = 0
    lines: list[bytes] = []
    numbers: list[int] = []
    try:
        for n, row in enumerate(ds, 1):
            if limit is not None and n > limit:
                n -= 1
                break
            picked = {c: row[c] for c in columns if c in row}
            lines.append(json.dumps(picked, default=str).encode())
            numbers.append(n)
            if len(lines) >= CHUNK_ROWS:
                yield _json_chunk(np.array(numbers, np.int64), pa.array(lines, pa.large_binary()))
                lines, numbers = [], []
    except SourceError:
        raise
    except Exception as e:
        raise unreadable(spec, where, e, n) from e
    if lines:
        yield _json_chunk(np.array(numbers, np.int64), pa.array(lines, pa.large_binary()))


def read_ahead(items: Iterator[T]) -> Iterator[T]:
    """`items`, with the next one read in a background thread while the caller works on the current one
    (reading a chunk is mostly numpy and Arrow, which release the GIL, and DuckDB releases it while it
    checks the previous chunk). The reader is at most two items ahead of the caller (one queued, one read
    and waiting to be queued); an error of the reader is raised here, after the items read before it; a
    caller that stops early stops the reader."""
    ready: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    end = object()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
            offer(end)
        except BaseException as e:  # handed to the caller, raised there
            offer(e)

    reader = threading.Thread(target=read, name="read_ahead", daemon=True)
    reader.start()
    try:
        while True:
            item = ready.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()


def chunks(spec: SourceSpec, kind: str, where: str, columns: tuple[str, ...]) -> Iterator[Chunk]:
    """The reader for a file kind."""
    if kind == JSONL:
        return jsonl_chunks(spec, where, spec.limit)
    if kind == CSV:
        return csv_chunks(
            spec, where, columns, spec.limit, 4 * spec.max_chars * max(1, len(columns)) + 65_536
        )
    if kind == PARQUET:
        return parquet_chunks(spec, where, columns, spec.limit)
    return dataset_chunks(spec, where, columns, spec.limit)
