"""The policy side on a model small enough to train in seconds: SFT, DPO, long inputs, scoring, sampling,
and the reference-model scores of the `margin` and `ches` strategies."""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch

from real_assets.core.device import pick_device
from real_assets.core.evaluation import EvalConfig, HeldOutPair, Scoring, evaluate_policy, gold_scorer
from real_assets.core.lengths import (
    choose_max_length,
    derive_max_length,
    encode,
    fit_to_length,
    format_completion,
    format_prompt,
)
from real_assets.core.models import build_base, load_policy
from real_assets.core.reference_scores import ches_score, reference_pair_scores
from real_assets.core.scoring import score_pairs, sequence_logps, wilson_interval
from real_assets.core.train_config import DpoConfig, ReferenceConfig
from real_assets.core.training import Reporting, TrainingDiverged, train_dpo, train_sft

PROMPT = "How do I get better at coffee with espresso?"
GOOD = "Try this. Use freshly ground beans. Weigh the coffee and water."
BAD = "That is a stupid question. It depends on many things."
LONG_PROMPT = " ".join(["Earlier turn: tell me about tea and then about water."] * 30) + " " + PROMPT
MAX_LENGTH = 96
SCORING = Scoring(beta=0.1, max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("policy")
    device = pick_device("cpu")
    corpus = [format_prompt(LONG_PROMPT) + format_completion(t) for t in (GOOD, BAD)] * 4
    ref_cfg = ReferenceConfig(vocab_size=300, n_layer=1, n_embd=32, n_positions=128, epochs=2, batch_size=4)
    model, tokenizer, _ = build_base(ref_cfg, corpus)
    sft = train_sft(model, tokenizer, [(PROMPT, GOOD)] * 8, ref_cfg, root / "ref", device)
    curve, lines = [], []
    dpo = train_dpo(
        root / "ref",
        [(PROMPT, GOOD, BAD)] * 4 + [(LONG_PROMPT, GOOD, BAD)] * 4,
        DpoConfig(epochs=3, batch_size=4, learning_rate=1e-3, max_length=MAX_LENGTH),
        0,
        root / "dpo",
        device,
        Reporting(on_log=lambda step, logs: curve.append((step, logs)), report=lines.append),
    )
    return root, device, sft, dpo, curve, lines


def test_sft_and_dpo_save_safetensors_and_report_trl_metrics(trained):
    root, _device, sft, dpo, curve, _ = trained
    for name in ("ref", "dpo"):
        assert (root / name / "model.safetensors").exists()
        assert (root / name / "tokenizer.json").exists()
    assert any("loss" in row for row in sft.history)
    assert any("rewards/margins" in row and "rewards/accuracies" in row for row in dpo.history)
    assert any("logps/chosen" in logs for _, logs in curve)
    assert sft.max_length_source.startswith("derived") and sft.tokens > 0 and sft.tokens_per_s > 0


def test_training_reports_progress_lines_with_steps_and_loss(trained):
    from real_assets.core.progress import parse_progress

    *_, lines = trained
    parsed = [parse_progress(line) for line in lines]
    assert all(parsed) and len(parsed) >= 2
    assert parsed[0]["done"] == 0 and parsed[-1]["done"] == parsed[-1]["total"] > 0
    assert "loss" in parsed[-1]


def test_a_diverged_training_raises_and_saves_no_checkpoint(tmp_path):
    """A NaN in the weights (here from an absurd learning rate) must stop the step, not become a checkpoint
    whose every score is NaN; an H200 run of bench/gpu_check.py once saved one with a normal-looking loss."""
    cfg = ReferenceConfig(vocab_size=300, n_layer=1, n_embd=32, n_positions=128, epochs=2, batch_size=4)
    model, tokenizer, _ = build_base(cfg, [format_prompt(PROMPT) + format_completion(GOOD)] * 4)
    cfg = dataclasses.replace(cfg, learning_rate=1e6)
    with pytest.raises(TrainingDiverged, match=r"non-finite .*first non-finite at step \d+"):
        train_sft(model, tokenizer, [(PROMPT, GOOD)] * 8, cfg, tmp_path / "ref", pick_device("cpu"))
    assert not (tmp_path / "ref" / "model.safetensors").exists()


def test_fit_keeps_the_response_and_cuts_the_prompt_from_the_left():
    prompt, response = list(range(100)), [1000, 1001, 1002]
    fitted = fit_to_length(prompt, [response, response[:2]], 20, min_response_tokens=2)
    assert fitted.truncated and fitted.completions == [response, response[:2]]
    assert fitted.prompt_ids == prompt[-17:]  # the latest tokens stay
    assert fit_to_length(prompt[:5], [response], 20, 2) == type(fitted)(prompt[:5], [response], False)
    # a response longer than the window: the prompt keeps a quarter, the response is cut at its end
    cut = fit_to_length(prompt, [list(range(50))], 20, min_response_tokens=4)
    assert cut.prompt_ids == prompt[-5:] and cut.completions == [list(range(15))]
    assert fit_to_length(prompt, [list(range(50))], 20, min_response_tokens=16) is None


def test_max_length_is_derived_from_the_data_and_capped_by_the_window():
    lengths = list(range(1, 101))
    assert derive_max_length(lengths, None) == 96  # 95th percentile 95.05 -> next multiple of 8
    assert derive_max_length(lengths, 64) == 64
    assert choose_max_length(None, lengths, 256) == (96, "derived: covers 95% of rows")
    assert choose_max_length(512, lengths, 256)[0] == 256
    assert choose_max_length(48, lengths, 256) == (48, "configured")


def test_long_prompts_are_trained_and_scored_on_their_responses(trained):
    root, device, _, dpo, *_ = trained
    policy, tokenizer = load_policy(root / "dpo", device)
    prompt_ids, completions = encode(tokenizer, LONG_PROMPT, [GOOD, BAD])
    assert len(prompt_ids) > 3 * MAX_LENGTH  # the prompt alone is far longer than max_length
    short_prompt, short = encode(tokenizer, PROMPT, [GOOD, BAD])
    assert len(short_prompt) + max(map(len, short)) <= MAX_LENGTH
    assert dpo.max_length == MAX_LENGTH and dpo.max_length_source == "configured"
    assert dpo.pairs_truncated == 4 and dpo.pairs_dropped_too_long == 0 and dpo.rows == 8
    scores = score_pairs(policy, tokenizer, [LONG_PROMPT], [GOOD], [BAD], device, MAX_LENGTH)
    assert scores.kept.all() and scores.truncated == 1
    # scored = the responses after the last prompt tokens that fit: a direct computation agrees
    longest = max(len(c) for c in completions)
    kept_prompt = prompt_ids[-(MAX_LENGTH - longest) :]
    for j, completion in enumerate(completions):
        ids = torch.tensor([kept_prompt + completion])
        logps = torch.log_softmax(policy(input_ids=ids).logits[0, :-1], -1)
        expected = logps[len(kept_prompt) - 1 :].gather(-1, ids[0, len(kept_prompt) :, None]).sum().item()
        assert scores.logps[0, j] == pytest.approx(expected, abs=1e-4)
    assert scores.logps[0, 0] != scores.logps[0, 1]  # the responses, not an empty tail, were scored
    # the trained policy prefers the chosen response on the long prompt too
    reference, _ = load_policy(root / "ref", device)
    ref = score_pairs(reference, tokenizer, [LONG_PROMPT], [GOOD], [BAD], device, MAX_LENGTH)
    rewards = scores.logps - ref.logps
    assert rewards[0, 0] > rewards[0, 1]


def test_a_pair_that_cannot_keep_its_response_is_dropped_and_counted(trained):
    root, device, *_ = trained
    policy, tokenizer = load_policy(root / "dpo", device)
    scores = score_pairs(policy, tokenizer, [PROMPT, LONG_PROMPT], [GOOD] * 2, [BAD] * 2, device, 12, 10)
    assert scores.dropped == 2 and not scores.kept.any() and np.isnan(scores.logps).all()


def test_evaluation_reports_accuracy_ties_margin_and_win_rate(trained):
    root, device, *_ = trained
    cfg = EvalConfig(samples_per_prompt=3, max_new_tokens=8)
    pairs = [HeldOutPair(PROMPT, GOOD, BAD, "p1"), HeldOutPair(LONG_PROMPT, GOOD, BAD, "p2")]
    metrics, outcomes = evaluate_policy(
        root / "dpo", root / "ref", pairs, [("p1", PROMPT)], gold_scorer, cfg, SCORING, device
    )
    assert metrics["eval_pairs"] == 2 and metrics["preference_accuracy"] == 1.0
    assert metrics["eval_pairs_truncated"] == 1 and metrics["eval_pairs_dropped_too_long"] == 0
    assert metrics["reward_margin"] > 0 and metrics["preference_ties"] == 0
    assert metrics["win_comparisons"] == 3
    assert 0 <= metrics["win_rate_ci_low"] <= metrics["win_rate"] <= metrics["win_rate_ci_high"] <= 1
    assert set(outcomes["metric"]) == {"preference", "margin", "win"}
    assert list(outcomes.loc[outcomes["metric"] == "preference", "prompt_id"]) == ["p1", "p2"]
    again, _ = evaluate_policy(
        root / "dpo", root / "ref", [], [("p1", PROMPT)], gold_scorer, cfg, SCORING, device
    )
    assert again["win_rate"] == metrics["win_rate"]  # seeded sampling
    assert again["preference_accuracy"] is None
    no_judge, _ = evaluate_policy(
        root / "dpo", root / "ref", [], [("p1", PROMPT)], None, cfg, SCORING, device
    )
    assert no_judge["win_rate"] is None


def test_beta_scales_the_margin_and_ties_count_half(trained):
    root, device, *_ = trained
    pairs = [HeldOutPair(PROMPT, GOOD, BAD, "p1")]
    cfg = EvalConfig()
    small, _ = evaluate_policy(
        root / "dpo", root / "ref", pairs, [], None, cfg, Scoring(0.1, MAX_LENGTH), device
    )
    large, _ = evaluate_policy(
        root / "dpo", root / "ref", pairs, [], None, cfg, Scoring(0.2, MAX_LENGTH), device
    )
    assert large["reward_margin"] == pytest.approx(2 * small["reward_margin"])
    # the reference against itself: every reward is 0, every pair a tie, accuracy exactly one half
    tied, _ = evaluate_policy(
        root / "ref", root / "ref", pairs, [], None, cfg, Scoring(0.1, MAX_LENGTH), device
    )
    assert tied["preference_accuracy"] == 0.5 and tied["preference_ties"] == 1.0


def test_sequence_logps_are_negative_and_dpo_moves_the_reward_towards_chosen(trained):
    root, device, *_ = trained
    policy, tokenizer = load_policy(root / "dpo", device)
    reference, _ = load_policy(root / "ref", device)
    lp = sequence_logps(policy, tokenizer, [PROMPT, PROMPT], [GOOD, BAD], device)
    lr = sequence_logps(reference, tokenizer, [PROMPT, PROMPT], [GOOD, BAD], device)
    assert all(x < 0 for x in lp + lr)
    assert (lp[0] - lr[0]) > (lp[1] - lr[1])


def test_ches_score_by_hand():
    h_plus = np.array([[1.0, 2.0], [0.0, 1.0]])
    h_minus = np.array([[3.0, 4.0], [0.0, 1.0]])
    # <h+, h-> - ||h+||^2: (3 + 8) - (1 + 4) = 6; identical responses: 1 - 1 = 0
    assert ches_score(h_plus, h_minus).tolist() == [6.0, 0.0]


def test_margin_and_ches_from_the_reference_model(trained):
    root, device, *_ = trained
    reference, tokenizer = load_policy(root / "ref", device)
    pairs = pd.DataFrame({"prompt": [PROMPT, PROMPT], "chosen": [GOOD, GOOD], "rejected": [BAD, GOOD]})
    scores = reference_pair_scores(root / "ref", pairs, device, 128)
    lp = sequence_logps(reference, tokenizer, [PROMPT, PROMPT], [GOOD, BAD], device)
    assert scores.loc[0, "ref_margin"] == pytest.approx(lp[0] - lp[1], abs=1e-4)
    assert scores.loc[1, "ref_margin"] == pytest.approx(0.0, abs=1e-5)
    assert scores.loc[1, "ches"] == pytest.approx(0.0, abs=1e-2)  # <h, h> - ||h||^2
    # CHES by hand: sum the last hidden layer over each response's tokens
    prompt_ids, (good, bad) = encode(tokenizer, PROMPT, [GOOD, BAD])
    sums = []
    for completion in (good, bad):
        ids = torch.tensor([prompt_ids + completion])
        last = reference(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]
        sums.append(last[len(prompt_ids) :].sum(0).detach().numpy().astype(float))
    expected = float(sums[0] @ sums[1] - sums[0] @ sums[0])
    assert scores.loc[0, "ches"] == pytest.approx(expected, rel=1e-4)


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
    metrics, _ = evaluate_policy(
        root / "dpo",
        root / "ref",
        [],
        [("p1", PROMPT)],
        scorer,
        EvalConfig(samples_per_prompt=2, max_new_tokens=6),
        SCORING,
        device,
    )
    assert metrics["win_comparisons"] == 2 and 0 <= metrics["win_rate"] <= 1
