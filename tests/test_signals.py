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

from real_assets.homes import init_lock

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    *("--n-prompts", "12", "--sft-epochs", "1", "--dpo-epochs", "1", "--seeds", "1"),
    *("--model-backend", "fake"),
    *("--partition", "0|easy"),
    *("--skip", "budget_point"),
    *("--config", 'eval_scores={"samples_per_prompt": 1, "max_new_tokens": 16}'),
]
HANG_GUARD_S = 600
"""Bounds a command that would otherwise hang (the failure these tests catch), never a timing claim."""


def _env(home: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, "REAL_ASSETS_HOME": str(home), "PYTHONPATH": str(ROOT), **extra}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from real_assets.cli import main; sys.exit(main())", *args]


class Command:
    """A command in a subprocess whose stdout lines are collected as they come."""

    def __init__(self, home: Path, *args: str, env: dict | None = None):
        self.proc = subprocess.Popen(
            _cli(*args),
            env=_env(home, **(env or {})),
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
        while not any(predicate(text) for text in [*self.lines, ""]):
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
            if not (home / "dagster" / "dagster.yaml").exists():
                return False
            with init_lock(home):  # the demo may still be creating the instance's storage
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


def _at_barrier(barrier: Path, fn: str):
    """True once the fake model function `fn` waits at its barrier (inside its step's body)."""
    (barrier / f"{fn}.hold").touch()
    return lambda _text: (barrier / f"{fn}.reached").exists()


POINTS = {
    # When the signal is sent, the step the demo must name (None: between steps, or either), and whether
    # the step's MLflow run exists by then and must end KILLED.
    "between steps": (lambda home, barrier: _step_line("raw_responses", finished=True), None, False),
    "in a step's set-up": (lambda home, barrier: _run_created(home, "reference_policy"), None, False),
    "in a warehouse write": (
        lambda home, barrier: _step_line("raw_responses", finished=False),
        "raw_responses",
        True,
    ),
    "in training": (
        lambda home, barrier: _at_barrier(barrier, "train_dpo"),
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
    home, barrier = tmp_path / "home", tmp_path / "barrier"
    barrier.mkdir()
    when, step, killed = POINTS[point]
    demo = Command(home, "demo", "--home", str(home), *SMALL, env={"REAL_ASSETS_FAKE_BARRIER": str(barrier)})
    demo.wait_for(when(home, barrier))
    code, out, err = demo.stop(signum)
    _assert_stopped(code, out, err, signum, step)
    _assert_nothing_left(home, step if killed else None)


@pytest.mark.slow
def test_ctrl_c_in_real_training_stops_the_demo_with_one_line(tmp_path):
    """The same in TRL's training loop (the real model backend), where the signal lands in torch code."""
    home = tmp_path / "home"
    real = [arg for arg in SMALL if arg not in ("--model-backend", "fake")]
    demo = Command(home, "demo", "--home", str(home), *real)
    demo.wait_for(_step_line("dpo_checkpoint[0|easy]", finished=False))
    code, out, err = demo.stop(signal.SIGINT)
    _assert_stopped(code, out, err, signal.SIGINT, "dpo_checkpoint[0|easy]")
    _assert_nothing_left(home, "dpo_checkpoint[0|easy]")


def _assert_stopped(code: int, out: str, err: str, signum: int, step: str | None) -> None:
    name = signal.Signals(signum).name
    assert code == 128 + signum, out + err
    assert err.count("\n") == 1 and f"interrupted by {name}" in err, err
    if step is not None:
        assert f"in step {step}" in err, err
    assert "Traceback" not in out + err and "Exception ignored" not in out + err


@pytest.mark.parametrize("command", ["audit", "ui", "mlflow-ui", "demo"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_a_command_sets_up_stops_it_with_one_line(
    tmp_path, monkeypatch, capsys, command, signum
):
    """Every command: a signal while it prepares the home ends it with one line and 128 + the signal, and
    leaves the signal handling of the process it ran in as it found it."""
    from real_assets import cli

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signum)
        time.sleep(30)  # never reached in full: the signal interrupts the sleep
        raise AssertionError("the signal did not stop the command")

    monkeypatch.setattr(cli, "prepare_home", signalled)
    code = cli.main([command, "--home", str(tmp_path / "home")])
    err = capsys.readouterr().err
    assert code == 128 + signum
    assert err == f"real-assets {command}: interrupted by {signal.Signals(signum).name}\n"
    assert {s: signal.getsignal(s) for s in before} == before
    assert signal.set_wakeup_fd(-1) == -1
