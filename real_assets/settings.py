"""Where things live: the home folder and the paths under it."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "REAL_ASSETS_HOME"
DEFAULT_HOME = ".real_assets"
WAREHOUSE_ENV = "REAL_ASSETS_WAREHOUSE"
"""A DuckDB file or a `ducklake:` catalog; unset means `<home>/warehouse.duckdb`."""
WAREHOUSE_DATA_ENV = "REAL_ASSETS_WAREHOUSE_DATA"
"""DuckLake data files: a shared folder or `s3://...`; unset means `<home>/lake/`."""
ENGINE_ENV = "REAL_ASSETS_ENGINE"
"""`local` (default) or `ray`: where the torch steps run (`resources.Compute.engine`); the Ray cluster is
`$RAY_ADDRESS`."""
MODEL_BACKEND_ENV = "REAL_ASSETS_MODEL_BACKEND"
"""`torch` (default) or `fake`: whether model steps train real models or run the fakes of
`core.fake_models` (`resources.Compute.model_backend`)."""
MLFLOW_ARTIFACTS_ENV = "REAL_ASSETS_MLFLOW_ARTIFACTS"
"""Artifact root of new MLflow experiments (a shared folder or `s3://...`) when tracking on a database."""


def home_dir() -> Path:
    """`$REAL_ASSETS_HOME`, else `.real_assets/` in the working directory (absolute, created)."""
    home = Path(os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def warehouse_path() -> Path:
    return home_dir() / "warehouse.duckdb"


def checkpoints_dir() -> Path:
    return home_dir() / "checkpoints"


def default_tracking_uri() -> str:
    """`$MLFLOW_TRACKING_URI`, else a SQLite store under the home."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home_dir() / 'mlflow.db'}"


def artifact_root(tracking_uri: str) -> str | None:
    """Where new experiments keep artifacts: `$REAL_ASSETS_MLFLOW_ARTIFACTS`; else `<home>/mlartifacts` beside
    a SQLite store; else None (an MLflow server decides)."""
    configured = os.environ.get(MLFLOW_ARTIFACTS_ENV)
    if configured:
        return configured if "://" in configured else Path(configured).expanduser().resolve().as_uri()
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return None
