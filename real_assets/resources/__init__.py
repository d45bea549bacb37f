"""Resources for every outside system: the home folder, the warehouse (DuckDB or DuckLake), MLflow
tracking, and compute (device, engine, model backend)."""

from real_assets.resources.compute import Compute
from real_assets.resources.home import Home
from real_assets.resources.labelstudio import LabelStudio
from real_assets.resources.tracking import StepRun, Tracking, TrackingServerUnreachable, check_tracking_server
from real_assets.resources.warehouse import (
    CheckpointWarning,
    Warehouse,
    extension_file,
    replace_rows,
    same_catalog_cursor,
    table_digest,
    table_exists,
)

__all__ = [
    "CheckpointWarning",
    "Compute",
    "Home",
    "LabelStudio",
    "StepRun",
    "Tracking",
    "TrackingServerUnreachable",
    "Warehouse",
    "check_tracking_server",
    "extension_file",
    "replace_rows",
    "same_catalog_cursor",
    "table_digest",
    "table_exists",
]
