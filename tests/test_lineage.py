"""Models by lineage, hyperparameters by record: eval uses the beta its checkpoint was trained with and the
reference that checkpoint was trained from, even after the reference is retrained. One small graph, one
strategy and seed, with the fake model backend (what is proven is which checkpoint and record each step
is handed, not what the models learn)."""

import json

import dagster as dg
import pytest

from real_assets.demo import materialize
from real_assets.homes import instance_of, prepare_home
from real_assets.resources import Compute, Warehouse

pytestmark = pytest.mark.slow

PARTITION = "0|easy"
UPSTREAM = ["raw_responses", "response_embeddings", "response_similarity", "pair_candidates"]


def _materialize(instance, home, names, partition=None, ops=None):
    fake = {"compute": Compute(model_backend="fake")}
    result = materialize(names, instance, partition, ops, resources=fake, home=home)
    assert result.success
    return result


def _metadata(result, name):
    mats = [m for m in result.get_asset_materialization_events() if m.asset_key == dg.AssetKey(name)]
    return {k: getattr(v, "value", v) for k, v in mats[-1].materialization.metadata.items()}


@pytest.fixture(scope="module")
def small_home(tmp_path_factory, home_template):
    home = tmp_path_factory.mktemp("lineage")
    # Not a `with` block: one held open across the yield would leave Dagster's current defs-state storage
    # (a context variable) pointing at this instance for later tests once it is disposed.
    instance = instance_of(prepare_home(str(home)))
    try:
        tiny_reference = {"epochs": 1.0, "n_layer": 1, "n_embd": 32, "vocab_size": 400}
        _materialize(instance, home, UPSTREAM, ops={"raw_responses": {"n_prompts": 24}})
        _materialize(instance, home, ["reference_policy"], ops={"reference_policy": tiny_reference})
        _materialize(instance, home, ["selected_pairs"], PARTITION)
        dpo = _materialize(
            instance,
            home,
            ["dpo_checkpoint"],
            PARTITION,
            {"dpo_checkpoint": {"beta": 0.1, "epochs": 1.0}},
        )
        tiny_eval = {"eval_scores": {"samples_per_prompt": 1, "max_new_tokens": 4}}
        first_eval = _materialize(instance, home, ["eval_scores"], PARTITION, tiny_eval)
        # The reference is retrained (another seed: other weights, another data version); the DPO
        # checkpoint is not. Eval must still compare the checkpoint with the reference it was trained from.
        retrained = _materialize(
            instance, home, ["reference_policy"], ops={"reference_policy": tiny_reference | {"seed": 7}}
        )
        second_eval = _materialize(instance, home, ["eval_scores"], PARTITION, tiny_eval)
        yield home, dpo, first_eval, retrained, second_eval
    finally:
        instance.dispose()


def test_eval_uses_and_reports_the_beta_the_checkpoint_was_trained_with(small_home):
    home, dpo, first_eval, *_ = small_home
    assert _metadata(dpo, "dpo_checkpoint")["beta"] == 0.1
    assert _metadata(first_eval, "eval_scores")["beta"] == 0.1  # EvalConfig has no beta of its own
    with Warehouse(path=str(home / "warehouse.duckdb")).connect(read_only=True) as con:
        training = json.loads(
            con.execute(
                "select training from models.checkpoints where asset = 'dpo_checkpoint' and partition = ?",
                [PARTITION],
            ).fetchone()[0]
        )
        assert con.execute("select beta from eval.eval_scores where strategy = 'easy'").fetchone()[0] == 0.1
    assert training["beta"] == 0.1 and training["seed"] == 0
    checkpoint = _metadata(dpo, "dpo_checkpoint")["checkpoint"]
    assert (
        json.loads(
            (home / "checkpoints" / checkpoint.split("checkpoints/")[1] / "training.json").read_text()
        )["beta"]
        == 0.1
    )


def test_eval_pairs_each_checkpoint_with_its_own_reference(small_home):
    home, dpo, first_eval, retrained, second_eval = small_home
    trained_from = _metadata(dpo, "dpo_checkpoint")["reference_version"]
    newest = _metadata(retrained, "reference_policy")["data_version"]
    assert newest != trained_from  # the reference really changed
    assert _metadata(first_eval, "eval_scores")["reference_version"] == trained_from
    assert _metadata(second_eval, "eval_scores")["reference_version"] == trained_from
    with Warehouse(path=str(home / "warehouse.duckdb")).connect(read_only=True) as con:
        row = con.execute("select reference_version, checkpoint_version from eval.eval_scores").fetchone()
    assert row == (trained_from, _metadata(dpo, "dpo_checkpoint")["data_version"])
