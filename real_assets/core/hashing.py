"""The one hashing helper: content ids, data versions and file digests all come from here."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

_WHITESPACE = re.compile(r"\s+")
ID_LENGTH = 16


def normalise_text(text: str) -> str:
    """Unicode NFC, whitespace collapsed and stripped: the form that ids are computed from."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def digest(*parts: str | bytes) -> str:
    """SHA-256 hex digest of the parts, separated so that ("ab", "c") != ("a", "bc")."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def prompt_id(prompt: str) -> str:
    """Stable id of a prompt: hash of its normalised text."""
    return digest("prompt", normalise_text(prompt))[:ID_LENGTH]


def response_id(prompt_key: str, response: str) -> str:
    """Stable id of a response to one prompt: hash of the prompt id and the normalised text."""
    return digest("response", prompt_key, normalise_text(response))[:ID_LENGTH]


def split_for(prompt_key: str, test_fraction: float) -> str:
    """Deterministic train/test split by prompt: the same prompt always lands on the same side."""
    bucket = int(digest("split", prompt_key)[:8], 16) % 10_000
    return "test" if bucket < round(test_fraction * 10_000) else "train"


def digest_rows(rows: Iterable[Iterable[object]]) -> str:
    """Order-sensitive digest of table rows (callers sort them first)."""
    h = hashlib.sha256()
    for row in rows:
        h.update(repr(tuple(row)).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def digest_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def digest_directory(root: Path) -> dict[str, str]:
    """Digest of every file under root, keyed by its path relative to root (sorted)."""
    return {str(p.relative_to(root)): digest_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def digest_manifest(manifest: dict[str, str]) -> str:
    """One digest for a {name: digest} manifest."""
    return digest(*(f"{k}={v}" for k, v in sorted(manifest.items())))
