"""How a prompt and its responses become token ids, and how they are fitted to `max_length`.

Two formats, chosen by the tokenizer:
- plain (the builtin model, and any tokenizer without a chat template): the prompt is
  `Question: {prompt}\\nAnswer:` and a completion is ` {response}` followed by EOS; a long prompt loses its
  first tokens.
- chat (instruct models): the prompt becomes conversation turns (an HH-RLHF transcript alternates
  user/assistant turns, any other prompt is one user turn) rendered by the tokenizer's chat template with
  the generation prompt; a completion is the assistant turn as the template closes it. A long prompt loses
  its oldest turns first; only when the last user turn alone does not fit does it lose its first tokens.

Prompt and completions are tokenized separately, and every consumer (SFT, DPO, scoring, generation) fits
through `fit`, so the model is trained and scored on the same token sequences.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

LENGTH_COVERAGE = 0.95
"""A derived `max_length` covers this share of the rows without cutting."""
MIN_PROMPT_TOKENS = 8
"""A configured `max_length` must leave at least this much room for the prompt."""

_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")


def format_prompt(prompt: str) -> str:
    """The prompt in the plain format."""
    return f"Question: {prompt}\nAnswer:"


def format_completion(response: str) -> str:
    """A response as a completion of `format_prompt` in the plain format (EOS is appended when encoded)."""
    return f" {response}"


def uses_chat_template(tokenizer) -> bool:
    """Whether the tokenizer renders prompts through a chat template (instruct models)."""
    return bool(getattr(tokenizer, "chat_template", None))


def conversation(prompt: str) -> list[dict[str, str]]:
    """The prompt as chat turns: an HH-RLHF transcript (`\\n\\nHuman: ... \\n\\nAssistant:`) as alternating
    user/assistant turns (the trailing empty assistant marker is the generation prompt), else one user turn.
    """
    parts = _HH_TURN.split(prompt)
    if len(parts) < 3 or parts[0].strip():
        return [{"role": "user", "content": prompt}]
    turns = [
        {"role": "user" if speaker == "Human" else "assistant", "content": text.strip()}
        for speaker, text in zip(parts[1::2], parts[2::2])
    ]
    while turns and turns[-1]["role"] == "assistant" and not turns[-1]["content"]:
        turns.pop()
    while turns and turns[0]["role"] != "user":
        turns.pop(0)
    return turns or [{"role": "user", "content": prompt}]


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _render(tokenizer, turns: list[dict[str, str]], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=generation_prompt)


@lru_cache(maxsize=8)
def _assistant_frame(tokenizer) -> tuple[str, str]:
    """The text the chat template puts before and after an assistant reply (after the generation prompt),
    found by rendering a probe reply."""
    probe = "\x00probe\x00"
    user = [{"role": "user", "content": "x"}]
    prompt = _render(tokenizer, user, True)
    full = _render(tokenizer, [*user, {"role": "assistant", "content": probe}], False)
    if not full.startswith(prompt) or probe not in full:
        raise ValueError("the tokenizer's chat template does not render an assistant reply after its prompt")
    before, after = full[len(prompt) :].split(probe, 1)
    return before, after.rstrip()


def completion_ids(tokenizer, response: str) -> list[int]:
    """Token ids of one response as a completion of its prompt, closed by EOS or the template's end of
    turn."""
    if uses_chat_template(tokenizer):
        before, after = _assistant_frame(tokenizer)
        return _ids(tokenizer, f"{before}{response}{after}")
    return [*_ids(tokenizer, format_completion(response)), tokenizer.eos_token_id]


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids of the whole prompt as the policy sees it."""
    if uses_chat_template(tokenizer):
        return _ids(tokenizer, _render(tokenizer, conversation(prompt), True))
    return _ids(tokenizer, format_prompt(prompt))


def fit_prompt(tokenizer, prompt: str, room: int) -> tuple[list[int], bool] | None:
    """The prompt's token ids within `room` tokens, and whether anything was cut; None if not even a
    template's frame fits. Plain: the first tokens go. Chat: the oldest turns go first (the conversation
    starts at a user turn), then the first tokens of the last user turn's text."""
    full = prompt_ids(tokenizer, prompt)
    if len(full) <= room:
        return full, False
    if not uses_chat_template(tokenizer):
        return (full[len(full) - room :] if room > 0 else []), True
    turns = conversation(prompt)
    starts = [i for i, t in enumerate(turns) if t["role"] == "user"][1:]
    for start in starts:
        ids = _ids(tokenizer, _render(tokenizer, turns[start:], True))
        if len(ids) <= room:
            return ids, True
    last = turns[starts[-1] if starts else 0 :][:1]
    text_ids = _ids(tokenizer, last[0]["content"])
    frame = len(_ids(tokenizer, _render(tokenizer, [{"role": "user", "content": ""}], True)))
    keep = room - frame
    while keep > 0:
        text = tokenizer.decode(text_ids[len(text_ids) - keep :])
        ids = _ids(tokenizer, _render(tokenizer, [{"role": "user", "content": text}], True))
        if len(ids) <= room:
            return ids, True
        keep -= max(1, len(ids) - room)
    return None


@dataclass(frozen=True)
class Fitted:
    prompt_ids: list[int]
    completions: list[list[int]]
    truncated: bool


def encode(tokenizer, prompt: str, responses: Sequence[str]) -> tuple[list[int], list[list[int]]]:
    """Token ids of the whole prompt and of each response's completion, tokenized separately."""
    return prompt_ids(tokenizer, prompt), [completion_ids(tokenizer, r) for r in responses]


def _prompt_room(prompt_len: int, longest: int, max_length: int) -> int:
    """The prompt keeps what the longest completion leaves, but at least a quarter of the window (then
    the completion is cut at its end instead)."""
    return max(max_length - longest, min(prompt_len, max_length // 4))


def fit_to_length(
    prompt_ids: Sequence[int], completions: Sequence[Sequence[int]], max_length: int, min_response_tokens: int
) -> Fitted | None:
    """The plain format's fitting on token ids: the prompt loses its first tokens (the latest turns stay),
    completions are cut at their end only when the prompt would keep less than a quarter of the window; None
    (drop) if a completion keeps fewer than `min_response_tokens`."""
    longest = max(len(c) for c in completions)
    if len(prompt_ids) + longest <= max_length:
        return Fitted(list(prompt_ids), [list(c) for c in completions], False)
    prompt_room = _prompt_room(len(prompt_ids), longest, max_length)
    completion_room = max_length - prompt_room
    if completion_room < min_response_tokens:
        return None
    kept_prompt = list(prompt_ids[len(prompt_ids) - prompt_room :]) if prompt_room > 0 else []
    return Fitted(kept_prompt, [list(c[:completion_room]) for c in completions], True)


def fit(
    tokenizer, prompt: str, responses: Sequence[str], max_length: int, min_response_tokens: int
) -> Fitted | None:
    """Make `prompt + completion` fit `max_length` for every response of one prompt, keeping the responses;
    the one fitting that SFT, DPO, scoring and generation share. Plain format: `fit_to_length`. Chat: the
    prompt loses its oldest turns, then the start of its last user turn (`fit_prompt`), so the template's
    role markers always stay; a row that cannot keep `min_response_tokens` is None (dropped, counted)."""
    full_prompt, completions = encode(tokenizer, prompt, responses)
    if not uses_chat_template(tokenizer):
        return fit_to_length(full_prompt, completions, max_length, min_response_tokens)
    longest = max(len(c) for c in completions)
    if len(full_prompt) + longest <= max_length:
        return Fitted(full_prompt, completions, False)
    fitted_prompt = fit_prompt(tokenizer, prompt, _prompt_room(len(full_prompt), longest, max_length))
    if fitted_prompt is None:
        return None
    kept_prompt, _ = fitted_prompt
    completion_room = max_length - len(kept_prompt)
    if completion_room < min_response_tokens:
        return None
    return Fitted(kept_prompt, [c[:completion_room] for c in completions], True)


def encoded_length(tokenizer, prompt: str, responses: Sequence[str]) -> int:
    """Tokens of the prompt plus its longest completion, before any fitting."""
    full_prompt, completions = encode(tokenizer, prompt, responses)
    return len(full_prompt) + max(len(c) for c in completions)


def context_window(model) -> int | None:
    """The model's context window: `n_positions` (GPT-2) or `max_position_embeddings`."""
    config = model.config
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def derive_max_length(lengths: Sequence[int], window: int | None, coverage: float = LENGTH_COVERAGE) -> int:
    """The smallest multiple of 8 covering `coverage` of the lengths, capped by the context window."""
    if not lengths:
        raise ValueError("no rows to derive max_length from")
    covering = int(math.ceil(float(np.quantile(np.asarray(lengths), coverage)) / 8) * 8)
    return min(covering, window) if window else covering


def choose_max_length(configured: int | None, lengths: Sequence[int], window: int | None) -> tuple[int, str]:
    """(max_length, where it came from): the configured value (capped by the window) or one derived."""
    if configured:
        if window and configured > window:
            return window, f"configured {configured}, capped by context window {window}"
        return configured, "configured"
    return derive_max_length(lengths, window), f"derived: covers {LENGTH_COVERAGE:.0%} of rows"
