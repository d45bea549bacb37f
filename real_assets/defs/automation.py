"""When things run by themselves: a daily ingest schedule, an inbox sensor and the automation sensor.

- `raw_responses` is owned by the schedule (`raw_responses_daily`, cron `$REAL_ASSETS_INGEST_CRON`, default
  02:00 UTC, stopped by default) and by the inbox sensor; it has no automation condition.
- Every other asset states its automation condition on its decorator (`defs/conditions.py`).
- The automation condition sensor is declared running: Dagster starts it stopped otherwise.
"""

from __future__ import annotations

import json
import os

import dagster as dg

from real_assets.defs.conditions import CRON_TIMEZONE
from real_assets.defs.ingest import RAW_RESPONSES_JOB, IngestConfig
from real_assets.recovery import recover
from real_assets.resources import Home, Tracking

INGEST_CRON_ENV = "REAL_ASSETS_INGEST_CRON"
INGEST_CONFIG_ENV = "REAL_ASSETS_INGEST_CONFIG"
DEFAULT_INGEST_CRON = "0 2 * * *"


def ingest_cron() -> str:
    return os.environ.get(INGEST_CRON_ENV) or DEFAULT_INGEST_CRON


# ---------------------------------------------------------------------------------------------- ingest

raw_responses_job = dg.define_asset_job(
    RAW_RESPONSES_JOB,
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
def recover_after_failed_runs(context: dg.RunFailureSensorContext, home: Home, tracking: Tracking):
    for line in recover(context.instance, home.root, tracking.uri()):
        context.log.info(f"recovered: {line}")


jobs = [raw_responses_job]
schedules = [raw_responses_schedule]
sensors = [automation_sensor, recover_after_failed_runs]
