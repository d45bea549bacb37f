"""Vectorized field checks and ids as DuckDB column expressions.

The ids computed here are byte-for-byte those of `core.hashing` (`prompt_id`, `response_id`, `split_for`):
NFC, every Python whitespace run to one space, stripped, then SHA-256 over length-prefixed parts.
A check here only *accepts* rows; any row it does not accept goes to the row-wise checks in Python, which
name the field and reason. So a check may be stricter than Python's, never looser.
"""

from __future__ import annotations

from dataclasses import dataclass

from real_assets.core.hashing import ID_LENGTH

# Every character for which Python's str.isspace() is true (what `\s` and str.strip() use).
_PY_WHITESPACE = [
    *(0x9, 0xA, 0xB, 0xC, 0xD, 0x1C, 0x1D, 0x1E, 0x1F, 0x20, 0x85, 0xA0, 0x1680),
    *range(0x2000, 0x200B),
    *(0x2028, 0x2029, 0x202F, 0x205F, 0x3000),
]
_WS = "".join(f"\\x{{{c:x}}}" for c in _PY_WHITESPACE)
_WS_NOT_SPACE = "".join(f"\\x{{{c:x}}}" for c in _PY_WHITESPACE if c != 0x20)
_NEEDS_COLLAPSE = f"[{_WS_NOT_SPACE}]|  |^ | $"
_NUMBER = r"^[ \t\n\r]*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?[ \t\n\r]*$"
PY_WHITESPACE_CHARS = "".join(chr(c) for c in _PY_WHITESPACE)


def literal(value: str) -> str:
    """A SQL string literal (quotes doubled); for names that must appear in SQL text."""
    if "\x00" in value:
        raise ValueError(f"NUL character in {value!r}")
    return "'" + value.replace("'", "''") + "'"


def identifier(name: str) -> str:
    """A quoted SQL identifier (double quotes doubled)."""
    if "\x00" in name:
        raise ValueError(f"NUL character in {name!r}")
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Col:
    """One input field as SQL: its type tag ('str', 'num', 'null' or 'other') and its value."""

    t: str
    v: str
    """VARCHAR value where t = 'str'."""
    n: str
    """DOUBLE value where t = 'num'."""


def normalised(expr: str) -> str:
    """normalise_text(expr): NFC, whitespace runs collapsed to one space, stripped."""
    nfc = f"nfc_normalize({expr})"
    return (
        f"(case when regexp_matches({nfc}, '{_NEEDS_COLLAPSE}') "
        f"then trim(regexp_replace({nfc}, '[{_WS}]+', ' ', 'g')) else {nfc} end)"
    )


def has_text(expr: str) -> str:
    """expr.strip() is not empty."""
    return f"regexp_matches({expr}, '[^{_WS}]')"


def text_ok(col: Col, max_chars: int) -> str:
    """A string field that `rowchecks.text` accepts."""
    return f"({col.t} = 'str' and length({col.v}) <= {int(max_chars)} and {has_text(col.v)})"


def score_value(col: Col) -> str:
    """The score as DOUBLE where rowchecks.score would read the same number, else NULL."""
    return (
        f"(case when {col.t} = 'num' then {col.n} "
        f"when {col.t} = 'str' and regexp_full_match({col.v}, '{_NUMBER}') "
        f"then try_cast({col.v} as double) end)"
    )


def finite(expr: str) -> str:
    return f"coalesce(isfinite({expr}), false)"


def _le8(length: str) -> str:
    """The 8-byte little-endian length prefix of core.hashing.digest (lengths below 4 GiB)."""
    n = f"({length})::ubigint"
    swapped = f"((({n} & 255) << 24) | (({n} & 65280) << 8) | (({n} >> 8) & 65280) | ({n} >> 24))"
    return f"from_hex(lpad(to_hex({swapped}), 8, '0') || '00000000')"


def _part(constant: str) -> str:
    data = constant.encode()
    return f"from_hex('{len(data).to_bytes(8, 'little').hex()}{data.hex()}')"


def _hashed(constants: list[str], last: str) -> str:
    head = " || ".join(_part(c) for c in constants)
    return f"sha256({head} || {_le8(f'strlen({last})')} || encode({last}))"


def prompt_id_sql(normalised_prompt: str) -> str:
    """core.hashing.prompt_id, from the normalised text."""
    return f"left({_hashed(['prompt'], normalised_prompt)}, {ID_LENGTH})"


def response_id_sql(prompt_id: str, normalised_response: str) -> str:
    """core.hashing.response_id; prompt_id is a 16-hex-character id expression."""
    head = f"{_part('response')} || from_hex('{ID_LENGTH:02x}00000000000000') || encode({prompt_id})"
    tail = f"{_le8(f'strlen({normalised_response})')} || encode({normalised_response})"
    return f"left(sha256({head} || {tail}), {ID_LENGTH})"


def split_sql(prompt_id: str, test_fraction: float) -> str:
    """core.hashing.split_for."""
    threshold = round(test_fraction * 10_000)
    head = f"{_part('split')} || from_hex('{ID_LENGTH:02x}00000000000000') || encode({prompt_id})"
    bucket = f"('0x' || left(sha256({head}), 8))::bigint % 10000"
    return f"(case when {bucket} < {threshold} then 'test' else 'train' end)"
