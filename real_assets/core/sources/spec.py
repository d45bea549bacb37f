"""What to ingest: the one settings object of the ingest step (the `raw_responses` config extends it)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from real_assets.core.records import SourceError

DEFAULT_MAX_RESPONSES_PER_PROMPT = 128
"""At most this many responses of one prompt are kept (128 -> at most 8,128 candidate pairs a prompt)."""


class SourceSpec(BaseModel):
    """Which source to read and how to validate it. Every field has one default, here."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field("synthetic", description="Source name (see real_assets.core.sources.source_names()).")
    path: str | None = Field(
        None, description="Local file path, local dataset directory, or a hub dataset id (owner/name)."
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) for hub ids.")
    split: str = Field("train", description="Split for directories and hub ids.")
    limit: int | None = Field(
        None, description="Read at most this many input rows (synthetic: at most this many prompts)."
    )
    seed: int = 0
    test_fraction: float = Field(0.2, description="Share of prompts in the test split (by prompt id hash).")
    max_chars: int = Field(
        8000, description="A longer prompt or response text is rejected with reason `text_too_long`."
    )
    max_responses_per_prompt: int = Field(
        DEFAULT_MAX_RESPONSES_PER_PROMPT,
        description="Responses kept per prompt (stored ones included); later ones in file order are "
        "dropped and counted, so a prompt never yields more than n*(n-1)/2 candidate pairs.",
    )
    column_map: dict[str, str] | None = Field(
        None,
        description="`table` only: {prompt, response, score} or {prompt, chosen, rejected[, score_chosen, "
        "score_rejected]} -> column names. Default: identity names, layout detected from the columns.",
    )
    n_prompts: int = Field(120, description="`synthetic` only: number of prompts.")


def check_spec_values(spec: SourceSpec) -> None:
    """SourceError for values no source accepts."""
    if spec.limit is not None and spec.limit < 0:
        raise SourceError(f"{spec.source}: limit must be >= 0, got {spec.limit}")
    if not 0.0 <= spec.test_fraction < 1.0:
        raise SourceError(f"{spec.source}: test_fraction must be in [0, 1), got {spec.test_fraction}")
    if spec.max_chars <= 0:
        raise SourceError(f"{spec.source}: max_chars must be > 0, got {spec.max_chars}")
    if spec.max_responses_per_prompt < 2:
        raise SourceError(
            f"{spec.source}: max_responses_per_prompt must be >= 2, got {spec.max_responses_per_prompt}"
        )
