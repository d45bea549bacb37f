"""Installable anywhere: the wheel carries the SQL models, loads from another folder without the checkout,
and `real-assets ui` / `mlflow-ui` become their servers, so SIGTERM leaves no process behind."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".real_assets",
    "__pycache__",
    "build",
    "dist",
    "*.egg-info",
    ".ruff_cache",
    "tests",
    "bench",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(wheel, target): the wheel built from a copy of the checkout, installed with `pip --target`."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=_NOT_SOURCE)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(work / "dist"), str(source)],
        check=True,
        cwd=work,
        timeout=300,
    )
    (wheel,) = (work / "dist").glob("real_assets-*.whl")
    target = work / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True, timeout=300
    )
    return wheel, target


def test_the_wheel_carries_every_sql_model(installed):
    wheel, _ = installed
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".sql")}
    expected = {
        f"real_assets/dbt_like_sql/{p.relative_to(ROOT / 'dbt_like_sql')}"
        for p in ROOT.glob("dbt_like_sql/*/*.sql")
    }
    assert expected and shipped == expected


def test_the_installed_wheel_loads_and_validates_from_another_folder(installed, tmp_path):
    _, target = installed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(target),  # the installed copy first; the venv supplies the dependencies
        "REAL_ASSETS_HOME": str(tmp_path / "home"),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
    }
    (tmp_path / "dagster").mkdir()
    loaded = subprocess.run(  # light: the SQL models as the installed package finds them
        [
            sys.executable,
            "-c",
            "from real_assets.core import sql_models as m; "
            "print(m.__file__); print(m.SQL_ROOT); print(len(m.load_sql_models()))",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    module_file, sql_root, sql_models = loaded.stdout.split()[-3:]
    assert Path(module_file).is_relative_to(target), f"{module_file} is not the installed copy"
    assert Path(sql_root).is_relative_to(target), f"SQL models read from {sql_root}"
    assert int(sql_models) == len(list(ROOT.glob("dbt_like_sql/*/*.sql")))
    validated = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "real_assets.definitions"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert validated.returncode == 0, (validated.stdout + validated.stderr)[-3000:]
    assert "success" in (validated.stdout + validated.stderr).lower()


def _wait_until_served(
    url: str, proc: subprocess.Popen, deadline_s: float = 180.0, query: str | None = None, expect: str = ""
) -> None:
    """Until `url` answers 200 (to a GraphQL `query`, when given, with `expect` in the answer)."""
    deadline = time.monotonic() + deadline_s
    data = json.dumps({"query": query}).encode() if query else None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the server exited with {proc.returncode}"
        request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200 and expect in response.read().decode():
                    return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} was not served in time")


def _sigterm_leaves_nothing(
    command: list[str],
    url: str,
    expect_in_cmdline: str,
    home: Path,
    query: str | None = None,
    expect: str = "",
) -> None:
    """Start `real-assets <command>` (with SIGINT ignored, as in a background job of a script), wait until
    it serves, SIGTERM it, and check that it was the server itself (exec) and that no process of its tree or
    process group survives."""
    env = {**os.environ, "REAL_ASSETS_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = home.parent / f"{command[0]}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "real_assets.cli", *command],
            env=env,
            cwd=home.parent,
            start_new_session=True,
            # as a background job of a script starts it (`nohup real-assets ui &`): SIGINT ignored
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    tree: list[psutil.Process] = []
    try:
        _wait_until_served(url, proc, query=query, expect=expect)
        server = psutil.Process(proc.pid)
        assert expect_in_cmdline in " ".join(server.cmdline()), server.cmdline()  # exec'd, not wrapped
        tree = [server, *server.children(recursive=True)]
        assert len(tree) > 1, "the server started no process of its own"
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=180)  # dagster dev stops its daemon and webserver first
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 180 s after SIGTERM: {_alive(tree)}\n{log.read_text()[-4000:]}")
        _, alive = psutil.wait_procs(tree[1:], timeout=30)
        assert not alive, f"left running after SIGTERM: {[p.cmdline() for p in alive]}"
        with pytest.raises(ProcessLookupError):
            os.killpg(proc.pid, 0)  # nothing left in the process group either
    finally:
        for p in [proc, *tree]:
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                p.kill()


def _alive(processes: list[psutil.Process]) -> list[str]:
    alive = []
    for p in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            alive.append(f"{p.pid} {p.status()} {' '.join(p.cmdline())[:160]}")
    return alive


def test_ui_becomes_dagster_dev_and_sigterm_leaves_no_dagster_process(tmp_path):
    port = _free_port()
    _sigterm_leaves_nothing(
        ["ui", "--home", str(tmp_path / "home"), "--port", str(port)],
        f"http://127.0.0.1:{port}/graphql",
        "dagster dev",
        tmp_path / "home",
        # SIGTERM once the code location has loaded, as a user stops a UI they used (a stop while the
        # code server still imports torch is another case)
        query="{ assetNodes { assetKey { path } } }",
        expect="raw_responses",
    )


def test_mlflow_ui_becomes_the_tracking_server_and_sigterm_leaves_no_process(tmp_path):
    port = _free_port()
    _sigterm_leaves_nothing(
        ["mlflow-ui", "--home", str(tmp_path / "home"), "--port", str(port)],
        f"http://127.0.0.1:{port}/health",
        "mlflow server",
        tmp_path / "home",
    )
