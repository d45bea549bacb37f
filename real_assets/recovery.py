"""Recovery from runs that died (kill -9, a lost machine): a dead run never blocks the next one.

A run is *dead* when the Dagster instance still has it in progress but the process that ran it is gone:
the demo tags its in-process runs with their pid (`WORKER_PID_TAG`); a run launched by the UI or the daemon
names its worker's pid in Dagster's own "Started process for run (pid: N)" engine event. Recovery then uses
Dagster's own mechanisms: the run is reported failed (`report_run_failed`), the concurrency slots it held
and its pending steps are freed (`free_concurrency_slots_for_run`), its MLflow runs that are still RUNNING
end KILLED, and half-written `_staging-*` checkpoint folders are removed once nothing is running.

`real-assets demo` calls `recover` before it starts. The UI path gets the same through the daemon: the
demo's dagster.yaml enables run monitoring with `PidCheckingRunLauncher`, whose health check tells the
daemon a worker is gone, and `free_slots_after_run_end_seconds` frees the slots of ended runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter

WORKER_PID_TAG = "real_assets/pid"
WORKER_HOST_TAG = "real_assets/host"
_STARTED_PROCESS = re.compile(r"Started process for run \(pid: (\d+)\)")
IN_PROGRESS = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
NOT_ENDED = [DagsterRunStatus.NOT_STARTED, *IN_PROGRESS]
"""A demo's run is created NOT_STARTED: one its process left there (a signal while Dagster set it up) is
dead too. Queued runs of the UI carry no worker pid, so recovery cannot tell and leaves them."""
ENDED = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]


def worker_tags() -> dict[str, str]:
    """Tags for a run executed in this process: what `recover` needs to tell whether it is still alive."""
    return {WORKER_PID_TAG: str(os.getpid()), WORKER_HOST_TAG: socket.gethostname()}


def _process_started_at(pid: int) -> float | None:
    """When a process started (epoch seconds), or None when there is no such live process. Linux /proc;
    elsewhere only whether the pid exists."""
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        if fields[0] in ("Z", "X"):  # a zombie has finished: only its parent has not reaped it yet
            return None
        booted = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line[:5] == "btime"
        )
        return booted + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return 0.0


def worker_pid(instance: dg.DagsterInstance, run: dg.DagsterRun) -> int | None:
    """The pid of the process running `run` on this host, or None when unknown (or on another host)."""
    if WORKER_PID_TAG in run.tags:
        if run.tags.get(WORKER_HOST_TAG, socket.gethostname()) != socket.gethostname():
            return None
        return int(run.tags[WORKER_PID_TAG])
    grpc = json.loads(run.tags.get("dagster/grpc_info", "{}"))
    if grpc.get("host", "localhost") not in ("localhost", "127.0.0.1", "::1", socket.gethostname()):
        return None  # launched through a code server on another host: its pid means nothing here
    for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        found = _STARTED_PROCESS.search(record.message or "")
        if found:
            return int(found.group(1))
    return None


def worker_alive(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool | None:
    """Whether the process of a run is alive: None when it cannot be told (no pid, another host)."""
    pid = worker_pid(instance, run)
    if pid is None:
        return None
    started = _process_started_at(pid)
    if started is None:
        return False
    record = instance.get_run_record_by_id(run.run_id)
    created = record.create_timestamp.timestamp() if record else 0.0
    return started <= created + 1.0  # a process that started after the run is a reused pid


def recover(instance: dg.DagsterInstance, home: Path, tracking_uri: str | None = None) -> list[str]:
    """Fail every in-progress run whose process is gone, free its concurrency slots, end its MLflow runs,
    free the slots still held by ended runs, and remove `_staging-*` folders when nothing runs any more.
    Returns one line per thing done."""
    done: list[str] = []
    dead: list[str] = []
    live = 0
    for record in instance.get_run_records(RunsFilter(statuses=NOT_ENDED)):
        run = record.dagster_run
        alive = worker_alive(instance, run)
        if run.status == DagsterRunStatus.NOT_STARTED and alive is None:
            continue  # queued or waiting to launch: not ours to judge
        if alive is False:
            pid = worker_pid(instance, run)
            instance.report_run_failed(run, f"the process of this run (pid {pid}) is gone: marked failed")
            dead.append(run.run_id)
            done.append(
                f"run {run.run_id[:8]} ({run.job_name}) was {run.status.value} but its process {pid} is gone"
            )
        else:
            live += 1
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        holders = storage.get_concurrency_run_ids()
        ended = (
            {
                r.dagster_run.run_id
                for r in instance.get_run_records(RunsFilter(run_ids=list(holders), statuses=ENDED))
            }
            if holders
            else set()
        )
        for run_id in sorted(ended | (set(dead) & holders)):
            storage.free_concurrency_slots_for_run(run_id)
            done.append(f"freed the concurrency slots held by run {run_id[:8]}")
    done += end_abandoned_mlflow_runs(instance, tracking_uri)
    if live == 0:
        done += remove_staging_folders(home / "checkpoints")
    return done


def fail_runs_of_this_process(instance: dg.DagsterInstance, reason: str) -> list[str]:
    """Fail every run this process started and has not ended (an interrupt stopped it); returns their ids."""
    failed = []
    mine = {WORKER_PID_TAG: str(os.getpid()), WORKER_HOST_TAG: socket.gethostname()}
    for record in instance.get_run_records(RunsFilter(statuses=NOT_ENDED, tags=mine)):
        instance.report_run_failed(record.dagster_run, reason)
        failed.append(record.dagster_run.run_id)
    return failed


def end_abandoned_mlflow_runs(instance: dg.DagsterInstance, tracking_uri: str | None) -> list[str]:
    """MLflow runs still RUNNING whose Dagster run has ended (or is unknown) end KILLED."""
    if not tracking_uri:
        return []
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    done = []
    for run in client.search_runs(experiments, "attributes.status = 'RUNNING'", max_results=1000):
        dagster_run = instance.get_run_by_id(run.data.tags.get("dagster.run_id", ""))
        if dagster_run is None or dagster_run.status in ENDED:
            client.set_terminated(run.info.run_id, status="KILLED")
            done.append(f"MLflow run {run.info.run_id[:8]} ({run.info.run_name}) ended KILLED")
    return done


def remove_staging_folders(checkpoints: Path, older_than_s: float = 0.0) -> list[str]:
    """Remove the `_staging-*` folders a killed training left in `<home>/checkpoints/<asset>/<partition>/`."""
    done = []
    now = time.time()
    for folder in sorted(checkpoints.glob("*/*/_staging-*")):
        if folder.is_dir() and now - folder.stat().st_mtime >= older_than_s:
            shutil.rmtree(folder, ignore_errors=True)
            done.append(f"removed the half-written checkpoint folder {folder}")
    return done


class PidCheckingRunLauncher(DefaultRunLauncher):
    """Dagster's default launcher, plus a health check the daemon's run monitoring can use: a run whose
    worker process is gone is FAILED (the default launcher cannot tell, so such a run stays STARTED)."""

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Mapping[str, Any]) -> PidCheckingRunLauncher:
        return cls(inst_data=inst_data)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        alive = worker_alive(self._instance, run)
        if alive is False:
            return CheckRunHealthResult(WorkerStatus.FAILED, "the run worker process is gone")
        return CheckRunHealthResult(WorkerStatus.RUNNING)  # alive, or cannot tell: never fail a live run
