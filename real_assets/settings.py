"""Where things live: the home folder and the paths under it."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "REAL_ASSETS_HOME"
DEFAULT_HOME = ".real_assets"


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
