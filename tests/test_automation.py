"""Schedules, the inbox sensor, automation conditions and the concurrency pools."""

import datetime as dt
import os
import subprocess
import sys

import dagster as dg
import pytest

from real_assets import homes
from real_assets.definitions import defs
from real_assets.defs import automation, conditions

UTC = dt.UTC


def _label(condition: dg.AutomationCondition | None) -> str | None:
    return condition.get_label() if condition else None


def test_definitions_resolve_with_automation():
    repo = defs.get_repository_def()
    assert repo.get_job("refresh_raw_responses").asset_layer.executable_asset_keys == {
        dg.AssetKey("raw_responses")
    }
    graph = repo.asset_graph
    labels = {
        k.to_user_string(): _label(graph.get(k).automation_condition) for k in graph.get_all_asset_keys()
    }
    training = "on_data_change_at_most_per_cron(0 3 * * *, UTC)"
    expected = {  # a new asset brings its own condition; these keep theirs
        "raw_responses": None,
        "response_embeddings": "eager",
        "response_similarity": "eager",
        "pair_candidates": "eager",
        "selected_pairs": "eager",
        "reference_policy": training,
        "dpo_checkpoint": training,
        "eval_scores": training,
        "strategy_comparison": "eager",
        "budget_point": training,
        "budget_sweep": "eager",
    }
    assert {name: labels.get(name, "missing") for name in expected} == expected
    sensor = repo.get_sensor_def("real_assets_automation")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert repo.get_sensor_def("inbox_sensor").default_status == dg.DefaultSensorStatus.STOPPED
    recovery = repo.get_sensor_def("recover_after_failed_runs")
    assert recovery.default_status == dg.DefaultSensorStatus.RUNNING


def test_train_cron_from_env():
    """The cron is read when the code location loads: a fresh process with the variable set."""
    code = (
        "from real_assets.definitions import defs; import dagster as dg; "
        "print(defs.resolve_asset_graph().get(dg.AssetKey('dpo_checkpoint')).automation_condition.get_label())"
    )
    env = {**os.environ, conditions.TRAIN_CRON_ENV: "30 4 * * 1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert "on_data_change_at_most_per_cron(30 4 * * 1, UTC)" in out.stdout


def test_schedule_requests_raw_responses_with_default_config():
    schedule = automation.raw_responses_schedule
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=dt.datetime(2026, 1, 2, 2, 0, tzinfo=UTC)
        )
        data = schedule.evaluate_tick(context)
    [request] = data.run_requests
    config = request.run_config["ops"]["raw_responses"]["config"]
    assert config["source"] == "synthetic" and config["seed"] == 0
    # The default config is valid for the job.
    job = defs.get_job_def("refresh_raw_responses")
    assert job.run_config_schema.config_type is not None
    assert dg.validate_run_config(job, request.run_config)


def _report(instance, name, version, partition=None):
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=name, partition=partition, tags={"dagster/data_version": version})
    )


def _materialize_all(instance, version="v1"):
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        partitions = graph.get(key).partitions_def
        name = key.to_user_string()
        for partition in partitions.get_partition_keys() if partitions else [None]:
            _report(instance, name, f"{name}-{partition}-{version}", partition)


@pytest.mark.filterwarnings("ignore:Parameter `include_sources`")
def test_training_runs_on_data_version_change_after_cron_tick():
    ref, dpo, evals, emb = (
        dg.AssetKey(k) for k in ("reference_policy", "dpo_checkpoint", "eval_scores", "response_embeddings")
    )
    day1 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    with dg.instance_for_test() as instance:
        _materialize_all(instance)

        def evaluate(when, cursor):
            return dg.evaluate_automation_conditions(
                defs=defs, instance=instance, evaluation_time=when, cursor=cursor
            )

        result = evaluate(day1, None)
        assert result.total_requested == 0

        # A rerun of raw_responses with the same content: cheap steps follow, training does not,
        # not even after the cron tick.
        _report(instance, "raw_responses", "raw_responses-None-v1")
        result = evaluate(day1 + dt.timedelta(hours=1), result.cursor)
        assert result.get_num_requested(emb) == 1
        assert result.get_num_requested(ref) == 0
        result = evaluate(day1 + dt.timedelta(hours=15, minutes=5), result.cursor)  # day 2, 03:05
        assert result.get_num_requested(ref) == 0

        # New content upstream: reference_policy is requested; dpo_checkpoint waits for it.
        _report(instance, "raw_responses", "raw_responses-None-v2")
        result = evaluate(day1 + dt.timedelta(hours=16), result.cursor)
        assert result.get_num_requested(ref) == 1
        assert result.get_num_requested(dpo) == 0

        # The new reference lands: selected_pairs follows (margin and ches score pairs under it) and
        # every DPO partition trains once that is done, even where the selection came out the same.
        _report(instance, "reference_policy", "reference-v2")
        result = evaluate(day1 + dt.timedelta(hours=17), result.cursor)
        partitions = set(defs.get_assets_def(dpo).partitions_def.get_partition_keys())
        assert result.get_requested_partitions(dg.AssetKey("selected_pairs")) == partitions
        assert result.get_num_requested(dpo) == 0
        for partition in partitions:
            _report(instance, "selected_pairs", f"selected_pairs-{partition}-v1", partition)
        result = evaluate(day1 + dt.timedelta(hours=17, minutes=1), result.cursor)
        assert result.get_requested_partitions(dpo) == partitions
        assert result.get_num_requested(ref) == 0
        result = evaluate(day1 + dt.timedelta(hours=17, minutes=5), result.cursor)
        assert result.total_requested == 0

        # Another change the same day waits for the next tick (at most once per cron period).
        _report(instance, "raw_responses", "raw_responses-None-v3")
        result = evaluate(day1 + dt.timedelta(hours=18), result.cursor)
        assert result.get_num_requested(ref) == 0
        result = evaluate(day1 + dt.timedelta(days=1, hours=15, minutes=1), result.cursor)  # day 3, 03:01
        assert result.get_num_requested(ref) == 1

        # A new DPO checkpoint is evaluated in the same cron period; an identical one is not.
        changed, same = defs.get_assets_def(dpo).partitions_def.get_partition_keys()[:2]
        _report(instance, "dpo_checkpoint", f"dpo-{changed}-v2", changed)
        _report(instance, "dpo_checkpoint", f"dpo_checkpoint-{same}-v1", same)
        result = evaluate(day1 + dt.timedelta(days=1, hours=16), result.cursor)
        assert result.get_requested_partitions(evals) == {changed}


def test_pools_limit_one_step_at_a_time(tmp_path):
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(homes.DAGSTER_YAML)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        for pool in ("warehouse", "gpu"):
            instance.event_log_storage.initialize_concurrency_limit_to_default(pool)
            assert instance.event_log_storage.get_concurrency_info(pool).slot_count == 1
    # Every asset writes the warehouse (tables or models.checkpoints): each one is in a pool.
    pools = {a.key.to_user_string(): a.op.pool for a in defs.assets}
    assert set(pools.values()) == {"warehouse", "gpu"}, pools


def test_scheduled_source_comes_from_the_environment(monkeypatch):
    from real_assets.defs import automation

    monkeypatch.setenv(automation.INGEST_CONFIG_ENV, '{"source": "hh_rlhf", "path": "Anthropic/hh-rlhf"}')
    config = automation.default_ingest_run_config()["ops"]["raw_responses"]["config"]
    assert config["source"] == "hh_rlhf" and config["path"] == "Anthropic/hh-rlhf"
    monkeypatch.setenv(automation.INGEST_CONFIG_ENV, '{"sauce": "hh_rlhf"}')
    with pytest.raises(ValueError, match="REAL_ASSETS_INGEST_CONFIG"):
        automation.default_ingest_run_config()
