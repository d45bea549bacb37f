"""Evaluation of a DPO policy against its reference on held-out prompts.

- preference accuracy: share of held-out pairs where the implicit reward
  r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)) ranks the gold-better response higher
  (gold where known, else the label);
- mean implicit-reward margin r(better) - r(worse);
- win rate of the policy's sampled responses against the reference's on the same prompts, judged by a
  scorer (the synthetic gold scorer, or a reward model), ties counted as half, with a Wilson 95% interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from real_assets.core.device import DeviceChoice, release_cuda_memory
from real_assets.core.policy import generate, load_policy, sequence_logps, wilson_interval

Scorer = Callable[[Sequence[str], Sequence[str]], np.ndarray]
"""(prompts, responses) -> one quality score per response."""


@dataclass(frozen=True)
class EvalConfig:
    beta: float = 0.2
    samples_per_prompt: int = 4
    max_new_tokens: int = 48
    temperature: float = 0.7
    seed: int = 1234
    batch_size: int = 32


@dataclass(frozen=True)
class HeldOutPair:
    prompt: str
    better: str
    worse: str


def evaluate_policy(
    policy_dir: Path,
    reference_dir: Path,
    pairs: Sequence[HeldOutPair],
    prompts: Sequence[str],
    scorer: Scorer | None,
    config: EvalConfig,
    device: DeviceChoice,
) -> dict[str, float | int | None]:
    """All eval metrics of one policy; win-rate fields are None when no scorer is configured."""
    policy, tokenizer = load_policy(policy_dir, device)
    reference, _ = load_policy(reference_dir, device)
    try:
        metrics = _reward_metrics(policy, reference, tokenizer, pairs, config, device)
        metrics.update(_win_rate(policy, reference, tokenizer, prompts, scorer, config, device))
    finally:
        del policy, reference
        release_cuda_memory()
    return metrics


def _reward_metrics(policy, reference, tokenizer, pairs, config, device) -> dict[str, float | int | None]:
    if not pairs:
        return {"eval_pairs": 0, "preference_accuracy": None, "reward_margin": None}
    prompts = [p.prompt for p in pairs] * 2
    responses = [p.better for p in pairs] + [p.worse for p in pairs]
    logps = {
        name: np.array(sequence_logps(model, tokenizer, prompts, responses, device, config.batch_size))
        for name, model in (("policy", policy), ("reference", reference))
    }
    rewards = config.beta * (logps["policy"] - logps["reference"])
    better, worse = rewards[: len(pairs)], rewards[len(pairs) :]
    return {
        "eval_pairs": len(pairs),
        "preference_accuracy": float(np.mean(better > worse)),
        "reward_margin": float(np.mean(better - worse)),
    }


def _win_rate(policy, reference, tokenizer, prompts, scorer, config, device) -> dict[str, float | int | None]:
    if scorer is None or not prompts:
        return {
            "win_rate": None,
            "win_rate_ci_low": None,
            "win_rate_ci_high": None,
            "win_comparisons": 0,
            "policy_quality": None,
            "reference_quality": None,
        }
    repeated = [p for p in prompts for _ in range(config.samples_per_prompt)]
    samples = {
        name: generate(
            model,
            tokenizer,
            repeated,
            device,
            seed=config.seed,
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            batch_size=config.batch_size,
        )
        for name, model in (("policy", policy), ("reference", reference))
    }
    policy_q = scorer(repeated, samples["policy"])
    reference_q = scorer(repeated, samples["reference"])
    wins = float(np.sum(policy_q > reference_q) + 0.5 * np.sum(policy_q == reference_q))
    low, high = wilson_interval(wins, len(repeated))
    return {
        "win_rate": wins / len(repeated),
        "win_rate_ci_low": low,
        "win_rate_ci_high": high,
        "win_comparisons": len(repeated),
        "policy_quality": float(np.mean(policy_q)),
        "reference_quality": float(np.mean(reference_q)),
    }


def gold_scorer(prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """The synthetic source's gold quality as a scorer."""
    from real_assets.core.synthetic import gold_quality

    return np.array([gold_quality(p, r) for p, r in zip(prompts, responses)], dtype=float)


def reward_model_scorer(
    model_id: str, device: DeviceChoice, trust_remote_code: bool = False, batch_size: int = 16
) -> Scorer:
    """A scorer backed by any sequence-classification reward model (id or path); first logit is the score."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    def score(prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=trust_remote_code)
        model = (
            AutoModelForSequenceClassification.from_pretrained(
                model_id, dtype=device.dtype, trust_remote_code=trust_remote_code
            )
            .to(device.device)
            .eval()
        )
        out = []
        with torch.no_grad():
            for start in range(0, len(prompts), batch_size):
                enc = tokenizer(
                    list(prompts[start : start + batch_size]),
                    list(responses[start : start + batch_size]),
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=512,
                )
                out.append(model(**enc.to(device.device)).logits[:, 0].float().cpu().numpy())
        del model
        release_cuda_memory()
        return np.concatenate(out)

    return score
