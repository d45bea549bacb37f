"""The packaged all-MiniLM-L6-v2, offline."""

import numpy as np
import pytest

from real_assets.core.device import pick_device
from real_assets.core.embedding import DEFAULT_EMBEDDER, embed_texts, resolve_model_path


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
