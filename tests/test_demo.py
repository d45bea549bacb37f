"""The demo's steps come from the graph, and its one line per step follows the progress the steps log."""

import io

import dagster as dg
import pytest
from conftest import restored_environment

from real_assets.core.progress import Progress
from real_assets.definitions import defs
from real_assets.demo import StepLine, demo_steps, progress_logger


def test_demo_steps_follow_the_graph_and_every_partition():
    with dg.instance_for_test() as instance:
        steps = demo_steps(defs, instance)
    graph = defs.resolve_asset_graph()
    order = [key for key, _ in steps]
    for key in graph.get_all_asset_keys():
        partitions = graph.get(key).partitions_def
        expected = partitions.get_partition_keys() if partitions else [None]
        assert [p for k, p in steps if k == key] == expected
        for parent in graph.get(key).parent_keys:  # every input before the first step that reads it
            assert max(i for i, k in enumerate(order) if k == parent) < order.index(key)


def test_demo_from_an_asset_starts_at_its_first_step_and_rejects_unknown_names():
    with dg.instance_for_test() as instance:
        steps = demo_steps(defs, instance, only="easy", seeds=1)
        resumed = demo_steps(defs, instance, only="easy", seeds=1, start="dpo_checkpoint")
        with pytest.raises(ValueError, match="no step materializes 'dpo'; the steps are: raw_responses, "):
            demo_steps(defs, instance, start="dpo")
    first = [key.to_user_string() for key, _ in steps].index("dpo_checkpoint")
    assert resumed == steps[first:] and resumed[0] == (dg.AssetKey("dpo_checkpoint"), "0|easy")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", "sweep={}"], "--config: 'sweep={}': no asset 'sweep'; the assets are: "),
        (["--config", "selected_pairs=[0.5]"], "the value must be a JSON object of config fields"),
        (["--config", "selected_pairs={keep: 1}"], "the value is not JSON"),
        (["--config", 'selected_pairs={"nope": 1}'], 'unexpected config entry "nope"'),
        (["--config", 'dpo_checkpoint={"beta": "high"}'], "dpo_checkpoint"),
        (["--from", "dpo"], "--from: no step materializes 'dpo'"),
    ],
)
@pytest.mark.usefixtures("home_template")  # a new home with migrated stores
def test_demo_rejects_bad_step_options_before_any_step_runs(tmp_path, capsys, args, message):
    from real_assets import cli

    home = tmp_path / "home"
    with restored_environment():  # the demo points the environment at its home
        assert cli.main(["demo", "--home", str(home), *args]) == 2
    assert message in capsys.readouterr().err
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        assert not instance.get_runs()


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _lines(tty: bool) -> str:
    stream, clock = io.StringIO(), _Clock()
    line = StepLine(stream, tty=tty, every_s=10, clock=clock)
    progress = Progress("sft", total=40, report=None, unit="steps", clock=clock)
    line.start("reference_policy")
    for step in range(1, 41):
        clock.now = step * 1.0
        progress.update(1, loss=1.0 / step)
        line.progress(progress.snapshot())
    line.finish("40.0 s  run abcd1234")
    return stream.getvalue()


def test_a_terminal_gets_one_rewritten_line_per_step():
    out = _lines(tty=True)
    assert out.count("\n") == 1 and out.count("\r") == 41
    assert "sft 40/40 steps (100%)" in out and "loss=0.025" in out
    assert out.endswith(f"\r  {'reference_policy':<32} 40.0 s  run abcd1234\x1b[K\n")


def test_a_log_file_gets_plain_throttled_lines():
    out = _lines(tty=False)
    assert "\r" not in out and "\x1b" not in out
    lines = out.splitlines()
    assert len(lines) == 5  # progress at 1 s, 11 s, 21 s, 31 s, then the result
    assert lines[0].startswith("  reference_policy") and "sft 1/40 steps" in lines[0]
    assert lines[-1] == f"  {'reference_policy':<32} 40.0 s  run abcd1234"


def test_the_progress_logger_passes_on_only_progress_lines():
    seen = []

    @dg.asset
    def chatty(context: dg.AssetExecutionContext):
        context.log.info("starting")
        Progress("embed", total=2, report=context.log.info, unit="texts").update(2)

    job = dg.Definitions(assets=[chatty], loggers={"progress": progress_logger(seen.append)})
    result = job.resolve_implicit_global_asset_job_def().execute_in_process(
        run_config={"loggers": {"progress": {}}}
    )
    assert result.success
    assert [(s["task"], s["done"], s["total"]) for s in seen] == [("embed", 2, 2)]
