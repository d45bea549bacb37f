"""The annotation loop against a real Label Studio server (its own venv, SQLite, 127.0.0.1, a free port):
generate, select, send the tasks, annotators answer through the API as their browsers would, the sensor
ingests, DPO trains on the labels, and the audit walks from the checkpoint back to annotator and task. Then
the bad inputs: an unknown pair, two choices, an empty result, a deleted task, a server that is down or
refuses the key; nothing already ingested is lost."""

import dataclasses

import dagster as dg
import pytest
from labelstudio_server import ADMIN_EMAIL, ADMIN_PASSWORD, running_label_studio, unavailable

from real_assets.annotation_audit import annotation_lineage
from real_assets.annotation_loop import LoopSettings, run_loop, step
from real_assets.cli import main
from real_assets.core.annotation.browser import LabelStudioBrowser
from real_assets.core.annotation.labelstudio import LabelStudioError
from real_assets.core.annotation.simulated import SimulatedAnnotators, answer_in_label_studio, pairwise_result
from real_assets.defs.annotation_sensor import label_studio_sensor
from real_assets.demo import materialize
from real_assets.homes import instance_of, prepare_home
from real_assets.resources import LabelStudio, Warehouse
from real_assets.settings import Locations

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(unavailable() is not None, reason=str(unavailable())),
]


@dataclasses.dataclass(frozen=True)
class AgreeingAnnotators(SimulatedAnnotators):
    """Annotators who always agree: the shorter answer (ties by text), whichever side it is shown on. The tiny
    policy's candidates tie on gold quality, so simulated annotators flip coins on them, and a pair labelled
    both ways is left out of training: on 10 tasks every `easy` pair could cancel out, depending on what the
    policy happened to generate. Label noise is the annotation-quality tests' subject, not this module's."""

    def choose(self, annotator: int, task_key: str, prompt: str, left: str, right: str) -> str:
        return "left" if (len(left), left) <= (len(right), right) else "right"


PARTITION = "0|easy"
SETTINGS = LoopSettings(
    n_prompts=16,
    k=3,
    strategies=["easy", "random"],
    rounds=1,
    budget=5,
    overlap=0.5,
    annotators=AgreeingAnnotators(n_annotators=3, seed=0),
    reference={"epochs": 1.0, "n_layer": 1, "n_embd": 32, "vocab_size": 400},
    sampling={"max_new_tokens": 8},
    dpo={"epochs": 1.0, "batch_size": 4},
    evaluation={"samples_per_prompt": 1, "max_new_tokens": 4},
)


def sensor_tick(instance, resources, home, cursor=None):
    resources = {"warehouse": Warehouse(path=str(home / "warehouse.duckdb")), **resources}
    with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as context:
        return label_studio_sensor(context), context.cursor


def annotation_counts(warehouse):
    with warehouse.connect(read_only=True) as con:
        stored = con.execute("select count(*), count(distinct annotator) from raw.annotations").fetchone()
        reasons = dict(
            con.execute("select reason, count(*) from raw.annotation_rejects group by 1").fetchall()
        )
    return stored, reasons


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    home = tmp_path_factory.mktemp("ls-loop") / "home"
    with running_label_studio() as server, pytest.MonkeyPatch.context() as mp:
        mp.delenv("LABEL_STUDIO_URL", raising=False)
        mp.delenv("LABEL_STUDIO_API_KEY", raising=False)
        prepare_home(str(home))
        admin = LabelStudioBrowser(server.url).log_in(ADMIN_EMAIL, ADMIN_PASSWORD)
        key = admin.personal_access_token()
        browsers = [
            LabelStudioBrowser(server.url).sign_up(f"annotator{i}@example.com", "annotator-password-1")
            for i in range(3)
        ]
        resources = {"label_studio": LabelStudio(url=server.url, api_key=key, project_title="loop test")}
        ticks = []

        def annotate_round(run, instance):
            sent = step(run, instance, "annotation_tasks", {"overlap": SETTINGS.overlap}, resources=resources)
            given = answer_in_label_studio(browsers, int(sent["project_id"]), SETTINGS.annotators)
            request, cursor = sensor_tick(instance, resources, home)
            ticks.append((sent, given, request, cursor))
            assert isinstance(request, dg.RunRequest), request
            config = request.run_config["ops"]["raw_annotations"]["config"]
            step(run, instance, "raw_annotations", config, resources=resources)

        run = run_loop(home, SETTINGS, annotate_round, resources)
        yield home, run, server, admin, browsers, resources, ticks, key


def test_the_loop_runs_through_label_studio_and_the_audit_reaches_annotator_and_task(loop, capsys):
    home, run, _server, _admin, browsers, _resources, ticks, key = loop
    [(sent, given, _request, _cursor)] = ticks
    assert sent["tasks_sent"] == 2 * SETTINGS.budget and sent["project_created"] is True
    ingested = run.metadata["raw_annotations"]
    assert ingested["new_versions"] == given >= sent["tasks_sent"] and ingested["new_rejects"] == 0
    assert run.metadata["dpo_checkpoint[0|easy]"]["pairs"] > 0
    assert key not in str(run.metadata) and key not in (home / "mlflow.db").read_bytes().decode("latin-1")
    lineage = annotation_lineage(Locations.resolve(home), PARTITION)
    summary = lineage.summary()
    assert lineage.problems == [], lineage.problems
    assert summary["pairs"] == summary["annotated_pairs"] > 0
    assert summary["projects"] == [int(sent["project_id"])] and summary["tasks"] >= summary["pairs"]
    user_ids = {f"label-studio-user:{b.user_id()}" for b in browsers}
    assert set(summary["annotators"]) <= user_ids
    reference = run.metadata["reference_policy"]["data_version"]
    assert summary["generating_policies"] == [f"reference_policy@{reference}"]
    code = main(["audit", "--home", str(home), "--lineage", PARTITION])
    out = capsys.readouterr().out
    assert "lineage holds" in out and "annotation by label-studio-user:" in out
    # the budget sweep is not part of the loop: said, and not a problem of the loop's lineage
    problems = [line for line in out.splitlines() if line.startswith("PROBLEM")]
    assert problems == [], problems
    assert "warning  budget_sweep: never materialized in this home" in out
    assert code == 0


def test_bad_annotations_are_rejected_and_changes_versioned_and_nothing_is_lost(loop):
    home, run, _server, admin, browsers, resources, _ticks, _key = loop
    instance = instance_of(Locations.resolve(home))
    warehouse = Warehouse(path=str(home / "warehouse.duckdb"))
    (before, annotators), _ = annotation_counts(warehouse)
    project = int(run.metadata["annotation_tasks"]["project_id"])
    tasks = admin.export(project)
    unknown_id = admin.request(
        "POST",
        f"/api/projects/{project}/import?return_task_ids=true",
        [{"data": {"prompt": "q", "left": "a", "right": "b", "request_id": "nope", "pair_id": "nope"}}],
    )["task_ids"][0]
    first, second, third = browsers
    first.submit(unknown_id, pairwise_result("left"), 1.0)
    ids = [b.user_id() for b in browsers]

    def open_for(user_id):
        return [t for t in tasks if not any(a["completed_by"] == user_id for a in t["annotations"])]

    used = [open_for(ids[0])[0]["id"], open_for(ids[1])[0]["id"]]
    first.submit(used[0], pairwise_result("left") + pairwise_result("right"), 1.0)
    expected = {"unknown_pair": 1, "two_choices": 1}
    try:
        second.submit(used[1], [], 1.0)
        expected["empty_result"] = 1
    except LabelStudioError:
        pass  # Label Studio itself refused the empty result
    mine = next(a for t in tasks for a in t["annotations"] if a["completed_by"] == ids[2])
    flipped = "right" if mine["result"][0]["value"]["selected"] == "left" else "left"
    third.update(mine["id"], pairwise_result(flipped))
    deleted = next(t for t in tasks if t["annotations"] and t["id"] not in (mine["task"], *used))
    admin.delete_task(deleted["id"])
    request, _ = sensor_tick(instance, resources, home)
    assert isinstance(request, dg.RunRequest)
    result = materialize(
        ["raw_annotations"],
        instance,
        ops={"raw_annotations": {"origin": "label_studio"}},
        resources=resources,
        raise_on_error=False,
        home=home,
    )
    assert result.success
    meta = {
        k: getattr(v, "value", v)
        for k, v in result.get_asset_materialization_events()[-1].materialization.metadata.items()
    }
    assert meta["tasks_missing"] == 1 and meta["changed_annotations"] == 1
    (after, annotators_after), reasons = annotation_counts(warehouse)
    assert after == before + 1 and annotators_after == annotators  # the change is a new version; none lost
    assert reasons == expected
    with warehouse.connect(read_only=True) as con:
        versions = con.execute(
            "select version, choice from raw.annotations where annotation_id = ? order by version",
            [mine["id"]],
        ).fetchall()
    assert [v for v, _ in versions] == [1, 2] and versions[1][1] == flipped


def test_a_server_that_is_down_or_refuses_the_key_fails_clearly_and_loses_nothing(loop):
    home, _run, server, _admin, _browsers, _resources, _ticks, key = loop
    instance = instance_of(Locations.resolve(home))
    warehouse = Warehouse(path=str(home / "warehouse.duckdb"))
    before = annotation_counts(warehouse)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    down = {"label_studio": LabelStudio(url=f"http://127.0.0.1:{closed}", api_key=key, timeout_s=5)}
    refused = {"label_studio": LabelStudio(url=server.url, api_key="a.b.c")}
    for bad, message in ((down, "does not answer"), (refused, "refused the credentials")):
        skip, _ = sensor_tick(instance, bad, home)
        assert isinstance(skip, dg.SkipReason) and message in skip.skip_message
        failed = materialize(
            ["raw_annotations"],
            instance,
            ops={"raw_annotations": {"origin": "label_studio"}},
            resources=bad,
            raise_on_error=False,
            home=home,
        )
        assert not failed.success
        failure = failed.get_step_failure_events()[0].event_specific_data.error.message
        assert message in failure and key not in failure and "a.b.c" not in failure
    assert annotation_counts(warehouse) == before
