"""Every test runs offline, with its own home, warehouse and MLflow store; the tests that only read a
materialized graph share one (`demo_home`), built once per session."""

import os
from pathlib import Path

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

DEMO_SEEDS = 2
DEMO_PROMPTS = 24
SHORT_EVAL = 'eval_scores={"samples_per_prompt": 1, "max_new_tokens": 16}'
"""`--config` for eval with one short sample per held-out prompt: the win rate is still judged."""
TINY_DEMO = [
    *("--n-prompts", str(DEMO_PROMPTS), "--sft-epochs", "3", "--dpo-epochs", "1"),
    *("--seeds", str(DEMO_SEEDS), "--config", SHORT_EVAL),
]
"""The shared demo: small enough for CPU, large enough that the strategies differ; two seeds, so that the
comparison has intervals."""
SMALL_SWEEP = 'budget_sweep={"keep_fractions": [0.5], "strategies": ["easy"]}'
"""`--config` for a demo whose test is not about the budget sweep: one budget of one strategy (the shared
demo runs the whole sweep, which its tests check)."""


def demo_partitions(keys) -> list:
    """The partition keys the shared demo materializes: every strategy, the first `DEMO_SEEDS` seeds."""
    return [k for k in keys if k is None or "|" not in str(k) or int(str(k).split("|")[0]) < DEMO_SEEDS]


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh REAL_ASSETS_HOME; MLflow defaults to a SQLite store inside it."""
    monkeypatch.setenv("REAL_ASSETS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "home"


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory) -> Path:
    """One `real-assets demo` home for the whole session (the full graph, every partition). Tests only read
    it, or restore exactly what they change; use `demo_env` to point the environment at it."""
    from real_assets import cli

    root = tmp_path_factory.mktemp("shared") / "home"
    saved = dict(os.environ)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        assert cli.main(["demo", "--home", str(root), *TINY_DEMO]) == 0
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return root


@pytest.fixture
def demo_env(demo_home, monkeypatch) -> Path:
    """The environment of the shared demo home (home, Dagster instance, MLflow store) for one test."""
    monkeypatch.setenv("REAL_ASSETS_HOME", str(demo_home))
    monkeypatch.setenv("DAGSTER_HOME", str(demo_home / "dagster"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return demo_home
