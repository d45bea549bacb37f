"""SIGTERM and SIGINT to `real-assets demo` and `audit`, at several points: the command ends with one line
that names where it was stopped, a non-zero exit code, and leaves no run NOT_STARTED or STARTED, no
MLflow run RUNNING and no staging folder."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    *("--n-prompts", "12", "--sft-epochs", "1", "--dpo-epochs", "1", "--seeds", "1"),
    *("--partition", "0|easy"),
    *("--config", 'budget_sweep={"keep_fractions": [0.5], "strategies": ["easy"]}'),
    *("--config", 'eval_scores={"samples_per_prompt": 1, "max_new_tokens": 16}'),
]
HANG_GUARD_S = 600
"""Bounds a command that would otherwise hang (the failure these tests catch), never a timing claim."""


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, "REAL_ASSETS_HOME": str(home), "PYTHONPATH": str(ROOT)}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from real_assets.cli import main; sys.exit(main())", *args]


class Command:
    """A command in a subprocess whose stdout lines are collected as they come."""

    def __init__(self, home: Path, *args: str):
        self.proc = subprocess.Popen(
            _cli(*args),
            env=_env(home),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for text in self.proc.stdout:
            self.lines.append(text)

    def wait_for(self, predicate) -> None:
        deadline = time.monotonic() + HANG_GUARD_S
        while not any(predicate(text) for text in list(self.lines)):
            assert self.proc.poll() is None, "".join(self.lines) + self.proc.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.02)

    def stop(self, signum: int) -> tuple[int, str, str]:
        """Send `signum` to the command alone (not its group), then wait for it to end."""
        self.proc.send_signal(signum)
        try:
            code = self.proc.wait(timeout=HANG_GUARD_S)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.reader.join()
        return code, "".join(self.lines), self.proc.stderr.read()


def _step_line(step: str, finished: bool):
    """A stdout line of the demo for `step`: its progress (not finished) or its final line (finished)."""

    def match(text: str) -> bool:
        parts = text.split()
        return bool(parts) and parts[0] == step and (" run " in text) == finished

    return match


def _run_created(home: Path, step: str):
    """True once the demo has created the Dagster run of `step` (it is being set up)."""
    instance = None

    def match(_text: str) -> bool:
        nonlocal instance
        if instance is None:
            if not (home / "dagster" / "history" / "runs.db").exists():
                return False
            instance = dg.DagsterInstance.from_config(str(home / "dagster"))
        return any(
            step in {key.to_user_string() for key in run.asset_selection or ()}
            for run in instance.get_runs(limit=3)
        )

    return match


def _assert_nothing_left(home: Path, killed: str | None) -> None:
    """No run left NOT_STARTED or STARTED, no pool slot held, no MLflow run RUNNING (the one of the
    `killed` step ended KILLED), no staging folder."""
    from mlflow import MlflowClient

    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        runs = instance.get_runs()
        assert runs
        ended = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)
        assert all(r.status in ended for r in runs), [(r.run_id[:8], r.status) for r in runs]
        assert not instance.event_log_storage.get_concurrency_run_ids()
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments) if experiments else []
    assert "RUNNING" not in [r.info.status for r in runs]
    if killed is not None:
        assert [r.info.status for r in runs if r.info.run_name == killed] == ["KILLED"]
    assert not list((home / "checkpoints").glob("*/*/_staging-*"))


POINTS = {
    # When the signal is sent, the step the demo must name (None: between steps, or either), and whether
    # the step's MLflow run exists by then and must end KILLED.
    "between steps": (lambda home: _step_line("raw_responses", finished=True), None, False),
    "in a step's set-up": (lambda home: _run_created(home, "reference_policy"), None, False),
    "in a warehouse write": (
        lambda home: _step_line("raw_responses", finished=False),
        "raw_responses",
        True,
    ),
    "in training": (
        lambda home: _step_line("dpo_checkpoint[0|easy]", finished=False),
        "dpo_checkpoint[0|easy]",
        True,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("point", "signum"),
    [(point, signal.SIGTERM) for point in POINTS] + [("in training", signal.SIGINT)],
)
def test_a_signal_stops_the_demo_with_one_line(tmp_path, point, signum):
    home = tmp_path / "home"
    when, step, killed = POINTS[point]
    demo = Command(home, "demo", "--home", str(home), *SMALL)
    demo.wait_for(when(home))
    code, out, err = demo.stop(signum)
    name = signal.Signals(signum).name
    assert code == 128 + signum, out + err
    assert err.count("\n") == 1 and f"interrupted by {name}" in err, err
    if step is not None:
        assert f"in step {step}" in err or "between steps" in err, err
    assert "Traceback" not in out + err and "Exception ignored" not in out + err
    _assert_nothing_left(home, step if killed else None)
