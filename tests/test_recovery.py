"""Crashes and races, with the fake model backend: a run killed with -9 never blocks the next demo;
concurrent first runs share one home safely; a dead tracking server fails fast; a failing source is
reported once."""

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from conftest import FAKE_MODELS, SHORT_EVAL, SMALL_SWEEP

from real_assets.cli import HOME_TEMPLATE_ENV, init_lock
from real_assets.recovery import WORKER_PID_TAG, recover

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    *("--n-prompts", "12", *FAKE_MODELS),
    *("--config", SMALL_SWEEP, "--config", SHORT_EVAL),
]
HANG_GUARD_S = 900
"""Bounds a command that would otherwise hang (the failure these tests catch), never a timing claim."""


def _env(home: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, "REAL_ASSETS_HOME": str(home), "PYTHONPATH": str(ROOT), **extra}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from real_assets.cli import main; sys.exit(main())", *args]


def _instance(home: Path) -> dg.DagsterInstance:
    with init_lock(home):  # the demo may still be creating the instance's storage
        return dg.DagsterInstance.from_config(str(home / "dagster"))


def _kill_demo_inside(home: Path, fn: str, args: list[str], out: Path) -> tuple[str, str]:
    """Start `real-assets demo` with the fake model `fn` held at its barrier; once the step is inside it,
    check that its run holds a pool slot, and kill -9 the demo's whole process group. Returns the
    killed run's id and step (asset[partition])."""
    barrier = out.with_suffix(".barrier")
    barrier.mkdir()
    (barrier / f"{fn}.hold").touch()
    with open(out, "w") as log:
        demo = subprocess.Popen(
            _cli("demo", "--home", str(home), *args),
            env=_env(home, REAL_ASSETS_FAKE_BARRIER=str(barrier)),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + HANG_GUARD_S
        while not (barrier / f"{fn}.reached").exists():
            assert demo.poll() is None, f"the demo ended before reaching {fn}:\n{out.read_text()}"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with _instance(home) as instance:
            [run] = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
            assert run.run_id in instance.event_log_storage.get_concurrency_run_ids()
    finally:
        os.killpg(demo.pid, signal.SIGKILL)
        demo.wait()
    [asset] = run.asset_selection
    partition = run.tags.get("dagster/partition")
    return run.run_id, f"{asset.to_user_string()}[{partition}]" if partition else asset.to_user_string()


@pytest.mark.slow
@pytest.mark.usefixtures("home_template")
def test_a_demo_killed_in_each_kind_of_step_is_recovered_by_the_next_demo(tmp_path):
    """kill -9 inside a model step (reference_policy: unpartitioned, GPU pool), a warehouse step
    (selected_pairs, warehouse pool, scoring with the reference model) and a partitioned model step
    (dpo_checkpoint: a staging folder and an MLflow run open), each held at the fake model's barrier;
    each next demo recovers the run the previous one left behind and resumes with `--from`; the last
    finishes, and an audit of the whole graph passes."""
    home = tmp_path / "home"
    args = [*SMALL, "--seeds", "1", "--partition", "0|margin"]
    kills = [
        ("train_reference", [], "reference_policy"),
        ("reference_pair_scores", ["--from", "reference_policy"], "selected_pairs[0|margin]"),
        ("train_dpo", ["--from", "selected_pairs"], "dpo_checkpoint[0|margin]"),
    ]
    killed: list[str] = []
    for n, (fn, resume, step) in enumerate(kills):
        out = tmp_path / f"demo-{n}.log"
        run_id, killed_step = _kill_demo_inside(home, fn, [*args, *resume], out)
        assert killed_step == step
        if killed:
            assert f"recovered: run {killed[-1][:8]}" in out.read_text()
        killed.append(run_id)
    assert list((home / "checkpoints" / "dpo_checkpoint").glob("*/_staging-*"))  # the kill left one

    last = subprocess.run(
        _cli("demo", "--home", str(home), *args, "--from", "dpo_checkpoint"),
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert last.returncode == 0, last.stdout + last.stderr
    assert f"recovered: run {killed[-1][:8]}" in last.stdout
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        for run_id in killed:
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
        assert not instance.event_log_storage.get_concurrency_run_ids()
    assert not list((home / "checkpoints").glob("*/*/_staging-*"))
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    for run_id in killed:
        [mlflow_run] = client.search_runs(
            [e.experiment_id for e in client.search_experiments()], f"tags.`dagster.run_id` = '{run_id}'"
        )
        assert mlflow_run.info.status == "KILLED"

    audit = subprocess.run(_cli("audit", "--home", str(home)), env=_env(home), capture_output=True, text=True)
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_recover_leaves_live_runs_and_ends_abandoned_mlflow_runs(tmp_path, home_template):
    from mlflow import MlflowClient

    shutil.copy2(home_template / "mlflow.db", tmp_path / "mlflow.db")  # migrated once per session
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "checkpoints" / "dpo_checkpoint" / "easy" / "_staging-abc").mkdir(parents=True)
    with dg.instance_for_test() as instance:
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        runs = {}
        for name, pid in (("dead", gone.pid), ("live", os.getpid())):
            run = dg.DagsterRun(
                job_name=f"__{name}",
                run_id=f"{name}-run",
                status=dg.DagsterRunStatus.STARTED,
                tags={WORKER_PID_TAG: str(pid)},
            )
            runs[name] = instance.add_run(run).run_id
        client = MlflowClient(tracking_uri=uri)
        experiment = client.create_experiment("real-assets")
        mlflow_runs = {
            name: client.create_run(experiment, tags={"dagster.run_id": run_id}).info.run_id
            for name, run_id in runs.items()
        }
        done = recover(instance, tmp_path, uri)
        assert instance.get_run_by_id(runs["dead"]).status == dg.DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(runs["live"]).status == dg.DagsterRunStatus.STARTED
        assert client.get_run(mlflow_runs["dead"]).info.status == "KILLED"
        assert client.get_run(mlflow_runs["live"]).info.status == "RUNNING"
        # a run is still live: its staging folder may be in use
        assert (tmp_path / "checkpoints" / "dpo_checkpoint" / "easy" / "_staging-abc").exists()
        assert any(line.startswith("run dead-run") for line in done)


@pytest.mark.slow
def test_concurrent_first_runs_share_one_fresh_home(tmp_path):
    """What every command does first, from three processes at once on one fresh home."""
    home = tmp_path / "home"
    code = (
        "import sys, dagster as dg; from mlflow import MlflowClient; "
        "from real_assets.cli import prepare_home; from real_assets.settings import default_tracking_uri; "
        "prepare_home(sys.argv[1]); "
        "instance = dg.DagsterInstance.get(); instance.get_runs(limit=1); "
        "MlflowClient(tracking_uri=default_tracking_uri()).search_experiments()"
    )
    env = _env(home)
    env.pop(HOME_TEMPLATE_ENV, None)  # each process migrates the stores, as on a machine of its own
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(home)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=HANG_GUARD_S)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(outputs)
    for db in (home / "dagster" / "history" / "runs.db", home / "mlflow.db"):
        with sqlite3.connect(db) as con:
            assert con.execute("select count(*) from alembic_version").fetchone()[0] == 1, db
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        assert instance.get_runs() == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_dead_tracking_server_fails_fast_with_a_clear_message(tmp_path):
    home = tmp_path / "home"
    uri = f"http://127.0.0.1:{_closed_port()}"
    result = subprocess.run(
        _cli("demo", "--home", str(home), *SMALL),
        env=_env(home, MLFLOW_TRACKING_URI=uri),
        capture_output=True,
        text=True,
        timeout=120,  # MLflow's own retries take minutes: this bound is the failure the test catches
    )
    assert result.returncode == 2
    assert f"MLflow tracking server {uri} did not answer" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.usefixtures("home_template")
def test_a_failing_source_is_reported_once(tmp_path):
    home = tmp_path / "home"
    missing = tmp_path / "nowhere.jsonl"
    result = subprocess.run(
        _cli("demo", "--home", str(home), "--source", "table", "--path", str(missing), *SMALL),
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert output.count(str(missing)) == 1, output
    assert "Traceback" not in output and len(result.stderr.splitlines()) <= 4, result.stderr


def test_the_daemon_fails_a_dead_ui_run_and_frees_its_slots(tmp_path, monkeypatch):
    """The UI path: the home's dagster.yaml gives the daemon's run monitoring a launcher that can tell a
    dead run worker (pid from Dagster's own "Started process" event), and frees the slots of ended runs."""
    import logging

    from dagster._core.events import EngineEventData
    from dagster._daemon.monitoring.run_monitoring import monitor_started_run

    from real_assets.cli import DAGSTER_YAML
    from real_assets.recovery import PidCheckingRunLauncher

    (tmp_path / "dagster.yaml").write_text(DAGSTER_YAML)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.run_launcher, PidCheckingRunLauncher)
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0
        run = instance.add_run(
            dg.DagsterRun(job_name="__ui", run_id="ui-run", status=dg.DagsterRunStatus.STARTED)
        )
        instance.report_engine_event(
            f"Started process for run (pid: {gone.pid}).", run, EngineEventData.in_process(gone.pid)
        )
        [record] = instance.get_run_records(dg.RunsFilter(run_ids=[run.run_id]))
        monitor_started_run(instance, None, record, logging.getLogger("test"))
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        live = instance.add_run(
            dg.DagsterRun(job_name="__ui", run_id="live-run", status=dg.DagsterRunStatus.STARTED)
        )
        instance.report_engine_event(
            f"Started process for run (pid: {os.getpid()}).", live, EngineEventData.in_process(os.getpid())
        )
        [record] = instance.get_run_records(dg.RunsFilter(run_ids=[live.run_id]))
        monitor_started_run(instance, None, record, logging.getLogger("test"))
        assert instance.get_run_by_id(live.run_id).status == dg.DagsterRunStatus.STARTED


def test_the_team_deployment_fails_dead_runs_and_frees_their_slots():
    """deploy/dagster.yaml (validated against Dagster's instance schema) gives the daemon's run monitoring
    the launcher that can tell a dead run worker, and frees the pool slots of ended runs."""
    import importlib

    from dagster._core.instance.config import dagster_instance_config

    from real_assets.recovery import PidCheckingRunLauncher

    config, _ = dagster_instance_config(str(ROOT / "deploy"), "dagster.yaml")
    launcher = config["run_launcher"]
    assert getattr(importlib.import_module(launcher["module"]), launcher["class"]) is PidCheckingRunLauncher
    assert config["run_monitoring"]["enabled"]
    assert config["run_monitoring"]["free_slots_after_run_end_seconds"] > 0
