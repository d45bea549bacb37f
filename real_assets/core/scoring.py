"""Scoring and sampling with a policy: summed log-probabilities of responses given their prompts (fitted
as in training, `core.lengths.fit`), last-layer hidden states, and seeded sampled completions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from real_assets.core.device import DeviceChoice
from real_assets.core.lengths import context_window, fit, fit_prompt
from real_assets.core.progress import Progress


@dataclass
class PairScores:
    """Per pair: summed log-probabilities of both responses, optionally the summed last-layer hidden
    states over each response's tokens; `kept` marks pairs scored (others could not keep their response)."""

    logps: np.ndarray
    """(pairs, 2)"""
    hidden: np.ndarray | None
    """(pairs, 2, hidden) or None"""
    kept: np.ndarray
    truncated: int
    dropped: int


def score_pairs(
    model,
    tokenizer,
    prompts: Sequence[str],
    firsts: Sequence[str],
    seconds: Sequence[str],
    device: DeviceChoice,
    max_length: int,
    min_response_tokens: int = 4,
    batch_size: int = 32,
    with_hidden: bool = False,
    progress: Progress | None = None,
) -> PairScores:
    """Score both responses of each pair given its prompt, fitted as in training (`core.lengths.fit`)."""
    import torch

    n = len(prompts)
    logps = np.full((n, 2), np.nan)
    hidden = None
    kept = np.zeros(n, dtype=bool)
    sequences: list[tuple[int, int, list[int], list[int]]] = []
    truncated = dropped = 0
    for i, (prompt, a, b) in enumerate(zip(prompts, firsts, seconds, strict=True)):
        fitted = fit(tokenizer, prompt, [a, b], max_length, min_response_tokens)
        if fitted is None:
            dropped += 1
            continue
        kept[i] = True
        truncated += fitted.truncated
        sequences += [(i, j, fitted.prompt_ids, c) for j, c in enumerate(fitted.completions)]
    order = sorted(range(len(sequences)), key=lambda k: len(sequences[k][2]) + len(sequences[k][3]))
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            batch = [sequences[k] for k in order[start : start + batch_size]]
            width = max(len(p) + len(c) for _, _, p, c in batch)
            input_ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
            attention = torch.zeros_like(input_ids)
            completion = torch.zeros_like(input_ids)
            for row, (_, _, p, c) in enumerate(batch):
                input_ids[row, : len(p) + len(c)] = torch.tensor(p + c)
                attention[row, : len(p) + len(c)] = 1
                completion[row, len(p) : len(p) + len(c)] = 1
            input_ids, attention, completion = (
                t.to(device.device) for t in (input_ids, attention, completion)
            )
            out = model(input_ids=input_ids, attention_mask=attention, output_hidden_states=with_hidden)
            token_logps = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)
            token_logps = token_logps.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
            sums = (token_logps * completion[:, 1:]).sum(-1).cpu().numpy()
            if with_hidden:
                last = out.hidden_states[-1].float()
                summed = (last * completion[:, :, None]).sum(1).cpu().numpy()
                if hidden is None:
                    hidden = np.full((n, 2, summed.shape[1]), np.nan)
            for row, (i, j, _, _) in enumerate(batch):
                logps[i, j] = sums[row]
                if with_hidden:
                    hidden[i, j] = summed[row]
            if progress is not None:
                progress.update(len(batch))
    return PairScores(logps, hidden, kept, truncated, dropped)


def sequence_logps(
    model,
    tokenizer,
    prompts: Sequence[str],
    responses: Sequence[str],
    device: DeviceChoice,
    batch_size: int = 32,
    max_length: int | None = None,
) -> list[float]:
    """Sum of log-probabilities of each formatted response (with EOS) given its formatted prompt (prompt
    cut from the left to fit `max_length`, default the context window)."""
    window = max_length or context_window(model) or 1024
    scores = score_pairs(
        model, tokenizer, prompts, responses, responses, device, window, 1, batch_size=batch_size
    )
    return scores.logps[:, 0].tolist()


def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    device: DeviceChoice,
    seed: int,
    max_new_tokens: int = 48,
    temperature: float = 0.7,
    batch_size: int = 32,
    top_p: float = 1.0,
) -> list[str]:
    """Sampled completions, one per prompt, seeded; the prompt as in training (chat template or plain),
    fitted to leave `max_new_tokens` of the window (the oldest part goes first)."""
    import torch

    torch.manual_seed(seed)
    window = context_window(model) or 1024
    room = max(window - max_new_tokens, 1)
    pad = tokenizer.pad_token_id
    out: list[str] = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            batch = []
            for prompt in prompts[start : start + batch_size]:
                fitted = fit_prompt(tokenizer, prompt, room)
                batch.append(fitted[0] if fitted else [])
            width = max(len(ids) for ids in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            attention = torch.zeros_like(input_ids)
            for row, ids in enumerate(batch):  # left padding: every row ends where generation starts
                if ids:
                    input_ids[row, width - len(ids) :] = torch.tensor(ids)
                    attention[row, width - len(ids) :] = 1
            gen = model.generate(
                input_ids=input_ids.to(device.device),
                attention_mask=attention.to(device.device),
                do_sample=True,
                temperature=temperature,
                top_k=0,
                top_p=top_p,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
            )
            out.extend(t.strip() for t in tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True))
    return out


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion (ties counted as half successes)."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))
