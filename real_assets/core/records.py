"""The records every source yields: accepted responses and rejected input rows."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ResponseRecord:
    """One candidate response to one prompt, as it lands in `raw.responses`."""

    prompt_id: str
    response_id: str
    prompt: str
    response: str
    score: float | None
    """Label score: higher means the annotators preferred it. Pairs are directed by it. None: not labelled
    (a generated candidate); its pairs are directed by comparisons only."""
    gold: float | None
    """Known gold quality (synthetic source), else None."""
    split: str
    source: str
    source_file: str
    row_number: int
    labelled_pair: bool = False
    """One of the two responses of a chosen/rejected label with no scores: only this row's pair was
    compared, so no other pair of the prompt may be formed from it."""


@dataclass(frozen=True)
class RejectRecord:
    """One input row that was not accepted, with where it came from and why."""

    source: str
    source_file: str
    row_number: int
    field: str
    reason: str
    excerpt: str = ""


@dataclass
class SourceBatch:
    """A bounded chunk of one source: every input row counted once, accepted or rejected."""

    responses: list[ResponseRecord] = field(default_factory=list)
    rejects: list[RejectRecord] = field(default_factory=list)
    input_rows: int = 0
    accepted_rows: int = 0


class SourceError(ValueError):
    """A source that cannot be read at all (unknown name, missing file, wrong schema)."""
