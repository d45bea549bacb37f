"""A throwaway Postgres for tests: Debian's server binaries, a temp data folder, 127.0.0.1 on a free port.

Postgres refuses to run as root, so as root the server runs as the `postgres` user on a folder it owns.
`.ci/run` installs the `postgresql` package when no `initdb` is found.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        """SQLAlchemy URL (Dagster, MLflow); the driver is named: SQLAlchemy 2.1 would pick psycopg 3."""
        return f"{driver}://{self.user}@{self.host}:{self.port}/{database}"

    def libpq(self, database: str) -> str:
        """libpq key=value string (DuckDB's postgres extension, DuckLake)."""
        return f"dbname={database} host={self.host} port={self.port} user={self.user}"

    def create_database(self, name: str) -> None:
        import psycopg2

        con = psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname="postgres")
        try:
            con.autocommit = True
            with con.cursor() as cur:
                cur.execute(f'create database "{name}"')
        finally:
            con.close()


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("no Postgres server binaries: apt-get install -y postgresql (see .ci/run)")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_postgres() -> Iterator[Postgres]:
    """Start a fresh cluster (trust auth, 127.0.0.1 only), yield it, stop it and remove its folder."""
    bin_dir = _bin_dir()
    as_root = os.geteuid() == 0
    user = "postgres" if as_root else os.environ.get("USER", "postgres")
    root = Path(tempfile.mkdtemp(prefix="real-assets-pg-"))
    data = root / "data"
    run_as = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(root, "postgres", "postgres")
    port = _free_port()
    log = root / "server.log"

    def pg(*args: str) -> None:
        subprocess.run([*run_as, *args], check=True, capture_output=True, timeout=120)

    try:
        pg(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", user, "--no-sync")
        pg(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-w",
            "-o",
            f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=200",
            "start",
        )
        try:
            yield Postgres(host="127.0.0.1", port=port, user=user)
        finally:
            pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def lake_unavailable() -> str | None:
    """Why DuckLake cannot load here (the extension wheels do not match the installed duckdb), or None.
    CI installs the pinned versions; only a venv with another duckdb (e.g. a shared dev venv) lacks them."""
    from real_assets.resources import extension_file

    try:
        extension_file("ducklake")
        extension_file("postgres_scanner")
    except RuntimeError as e:
        if os.environ.get("CI"):
            raise  # never skipped in CI
        return str(e)
    return None
