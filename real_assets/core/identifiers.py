"""The one check of a name that reaches SQL text."""

from __future__ import annotations

import re

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


def validate_identifier(name: str, what: str = "identifier") -> str:
    """A lower-case SQL identifier, or ValueError: every user-facing name that reaches SQL text goes here."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"invalid {what} {name!r}: use lower-case letters, digits and underscores")
    return name
