"""The policy side on a model small enough to train in seconds: SFT, DPO, scoring, sampling."""

import math

import numpy as np
import pytest

from real_assets.core.device import pick_device
from real_assets.core.evaluation import EvalConfig, HeldOutPair, evaluate_policy, gold_scorer
from real_assets.core.policy import (
    BaseModelConfig,
    TrainConfig,
    build_base,
    format_completion,
    format_prompt,
    load_policy,
    sequence_logps,
    train_dpo,
    train_sft,
    wilson_interval,
)

PROMPT = "How do I get better at coffee with espresso?"
GOOD = "Try this. Use freshly ground beans. Weigh the coffee and water."
BAD = "That is a stupid question. It depends on many things."


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("policy")
    device = pick_device("cpu")
    corpus = [format_prompt(PROMPT) + format_completion(t) for t in (GOOD, BAD)] * 4
    model, tokenizer = build_base(BaseModelConfig(vocab_size=300, n_layer=1, n_embd=32), corpus)
    sft_rows = [{"prompt": format_prompt(PROMPT), "completion": format_completion(GOOD)}] * 8
    sft_log = train_sft(model, tokenizer, sft_rows, TrainConfig(epochs=2, batch_size=4), root / "ref", device)
    dpo_rows = [
        {
            "prompt": format_prompt(PROMPT),
            "chosen": format_completion(GOOD),
            "rejected": format_completion(BAD),
        }
    ] * 8
    curve = []
    dpo_log = train_dpo(
        root / "ref",
        dpo_rows,
        TrainConfig(epochs=3, batch_size=4, learning_rate=1e-3),
        root / "dpo",
        device,
        on_log=lambda step, logs: curve.append((step, logs)),
    )
    return root, device, sft_log, dpo_log, curve


def test_sft_and_dpo_save_safetensors_and_report_trl_metrics(trained):
    root, _device, sft_log, dpo_log, curve = trained
    for name in ("ref", "dpo"):
        assert (root / name / "model.safetensors").exists()
        assert (root / name / "tokenizer.json").exists()
    assert any("loss" in row for row in sft_log)
    assert any("rewards/margins" in row and "rewards/accuracies" in row for row in dpo_log)
    assert any("logps/chosen" in logs for _, logs in curve)


def test_dpo_moves_the_implicit_reward_towards_chosen(trained):
    root, device, *_ = trained
    policy, tokenizer = load_policy(root / "dpo", device)
    reference, _ = load_policy(root / "ref", device)
    lp = sequence_logps(policy, tokenizer, [PROMPT, PROMPT], [GOOD, BAD], device)
    lr = sequence_logps(reference, tokenizer, [PROMPT, PROMPT], [GOOD, BAD], device)
    assert all(x < 0 for x in lp + lr)
    assert (lp[0] - lr[0]) > (lp[1] - lr[1])


def test_evaluation_reports_accuracy_margin_and_win_rate(trained):
    root, device, *_ = trained
    cfg = EvalConfig(samples_per_prompt=3, max_new_tokens=8)
    metrics = evaluate_policy(
        root / "dpo", root / "ref", [HeldOutPair(PROMPT, GOOD, BAD)], [PROMPT], gold_scorer, cfg, device
    )
    assert metrics["eval_pairs"] == 1 and metrics["preference_accuracy"] == 1.0
    assert metrics["reward_margin"] > 0
    assert metrics["win_comparisons"] == 3
    assert 0 <= metrics["win_rate_ci_low"] <= metrics["win_rate"] <= metrics["win_rate_ci_high"] <= 1
    again = evaluate_policy(root / "dpo", root / "ref", [], [PROMPT], gold_scorer, cfg, device)
    assert again["win_rate"] == metrics["win_rate"]  # seeded sampling
    assert again["preference_accuracy"] is None
    no_judge = evaluate_policy(root / "dpo", root / "ref", [], [PROMPT], None, cfg, device)
    assert no_judge["win_rate"] is None


def test_wilson_interval():
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_device_choice_on_a_cpu_machine():
    choice = pick_device("auto")
    assert choice.device in ("cpu", "cuda")
    assert pick_device("cpu").dtype_name == "float32"
    with pytest.raises(ValueError):
        pick_device("tpu")


def test_paper_mode_embeds_with_the_policy_lm_mean_pooled(trained):
    from real_assets.core.embedding import POLICY_LM_PREFIX, embed_texts

    root, device, *_ = trained
    vectors = embed_texts([GOOD, BAD, GOOD], f"{POLICY_LM_PREFIX}{root / 'ref'}", device, batch_size=2)
    assert vectors.shape == (3, 32)  # the tiny model's hidden size
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vectors[0], vectors[2], atol=1e-5)  # padding does not leak into the mean


def test_a_reward_model_can_judge_the_win_rate(trained):
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

    from real_assets.core.evaluation import reward_model_scorer

    root, device, *_ = trained
    tokenizer = AutoTokenizer.from_pretrained(root / "ref")
    judge = GPT2ForSequenceClassification(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_embd=16,
            n_layer=1,
            n_head=2,
            num_labels=1,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    judge.save_pretrained(root / "judge")
    tokenizer.save_pretrained(root / "judge")
    scorer = reward_model_scorer(str(root / "judge"), device)
    scores = scorer([PROMPT, PROMPT, PROMPT], [GOOD, BAD, GOOD])
    assert scores.shape == (3,) and scores[0] == pytest.approx(scores[2])
    metrics = evaluate_policy(
        root / "dpo",
        root / "ref",
        [],
        [PROMPT],
        scorer,
        EvalConfig(samples_per_prompt=2, max_new_tokens=6),
        device,
    )
    assert metrics["win_comparisons"] == 2 and 0 <= metrics["win_rate"] <= 1
