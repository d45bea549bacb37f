"""A throwaway Label Studio for tests: the server from its own venv (`.ci/run` installs label-studio==1.23.2
into $REAL_ASSETS_LABEL_STUDIO_VENV, default ~/.cache/real-assets/labelstudio-venv), SQLite in a temp data
folder, 127.0.0.1 on a free port, an administrator account; stopped and removed afterwards.

Its first start migrates SQLite for about two minutes: the migrated data folder (with the administrator) is
kept beside the venv as a template, and later starts copy it. Nothing reaches the network: error reporting,
the version check and analytics are switched off by their environment variables.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

VENV_ENV = "REAL_ASSETS_LABEL_STUDIO_VENV"
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin-password-123"
START_TIMEOUT_S = 600


def venv() -> Path:
    return Path(os.environ.get(VENV_ENV) or Path.home() / ".cache" / "real-assets" / "labelstudio-venv")


def unavailable() -> str | None:
    """Why no Label Studio can start here, or None (in CI it must: raises instead)."""
    if (venv() / "bin" / "label-studio").exists():
        return None
    reason = f"no Label Studio venv at {venv()}: run .ci/run, or set {VENV_ENV}"
    if os.environ.get("CI"):
        raise RuntimeError(reason)
    return reason


@dataclass(frozen=True)
class LabelStudioServer:
    url: str
    data_dir: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _environment(data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false",
        "DJANGO_DB": "sqlite",
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "SECRET_KEY": "real-assets-tests-only",
        "PYTHONUNBUFFERED": "1",
    }


@contextlib.contextmanager
def _serve(data_dir: Path) -> Iterator[str]:
    port = _free_port()
    log = (data_dir / "server.log").open("wb")
    command = [
        str(venv() / "bin" / "label-studio"),
        "start",
        "--no-browser",
        "--internal-host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--username",
        ADMIN_EMAIL,
        "--password",
        ADMIN_PASSWORD,
    ]
    process = subprocess.Popen(
        command, env=_environment(data_dir), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"Label Studio exited with {process.returncode}: see {data_dir / 'server.log'}"
                )
            try:
                with urllib.request.urlopen(url + "/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Label Studio did not answer within {START_TIMEOUT_S} s") from None
                time.sleep(1)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@contextlib.contextmanager
def running_label_studio() -> Iterator[LabelStudioServer]:
    """A Label Studio server on a copy of the migrated template (made on the first start)."""
    template = venv().parent / "labelstudio-template"
    if not (template / "label_studio.sqlite3").exists():
        staging = Path(tempfile.mkdtemp(prefix="labelstudio-template-", dir=venv().parent))
        with _serve(staging):
            pass
        shutil.rmtree(template, ignore_errors=True)
        staging.rename(template)
    root = Path(tempfile.mkdtemp(prefix="real-assets-ls-"))
    data_dir = root / "data"
    shutil.copytree(template, data_dir, ignore=shutil.ignore_patterns("server.log"))
    try:
        with _serve(data_dir) as url:
            yield LabelStudioServer(url, data_dir)
    finally:
        shutil.rmtree(root, ignore_errors=True)
