"""Where things live: the home folder, the warehouse, the MLflow store, the inbox, as one `Locations`
worked out once from the command line and the environment (`Locations.resolve`), and handed to the
resources (`definitions.resources_for`). Nothing else reads these variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "REAL_ASSETS_HOME"
DEFAULT_HOME = ".real_assets"
WAREHOUSE_ENV = "REAL_ASSETS_WAREHOUSE"
"""A DuckDB file or a `ducklake:` catalog; unset means `<home>/warehouse.duckdb`."""
WAREHOUSE_DATA_ENV = "REAL_ASSETS_WAREHOUSE_DATA"
"""DuckLake data files: a shared folder or `s3://...`; unset means `<home>/lake/`."""
TRACKING_ENV = "MLFLOW_TRACKING_URI"
"""The MLflow store; unset means a SQLite file `<home>/mlflow.db`."""
INBOX_ENV = "REAL_ASSETS_INBOX"
"""The folder the inbox sensor watches; unset means `<home>/inbox`."""
ENGINE_ENV = "REAL_ASSETS_ENGINE"
"""`local` (default) or `ray`: where the torch steps run (`resources.Compute.engine`); the Ray cluster is
`$RAY_ADDRESS`."""
MODEL_BACKEND_ENV = "REAL_ASSETS_MODEL_BACKEND"
"""`torch` (default) or `fake`: whether model steps train real models or run the fakes of
`core.fake_models` (`resources.Compute.model_backend`)."""
MLFLOW_ARTIFACTS_ENV = "REAL_ASSETS_MLFLOW_ARTIFACTS"
"""Artifact root of new MLflow experiments (a shared folder or `s3://...`) when tracking on a database."""


@dataclass(frozen=True)
class Locations:
    """Every place a home's data lives, resolved to absolute paths (URIs stay as given)."""

    home: Path
    warehouse: str
    """A DuckDB file, or a `ducklake:` catalog string."""
    warehouse_data: str
    """DuckLake data files (a folder or `s3://...`)."""
    tracking_uri: str
    inbox: Path
    mlflow_artifacts: str | None
    """Artifact root of new MLflow experiments; None lets an MLflow server decide."""

    @classmethod
    def resolve(cls, home: str | Path | None = None, env: Mapping[str, str] | None = None) -> Locations:
        """`home` (else `$REAL_ASSETS_HOME`, else `./.real_assets`) and the services the environment names
        (`$REAL_ASSETS_WAREHOUSE`, `$REAL_ASSETS_WAREHOUSE_DATA`, `$MLFLOW_TRACKING_URI`,
        `$REAL_ASSETS_INBOX`, `$REAL_ASSETS_MLFLOW_ARTIFACTS`), else their places in the home."""
        env = os.environ if env is None else env
        root = Path(home or env.get(HOME_ENV) or DEFAULT_HOME).expanduser().resolve()
        tracking = env.get(TRACKING_ENV) or f"sqlite:///{root / 'mlflow.db'}"
        inbox = env.get(INBOX_ENV)
        return cls(
            home=root,
            warehouse=env.get(WAREHOUSE_ENV) or str(root / "warehouse.duckdb"),
            warehouse_data=env.get(WAREHOUSE_DATA_ENV) or str(root / "lake"),
            tracking_uri=tracking,
            inbox=Path(inbox).expanduser().resolve() if inbox else root / "inbox",
            mlflow_artifacts=_artifact_root(tracking, env.get(MLFLOW_ARTIFACTS_ENV)),
        )

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"


def _artifact_root(tracking_uri: str, configured: str | None) -> str | None:
    """Where new experiments keep artifacts: the configured root; else `<home>/mlartifacts` beside a
    SQLite store; else None (an MLflow server decides)."""
    if configured:
        return configured if "://" in configured else Path(configured).expanduser().resolve().as_uri()
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return None
