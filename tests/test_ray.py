"""The `ray` engine on a local Ray instance (2 CPUs, its job server on a free port, shut down after): the
whole graph materializes with `engine="ray"` and the fake model backend (every model step a Ray task, its
progress and curve forwarded); real models on Ray: SFT in a Ray task, DPO under `accelerate launch` as a Ray
job through Pipes, reference scores equal to the local engine's; the Ray Data embeddings embed only new
responses and equal the local engine's. One test: the Ray instance and the graph's data are made once."""

import socket

import dagster as dg
import mlflow
import numpy as np
import pytest
import ray

from real_assets.core import distributed
from real_assets.core.embedding import DEFAULT_EMBEDDER, embed_texts
from real_assets.core.sources import SourceSpec
from real_assets.definitions import resources_for
from real_assets.defs import features
from real_assets.defs.features import EmbeddingConfig, embed_new_responses
from real_assets.defs.ingest import ingest
from real_assets.defs.pair_scores import _reference_scores
from real_assets.defs.train_candidates import read_train_candidates
from real_assets.resources import Compute
from real_assets.settings import Locations

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray() -> str:
    """A local Ray instance with its job server on a free port; yields the job server's address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = ray.init(num_cpus=2, dashboard_host="127.0.0.1", dashboard_port=port, log_to_driver=False)
    try:
        yield f"http://{context.dashboard_url}"
    finally:
        ray.shutdown()


def test_the_whole_graph_materializes_with_the_ray_engine_and_embeds_only_new_responses_on_ray_data(
    home, local_ray, monkeypatch
):
    from real_assets.definitions import definitions
    from real_assets.defs.annotation import loop_asset_names
    from real_assets.demo import materialize, run_steps

    defs = definitions(Locations.resolve(home))
    fake_on_ray = Compute(
        device="cpu", engine="ray", embed_actors=1, model_backend="fake", ray_dashboard=local_ray
    )
    ray_defs = dg.Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        resources={**defs.resources, "compute": fake_on_ray},
    )
    ops = {
        "raw_responses": {"config": {"source": "synthetic", "n_prompts": 24}},
    }
    instance = dg.DagsterInstance.ephemeral()
    assert run_steps(ray_defs, instance, ops, only="all", seeds=1, skip=loop_asset_names(defs))

    def metadata(asset: str) -> dict:
        [record] = instance.fetch_materializations(dg.AssetKey(asset), limit=1).records
        return {k: v.value for k, v in record.asset_materialization.metadata.items()}

    def assert_curve_and_progress_reached_mlflow_and_dagster(steps) -> None:
        for asset, curve, task in steps:
            run = mlflow.MlflowClient(defs.resources["tracking"].uri()).get_run(
                metadata(asset)["mlflow_run_id"]
            )
            assert curve in run.data.metrics
            messages = [e.user_message for e in instance.all_logs(run.data.tags["dagster.run_id"])]
            assert any(message.startswith(f"progress {task} ") for message in messages), asset

    # every model step in a Ray task, its curve in its MLflow run and its progress in the Dagster run log
    for asset in ("reference_policy", "dpo_checkpoint"):
        assert metadata(asset)["device"] == "ray:cpu (1 CPU, 0 GPU)", asset
    assert metadata("response_embeddings")["device"].startswith("ray:cpu (1 actors")
    assert_curve_and_progress_reached_mlflow_and_dagster(
        (("reference_policy", "sft/loss", "sft"), ("dpo_checkpoint", "train/loss", "dpo"))
    )
    assert metadata("strategy_comparison") and metadata("budget_sweep")

    # Real models on Ray: SFT in a Ray task, DPO under `accelerate launch` in a Ray job (Pipes)
    on_ray = Compute(device="cpu", engine="ray", dpo_launcher="accelerate", ray_dashboard=local_ray)
    for asset, partition in (("reference_policy", None), ("dpo_checkpoint", "0|all")):
        result = materialize(
            [asset], instance, partition, {asset: {"epochs": 1}}, resources={"compute": on_ray}, home=home
        )
        assert result.success, asset
    assert metadata("reference_policy")["device"] == "ray:cpu (1 CPU, 0 GPU)"
    assert metadata("dpo_checkpoint")["device"] == "accelerate: 2 processes (ray job)"
    assert_curve_and_progress_reached_mlflow_and_dagster(
        (("reference_policy", "sft/loss", "sft"), ("dpo_checkpoint", "train/loss", "dpo"))
    )

    # The reference scores that `margin` and `ches` select by, in a Ray task, equal the local engine's
    warehouse = resources_for(Locations.resolve(home))["warehouse"]
    candidates, _ = read_train_candidates(warehouse, with_embeddings=False, with_texts=True)
    version = metadata("reference_policy")["data_version"]
    remote, local = (
        _reference_scores(warehouse, candidates, version, compute, None)
        for compute in (on_ray, Compute(device="cpu"))
    )
    assert len(remote) == len(candidates) and remote["ref_margin"].notna().any()
    assert np.allclose(remote.to_numpy(float), local.to_numpy(float), atol=1e-5, equal_nan=True)

    # The graph ran the fake backend's embedder: the first run with the model embeds every row again.
    monkeypatch.setattr(features, "EMBED_CHUNK", 25)
    monkeypatch.setattr(distributed, "BLOCK_ROWS", 9)
    one_actor = Compute(device="cpu", embed_batch_size=4, engine="ray", embed_actors=1)
    first = embed_new_responses(warehouse, one_actor, EmbeddingConfig(progress_every_s=0))
    assert first["embedded_now"] == first["rows"] > 0 and first["model"] == DEFAULT_EMBEDDER
    # More responses: only the new ones are embedded, by two actors, in chunks that cut across blocks;
    # every vector (from the first run and from this one) equals the local engine's within 1e-5.
    more = ingest(warehouse, SourceSpec(source="synthetic", n_prompts=40))
    lines: list[str] = []
    two_actors = Compute(device="cpu", embed_batch_size=4, engine="ray", embed_actors=2)
    again = embed_new_responses(warehouse, two_actors, EmbeddingConfig(progress_every_s=0), lines.append)
    assert again["embedded_now"] == more["new_responses"] > 2 * 25 and again["rows"] == more["responses"]
    assert again["device"].startswith("ray:cpu (2 actors")
    assert any(line.startswith("progress response_embeddings") for line in lines)
    with warehouse.connect(read_only=True) as con:
        rows = con.execute(
            "select r.response, e.embedding from features.response_embeddings as e "
            "join raw.responses as r using (response_id) order by response_id"
        ).fetchall()
    local = embed_texts([text for text, _ in rows], DEFAULT_EMBEDDER, Compute(device="cpu").choice())
    assert np.abs(local - np.asarray([vector for _, vector in rows], dtype=np.float32)).max() <= 1e-5
