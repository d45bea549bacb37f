"""The `ray` engine on a local Ray instance (2 CPUs, started once for this module and shut down after):
embeddings through a Ray Data actor pool equal the local engine's, a model step runs as a Ray task with
its progress and curve forwarded, and the whole graph materializes with `engine="ray"`."""

import numpy as np
import pytest
import ray

from real_assets.core import distributed
from real_assets.core.sources import SourceSpec
from real_assets.defs import features
from real_assets.defs.features import EmbeddingConfig, embed_new_responses
from real_assets.defs.ingest import ingest
from real_assets.resources import Compute, Warehouse


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _vectors(warehouse: Warehouse) -> dict[str, np.ndarray]:
    with warehouse.connect(read_only=True) as con:
        rows = con.execute("select response_id, embedding from features.response_embeddings").fetchall()
    return {rid: np.asarray(vec, dtype=np.float32) for rid, vec in rows}


def test_ray_data_embeddings_equal_the_local_engine_and_only_new_responses_are_embedded(
    tmp_path, home, monkeypatch, local_ray
):
    monkeypatch.setattr(features, "EMBED_CHUNK", 7)  # chunks that cut across Ray Data blocks
    monkeypatch.setattr(distributed, "BLOCK_ROWS", 5)
    local, on_ray = (Warehouse(path=str(tmp_path / f"{name}.duckdb")) for name in ("local", "ray"))
    for warehouse in (local, on_ray):
        ingest(warehouse, SourceSpec(source="synthetic", n_prompts=4))
    lines: list[str] = []
    ray_compute = Compute(device="cpu", embed_batch_size=4, engine="ray", embed_actors=2)
    first = embed_new_responses(on_ray, ray_compute, EmbeddingConfig(progress_every_s=0), lines.append)
    assert first["embedded_now"] == first["rows"] > 7 and first["device"].startswith("ray:cpu (2 actors")
    assert any(line.startswith("progress response_embeddings") for line in lines)

    more = ingest(on_ray, SourceSpec(source="synthetic", n_prompts=6))
    second = embed_new_responses(on_ray, ray_compute, EmbeddingConfig())
    assert second["embedded_now"] == more["new_responses"] > 0 and second["rows"] == more["responses"]

    ingest(local, SourceSpec(source="synthetic", n_prompts=6))
    expected = embed_new_responses(local, Compute(device="cpu", embed_batch_size=8), EmbeddingConfig())
    assert expected["rows"] == second["rows"]
    want, got = _vectors(local), _vectors(on_ray)
    assert sorted(want) == sorted(got)
    worst = max(float(np.abs(want[rid] - got[rid]).max()) for rid in want)
    assert worst <= 1e-5, worst
