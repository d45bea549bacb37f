"""The Dagster UI served on workspace.yaml lists every asset (a real dagster-webserver on 127.0.0.1)."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from real_assets.definitions import defs

ROOT = Path(__file__).resolve().parents[1]
QUERY = '{"query": "{ assetNodes { assetKey { path } groupName } }"}'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def webserver(tmp_path):
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "REAL_ASSETS_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagster_webserver",
            "-w",
            str(ROOT / "workspace.yaml"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _asset_nodes(url: str, deadline_s: float = 120.0) -> list[dict]:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            request = urllib.request.Request(
                f"{url}/graphql", data=QUERY.encode(), headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                nodes = json.load(response)["data"]["assetNodes"]
            if nodes:
                return nodes
        except (OSError, KeyError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("dagster-webserver did not serve the workspace in time")
        time.sleep(1)


def test_the_ui_on_the_workspace_lists_every_asset(webserver):
    nodes = _asset_nodes(webserver)
    served = {"/".join(n["assetKey"]["path"]) for n in nodes}
    expected = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert served == expected
    groups = {"/".join(n["assetKey"]["path"]): n["groupName"] for n in nodes}
    assert groups["raw_responses"] == "ingest" and groups["dpo_checkpoint"] == "training"
