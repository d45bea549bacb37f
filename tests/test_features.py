"""The embedding step: incremental, one model per table, bounded chunks."""

import pytest

from real_assets.core.sources import SourceSpec
from real_assets.defs import features
from real_assets.defs.features import EmbeddingConfig, embed_new_responses
from real_assets.defs.ingest import ingest
from real_assets.resources import Compute, Warehouse


def test_only_new_responses_are_embedded_and_a_new_model_starts_afresh(tmp_path, home, monkeypatch):
    monkeypatch.setattr(features, "EMBED_CHUNK", 7)  # several chunks, a partial last one
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    compute = Compute(device="cpu", embed_batch_size=8)
    first = ingest(warehouse, SourceSpec(source="synthetic", n_prompts=4))
    a = embed_new_responses(warehouse, compute, EmbeddingConfig())
    assert a["embedded_now"] == a["rows"] == first["responses"] and a["dimensions"] == 384
    again = embed_new_responses(warehouse, compute, EmbeddingConfig())
    assert again["embedded_now"] == 0 and again["data_version"] == a["data_version"]
    more = ingest(warehouse, SourceSpec(source="synthetic", n_prompts=6))
    b = embed_new_responses(warehouse, compute, EmbeddingConfig())
    assert b["embedded_now"] == more["new_responses"] > 0 and b["rows"] == more["responses"]
    other = embed_new_responses(warehouse, compute, EmbeddingConfig(model="all-MiniLM-L6-v2"))
    assert other["embedded_now"] == other["rows"] == more["responses"]
    assert other["data_version"] != b["data_version"]  # same weights, but the model id is part of the content
    with warehouse.connect(read_only=True) as con:
        assert con.execute("select distinct model_id from features.response_embeddings").fetchall() == [
            ("all-MiniLM-L6-v2",)
        ]


def test_nothing_to_embed_fails_clearly(tmp_path, home):
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "response": "", "score": 1}\n')
    ingest(warehouse, SourceSpec(source="table", path=str(bad)))
    with pytest.raises(ValueError, match="no rows to embed"):
        embed_new_responses(warehouse, Compute(device="cpu"), EmbeddingConfig())


def test_hh_prompt_in_two_rows_pairs_only_what_annotators_compared(tmp_path, home):
    import json

    from real_assets.core.sql_models import load_sql_models

    def row(chosen, rejected):
        prompt = "\n\nHuman: How do I keep basil alive?\n\nAssistant:"
        return {"chosen": f"{prompt} {chosen}", "rejected": f"{prompt} {rejected}"}

    path = tmp_path / "hh.jsonl"
    rows = [row("Water it in the morning.", "No idea."), row("Give it bright light.", "Buy a plastic one.")]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    ingest(warehouse, SourceSpec(source="hh_rlhf", path=str(path)))
    embed_new_responses(warehouse, Compute(device="cpu"), EmbeddingConfig())
    with warehouse.connect() as con:
        for model in load_sql_models():
            con.execute(f"create or replace table {model.table} as {model.sql}")
        pairs = con.execute("""
            select c.response, r.response, k.labelled_pair from selection.pair_candidates as k
            join raw.responses as c on c.response_id = k.chosen_id
            join raw.responses as r on r.response_id = k.rejected_id order by 1""").fetchall()
        assert con.execute("select count(*) from raw.comparisons").fetchone()[0] == 2
    # 4 responses give 4 directed cross pairs by score; only the 2 compared ones are candidates
    assert pairs == [
        ("Give it bright light.", "Buy a plastic one.", True),
        ("Water it in the morning.", "No idea.", True),
    ]
