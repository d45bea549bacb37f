"""Evaluation of a DPO policy against the reference it was trained from, on held-out prompts.

- preference accuracy: share of held-out pairs where the implicit reward
  r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)), with the beta the policy was trained with, ranks the
  gold-better response higher (gold where known, else the label); ties count half, their share is reported;
- mean implicit-reward margin r(better) - r(worse);
- win rate of the policy's sampled responses against the reference's on the same prompts, judged by a
  scorer (the synthetic gold scorer, or a reward model), ties counted as half (their share reported: a
  win rate of ties only did not tell the policies apart), with a Wilson 95% interval.

Scoring fits each pair as training does (`lengths.fit`: the prompt loses its oldest part); a pair that
cannot keep its responses is not scored and is counted. Per-prompt outcomes are returned too, so the
comparison can bootstrap over prompts and seeds.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from real_assets.core.device import DeviceChoice, release_cuda_memory
from real_assets.core.models import load_policy_and_reference
from real_assets.core.progress import Progress, Report
from real_assets.core.scoring import generate, score_pairs, wilson_interval
from real_assets.core.train_config import DpoConfig
from real_assets.core.training import Reporting, train_dpo

Scorer = Callable[[Sequence[str], Sequence[str]], np.ndarray]
"""(prompts, responses) -> one quality score per response."""


@dataclass(frozen=True)
class EvalConfig:
    """The eval step. `judge`: `auto` (gold scorer when every held-out response has gold quality, else
    `reward_model` when set, else no win rate), `gold`, `reward_model` or `none`. Beta and max_length are
    not settings here: they are the ones the evaluated checkpoint was trained with. The sampling seed is
    `seed` plus the partition's seed."""

    samples_per_prompt: int = 2
    max_new_tokens: int = 32
    temperature: float = 0.7
    seed: int = 1234
    batch_size: int = 32
    judge: str = "auto"
    reward_model: str = ""
    trust_remote_code: bool = False
    max_eval_pairs: int = 2000
    max_eval_prompts: int = 100
    min_eval_pairs: int = 10
    """Fewer scored held-out pairs than this fail the eval: their accuracy would not be a result."""


@dataclass(frozen=True)
class HeldOutPair:
    prompt: str
    better: str
    worse: str
    prompt_id: str = ""


@dataclass(frozen=True)
class Scoring:
    """How the evaluated checkpoint was trained: the beta of its implicit reward and its max_length."""

    beta: float
    max_length: int
    min_response_tokens: int = 4


OUTCOME_COLUMNS = ["metric", "prompt_id", "item", "value"]
"""Per-item outcomes: `preference` (1, 0.5 tie, 0 per held-out pair), `margin`, `win` (per sample)."""


def evaluate_policy(
    policy_dir: Path,
    reference_dir: Path,
    pairs: Sequence[HeldOutPair],
    prompts: Sequence[tuple[str, str]],
    scorer: Scorer | None,
    config: EvalConfig,
    scoring: Scoring,
    device: DeviceChoice,
    seed_offset: int = 0,
    report: Report | None = None,
) -> tuple[dict[str, float | int | None], pd.DataFrame]:
    """All eval metrics of one policy (win-rate fields None without a scorer), and per-item outcomes.
    `prompts` are (prompt_id, prompt)."""
    policy, reference, tokenizer = load_policy_and_reference(policy_dir, reference_dir, device)
    try:
        metrics, outcomes = _reward_metrics(
            policy, reference, tokenizer, pairs, config, scoring, device, report
        )
        win_metrics, win_outcomes = _win_rate(
            policy, reference, tokenizer, prompts, scorer, config, device, seed_offset, report
        )
    finally:
        del policy, reference
        release_cuda_memory()
    return metrics | win_metrics, pd.concat([outcomes, win_outcomes], ignore_index=True)


def train_and_score(
    reference_dir: Path,
    rows: Sequence[tuple[str, str, str]],
    dpo: DpoConfig,
    seed: int,
    pairs: Sequence[HeldOutPair],
    device: DeviceChoice,
    report: Report | None = None,
) -> tuple[dict[str, float], pd.DataFrame, int]:
    """DPO on (prompt, chosen, rejected) rows into a temporary folder, then its implicit-reward metrics on
    held-out pairs (no sampling): one point of the budget sweep. Returns metrics, outcomes, max_length."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "policy"
        result = train_dpo(reference_dir, rows, dpo, seed, out, device, Reporting(report=report))
        scoring = Scoring(dpo.beta, result.max_length, dpo.min_response_tokens)
        metrics, outcomes = evaluate_policy(
            out, reference_dir, pairs, [], None, EvalConfig(), scoring, device
        )
    return metrics, outcomes, result.max_length


NO_PAIRS = {
    "eval_pairs": 0,
    "preference_accuracy": None,
    "preference_ties": None,
    "reward_margin": None,
    "eval_pairs_truncated": 0,
    "eval_pairs_dropped_too_long": 0,
}
"""The reward fields of an eval without held-out pairs."""


def _reward_metrics(policy, reference, tokenizer, pairs, config, scoring, device, report):
    empty = pd.DataFrame(columns=OUTCOME_COLUMNS)
    if not pairs:
        return dict(NO_PAIRS), empty
    progress = Progress("eval scoring", 4 * len(pairs), report, unit="sequences")
    args = ([p.prompt for p in pairs], [p.better for p in pairs], [p.worse for p in pairs], device)
    kwargs = {
        "max_length": scoring.max_length,
        "min_response_tokens": scoring.min_response_tokens,
        "batch_size": config.batch_size,
        "progress": progress,
    }
    scores = {
        name: score_pairs(model, tokenizer, *args, **kwargs)
        for name, model in (("policy", policy), ("reference", reference))
    }
    kept = scores["policy"].kept
    rewards = scoring.beta * (scores["policy"].logps - scores["reference"].logps)[kept]
    better, worse = rewards[:, 0], rewards[:, 1]
    outcome = np.where(better > worse, 1.0, np.where(better == worse, 0.5, 0.0))
    ids = [p.prompt_id for p, k in zip(pairs, kept) if k]
    outcomes = pd.DataFrame(
        {
            "metric": ["preference"] * len(ids) + ["margin"] * len(ids),
            "prompt_id": ids * 2,
            "item": list(range(len(ids))) * 2,
            "value": np.concatenate([outcome, better - worse]),
        }
    )
    scored = int(kept.sum())
    return {
        "eval_pairs": scored,
        "preference_accuracy": float(outcome.mean()) if scored else None,
        "preference_ties": float((better == worse).mean()) if scored else None,
        "reward_margin": float((better - worse).mean()) if scored else None,
        "eval_pairs_truncated": scores["policy"].truncated,
        "eval_pairs_dropped_too_long": scores["policy"].dropped,
    }, outcomes


NO_WIN_RATE = {
    "win_rate": None,
    "win_rate_ci_low": None,
    "win_rate_ci_high": None,
    "win_comparisons": 0,
    "win_ties": None,
    "policy_quality": None,
    "reference_quality": None,
}
"""The win-rate fields of an eval without a judge or held-out prompts."""


def _win_rate(policy, reference, tokenizer, prompts, scorer, config, device, seed_offset, report):
    if scorer is None or not prompts:
        return dict(NO_WIN_RATE), pd.DataFrame(columns=OUTCOME_COLUMNS)
    repeated = [p for _, p in prompts for _ in range(config.samples_per_prompt)]
    ids = [i for i, _ in prompts for _ in range(config.samples_per_prompt)]
    progress = Progress("eval sampling", 2, report, unit="models")
    samples = {}
    for name, model in (("policy", policy), ("reference", reference)):
        samples[name] = generate(
            model,
            tokenizer,
            repeated,
            device,
            seed=config.seed + seed_offset,
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            batch_size=config.batch_size,
        )
        progress.update(1)
    policy_q = scorer(repeated, samples["policy"])
    reference_q = scorer(repeated, samples["reference"])
    outcome = np.where(policy_q > reference_q, 1.0, np.where(policy_q == reference_q, 0.5, 0.0))
    wins = float(outcome.sum())
    low, high = wilson_interval(wins, len(repeated))
    outcomes = pd.DataFrame(
        {"metric": "win", "prompt_id": ids, "item": list(range(len(ids))), "value": outcome}
    )
    return {
        "win_rate": wins / len(repeated),
        "win_rate_ci_low": low,
        "win_rate_ci_high": high,
        "win_comparisons": len(repeated),
        "win_ties": float(np.mean(outcome == 0.5)),
        "policy_quality": float(np.mean(policy_q)),
        "reference_quality": float(np.mean(reference_q)),
    }, outcomes


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
