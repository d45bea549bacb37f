"""The fake model backend: every model function that an asset hands to `Compute.run` has a fake with its
signature; a fake writes a real (small) checkpoint and repeatable figures of the real result's shape; an
unknown function fails; the barrier holds a step until released."""

import ast
import inspect
import json
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

from real_assets.core import fake_models
from real_assets.core.annotation.generation import sample_candidates
from real_assets.core.checkpoints import finalize, staging_dir, verify
from real_assets.core.evaluation import EvalConfig, HeldOutPair, Scoring, evaluate_policy, train_and_score
from real_assets.core.reference_scores import reference_pair_scores
from real_assets.core.train_config import DpoConfig, ReferenceConfig, TrainResult
from real_assets.core.training import train_dpo, train_reference
from real_assets.resources import Compute

REAL = [
    train_reference,
    train_dpo,
    evaluate_policy,
    train_and_score,
    reference_pair_scores,
    sample_candidates,
]
DEFS = Path(__file__).resolve().parents[1] / "real_assets" / "defs"
ROWS = [("what is two and two", "four", "five"), ("name a colour", "blue", "seven"), ("a b c", "d", "e")]
FAKE = Compute(model_backend="fake")
REFERENCE, DPO = ReferenceConfig(), DpoConfig()


def _functions_run_by_assets() -> set[str]:
    """The names of the first argument of every `compute.run(...)` call under real_assets/defs."""
    names = set()
    for path in DEFS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "compute.run":
                names.add(ast.unparse(node.args[0]))
    return names


def test_every_model_function_of_the_assets_has_a_fake_with_its_signature():
    assert _functions_run_by_assets() == {f.__name__ for f in REAL} == set(fake_models.FAKES)
    for real in REAL:
        fake = fake_models.fake_for(real)
        real_params = list(inspect.signature(real).parameters)
        fake_params = inspect.signature(fake).parameters
        assert list(fake_params)[: real_params.index("device")] == real_params[: real_params.index("device")]
        assert any(p.kind is p.VAR_KEYWORD for p in fake_params.values()), real.__name__


def test_an_unknown_function_fails_rather_than_running_for_real():
    def generate_samples():
        raise AssertionError("the real function ran")

    with pytest.raises(fake_models.UnknownModelFunction, match="no fake for 'generate_samples'"):
        FAKE.run(generate_samples)


def _reference(tmp_path: Path, cfg: ReferenceConfig = REFERENCE) -> tuple[TrainResult, Path]:
    out = staging_dir(tmp_path / "checkpoints", "reference_policy", None)
    corpus = [p + " " + c for p, c, _ in ROWS]
    result, device = FAKE.run(train_reference, corpus, [(p, c) for p, c, _ in ROWS], cfg, out)
    assert device == "fake"
    return result, out


def _dpo(tmp_path: Path, reference: Path, seed: int, cfg: DpoConfig = DPO) -> tuple[TrainResult, Path]:
    out = staging_dir(tmp_path / "checkpoints", "dpo_checkpoint", str(seed))
    result, _ = FAKE.run(train_dpo, reference, ROWS, cfg, seed, out)
    return result, out


def test_a_fake_checkpoint_is_real_files_that_load_and_verify(tmp_path):
    from safetensors.numpy import load_file

    curve = []

    class Reporting:
        on_log = staticmethod(lambda step, logs: curve.append(logs))
        report = None

    out = staging_dir(tmp_path / "checkpoints", "reference_policy", None)
    result, _ = FAKE.run(
        train_reference, ["a b"], [("a", "b")], ReferenceConfig(), out, reporting=Reporting()
    )
    assert isinstance(result, TrainResult) and result.rows == 1 and result.history[-1]["train_loss"] > 0
    assert curve == result.history
    ckpt = finalize(out)
    assert set(ckpt.manifest) == {"model.safetensors", "config.json", "trainer_state.json"}
    assert load_file(str(ckpt.path / "model.safetensors"))["weight"].shape == (fake_models.WEIGHTS,)
    assert json.loads((ckpt.path / "config.json").read_text())["model_type"] == fake_models.MODEL_TYPE
    assert verify(ckpt.path, ckpt.manifest) == []


def test_the_same_inputs_give_the_same_checkpoint_and_figures_and_other_seeds_others(tmp_path):
    _, ref_a = _reference(tmp_path / "a")
    _, ref_b = _reference(tmp_path / "b")
    ref_a, ref_b = finalize(ref_a), finalize(ref_b)
    assert ref_a.data_version == ref_b.data_version
    other = finalize(_reference(tmp_path / "c", ReferenceConfig(epochs=1.0))[1])
    assert other.data_version != ref_a.data_version

    dpo = {seed: finalize(_dpo(tmp_path, ref_a.path, seed)[1]) for seed in (0, 1)}
    assert dpo[0].data_version != dpo[1].data_version
    assert finalize(_dpo(tmp_path, ref_b.path, 0)[1]).data_version == dpo[0].data_version

    pairs = [HeldOutPair(p, c, r, prompt_id=f"p{i}") for i, (p, c, r) in enumerate(ROWS)]
    prompts = [(f"p{i}", p) for i, (p, _, _) in enumerate(ROWS)]
    scoring = Scoring(beta=0.2, max_length=64)

    def evaluate(policy, seed_offset=0):
        (metrics, outcomes), _ = FAKE.run(
            evaluate_policy,
            policy,
            ref_a.path,
            pairs,
            prompts,
            len,
            EvalConfig(),
            scoring,
            seed_offset=seed_offset,
        )
        return metrics, outcomes

    metrics, outcomes = evaluate(dpo[0].path)
    assert metrics == evaluate(dpo[0].path)[0]
    assert metrics != evaluate(dpo[1].path)[0]
    assert metrics["eval_pairs"] == 3 and metrics["win_comparisons"] == 3 * EvalConfig().samples_per_prompt
    assert 0 <= metrics["preference_accuracy"] <= 1 and metrics["win_rate_ci_low"] <= metrics["win_rate"]
    assert set(outcomes["metric"]) == {"preference", "margin", "win"}
    assert set(outcomes.columns) == {"metric", "prompt_id", "item", "value"}

    (sweep, sweep_outcomes, max_length), _ = FAKE.run(
        train_and_score, ref_a.path, ROWS, DpoConfig(), 0, pairs
    )
    assert set(sweep) == set(metrics) - {
        k for k in metrics if k.startswith(("win", "policy_q", "reference_q"))
    }
    assert max_length > 0 and len(sweep_outcomes) == 2 * len(pairs)

    frame = pd.DataFrame(ROWS, columns=["prompt", "chosen", "rejected"])
    scores, _ = FAKE.run(reference_pair_scores, ref_a.path, frame, max_length=64)
    reversed_scores, _ = FAKE.run(reference_pair_scores, ref_a.path, frame[::-1], max_length=64)
    assert list(scores.columns) == ["ref_margin", "ches"] and len(scores) == len(frame)
    assert scores["ref_margin"].tolist() == reversed_scores["ref_margin"].tolist()[::-1]


def test_the_fakes_report_the_fields_of_the_real_results():
    from real_assets.core import evaluation

    real_metrics = evaluation._reward_metrics(None, None, None, [], None, None, None, None)[0]
    real_metrics |= evaluation._win_rate(None, None, None, [], None, None, None, 0, None)[0]
    pairs = [HeldOutPair("q", "a", "b", prompt_id="p0")]
    fake_metrics = fake_models._reward_metrics("0" * 64, pairs)[0]
    fake_metrics |= fake_models._win_rate("0" * 64, [("p0", "q")], len, 1)[0]
    assert set(fake_metrics) == set(real_metrics)


def test_a_model_step_that_names_a_missing_checkpoint_fails(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"has no model\.safetensors"):
        FAKE.run(train_dpo, tmp_path / "nowhere", ROWS, DpoConfig(), 0, tmp_path / "out")


def test_the_barrier_holds_a_fake_step_until_released(tmp_path, monkeypatch):
    monkeypatch.setenv(fake_models.BARRIER_ENV, str(tmp_path))
    (tmp_path / "train_reference.hold").touch()
    done = threading.Event()

    def step():
        _reference(tmp_path / "run")
        done.set()

    worker = threading.Thread(target=step, daemon=True)
    worker.start()
    while not (tmp_path / "train_reference.reached").exists():
        assert worker.is_alive()
        worker.join(0.05)
    assert not done.wait(0.3)
    (tmp_path / "train_reference.release").touch()
    worker.join(30)
    assert done.is_set()
    _dpo(tmp_path, finalize(_reference(tmp_path / "ref")[1]).path, 0)  # no hold file: no wait


def test_the_backend_is_chosen_by_environment_cli_flag_or_config(monkeypatch, tmp_path):
    from real_assets import cli
    from real_assets.definitions import definitions, resources_for
    from real_assets.settings import Locations

    locations = Locations.resolve(tmp_path)
    assert resources_for(locations)["compute"].model_backend == "torch"
    monkeypatch.setenv("REAL_ASSETS_MODEL_BACKEND", "fake")
    assert resources_for(locations)["compute"].model_backend == "fake"
    assert definitions(locations, "torch").resources["compute"].model_backend == "torch"
    monkeypatch.delenv("REAL_ASSETS_MODEL_BACKEND")
    assert definitions(locations, "fake").resources["compute"].model_backend == "fake"
    with pytest.raises(SystemExit):
        cli.main(["demo", "--model-backend", "tensorflow"])


def test_the_fake_samples_every_missing_candidate_deterministically(tmp_path):
    from real_assets.core.annotation.generation import PromptTodo, SamplingConfig, sample_candidates
    from real_assets.core.fake_models import fake_for

    ref = _reference(tmp_path / "ref")[1]
    todo = [PromptTodo("p1", "How do I brew tea?", (0, 2)), PromptTodo("p2", "And coffee?", (1,))]
    fake = fake_for(sample_candidates)
    first = fake(ref, todo, SamplingConfig(seed=3))
    assert [(p, i) for p, i, _ in first] == [("p1", 0), ("p1", 2), ("p2", 1)]
    assert all(text.endswith(".") and len(text) > 3 for _, _, text in first)
    assert fake(ref, todo, SamplingConfig(seed=3)) == first
    assert fake(ref, todo, SamplingConfig(seed=4)) != first


def test_the_fake_embedder_orders_texts_by_shared_words_and_never_gives_a_zero_vector():
    from real_assets.core.embedding import embed_with, load_encoder

    encode = load_encoder(fake_models.FAKE_EMBEDDER, None)
    texts = ["Boil water for the tea", "boil the water for tea!", "Tax forms are due in April", "", "..."]
    vectors = embed_with(encode, texts)
    assert vectors.shape == (5, fake_models.FAKE_EMBEDDING_DIM)
    assert all(abs(float((v * v).sum()) - 1.0) < 1e-5 for v in vectors)  # normalised, none zero
    cosine = vectors @ vectors.T
    assert cosine[0, 1] > 0.8 > 0.3 > abs(cosine[0, 2])  # same words, other case and order; no shared word
    assert (embed_with(encode, texts[:1]) == vectors[:1]).all()  # a text embeds alike in any batch


def test_a_fake_run_records_the_fake_embedder_so_a_real_run_embeds_again(tmp_path, home, monkeypatch):
    """The fake backend never loads the configured embedder, nor imports a model library: its rows say so
    (`model_id`), and a later run with the real backend on the same warehouse re-embeds them all."""
    from real_assets.core.sources import SourceSpec
    from real_assets.defs.features import EmbeddingConfig, embed_new_responses
    from real_assets.defs.ingest import ingest
    from real_assets.resources import Warehouse

    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    responses = ingest(warehouse, SourceSpec(source="synthetic", n_prompts=3))["responses"]
    with monkeypatch.context() as blocked:
        for library in ("torch", "transformers", "sentence_transformers"):
            blocked.setitem(sys.modules, library, None)  # importing it now raises ImportError
        fake = embed_new_responses(warehouse, FAKE, EmbeddingConfig())
    assert (fake["model"], fake["device"], fake["embedded_now"]) == (
        fake_models.FAKE_EMBEDDER,
        "fake",
        responses,
    )
    assert "dtype" not in fake
    real = embed_new_responses(warehouse, Compute(device="cpu"), EmbeddingConfig())
    assert real["embedded_now"] == responses and real["data_version"] != fake["data_version"]
    with warehouse.connect(read_only=True) as con:
        assert con.execute("select distinct model_id from features.response_embeddings").fetchall() == [
            (EmbeddingConfig().model,)
        ]
