"""Every test runs offline, with its own home, warehouse and MLflow store."""

import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("DAGSTER_TELEMETRY_DISABLED", "1")
for _name in (
    "REAL_ASSETS_TRAIN_CRON",
    "REAL_ASSETS_INGEST_CRON",
    "REAL_ASSETS_INBOX",
    "REAL_ASSETS_INGEST_CONFIG",
    "MLFLOW_TRACKING_URI",
):
    os.environ.pop(_name, None)  # the defaults are what the tests and the spec snapshot expect


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh REAL_ASSETS_HOME; MLflow defaults to a SQLite store inside it."""
    monkeypatch.setenv("REAL_ASSETS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "home"
