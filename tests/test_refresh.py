"""A scheduled refresh end to end: 2% new rows dropped into the inbox of a built home (the fake-trained
golden home) are ingested by the inbox sensor, and the automation conditions refresh exactly the assets
downstream, each for the prompts that changed only; the trained assets wait for their cron tick; the audit
passes after."""

import csv
import datetime as dt
import os
import time
from pathlib import Path

import dagster as dg
import pytest

from real_assets import cli
from real_assets.definitions import definitions
from real_assets.defs import inbox
from real_assets.defs.conditions import train_cron
from real_assets.homes import instance_of
from real_assets.resources import Warehouse
from real_assets.settings import Locations

pytestmark = pytest.mark.slow

UTC = dt.UTC
DATA_STAGES = {
    "raw_responses",
    "response_embeddings",
    "response_similarity",
    "pair_candidates",
    "selected_pairs",
}
TRAINED = {"reference_policy", "dpo_checkpoint", "eval_scores", "budget_sweep"}


def two_percent_more(warehouse: Warehouse, path: Path) -> tuple[Path, int]:
    """A `table` CSV of about 2% new rows: a new response to some stored prompts and three responses to
    each of some new prompts. Returns it and the number of prompts it touches."""
    with warehouse.connect(read_only=True) as con:
        responses = con.execute("select count(*) from raw.responses").fetchone()[0]
        prompts = [
            p
            for (p,) in con.execute(
                "select prompt from raw.prompts where pairable order by prompt_id"
            ).fetchall()
        ]
    new_rows = max(6, round(responses * 0.02))
    existing = prompts[: new_rows // 2]
    fresh = (new_rows - len(existing)) // 3
    rows = [{"prompt": p, "response": f"One more answer, late: {p[:30]}", "score": 9.0} for p in existing]
    rows += [
        {
            "prompt": f"A question that arrived later, number {i}?",
            "response": f"Answer {k}.",
            "score": float(k),
        }
        for i in range(fresh)
        for k in range(3)
    ]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["prompt", "response", "score"])
        writer.writeheader()
        writer.writerows(rows)
    old = time.time() - 60  # settled: the sensor waits for files still being written
    os.utime(path, (old, old))
    return path, len(existing) + fresh


def _latest(instance, key: dg.AssetKey, partition: str | None = None) -> dict:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1
    ).records
    return {k: getattr(v, "value", v) for k, v in records[0].asset_materialization.metadata.items()}


def test_new_rows_in_the_inbox_refresh_exactly_the_data_stages_incrementally(golden_copy, capsys):
    home = golden_copy
    (home / "inbox").mkdir(exist_ok=True)
    locations = Locations.resolve(home)
    defs = definitions(locations, model_backend="fake")
    job = defs.resolve_implicit_global_asset_job_def()
    path, touched = two_percent_more(defs.resources["warehouse"], home / "inbox" / "late_batch.csv")

    with instance_of(locations) as instance:
        now = dt.datetime.now(UTC)
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=now)
        assert result.total_requested == 0  # the built home is up to date
        cursor = result.cursor

        context = dg.build_sensor_context(instance=instance, resources={"home": defs.resources["home"]})
        tick = inbox.inbox_sensor.evaluate_tick(context)
        [request] = tick.run_requests
        assert request.run_config["ops"]["raw_responses"]["config"]["path"] == str(path)
        ingested = job.execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey("raw_responses")], run_config=request.run_config
        )
        assert ingested.success

        # The eager steps follow one wave at a time: each evaluation requests what is ready, and we run it.
        requested: dict[str, set] = {}
        for minute in range(1, 8):
            result = dg.evaluate_automation_conditions(
                defs=defs,
                instance=instance,
                evaluation_time=now + dt.timedelta(minutes=minute),
                cursor=cursor,
            )
            cursor = result.cursor
            if not result.total_requested:
                break
            for key in sorted(
                {k for k in defs.resolve_asset_graph().get_all_asset_keys() if result.get_num_requested(k)},
                key=lambda k: k.to_user_string(),
            ):
                partitions = result.get_requested_partitions(key)
                requested.setdefault(key.to_user_string(), set()).update(partitions)
                for partition in sorted(partitions, key=str) or [None]:
                    run = job.execute_in_process(
                        instance=instance,
                        asset_selection=[key],
                        partition_key=partition,
                        raise_on_error=False,
                    )
                    assert run.success, (key, partition)

        # Exactly the data stages downstream of the ingest, and no trained asset before its cron tick.
        assert set(requested) == DATA_STAGES - {"raw_responses"}, requested
        assert not set(requested) & TRAINED

        similarity = _latest(instance, dg.AssetKey("response_similarity"))
        candidates = _latest(instance, dg.AssetKey("pair_candidates"))
        assert similarity["refresh"] == candidates["refresh"] == "incremental"
        assert similarity["prompts_recomputed"] == candidates["prompts_recomputed"] == touched
        embeddings = _latest(instance, dg.AssetKey("response_embeddings"))
        assert embeddings["embedded_now"] == len(path.read_text().splitlines()) - 1
        selection = {
            p: _latest(instance, dg.AssetKey("selected_pairs"), p) for p in requested["selected_pairs"]
        }
        refreshed = {p: m for p, m in selection.items() if m["refresh"] == "incremental"}
        assert refreshed, selection
        assert all(0 < m["prompts_recomputed"] <= touched for m in refreshed.values())

        # The trained assets refresh at their next tick.
        tick_time = _next_tick(now) + dt.timedelta(minutes=5)
        result = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, evaluation_time=tick_time, cursor=cursor
        )
        assert result.get_num_requested(dg.AssetKey("reference_policy")) == 1

    assert cli.main(["audit", "--home", str(home)]) == 0
    assert "audit passed" in capsys.readouterr().out


def _next_tick(after: dt.datetime) -> dt.datetime:
    hour, minute = (int(x) for x in reversed(train_cron().split()[:2]))
    tick = after.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return tick if tick > after else tick + dt.timedelta(days=1)
