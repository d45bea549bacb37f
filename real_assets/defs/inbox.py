"""The inbox sensor: one `raw_responses` run per data file dropped into `<home>/inbox`.

Only regular files directly inside the inbox are read: symlinks (which could point anywhere), FIFOs,
devices, sockets and sub-folders are skipped, so a link to a private file never reaches `raw.rejects`.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import dagster as dg

from real_assets.core.hashing import digest_file
from real_assets.core.sources import FILE_SOURCE_NAMES, check_source
from real_assets.defs.ingest import RAW_RESPONSES_JOB, IngestConfig
from real_assets.resources import Home

SIDECAR_SUFFIX = ".source.json"
SIDECAR_KEYS = frozenset({"source", "split", "limit", "seed", "test_fraction", "max_chars", "column_map"})
SETTLE_SECONDS = 5.0
"""A file modified more recently than this is still being written: it waits for the next tick."""
_IGNORED_SUFFIXES = (SIDECAR_SUFFIX, ".tmp", ".part", ".partial", ".crdownload")


def _regular_file(path: Path) -> os.stat_result | None:
    """The file's own stat if it is a regular file (not a symlink, FIFO, device, socket or folder)."""
    try:
        st = path.lstat()
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def inbox_ingest_config(path: Path) -> dict:
    """The `raw_responses` config for one inbox file.

    The source comes from a sidecar `<file name>.source.json` if there is one, e.g.
    `prefs.csv.source.json` = `{"source": "table", "column_map": {"prompt": "q", ...}}` (keys: source,
    split, limit, seed, test_fraction, max_chars, column_map); else from the file name
    `<source>__<anything>.<ext>` with source one of the file sources (hh_rlhf, shp2, ultrafeedback,
    table, ...) (`shp2__week12.jsonl` -> shp2); else `table` (column names detected from the file).
    Drop the sidecar first, then the data file. Raises ValueError on a bad sidecar (a sidecar that is
    a symlink or not a regular file is bad)."""
    config: dict = {}
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    if sidecar.exists() or sidecar.is_symlink():
        if _regular_file(sidecar) is None:
            raise ValueError(f"sidecar {sidecar.name}: not a regular file")
        try:
            config = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"sidecar {sidecar.name}: {e}") from e
        if not isinstance(config, dict) or set(config) - SIDECAR_KEYS:
            raise ValueError(
                f"sidecar {sidecar.name}: expected an object with keys from {sorted(SIDECAR_KEYS)}"
            )
    if "source" not in config:
        prefix, sep, _ = path.name.partition("__")
        config["source"] = prefix if sep and prefix in FILE_SOURCE_NAMES else "table"
    return {**config, "path": str(path)}


def _stamp(st: os.stat_result) -> str:
    return f"{st.st_size}:{st.st_mtime_ns}"


def _candidates(inbox: Path) -> list[tuple[Path, os.stat_result]]:
    """Regular files directly in the inbox, by name, with their own (not a link target's) stat."""
    found = []
    for path in sorted(inbox.iterdir()):
        if path.name.startswith((".", "_")) or path.name.endswith(_IGNORED_SUFFIXES):
            continue
        st = _regular_file(path)
        if st is not None:
            found.append((path, st))
    return found


@dg.sensor(
    name="inbox_sensor",
    job_name=RAW_RESPONSES_JOB,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="One raw_responses run per file dropped into <home>/inbox (or $REAL_ASSETS_INBOX).",
)
def inbox_sensor(context: dg.SensorEvaluationContext, home: Home):
    """Requests one `raw_responses` run per new or changed file, exactly once: the cursor holds
    {file name: "size:mtime_ns"} of every file already handled (requested or skipped), and the run key
    carries the content hash, so the daemon also drops a duplicate request. A file that fails
    `check_source` (unreadable, wrong schema, bad sidecar) is logged, recorded and not retried until it
    changes; the sensor goes on with the next file. Symlinks and special files are never read. See
    `inbox_ingest_config` for the naming rules."""
    inbox = home.inbox
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    present: dict[str, str] = {}
    now = time.time()
    requests: list[dg.RunRequest] = []
    skipped: list[str] = []
    for path, st in _candidates(inbox):
        stamp = _stamp(st)
        if seen.get(path.name) == stamp:
            present[path.name] = stamp
            continue
        if now - st.st_mtime < SETTLE_SECONDS:
            continue  # still being written: next tick
        present[path.name] = stamp
        try:
            config = inbox_ingest_config(path)
            check_source(IngestConfig(**config))
            content = digest_file(path)
        except Exception as e:  # one bad file never stops the sensor
            context.log.warning(f"inbox: skipping {path.name}: {type(e).__name__}: {e}")
            skipped.append(path.name)
            continue
        requests.append(
            dg.RunRequest(
                run_key=f"inbox:{path.name}:{content[:16]}",
                run_config={"ops": {"raw_responses": {"config": config}}},
                tags={"real_assets/launched_by": "inbox_sensor", "real_assets/inbox_file": path.name},
            )
        )
    cursor = json.dumps(present, sort_keys=True)
    if requests:
        return dg.SensorResult(run_requests=requests, cursor=cursor)
    reason = f"skipped unreadable {', '.join(skipped)}" if skipped else f"no new file in {inbox}"
    return dg.SensorResult(skip_reason=reason, cursor=cursor)


sensors = [inbox_sensor]
