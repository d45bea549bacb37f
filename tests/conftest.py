"""Every test runs offline, with its own home, warehouse and MLflow store."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("DAGSTER_TELEMETRY_DISABLED", "1")

import pytest


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh REAL_ASSETS_HOME; MLflow defaults to a SQLite store inside it."""
    monkeypatch.setenv("REAL_ASSETS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "home"
