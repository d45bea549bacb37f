"""A damaged, read-only or full home: one line that names the store, its path, the cause and what to do;
no traceback (unless --debug); `audit` reads a read-only home; nothing is lost once the cause is gone.

A read-only home is a read-only bind mount and a full disk a small tmpfs, both real file systems (EROFS
and ENOSPC as a user meets them): they need root and mount rights, as on the project's test machines; the
tests that need them are skipped elsewhere. (A file-size limit, RLIMIT_FSIZE, needs neither but fails
writes with EFBIG, and SQLite reports that as a plain "disk I/O error": not the case a user meets.)

The mount tests run the command line as a process of its own, as a user does; the others call it in this
process and read what it wrote to the file descriptors (`capfd`), which is the same text without the cost of
a process start (about 3 s of imports and code location each)."""

import contextlib
import errno
import os
import shutil
import sqlite3
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import FAKE_MODELS, run_cli

from real_assets.home_errors import describe
from real_assets.homes import copy_home
from real_assets.resources import CheckpointWarning, Warehouse

ROOT = Path(__file__).resolve().parents[1]
QUICK = [
    *("--n-prompts", "12", "--seeds", "1", "--partition", "0|easy", *FAKE_MODELS),
    *("--skip", "budget_point"),
]


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    command = [sys.executable, "-c", "import sys; from real_assets.cli import main; sys.exit(main())"]
    return subprocess.run(
        [*command, *args, "--home", str(home)],
        env={**env, "REAL_ASSETS_HOME": str(home), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=900,
    )


def _in_process(capfd, home: Path, *args: str) -> subprocess.CompletedProcess:
    """`real-assets ARGS --home HOME` in this process: its exit code and what it wrote to the file
    descriptors, as `_cli` returns them. For the tests whose subject is the message, not the process (the
    mount tests and tests/test_signals.py run the command line as a process of its own)."""
    code, out, err = run_cli(capfd, [*args, "--home", str(home)])
    return subprocess.CompletedProcess(args, code, out, err)


def _one_line(result: subprocess.CompletedProcess, *expected: str) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) <= 2, result.stderr  # the error; a step's also says where its full log is
    for text in expected:
        assert text in lines[0], result.stderr
    return lines[0]


@pytest.fixture
def copied(golden_home, tmp_path) -> Path:
    return copy_home(golden_home, tmp_path / "home")


def test_store_failures_are_told_by_store_cause_and_fix(tmp_path):
    home = tmp_path / "home"
    full = OSError(errno.ENOSPC, "No space left on device", str(home / "checkpoints" / "a" / "b"))
    assert describe(full, home).startswith(
        f"checkpoint folder {home / 'checkpoints' / 'a' / 'b'}: disk full: "
    )
    read_only = OSError(errno.EROFS, "Read-only file system", str(home / ".init.lock"))
    assert describe(read_only, home).startswith(f"home {home}: read-only: make it writable")
    wrapped = RuntimeError("step failed")
    wrapped.__cause__ = sqlite3.OperationalError("database or disk is full")
    assert ": disk full: " in describe(wrapped, home)
    assert describe(ValueError("a bug"), home) is None


def test_a_checkpoint_that_fails_on_close_is_said_and_the_next_close_makes_it(tmp_path):
    """DuckDB checkpoints the file when the last connection closes and is silent when that fails (out of
    `memory_limit`: docs/scale.md, item 6); the warehouse says so. DuckDB's own debug switch makes the
    checkpoint fail here."""
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"), memory_limit="64MB")
    wal = tmp_path / "w.duckdb.wal"
    said = r"w\.duckdb: DuckDB did not checkpoint it .* w\.duckdb\.wal .*memory_limit \(64MB\)"
    with pytest.warns(CheckpointWarning, match=said), warehouse.connect() as con:
        con.execute("create table raw.t as select range as i from range(1000)")
        con.execute("set debug_checkpoint_abort = 'before_header'")
    assert wal.exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)
        with warehouse.connect(read_only=True) as con:  # nothing lost; a reader does not checkpoint
            assert con.execute("select count(*) from raw.t").fetchone()[0] == 1000
        with warehouse.connect() as outer:
            with warehouse.connect() as inner:  # the outer connection still holds the file: no checkpoint
                inner.execute("insert into raw.t values (1000)")
            assert wal.exists()
            outer.execute("insert into raw.t values (1001)")
    assert not wal.exists()


@pytest.mark.slow
def test_a_truncated_warehouse_is_named_by_audit_and_demo(copied, capfd):
    warehouse = copied / "warehouse.duckdb"
    os.truncate(warehouse, warehouse.stat().st_size // 3)
    expected = (f"warehouse {warehouse}: not a DuckDB file or damaged", "restore it from a backup")
    _one_line(_in_process(capfd, copied, "audit"), "real-assets audit: ", *expected)
    _one_line(_in_process(capfd, copied, "demo", *QUICK), "error in raw_responses: ", *expected)
    with pytest.raises(Exception, match=r"warehouse\.duckdb"):  # --debug: the error, with its traceback
        _in_process(capfd, copied, "audit", "--debug")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("store", "name"),
    [("dagster/history/runs.db", "Dagster instance storage"), ("mlflow.db", "MLflow tracking store")],
)
def test_a_damaged_sqlite_store_is_named(copied, capfd, store, name):
    path = copied / store
    for wal in path.parent.glob(f"{path.name}-*"):
        wal.unlink()
    path.write_bytes(os.urandom(64 * 1024))
    _one_line(_in_process(capfd, copied, "audit"), f"{name} ", ": not a SQLite database or damaged: ")


@pytest.mark.slow
def test_a_missing_checkpoint_folder_names_the_asset_to_rematerialize(copied, capfd):
    import duckdb

    with duckdb.connect(str(copied / "warehouse.duckdb"), read_only=True) as con:
        [folder] = con.execute(
            "select path from models.checkpoints where asset = 'reference_policy' "
            "order by created_at desc limit 1"
        ).fetchone()
    shutil.rmtree(folder)
    result = _in_process(capfd, copied, "demo", *QUICK, "--from", "dpo_checkpoint")
    line = _one_line(result, "error in dpo_checkpoint")
    assert "checkpoint folder of reference_policy" in line and "missing" in line
    assert "Rematerialize reference_policy (real-assets demo --from reference_policy)" in line


@contextlib.contextmanager
def _mounted(*args: str, target: Path):
    target.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("needs root: mounts a real read-only or full file system")
    done = subprocess.run(["mount", *args, str(target)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here: {done.stderr.strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


@pytest.mark.slow
def test_audit_reads_a_read_only_home_and_the_demo_says_read_only(copied, tmp_path):
    with _mounted("--bind", "-o", "ro", str(copied), target=tmp_path / "ro") as read_only:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(read_only)], check=True)
        before = sorted(p.name for p in read_only.iterdir())
        audit = _cli(read_only, "audit")
        assert audit.returncode == 0 and "audit passed" in audit.stdout, audit.stdout + audit.stderr
        assert "Traceback" not in audit.stderr
        demo = _cli(read_only, "demo", *QUICK)
        _one_line(demo, f"real-assets demo: home {read_only}: read-only: ")
        assert sorted(p.name for p in read_only.iterdir()) == before


@pytest.mark.slow
def test_a_full_disk_is_said_and_nothing_is_lost_once_there_is_room(tmp_path, home_template):
    with _mounted("-t", "tmpfs", "-o", "size=3m", "tmpfs", target=tmp_path / "small") as small:
        home = small / "home"
        full = _cli(home, "demo", *QUICK)
        assert "disk full" in full.stderr, full.stdout + full.stderr
        _one_line(full, "disk full", "free space")
        subprocess.run(["mount", "-o", "remount,size=256m", str(small)], check=True)
        again = _cli(home, "demo", *QUICK)
        assert again.returncode == 0, again.stdout + again.stderr
        audit = _cli(home, "audit")
        assert audit.returncode == 0, audit.stdout + audit.stderr
