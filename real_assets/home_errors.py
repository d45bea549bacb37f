"""A store of the home that cannot be read or written, told in one line: which store, its path, the cause
(disk full, read-only, permission denied, damaged) and what to do.

The stores are the warehouse (DuckDB), the Dagster instance (SQLite under `<home>/dagster`), the MLflow
tracking store (`<home>/mlflow.db`) and the checkpoint folders. Their libraries report the same causes in
their own words (DuckDB's "not a valid DuckDB database file", SQLite's "database or disk is full" or "disk
I/O error", an OSError's errno); `describe` reads those words, from a live exception or from the error a
Dagster step recorded, and returns None for anything else.
"""

from __future__ import annotations

import errno
import re
import shutil
import traceback
from dataclasses import dataclass
from pathlib import Path

LOW_SPACE_BYTES = 1 << 20
"""A "disk I/O error" on a file system with less free space than this is taken as a full disk."""


@dataclass(frozen=True)
class _Cause:
    name: str
    fix: str


DISK_FULL = _Cause(
    "disk full", "free space on that disk (or use a home on another disk with --home), then rerun"
)
READ_ONLY = _Cause(
    "read-only",
    "make it writable, or use a writable home with --home (`real-assets audit` reads a read-only home)",
)
NO_PERMISSION = _Cause("permission denied", "give this user write access to it, or use another home (--home)")
DAMAGED_DUCKDB = _Cause(
    "not a DuckDB file or damaged",
    "restore it from a backup, or move it aside and run the demo again to rebuild it (the raw data comes "
    "from the source again)",
)
DAMAGED_SQLITE = _Cause(
    "not a SQLite database or damaged",
    "restore it from a backup, or move it aside (its history is then lost) and run again",
)
DISK_IO = _Cause("disk I/O error", "check the disk (dmesg, free space), then rerun")

_PATTERNS: list[tuple[re.Pattern, _Cause]] = [
    (re.compile(r"no space left|disk is full|database or disk is full|disk quota", re.I), DISK_FULL),
    (re.compile(r"file too large", re.I), DISK_FULL),
    (re.compile(r"read-only file system|readonly database|read only database", re.I), READ_ONLY),
    (re.compile(r"permission denied", re.I), NO_PERMISSION),
    (re.compile(r"not a valid duckdb database|corrupt database file", re.I), DAMAGED_DUCKDB),
    (re.compile(r"could not read enough bytes from file [\"'][^\"']+\.duckdb", re.I), DAMAGED_DUCKDB),
    (re.compile(r"file is not a database|database disk image is malformed", re.I), DAMAGED_SQLITE),
    (re.compile(r"disk i/o error", re.I), DISK_IO),
]
_ERRNOS = {
    errno.ENOSPC: DISK_FULL,
    errno.EDQUOT: DISK_FULL,
    errno.EFBIG: DISK_FULL,
    errno.EROFS: READ_ONLY,
    errno.EACCES: NO_PERMISSION,
    errno.EPERM: NO_PERMISSION,
}


def _store(path: Path | None, home: Path, library: str) -> tuple[str, Path]:
    """(store name, its path) for a path in the home, else from the library that raised the error."""
    if path is not None:
        try:
            relative = path.resolve().relative_to(home.resolve())
        except (ValueError, OSError):
            relative = None
        if relative is not None and relative.parts:
            first = relative.parts[0]
            if first.startswith("warehouse"):
                return "warehouse", home / first
            if first == "dagster":
                return "Dagster instance storage", home / "dagster"
            if first.startswith("mlflow") or first == "mlartifacts":
                return "MLflow tracking store", home / first
            if first == "checkpoints":
                return "checkpoint folder", path
            return "home", home
        if path.name.endswith(".duckdb"):
            return "warehouse", path
        if relative is None and path != home:
            return "file", path
    if library == "duckdb":
        return "warehouse", home / "warehouse.duckdb"
    if library == "mlflow":
        return "MLflow tracking store", home / "mlflow.db"
    if library == "dagster":
        return "Dagster instance storage", home / "dagster"
    return "home", home


def library_of(frames: list[str]) -> str:
    """The store library (mlflow, dagster or duckdb) of the innermost frame that belongs to one, given the
    frames' file names or texts innermost last; "" if none."""
    for frame in reversed(frames):
        for library in ("mlflow", "dagster", "duckdb"):
            if f"/{library}/" in frame or f"/_{library}" in frame:
                return library
    return ""


def _path_in(text: str) -> Path | None:
    found = re.search(r"""['"](/[^'"]+)['"]""", text)
    return Path(found.group(1)) if found else None


def describe_text(
    message: str, home: Path, path: Path | None = None, code: int | None = None, library: str = ""
) -> str | None:
    """One line for a store failure described by `message` (an error's class and message; `library`, the
    one that raised it, tells the store when the message names no path), or None when it is not one."""
    cause = _ERRNOS.get(code) if code is not None else None
    if cause is None:
        cause = next((c for pattern, c in _PATTERNS if pattern.search(message)), None)
    if cause is None:
        return None
    if not library and "duckdb" in message.lower():
        library = "duckdb"
    store, where = _store(path or _path_in(message), home, library)
    if cause is DISK_IO and _free_bytes(where) < LOW_SPACE_BYTES:
        cause = DISK_FULL
    return f"{store} {where}: {cause.name}: {cause.fix}"


def describe(error: BaseException, home: Path) -> str | None:
    """One line for an exception raised by a store of the home (the exception or any it was raised from),
    or None."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        path = getattr(error, "filename", None)
        code = getattr(error, "errno", None) if isinstance(error, OSError) else None
        message = f"{type(error).__module__}.{type(error).__name__}: {error}"
        library = library_of([frame.filename for frame in traceback.extract_tb(error.__traceback__)])
        line = describe_text(message, home, Path(path) if path else None, code, library)
        if line is not None:
            return line
        error = error.__cause__ or error.__context__
    return None


def describe_error_info(error, home: Path) -> str | None:
    """One line for the error a Dagster step recorded (a `SerializableErrorInfo` chain), or None."""
    while error is not None:
        library = library_of(list(error.stack or []))
        line = describe_text(f"{error.cls_name}: {error.message}", home, library=library)
        if line is not None:
            return line
        error = error.cause or getattr(error, "context", None)
    return None


def _free_bytes(path: Path) -> int:
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return LOW_SPACE_BYTES
