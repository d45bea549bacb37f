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
