"""Anthropic/hh-rlhf: `chosen` / `rejected` full transcripts that share a prompt (a bare label)."""

from __future__ import annotations

from typing import Any

import real_assets.core.sources.rowchecks as rc
import real_assets.core.sources.sqlchecks as sq
from real_assets.core.sources.reasons import EMPTY_TEXT, NO_ASSISTANT_TURN, PROMPT_MISMATCH, TEXT_TOO_LONG
from real_assets.core.sources.registry import Layout, Source, Vectorized, schema_error
from real_assets.core.sources.spec import SourceSpec

ASSISTANT = "\n\nAssistant:"


def split_transcript(value: Any, field: str, max_chars: int) -> tuple[str, str]:
    """(prompt up to and including the last assistant turn marker, the reply after it)."""
    transcript = rc.text(value, field, None)
    i = transcript.rfind(ASSISTANT)
    if i < 0:
        raise rc.Reject(field, NO_ASSISTANT_TURN)
    cut = i + len(ASSISTANT)
    prompt, response = transcript[:cut], transcript[cut:].strip()
    if not response:
        raise rc.Reject(field, EMPTY_TEXT)
    if len(prompt) > max_chars or len(response) > max_chars:
        raise rc.Reject(field, TEXT_TOO_LONG)
    return prompt, response


def _layout(spec: SourceSpec, where: str, found: list[str]) -> Layout:
    if not {"chosen", "rejected"} <= set(found):
        raise schema_error(spec, where, "columns chosen, rejected (full transcripts)", found)
    max_chars = spec.max_chars

    def validate(row: dict) -> tuple[list[rc.Item], str]:
        prompt, chosen = split_transcript(row.get("chosen"), "chosen", max_chars)
        prompt_r, rejected = split_transcript(row.get("rejected"), "rejected", max_chars)
        if not rc.same_text(prompt, prompt_r):
            raise rc.Reject("rejected", PROMPT_MISMATCH)
        return [(prompt, chosen, 1.0), (prompt, rejected, 0.0)], rc.LABELLED_PAIR

    def vectorized(col) -> Vectorized:
        pattern = sq.literal("(?s)^(.*" + ASSISTANT.replace("\n", "\\n") + ")(.*)$")
        lets, ok = [], []
        for side in ("chosen", "rejected"):
            c = col(side)
            lets += [
                (f"{side}_parts", f"regexp_extract({c.v}, {pattern}, ['prompt', 'reply'])"),
                (f"{side}_ok", f"({c.t} = 'str' and {sq.has_text(c.v)})"),
            ]
        lets2 = [(f"{side}_prompt", f"{side}_parts.prompt") for side in ("chosen", "rejected")] + [
            (f"{side}_reply", f"trim({side}_parts.reply, {sq.literal(sq.PY_WHITESPACE_CHARS)})")
            for side in ("chosen", "rejected")
        ]
        for side in ("chosen", "rejected"):
            ok.append(
                f"{side}_ok and {side}_prompt <> '' and {side}_reply <> '' and "
                f"length({side}_prompt) <= {max_chars} and length({side}_reply) <= {max_chars}"
            )
        accept = " and ".join(ok) + (
            f" and {sq.normalised('chosen_prompt')} = {sq.normalised('rejected_prompt')}"
            f" and {sq.normalised('chosen_reply')} <> {sq.normalised('rejected_reply')}"
        )
        return Vectorized(
            accept=accept,
            items=[("chosen_prompt", "chosen_reply", "1.0"), ("chosen_prompt", "rejected_reply", "0.0")],
            labelled="true",
            lets=[*lets, *lets2],
        )

    return Layout(("chosen", "rejected"), validate, "rejected", vectorized)


SOURCE = Source("hh_rlhf", "Anthropic/hh-rlhf: chosen/rejected transcripts that share a prompt", _layout)
