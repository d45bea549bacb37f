"""The packaged all-MiniLM-L6-v2, offline, and the progress the embedding step reports."""

import dagster as dg
import numpy as np
import pytest

from real_assets.core.device import pick_device
from real_assets.core.embedding import DEFAULT_EMBEDDER, embed_texts, resolve_model_path
from real_assets.core.progress import Progress, parse_progress


def test_packaged_model_embeds_normalised_vectors_that_separate_meaning():
    texts = [
        "Water in the morning. Check the soil moisture.",
        "Water them in the morning and check the soil moisture.",
        "That is a stupid question. Nobody cares.",
    ]
    vectors = embed_texts(texts, DEFAULT_EMBEDDER, pick_device("cpu"), batch_size=2)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3


def test_model_names_resolve_to_the_packaged_weights_and_other_ids_pass_through():
    assert resolve_model_path("all-MiniLM-L6-v2").endswith("model")
    assert resolve_model_path("some/other-model") == "some/other-model"
    with pytest.raises(ValueError, match="no texts"):
        embed_texts([], DEFAULT_EMBEDDER, pick_device("cpu"))


def test_embedding_reports_progress_per_batch_and_keeps_input_order():
    texts = ["short", "a much longer text about watering basil in the morning", "mid length text", "x"]
    lines: list[str] = []
    progress = Progress("embed", total=len(texts), report=lines.append, unit="texts", every_s=0.0)
    vectors = embed_texts(texts, DEFAULT_EMBEDDER, pick_device("cpu"), batch_size=3, progress=progress)
    one_by_one = np.concatenate([embed_texts([t], DEFAULT_EMBEDDER, pick_device("cpu")) for t in texts])
    # batches go longest-first; rows still come back in input order
    assert np.allclose(vectors, one_by_one, atol=1e-5)
    fields = [parse_progress(line) for line in lines]
    assert [f["done"] for f in fields] == [0, 3, 4]  # model loaded, then each batch
    assert all(f["total"] == 4 and f["unit"] == "texts" for f in fields)
    assert fields[-1]["eta_s"] == 0 and fields[-1]["rate"] > 0


def test_response_embeddings_logs_progress_lines_into_the_dagster_run(home):
    from real_assets.definitions import resources_for
    from real_assets.defs.features import response_embeddings
    from real_assets.defs.ingest import raw_responses
    from real_assets.settings import Locations

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [raw_responses, response_embeddings],
        instance=instance,
        resources=resources_for(Locations.resolve(home)),
        run_config={
            "ops": {
                "raw_responses": {"config": {"n_prompts": 6}},
                "response_embeddings": {"config": {"progress_every_s": 0.0}},
            }
        },
    )
    assert result.success
    embedded = result.asset_materializations_for_node("response_embeddings")[0].metadata["embedded_now"].value
    messages = [e.user_message for e in instance.all_logs(result.run_id) if e.user_message]
    fields = [parse_progress(m) for m in messages if m.startswith("progress response_embeddings ")]
    assert len(fields) >= 2 and all(f["total"] == embedded > 0 for f in fields)
    assert fields[0]["done"] == 0 and fields[-1]["done"] == embedded
