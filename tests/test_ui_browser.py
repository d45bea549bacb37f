"""The Dagster UI in a real browser: `dagster-webserver` on 127.0.0.1 over a small home, driven through
headless Chromium (Debian's `chromium`, through Playwright with `executable_path`; no browser download),
doing what a user does: look at the asset graph, press Materialize, launch a partition from the partition
dialog, open a run's log, read the comparison page, look at the checks.

The home is a copy of the golden home (the shared demo's graph, fake-trained); the webserver's runs use the
fake model backend too (the test is about the UI, not the models) and the assets' default config. On failure a
screenshot and the webserver log are kept under tests/artifacts/ (the path is printed)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from real_assets.core.progress import PROGRESS_PREFIX
from real_assets.definitions import defs
from real_assets.homes import copy_home, instance_of, prepare_home

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM_ENV = "REAL_ASSETS_CHROMIUM"
CHROMIUM_PATHS = ("/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser")
RUN_TIMEOUT_MS = 420_000
"""A UI run starts its run worker, a Python process that loads the code location: generous on a busy 2-core
box."""
UI_TIMEOUT_MS = 60_000
TOAST_TIMEOUT_MS = 15_000
WEBSERVER = [sys.executable, "-m", "dagster_webserver"]

# The instance config `real-assets ui` writes (pools of one, run monitoring), with runs launched at once
# instead of queued, so no daemon is needed (and no automation sensor launches runs of its own).
LAUNCH_AT_ONCE = """
run_coordinator:
  module: dagster.core.run_coordinator
  class: DefaultRunCoordinator
"""
PARTITION_LAUNCHED = "dpo_checkpoint"
"""The asset launched from the partition dialog: a strategy partition of a training step."""
PROGRESS_ASSET = "reference_policy"
"""The asset whose UI-launched run must show progress lines while it trains."""


def _chromium() -> str | None:
    configured = os.environ.get(CHROMIUM_ENV)
    if configured:
        return configured
    return next((p for p in CHROMIUM_PATHS if Path(p).is_file()), None) or shutil.which("chromium")


try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None

if sync_playwright is None or _chromium() is None:
    reason = "needs playwright (dev extra) and Debian's chromium (apt-get install chromium)"
    if os.environ.get("CI"):
        raise RuntimeError(f"the browser test {reason}; .ci/run installs both")
    pytest.skip(reason, allow_module_level=True)


# --------------------------------------------------------------------------------------------- server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _asset_graph() -> dg.AssetGraph:  # type: ignore[name-defined]
    return defs.resolve_asset_graph()


def _asset_names() -> list[str]:
    return sorted(k.to_user_string() for k in _asset_graph().get_all_asset_keys())


def _partition_key(asset: str, strategy: str) -> str:
    """The key of `asset` for `strategy`: the strategy itself on a strategy partitioning, else (strategy x
    seed, ...) the strategy with the first key of every other dimension."""
    partitions = _asset_graph().get(dg.AssetKey(asset)).partitions_def
    if isinstance(partitions, dg.MultiPartitionsDefinition):
        return dg.MultiPartitionKey(
            {
                dim.name: strategy if dim.name == "strategy" else dim.partitions_def.get_partition_keys()[0]
                for dim in partitions.partitions_defs
            }
        )
    return strategy


def _first_strategy() -> str:
    partitions = _asset_graph().get(dg.AssetKey(PARTITION_LAUNCHED)).partitions_def
    if isinstance(partitions, dg.MultiPartitionsDefinition):
        return partitions.get_partitions_def_for_dimension("strategy").get_partition_keys()[0]
    return partitions.get_partition_keys()[0]


def _wait_for_code_location(url: str, proc: subprocess.Popen, deadline_s: float = 240.0) -> None:
    query = json.dumps({"query": "{ assetNodes { assetKey { path } } }"}).encode()
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dagster-webserver exited with {proc.returncode}")
        with contextlib.suppress(OSError, KeyError, ValueError, TypeError):
            request = urllib.request.Request(
                f"{url}/graphql", data=query, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                if json.load(response)["data"]["assetNodes"]:
                    return
        time.sleep(1)
    raise TimeoutError("dagster-webserver did not serve the code location in time")


@pytest.fixture(scope="module")
def ui(tmp_path_factory, golden_home):
    """A webserver on a free 127.0.0.1 port over a copy of the golden home, with the fake model backend."""
    home = copy_home(golden_home, tmp_path_factory.mktemp("ui") / "home")
    log = home / "webserver.log"
    port = _free_port()
    locations = prepare_home(str(home))  # instance config and storage, as `real-assets ui` does first
    with (home / "dagster" / "dagster.yaml").open("a") as config:
        config.write(LAUNCH_AT_ONCE)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "REAL_ASSETS_MODEL_BACKEND": "fake"}
    env |= {"REAL_ASSETS_HOME": str(home), "DAGSTER_HOME": str(locations.dagster_home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*WEBSERVER, "-m", "real_assets.definitions", "-h", "127.0.0.1", "-p", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its code server and run workers form one group to stop
        )
    url = f"http://127.0.0.1:{port}"
    try:
        instance = instance_of(locations)
        strategy = _first_strategy()
        _wait_for_code_location(url, proc)
        yield {"url": url, "home": home, "log": log, "instance": instance, "strategy": strategy}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


# -------------------------------------------------------------------------------------------- browser


@pytest.fixture(scope="module")
def browser():
    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=_chromium(), headless=True)
        yield chromium
        chromium.close()


def _new_page(browser, ui) -> Page:
    """A fresh page in a context of its own at a wide viewport (the whole graph fits at full node size)."""
    context = browser.new_context(viewport={"width": 2800, "height": 1400}, base_url=ui["url"])
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    # The first visit asks to join the community: dismiss it whenever it shows.
    page.add_locator_handler(page.get_by_role("button", name="Skip", exact=True), lambda b: b.click())
    return page


@pytest.fixture
def page(browser, ui, request):
    """A fresh page; a screenshot and the webserver log go to tests/artifacts/ when the test fails."""
    page = _new_page(browser, ui)
    failures_before = request.session.testsfailed
    yield page
    if request.session.testsfailed > failures_before or getattr(request.node, "_ui_failed", False):
        _keep_artifacts(page, ui, request.node.name)
    page.context.close()


@pytest.fixture(scope="module")
def launched(browser, ui) -> dict[str, str]:
    """Run ids of two runs launched from the UI as a user launches them, once per module: `PROGRESS_ASSET`
    with its Materialize button, a `PARTITION_LAUNCHED` partition from the partition dialog. Every test
    that needs them asks for this fixture, so each one also runs alone; they train meanwhile."""
    page = _new_page(browser, ui)
    try:
        page.goto(f"/assets/{PROGRESS_ASSET}")
        since = time.time()
        _materialize_button(page).click()
        LAUNCHED[PROGRESS_ASSET] = _launched_run_id(page, ui, PROGRESS_ASSET, since)

        page.goto(f"/assets/{PARTITION_LAUNCHED}")
        since = time.time()
        _materialize_button(page).click()
        _choose_partition(page, PARTITION_LAUNCHED, _partition_key(PARTITION_LAUNCHED, ui["strategy"]))
        LAUNCHED[PARTITION_LAUNCHED] = _launched_run_id(page, ui, PARTITION_LAUNCHED, since)
    except BaseException:
        _keep_artifacts(page, ui, "launched")
        raise
    finally:
        page.context.close()
    return dict(LAUNCHED)


def _keep_artifacts(page, ui, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"{name}.png"
    with contextlib.suppress(Exception):
        page.screenshot(path=str(shot), full_page=True)
    shutil.copy(ui["log"], ARTIFACTS / f"{name}.webserver.log")
    print(f"\nUI artifacts of {name}: {shot} and {name}.webserver.log in {ARTIFACTS}")


@contextlib.contextmanager
def artifacts_on_failure(page, ui, request):
    """Keep the screenshot of the page as it was when an assertion failed."""
    try:
        yield
    except BaseException:
        request.node._ui_failed = True
        _keep_artifacts(page, ui, request.node.name)
        raise


def _materialize_button(page: Page):
    # Unpartitioned assets: "Materialize"; partitioned ones open the dialog: "Materialize…".
    return page.get_by_role("button").filter(has_text=re.compile(r"^Materialize(…)?$"))


def _launched_run_id(page: Page, ui, asset: str, since: float) -> str:
    """The run id from the toast that follows a launch ("Launched run ... View"). The toast fades after a
    few seconds, and the community dialog of a first visit can cover it until then; without it, the run
    the UI launched (Dagster tags those `dagster/from_ui`) for `asset` since `since`, which must exist."""
    view = page.locator('a[href^="/runs/"]').filter(has_text=re.compile(r"^View$"))
    with contextlib.suppress(AssertionError):
        expect(view.first).to_be_visible(timeout=TOAST_TIMEOUT_MS)
        return view.first.get_attribute("href").removeprefix("/runs/").split("?")[0]
    launched_since = dg.RunsFilter(
        tags={"dagster/from_ui": "true"}, created_after=datetime.fromtimestamp(since, UTC)
    )
    deadline = time.monotonic() + UI_TIMEOUT_MS / 1000
    while True:
        runs = ui["instance"].get_runs(launched_since)
        matches = [run.run_id for run in runs if dg.AssetKey(asset) in (run.asset_selection or ())]
        if matches or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(matches) == 1, f"no launch toast, and {len(matches)} UI-launched runs of {asset}"
    return matches[0]


def _choose_partition(page: Page, asset: str, key: str | dg.MultiPartitionKey) -> None:
    """In the launch dialog: Custom, then the key (one value per dimension, in the dialog's order)."""
    dialog = page.get_by_role("dialog").filter(has_text=f"Launch runs to materialize {asset}")
    expect(dialog).to_be_visible()
    values = list(key.keys_by_dimension.values()) if isinstance(key, dg.MultiPartitionKey) else [key]
    for value in values:
        # a chosen value replaces its selector's placeholder: the first one left is the next dimension's
        dialog.get_by_text("Select a partition or create one").first.click()
        page.get_by_placeholder("Filter partitions").fill(value)
        page.locator("label").get_by_text(value, exact=True).first.click()
        page.keyboard.press("Escape")
    launch = dialog.get_by_role("button", name=re.compile(r"^Launch 1 run$"))
    expect(launch).to_be_enabled()
    launch.click()


def _wait_for_run(page: Page, run_id: str) -> None:
    page.goto(f"/runs/{run_id}")
    status = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$")).first
    expect(status).to_be_visible(timeout=RUN_TIMEOUT_MS)
    assert status.inner_text() == "Success", f"run {run_id} ended {status.inner_text()}"


# ---------------------------------------------------------------------------------------------- tests

LAUNCHED: dict[str, str] = {}
"""Runs launched from the UI so far in this session (the `launched` fixture), by asset."""


def test_materialize_button_and_partition_dialog_launch_runs(launched, ui):
    instance: dg.DagsterInstance = ui["instance"]
    assert launched.keys() == {PROGRESS_ASSET, PARTITION_LAUNCHED}
    assert launched[PROGRESS_ASSET] != launched[PARTITION_LAUNCHED]
    progress_run = instance.get_run_by_id(launched[PROGRESS_ASSET])
    partition_run = instance.get_run_by_id(launched[PARTITION_LAUNCHED])
    assert progress_run.asset_selection == {dg.AssetKey(PROGRESS_ASSET)}
    assert partition_run.asset_selection == {dg.AssetKey(PARTITION_LAUNCHED)}
    partition = _partition_key(PARTITION_LAUNCHED, ui["strategy"])
    expected = {f"dagster/partition/{d}": v for d, v in partition.keys_by_dimension.items()}
    assert expected.items() <= partition_run.tags.items()


def test_asset_graph_shows_every_asset(page, ui, request):
    with artifacts_on_failure(page, ui, request):
        page.goto("/asset-groups")
        graph_groups = {node.group_name for node in _asset_graph().asset_nodes if node.group_name is not None}
        for group in graph_groups:
            expect(page.locator(f'[data-tooltip="{group}"]').first).to_be_visible()
        page.keyboard.press("Alt+e")  # "Expand all groups" (graph settings menu)
        # Fitted to the window, a graph of 8 groups is drawn below the scale at which nodes carry their
        # names (minimal nodes, names cut); one step of zoom draws full nodes, every one of them in the DOM.
        page.get_by_role("button", name="zoom_in").click()
        for name in _asset_names():
            expect(page.locator(f'[data-tooltip="{name}"]').first).to_be_visible()


def test_strategy_comparison_page_shows_the_table_and_the_plot_renders(page, ui, request):
    with artifacts_on_failure(page, ui, request):
        page.goto("/assets/strategy_comparison")
        # every strategy's row: the UI shows a table this large behind its metadata row's [Show Markdown]
        page.get_by_role("row", name=re.compile(r"^comparison ")).get_by_text("[Show Markdown]").click()
        table = page.get_by_role("dialog").locator("table").filter(has_text="preference_accuracy").first
        expect(table).to_be_visible()
        expect(table).to_contain_text(ui["strategy"])
        page.keyboard.press("Escape")
        page.get_by_role("row", name=re.compile(r"^plot ")).get_by_text("[Show Markdown]").click()
        image = page.get_by_role("dialog").locator('img[src^="data:image/png"]')
        expect(image).to_be_visible()
        image.evaluate("img => img.decode()")  # resolves once the image is decoded, rejects if it is broken
        width, height = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
        assert width > 0 and height > 0


def test_checks_appear_on_their_assets(page, ui, request):
    instance: dg.DagsterInstance = ui["instance"]
    checks_by_asset: dict[str, list[dg.AssetCheckKey]] = {}
    for check_key in _asset_graph().asset_check_keys:
        checks_by_asset.setdefault(check_key.asset_key.to_user_string(), []).append(check_key)
    assert checks_by_asset, "the definitions declare asset checks"
    with artifacts_on_failure(page, ui, request):
        for asset, check_keys in sorted(checks_by_asset.items()):
            page.goto(f"/assets/{asset}?view=checks")
            expect(page.get_by_text(f"Checks ({len(check_keys)})", exact=True)).to_be_visible()
            records = instance.event_log_storage.get_latest_asset_check_execution_by_key(check_keys)
            for check_key in check_keys:
                # a row of the check list (a long name is shown middle-truncated; the row holds it whole)
                row = page.locator('[class*="VirtualizedTable_row"]').filter(has_text=check_key.name).first
                expect(row).to_be_visible()
                record = records.get(check_key)
                if asset not in LAUNCHED and record is not None and record.status.value == "SUCCEEDED":
                    # evaluated in the preparation, and no UI run is evaluating it again
                    expect(row).to_contain_text("Succeeded")


def test_runs_launched_from_the_ui_complete(page, ui, launched, request):
    with artifacts_on_failure(page, ui, request):
        for run_id in launched.values():
            _wait_for_run(page, run_id)
    for run_id in launched.values():  # the run's steps, its checks included, ran in its run worker
        messages = [event.user_message for event in ui["instance"].all_logs(run_id)]
        assert any(m.startswith("Executing steps in process") for m in messages), run_id


def test_a_ui_launched_training_run_shows_progress_lines_in_its_log(page, ui, launched, request):
    run_id = launched[PROGRESS_ASSET]
    with artifacts_on_failure(page, ui, request):
        _wait_for_run(page, run_id)
        page.get_by_placeholder("Filter…").fill(PROGRESS_PREFIX)
        line = page.get_by_text(re.compile(rf"^{PROGRESS_PREFIX} \S+ \d+/\d+ ")).first
        expect(line).to_be_visible()
