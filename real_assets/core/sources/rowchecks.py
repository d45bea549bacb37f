"""Row-wise field checks in Python, for rows the vectorized checks do not accept outright.

A row validator takes the row as a dict and returns `([(prompt, response, score), ...], kind)` or raises
`Reject(field, reason)`. `kind`: SCORED (scores comparable across rows of a prompt), PAIR (two scored
responses) or LABELLED_PAIR (a chosen/rejected label and nothing more: only that pair was compared, so
no other pair of the prompt may be formed).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from real_assets.core.hashing import normalise_text
from real_assets.core.sources.reasons import (
    BAD_MESSAGE_LIST,
    EMPTY_TEXT,
    INVALID_UNICODE,
    MISSING_FIELD,
    NON_FINITE_SCORE,
    TEXT_TOO_LONG,
    WRONG_TYPE,
)

Item = tuple[str, str, float]
SCORED, PAIR, LABELLED_PAIR = "scored", "pair", "labelled_pair"
Validator = Callable[[dict], tuple[list[Item], str]]


class Reject(Exception):
    """One row rejected: the field at fault and the reason code."""

    __slots__ = ("field", "reason")

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason


def text(value: Any, field: str, max_chars: int | None) -> str:
    """A non-empty string of at most max_chars characters that UTF-8 can carry."""
    if value is None:
        raise Reject(field, MISSING_FIELD)
    if not isinstance(value, str):
        raise Reject(field, WRONG_TYPE)
    if not value.strip():
        raise Reject(field, EMPTY_TEXT)
    if max_chars is not None and len(value) > max_chars:
        raise Reject(field, TEXT_TOO_LONG)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Reject(field, INVALID_UNICODE) from None
    return value


def score(value: Any, field: str) -> float:
    """A finite number, or a string that parses as one."""
    if value is None or value == "":
        raise Reject(field, MISSING_FIELD)
    if isinstance(value, bool):
        raise Reject(field, WRONG_TYPE)
    if isinstance(value, (int, float)):
        try:
            x = float(value)
        except OverflowError:
            raise Reject(field, NON_FINITE_SCORE) from None
    elif isinstance(value, str):
        try:
            x = float(value.strip())
        except ValueError:
            raise Reject(field, WRONG_TYPE) from None
    else:
        raise Reject(field, WRONG_TYPE)
    if not math.isfinite(x):
        raise Reject(field, NON_FINITE_SCORE)
    return x


def same_text(a: str, b: str) -> bool:
    """Equal after normalisation (the form ids are computed from)."""
    return a == b or normalise_text(a) == normalise_text(b)


def messages(value: Any, field: str, max_chars: int) -> tuple[list[tuple[str, str]] | None, str]:
    """(context messages before the last one, last assistant content). A plain string is the response."""
    if value is None:
        raise Reject(field, MISSING_FIELD)
    if isinstance(value, str):
        return None, text(value, field, max_chars)
    if not isinstance(value, list) or not value:
        raise Reject(field, BAD_MESSAGE_LIST)
    msgs = []
    for m in value:
        if not isinstance(m, dict):
            raise Reject(field, BAD_MESSAGE_LIST)
        role, content = m.get("role"), m.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise Reject(field, BAD_MESSAGE_LIST)
        msgs.append((role, content))
    if msgs[-1][0] != "assistant":
        raise Reject(field, BAD_MESSAGE_LIST)
    return msgs[:-1], text(msgs[-1][1], field, max_chars)


def render_context(context: list[tuple[str, str]]) -> str:
    """A conversation before the last reply, as one prompt text."""
    if len(context) == 1 and context[0][0] == "user":
        return context[0][1]
    return "\n\n".join(f"{role}: {content}" for role, content in context)
