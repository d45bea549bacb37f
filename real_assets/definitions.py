"""The code location: every asset, check, resource, schedule and sensor of real-assets."""

import dagster as dg

from real_assets.audit import audit_checks
from real_assets.defs.automation import apply_automation, jobs, schedules, sensors
from real_assets.defs.evaluation import eval_scores, strategy_comparison
from real_assets.defs.features import response_embeddings
from real_assets.defs.ingest import ingest_checks, raw_responses
from real_assets.defs.selection import selected_pairs
from real_assets.defs.sql_assets import sql_assets, sql_checks
from real_assets.defs.training import dpo_checkpoint, reference_policy
from real_assets.resources import Compute, Tracking, Warehouse

ASSETS = [
    raw_responses,
    response_embeddings,
    *sql_assets,
    selected_pairs,
    reference_policy,
    dpo_checkpoint,
    eval_scores,
    strategy_comparison,
]

CHECKS = [*ingest_checks, *sql_checks, *audit_checks]


def resources() -> dict:
    """Default resources: paths from the environment (REAL_ASSETS_HOME, MLFLOW_TRACKING_URI)."""
    return {"warehouse": Warehouse(), "tracking": Tracking(), "compute": Compute()}


defs = dg.Definitions(
    assets=apply_automation(ASSETS),
    asset_checks=CHECKS,
    jobs=jobs,
    schedules=schedules,
    sensors=sensors,
    resources=resources(),
)
