"""The prompts-only source and `generated_responses`: K candidates per prompt from a recorded policy, with
their provenance, incremental, and unlabelled in raw.responses through the `generated` source."""

import json

import dagster as dg
import pytest

from real_assets.core.annotation.generation import SamplingConfig, missing_samples
from real_assets.core.annotation.prompts import read_prompts
from real_assets.core.records import SourceError
from real_assets.demo import materialize
from real_assets.homes import instance_of, prepare_home
from real_assets.resources import Warehouse

TINY_REFERENCE = {"epochs": 1.0, "n_layer": 1, "n_embd": 32, "vocab_size": 400}
TINY_SAMPLING = {"k": 3, "max_new_tokens": 8, "temperature": 1.0, "top_p": 0.9, "seed": 3}


def write_prompts(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_prompts_file_accepts_or_rejects_every_row_naming_row_and_field(tmp_path):
    path = write_prompts(
        tmp_path / "p.jsonl",
        [
            {"prompt": "How do I water basil?", "id": "a1"},
            {"prompt": "How do I bake rye bread?", "id": 7},
            "not json",
            "[1, 2]",
            {"id": "x"},
            {"prompt": "   "},
            {"prompt": 5},
            {"prompt": "How do I water basil?"},
            {"prompt": "Fine", "id": [1]},
        ],
    )
    read = read_prompts(path)
    assert read.input_rows == 9 == read.accepted_rows + len(read.rejects)
    assert [(p.row_number, p.external_id) for p in read.prompts] == [(1, "a1"), (2, "7")]
    assert [(r.row_number, r.field, r.reason) for r in read.rejects] == [
        (3, "row", "invalid_json"),
        (4, "row", "not_an_object"),
        (5, "prompt", "missing_field"),
        (6, "prompt", "empty_text"),
        (7, "prompt", "wrong_type"),
        (8, "row", "duplicate_row"),
        (9, "id", "wrong_type"),
    ]
    assert all(r.source_file == str(path) for r in read.rejects)


def test_prompts_file_that_cannot_be_read_names_the_file(tmp_path):
    with pytest.raises(SourceError, match=r"missing\.jsonl"):
        read_prompts(tmp_path / "missing.jsonl")
    bad = tmp_path / "p.csv"
    bad.write_text("prompt\nx\n")
    with pytest.raises(SourceError, match=r"p\.csv"):
        read_prompts(bad)


def test_parquet_prompts(tmp_path):
    import pandas as pd

    path = tmp_path / "p.parquet"
    pd.DataFrame({"prompt": ["How do I water basil?", None], "id": ["a", "b"]}).to_parquet(path)
    read = read_prompts(path)
    assert [p.external_id for p in read.prompts] == ["a"]
    assert [(r.row_number, r.field, r.reason) for r in read.rejects] == [(2, "prompt", "missing_field")]


def test_only_missing_samples_are_drawn():
    todo = missing_samples([("p1", "a"), ("p2", "b")], {"p1": {0, 1, 2}, "p2": {1}}, 3)
    assert [(t.prompt_id, t.missing) for t in todo] == [("p2", (0, 2))]
    with pytest.raises(ValueError, match="k must be"):
        SamplingConfig(k=1).check()
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0).check()


@pytest.fixture(scope="module")
def generated_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("generation")
    # Not a `with` block: one held open across the yield would leave Dagster's current defs-state storage
    # (a context variable) pointing at this instance for later tests once it is disposed.
    instance = instance_of(prepare_home(str(home)))
    try:
        assert materialize(
            ["raw_responses"], instance, ops={"raw_responses": {"n_prompts": 8}}, home=home
        ).success
        assert materialize(
            ["reference_policy"], instance, ops={"reference_policy": TINY_REFERENCE}, home=home
        ).success
        prompts = write_prompts(
            home / "prompts.jsonl",
            [
                {"prompt": "How do I water basil?", "id": "q1"},
                {"prompt": ""},
                {"prompt": "How do I bake rye?"},
            ],
        )
        config = {"prompts_path": str(prompts), **TINY_SAMPLING}
        first = materialize(["generated_responses"], instance, ops={"generated_responses": config}, home=home)
        again = materialize(["generated_responses"], instance, ops={"generated_responses": config}, home=home)
        more = materialize(
            ["generated_responses"], instance, ops={"generated_responses": config | {"k": 4}}, home=home
        )
        yield home, instance, first, again, more
    finally:
        instance.dispose()


def _metadata(result, name):
    mats = [m for m in result.get_asset_materialization_events() if m.asset_key == dg.AssetKey(name)]
    return {k: getattr(v, "value", v) for k, v in mats[-1].materialization.metadata.items()}


@pytest.mark.slow
def test_generation_records_provenance_and_is_incremental(generated_home):
    home, instance, first, again, more = generated_home
    a, b, c = (_metadata(r, "generated_responses") for r in (first, again, more))
    assert (a["input_rows"], a["accepted_rows"], a["rejected_rows"]) == (3, 2, 1)
    assert a["samples_drawn"] == 6 and a["prompts_sampled"] == 2
    assert b["samples_drawn"] == 0 and b["data_version"] == a["data_version"]
    assert c["samples_drawn"] == 2 and c["rows"] == 8  # only sample index 3 of each prompt
    reference = instance.get_latest_materialization_event(dg.AssetKey("reference_policy"))
    ref_version = reference.asset_materialization.tags["dagster/data_version"]
    warehouse = Warehouse(path=str(home / "warehouse.duckdb"))
    with warehouse.connect(read_only=True) as con:
        rows = con.execute(
            "select distinct model_asset, model_version, temperature, top_p, max_new_tokens, seed "
            "from raw.generations"
        ).fetchall()
        rejects = con.execute("select row_number, field, reason from raw.prompt_rejects").fetchall()
    assert rows == [("reference_policy", ref_version, 1.0, 0.9, 8, 3)]
    assert set(rejects) == {(2, "prompt", "empty_text")}


@pytest.mark.slow
def test_generated_candidates_reach_raw_responses_unlabelled(generated_home):
    home, instance, _first, _again, more = generated_home
    path = _metadata(more, "generated_responses")["candidates_file"]
    result = materialize(
        ["raw_responses"], instance, ops={"raw_responses": {"source": "generated", "path": path}}, home=home
    )
    assert result.success
    warehouse = Warehouse(path=str(home / "warehouse.duckdb"))
    with warehouse.connect(read_only=True) as con:
        generated = con.execute(
            "select count(*), count(score) from raw.responses where source = 'generated'"
        ).fetchone()
        expected = con.execute(
            "select count(distinct response_id) from raw.generations where response_id <> ''"
        ).fetchone()[0]
    assert generated == (expected, 0) and expected > 0


def test_unlabelled_candidates_get_their_direction_from_annotations_only(tmp_path, home):
    from real_assets.core.sources import SourceSpec
    from real_assets.core.sql_models import load_sql_models
    from real_assets.defs.features import EmbeddingConfig, embed_new_responses
    from real_assets.defs.ingest import ingest
    from real_assets.resources import Compute

    prompt = "How do I keep basil alive?"
    texts = ["Water it in the morning.", "Give it bright light.", "Buy a plastic one."]
    generated = tmp_path / "generated.jsonl"
    generated.write_text("".join(json.dumps({"prompt": prompt, "response": t}) + "\n" for t in texts))
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    ingest(warehouse, SourceSpec(source="generated", path=str(generated)))
    embed_new_responses(warehouse, Compute(device="cpu"), EmbeddingConfig())

    def candidates():
        with warehouse.connect() as con:
            for model in load_sql_models():
                con.execute(f"create or replace table {model.table} as {model.sql}")
            return con.execute("""
                select c.response, r.response, k.labelled_pair, k.chosen_score
                from selection.pair_candidates as k
                join raw.responses as c on c.response_id = k.chosen_id
                join raw.responses as r on r.response_id = k.rejected_id order by 1, 2""").fetchall()

    assert candidates() == []  # unlabelled: no pair has a direction
    labels = tmp_path / "labels.jsonl"
    rows = [
        {"prompt": prompt, "chosen": texts[0], "rejected": texts[2], "annotation_id": 1},
        {"prompt": prompt, "chosen": texts[1], "rejected": texts[2], "annotation_id": 2},
        {"prompt": prompt, "chosen": texts[2], "rejected": texts[1], "annotation_id": 3},  # disagrees with 2
    ]
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ingest(warehouse, SourceSpec(source="table", path=str(labels)))
    with warehouse.connect(read_only=True) as con:
        assert con.execute("select count(*), count(score) from raw.responses").fetchone() == (3, 0)
    # the pair annotated one way is directed by it; the pair annotated both ways has no direction
    assert candidates() == [(texts[0], texts[2], True, None)]


def test_the_default_demo_leaves_the_annotation_loop_out():
    from real_assets.definitions import defs
    from real_assets.defs.annotation import loop_asset_names
    from real_assets.demo import demo_steps

    loop = loop_asset_names(defs)
    assert loop == [
        "annotation_quality",
        "annotation_requests",
        "annotation_tasks",
        "generated_responses",
        "raw_annotations",
    ]
    steps = {
        k.to_user_string() for k, _ in demo_steps(defs, dg.DagsterInstance.ephemeral(), seeds=1, skip=loop)
    }
    assert not steps & set(loop) and "dpo_checkpoint" in steps
