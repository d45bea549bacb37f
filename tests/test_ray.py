"""The `ray` engine on a local Ray instance (2 CPUs, started once for this module and shut down after):
embeddings through a Ray Data actor pool equal the local engine's, a model step runs as a Ray task with
its progress and curve forwarded, and the whole graph materializes with `engine="ray"`."""

import dagster as dg
import mlflow
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


def test_the_whole_graph_materializes_with_the_ray_engine(home, local_ray):
    from real_assets.definitions import defs
    from real_assets.demo import run_steps

    on_ray = Compute(device="cpu", engine="ray", embed_actors=1)
    ray_defs = dg.Definitions(
        assets=defs.assets, asset_checks=defs.asset_checks, resources={**defs.resources, "compute": on_ray}
    )
    ops = {
        "raw_responses": {"config": {"source": "synthetic", "n_prompts": 24}},
        "reference_policy": {"config": {"epochs": 1}},
        "dpo_checkpoint": {"config": {"epochs": 1}},
        "budget_sweep": {"config": {"keep_fractions": [0.5, 1.0], "strategies": ["easy"]}},
    }
    instance = dg.DagsterInstance.ephemeral()
    assert run_steps(ray_defs, instance, ops, only="all", seeds=1)

    def metadata(asset: str) -> dict:
        [record] = instance.fetch_materializations(dg.AssetKey(asset), limit=1).records
        return {k: v.value for k, v in record.asset_materialization.metadata.items()}

    for asset in ("reference_policy", "dpo_checkpoint"):
        assert metadata(asset)["device"] == "ray:cpu (1 CPU, 0 GPU)"
    assert metadata("response_embeddings")["device"].startswith("ray:cpu (1 actors")
    # the curve and the progress lines travelled back from the Ray task while it ran
    dpo = metadata("dpo_checkpoint")
    run = mlflow.get_run(dpo["mlflow_run_id"])
    assert "train/loss" in run.data.metrics and run.data.tags["dagster.partition"] == "0|all"
    logs = [
        e.user_message
        for e in instance.all_logs(run.data.tags["dagster.run_id"])
        if e.user_message.startswith("progress dpo")
    ]
    assert logs
    assert metadata("strategy_comparison") and metadata("budget_sweep")
