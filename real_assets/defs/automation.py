"""When things run by themselves: a daily ingest schedule, an inbox sensor and the automation sensor.

- `raw_responses` is owned by the schedule (`raw_responses_daily`, cron `$REAL_ASSETS_INGEST_CRON`, default
  02:00 UTC, stopped by default) and by the inbox sensor; it has no automation condition.
- Every other asset states its automation condition on its decorator (`defs/conditions.py`).
- The automation condition sensor is declared running: Dagster starts it stopped otherwise.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import dagster as dg

from real_assets.core.hashing import digest_file
from real_assets.core.sources import SOURCE_NAMES, check_source
from real_assets.defs.conditions import CRON_TIMEZONE
from real_assets.defs.ingest import IngestConfig
from real_assets.recovery import recover
from real_assets.settings import default_tracking_uri, home_dir

INGEST_CRON_ENV = "REAL_ASSETS_INGEST_CRON"
INBOX_ENV = "REAL_ASSETS_INBOX"
INGEST_CONFIG_ENV = "REAL_ASSETS_INGEST_CONFIG"
DEFAULT_INGEST_CRON = "0 2 * * *"


def ingest_cron() -> str:
    return os.environ.get(INGEST_CRON_ENV) or DEFAULT_INGEST_CRON


# ---------------------------------------------------------------------------------------------- ingest

raw_responses_job = dg.define_asset_job(
    "refresh_raw_responses",
    selection=dg.AssetSelection.assets("raw_responses"),
    description="Ingest the configured source into the raw layer; automation takes it from there.",
)


def default_ingest_run_config() -> dict:
    """The configured source for scheduled refreshes: `$REAL_ASSETS_INGEST_CONFIG` (a JSON object of
    `IngestConfig` fields, e.g. `{"source": "hh_rlhf", "path": "Anthropic/hh-rlhf", "revision": "..."}`),
    validated at load time; else the `IngestConfig` defaults. Spelled out so the UI shows it."""
    raw = os.environ.get(INGEST_CONFIG_ENV)
    try:
        fields = json.loads(raw) if raw else {}
        unknown = set(fields) - set(IngestConfig.model_fields)
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}")
        validated = IngestConfig(**fields)
    except (ValueError, TypeError) as e:
        raise ValueError(f"${INGEST_CONFIG_ENV} is not a valid raw_responses config: {e}") from e
    config = {k: v for k, v in validated.model_dump().items() if v is not None and v != {}}
    return {"ops": {"raw_responses": {"config": config}}}


raw_responses_schedule = dg.ScheduleDefinition(
    name="raw_responses_daily",
    job=raw_responses_job,
    cron_schedule=ingest_cron(),
    execution_timezone=CRON_TIMEZONE,
    run_config=default_ingest_run_config(),
    default_status=dg.DefaultScheduleStatus.STOPPED,
    tags={"real_assets/launched_by": "schedule"},
    description=f"Refresh raw_responses (cron ${INGEST_CRON_ENV}, default {DEFAULT_INGEST_CRON} UTC).",
)


# ---------------------------------------------------------------------------------------------- inbox

SIDECAR_SUFFIX = ".source.json"
SIDECAR_KEYS = frozenset({"source", "split", "limit", "seed", "test_fraction", "max_chars", "column_map"})
SETTLE_SECONDS = 5.0
"""A file modified more recently than this is still being written: it waits for the next tick."""
_IGNORED_SUFFIXES = (SIDECAR_SUFFIX, ".tmp", ".part", ".partial", ".crdownload")
_FILE_SOURCES = tuple(s for s in SOURCE_NAMES if s != "synthetic")


def inbox_dir() -> Path:
    """`$REAL_ASSETS_INBOX`, else `<home>/inbox` (created)."""
    configured = os.environ.get(INBOX_ENV)
    path = Path(configured).expanduser().resolve() if configured else home_dir() / "inbox"
    path.mkdir(parents=True, exist_ok=True)
    return path


def inbox_ingest_config(path: Path) -> dict:
    """The `raw_responses` config for one inbox file.

    The source comes from a sidecar `<file name>.source.json` if there is one, e.g.
    `prefs.csv.source.json` = `{"source": "table", "column_map": {"prompt": "q", ...}}` (keys: source,
    split, limit, seed, test_fraction, max_chars, column_map); else from the file name
    `<source>__<anything>.<ext>` with source one of hh_rlhf, shp2, ultrafeedback, table
    (`shp2__week12.jsonl` -> shp2); else `table` (column names detected from the file).
    Drop the sidecar first, then the data file. Raises ValueError on a bad sidecar."""
    config: dict = {}
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    if sidecar.is_file():
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
        config["source"] = prefix if sep and prefix in _FILE_SOURCES else "table"
    return {**config, "path": str(path)}


def _stamp(stat: os.stat_result) -> str:
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _candidates(inbox: Path) -> list[Path]:
    return sorted(
        p
        for p in inbox.iterdir()
        if p.is_file() and not p.name.startswith((".", "_")) and not p.name.endswith(_IGNORED_SUFFIXES)
    )


@dg.sensor(
    name="inbox_sensor",
    job=raw_responses_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="One raw_responses run per file dropped into <home>/inbox (or $REAL_ASSETS_INBOX).",
)
def inbox_sensor(context: dg.SensorEvaluationContext):
    """Requests one `raw_responses` run per new or changed file, exactly once: the cursor holds
    {file name: "size:mtime_ns"} of every file already handled (requested or skipped), and the run key
    carries the content hash, so the daemon also drops a duplicate request. A file that fails
    `check_source` (unreadable, wrong schema, bad sidecar) is logged, recorded and not retried until it
    changes; the sensor goes on with the next file. See `inbox_ingest_config` for the naming rules."""
    inbox = inbox_dir()
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    present: dict[str, str] = {}
    now = time.time()
    requests: list[dg.RunRequest] = []
    skipped: list[str] = []
    for path in _candidates(inbox):
        try:
            stat = path.stat()
        except OSError:
            continue  # removed while we looked
        stamp = _stamp(stat)
        if seen.get(path.name) == stamp:
            present[path.name] = stamp
            continue
        if now - stat.st_mtime < SETTLE_SECONDS:
            continue  # still being written: next tick
        present[path.name] = stamp
        try:
            config = inbox_ingest_config(path)
            check_source(IngestConfig(**config).spec())
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


# ---------------------------------------------------------------------------------------------- automation

automation_sensor = dg.AutomationConditionSensorDefinition(
    "real_assets_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Evaluates every asset's automation condition (eager steps, training on data change).",
)

# ---------------------------------------------------------------------------------------------- recovery


@dg.run_failure_sensor(
    name="recover_after_failed_runs",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After a failed run (one the run monitoring found dead included): end its MLflow runs "
    "still RUNNING as KILLED, free slots still held by ended runs, remove half-written checkpoint folders.",
)
def recover_after_failed_runs(context: dg.RunFailureSensorContext):
    for line in recover(context.instance, home_dir(), default_tracking_uri()):
        context.log.info(f"recovered: {line}")


jobs = [raw_responses_job]
schedules = [raw_responses_schedule]
sensors = [inbox_sensor, automation_sensor, recover_after_failed_runs]
