from pathlib import Path

import pytest

from real_assets.core.sql_models import column_lineage, load_sql_models, parse_sql_model, validate_identifier

SCHEMA = {
    "features": {
        "response_embeddings": {
            "response_id": "VARCHAR",
            "prompt_id": "VARCHAR",
            "model_id": "VARCHAR",
            "embedding": "FLOAT[384]",
        },
        "response_similarity": {
            "prompt_id": "VARCHAR",
            "response_id_a": "VARCHAR",
            "response_id_b": "VARCHAR",
            "cosine": "DOUBLE",
        },
    },
    "raw": {
        "responses": {
            "response_id": "VARCHAR",
            "prompt_id": "VARCHAR",
            "response": "VARCHAR",
            "score": "DOUBLE",
            "gold": "DOUBLE",
        },
        "prompts": {"prompt_id": "VARCHAR", "prompt": "VARCHAR", "split": "VARCHAR", "n_responses": "BIGINT"},
        "comparisons": {
            "prompt_id": "VARCHAR",
            "chosen_id": "VARCHAR",
            "rejected_id": "VARCHAR",
            "source_file": "VARCHAR",
            "row_number": "BIGINT",
        },
    },
}


def test_the_shipped_models_and_their_upstream_tables_come_from_the_sql():
    models = {m.name: m for m in load_sql_models()}
    assert {"response_similarity", "pair_candidates"} <= set(models)  # a new .sql file adds a model
    assert models["response_similarity"].upstream_tables == ("features.response_embeddings",)
    assert models["pair_candidates"].upstream_tables == (
        "features.response_similarity",
        "raw.comparisons",
        "raw.prompts",
        "raw.responses",
    )
    assert models["pair_candidates"].table == "selection.pair_candidates"
    assert "labelled_pair" in models["pair_candidates"].columns
    assert models["pair_candidates"].keys == ("prompt_id", "chosen_id", "rejected_id")
    assert models["response_similarity"].keys == ("prompt_id", "response_id_a", "response_id_b")


def test_column_lineage_follows_expressions_through_ctes():
    models = {m.name: m for m in load_sql_models()}
    lineage = column_lineage(models["pair_candidates"], SCHEMA)
    assert lineage["split"] == [("raw.prompts", "split")]
    assert ("raw.responses", "gold") in lineage["gold_gap"]
    assert ("raw.responses", "score") in lineage["chosen_id"]
    assert lineage["cosine"] == [("features.response_similarity", "cosine")]
    assert lineage["labelled_pair"] == [("raw.comparisons", "prompt_id")]
    sim = column_lineage(models["response_similarity"], SCHEMA)
    assert sim["cosine"] == [("features.response_embeddings", "embedding")]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("select * from raw.responses", "select \\*"),
        ("select a from responses", "schema-qualified"),
        ("delete from raw.responses", "one select"),
        ("select from where", "cannot parse"),
        ("select a from raw.responses", "-- key:"),
        ("-- key: b\nselect a from raw.responses", "-- key:"),
    ],
)
def test_bad_sql_models_fail_naming_the_file(tmp_path: Path, sql, message):
    path = tmp_path / "selection" / "bad_model.sql"
    path.parent.mkdir()
    path.write_text(sql)
    with pytest.raises(ValueError, match=message) as err:
        parse_sql_model(path)
    assert "bad_model.sql" in str(err.value)


@pytest.mark.parametrize("name", ["Robert'); drop table x;--", "a b", "1abc", "", "raw.responses"])
def test_identifiers_that_reach_sql_are_validated(name):
    with pytest.raises(ValueError, match="invalid"):
        validate_identifier(name)


def test_similarity_sql_keeps_a_degenerate_embedding_visible_as_null():
    import duckdb

    models = {m.name: m for m in load_sql_models()}
    con = duckdb.connect()
    con.execute("create schema features")
    con.execute(
        "create table features.response_embeddings as select * from (values "
        "('p', 'a', [1.0, 0.0]::float[2]), ('p', 'b', [0.0, 0.0]::float[2]), "
        "('p', 'c', [1.0, 0.0]::float[2]))"
        " as t(prompt_id, response_id, embedding)"
    )
    rows = con.execute(
        f"select response_id_a, response_id_b, cosine from ({models['response_similarity'].sql})"
        " order by 1, 2"
    ).fetchall()
    assert rows == [("a", "b", None), ("a", "c", 1.0), ("b", "c", None)]
