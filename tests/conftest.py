"""Every test runs offline, with its own home, warehouse and MLflow store. Training is trained only where
it is the subject: the tests about the real models read one real demo (`demo_home`); the tests about
orchestration run the fake model backend (`core.fake_models`) and read, or copy, one fake-trained home of
the same shape (`golden_home`, `golden_copy`). New homes start from migrated stores (`home_template`)."""

import contextlib
import os
import shutil
from pathlib import Path

import pytest

from real_assets.homes import copy_home

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("DAGSTER_TELEMETRY_DISABLED", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # One of two workers on two cores: one OpenMP thread each (torch, and the processes tests start), or
    # their thread pools oversubscribe the cores and spin against each other.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
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
SMALL_SWEEP = ("--skip", "budget_point")
"""Demo flags for a demo whose test is not about the budget sweep: no budget point is trained, the sweep
summarizes the full budget alone (the shared demo runs every point, which its tests check)."""
FAKE_MODELS = ("--model-backend", "fake")
"""`real-assets demo` flags of a demo whose test is about orchestration, not the models."""


GOLDEN_SEEDS = 1
"""Seeds of the golden home: its tests are about lineage and orchestration, which one seed shows."""


def demo_partitions(keys, seeds: int = DEMO_SEEDS) -> list:
    """The partition keys a demo of `seeds` seeds materializes (the shared demo's by default): every
    strategy, the first `seeds` seeds."""

    def seed(key) -> int:
        dimensions = getattr(key, "keys_by_dimension", None) or {}
        return int(dimensions.get("seed", 0))

    return [k for k in keys if k is None or seed(k) < seeds]


@pytest.fixture(autouse=True)
def _no_current_defs_state_storage():
    """Each test starts with no current Dagster defs-state storage. Entering a `DagsterInstance` sets it (a
    context variable); an instance entered in one fixture and exited out of order leaves it pointing at a
    disposed instance, and every later in-process `Definitions` resolution fails ("Attempted to resolve
    undefined DagsterInstance weakref")."""
    from dagster._core.storage.defs_state.base import _current_storage

    _current_storage.set(None)
    yield


@contextlib.contextmanager
def restored_environment():
    """Run CLI code that points the environment at its home, and leave the environment as it was."""
    saved = dict(os.environ)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_cli(capture, args: list[str]) -> tuple[int, str, str]:
    """`real-assets ARGS` in this process, as a user runs it: its exit code, stdout and stderr (the
    environment left as it was), read through `capture`: pytest's `capsys`, or `capfd` for all that was
    written to the file descriptors."""
    from real_assets import cli

    capture.readouterr()
    with restored_environment():
        code = cli.main(args)
    out, err = capture.readouterr()
    return code, out, err


def _cli_in_process(args: list[str]) -> None:
    """`real-assets ARGS` in this process; it must succeed."""
    from real_assets import cli

    with restored_environment():
        assert cli.main(args) == 0


MODULE_SECONDS = {
    "test_pipeline.py": 135,
    "test_ray.py": 75,
    "test_real_model.py": 70,
    "test_ui_browser.py": 55,
    "test_recovery.py": 39,
    "test_signals.py": 36,
    "test_deploy_postgres.py": 29,
    "test_wheel.py": 27,
    "test_damaged_home.py": 24,
    "test_incremental.py": 21,
    "test_refresh.py": 19,
    "test_annotation_labelstudio.py": 19,
    "test_annotation_loop.py": 14,
    "test_mixed_data.py": 13,
    "test_ducklake.py": 12,
    "test_gpu_check.py": 10,
    "test_launcher.py": 9,
    "test_audit.py": 9,
    "test_degenerate_data.py": 8,
    "test_dg.py": 7,
}
"""Seconds each slow module's tests took on 2 idle cores (its module and first-use session fixtures included;
2026-12-05, two timelines of the full suite after the in-process executor and in-process damaged-home
tests). Only the order matters: re-measure when a module moves far."""


def pytest_collection_modifyitems(config, items):
    """The longest modules first, so that under pytest-xdist (`./scripts/test` runs `-n 2 --dist loadfile
    --no-loadscope-reorder`: a module's tests on one worker, in this order) the two workers end together:
    with xdist's own order (modules with the most tests first) the Ray module ran last, alone, for a minute.
    The order within a module is kept."""
    items.sort(key=lambda item: -MODULE_SECONDS.get(item.path.name, 0))


def pytest_collection_finish(session):
    """The test modules and what they import live as long as the worker: frozen for the garbage collector
    (`core.heap`), so that its full collections during the tests walk only what the tests make."""
    from real_assets.core.heap import freeze_imported

    freeze_imported()


def _built_once(tmp_path_factory, worker_id: str, name: str, build) -> Path:
    """`<folder>/home` built by `build(home)` once for the whole run: under pytest-xdist the first worker
    to ask builds it in the run's shared temporary folder while the others wait, then all read it."""
    if worker_id == "master":
        root = tmp_path_factory.mktemp(name) / "home"
        build(root)
        return root
    from filelock import FileLock

    folder = tmp_path_factory.getbasetemp().parent / name
    root, built = folder / "home", folder / "built"
    with FileLock(f"{folder}.lock"):
        if not built.exists():
            shutil.rmtree(folder, ignore_errors=True)  # what a worker that failed to build it left
            folder.mkdir()
            build(root)
            built.touch()
    return root


@pytest.fixture(scope="session")
def home_template(tmp_path_factory, worker_id) -> Path:
    """A prepared, empty home, made once: from here on every new home of the session (the CLI's, in this
    process and in the ones it starts) copies its migrated Dagster and MLflow stores
    (`REAL_ASSETS_HOME_TEMPLATE`) instead of migrating them again."""
    from real_assets.homes import HOME_TEMPLATE_ENV, prepare_home

    def build(root: Path) -> None:
        with restored_environment():
            prepare_home(str(root))

    root = _built_once(tmp_path_factory, worker_id, "template", build)
    os.environ[HOME_TEMPLATE_ENV] = str(root)
    yield root
    os.environ.pop(HOME_TEMPLATE_ENV, None)


@pytest.fixture
def home(tmp_path, home_template):
    """A fresh home folder, its MLflow SQLite store a copy of the template's (already migrated). Tests
    hand it over explicitly (`materialize(..., home=home)`, `definitions(Locations.resolve(home))`,
    `--home`): nothing reads it from the environment."""
    root = tmp_path / "home"
    root.mkdir()
    shutil.copy2(home_template / "mlflow.db", root / "mlflow.db")
    return root


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory, worker_id, home_template) -> Path:
    """One real `real-assets demo` home for the whole run (the full graph, every partition, real
    training). Tests only read it."""
    return _built_once(
        tmp_path_factory,
        worker_id,
        "shared",
        lambda root: _cli_in_process(["demo", "--home", str(root), *TINY_DEMO]),
    )


@pytest.fixture(scope="session")
def golden_home(tmp_path_factory, worker_id, home_template) -> Path:
    """The shared demo's graph (same source and prompts; `GOLDEN_SEEDS` seeds) run once with the fake model
    backend: every asset, partition, check, MLflow run and checkpoint record, in a fraction of the time.
    Tests only read it; a test that changes a home takes a `golden_copy`."""

    def build(root: Path) -> None:
        _cli_in_process(["demo", "--home", str(root), *TINY_DEMO, "--seeds", str(GOLDEN_SEEDS), *FAKE_MODELS])

    return _built_once(tmp_path_factory, worker_id, "golden", build)


@pytest.fixture
def golden_copy(golden_home, tmp_path) -> Path:
    """A copy of the golden home for one test to change."""
    return copy_home(golden_home, tmp_path / "home")
