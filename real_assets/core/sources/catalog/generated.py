"""Candidates sampled from a policy (`generated_responses` writes them): prompt and response texts, no
label yet. The responses land in `raw.responses` with a null score: they form no directed pair until an
annotation (a comparison in `raw.comparisons`) gives one."""

from __future__ import annotations

import real_assets.core.sources.rowchecks as rc
from real_assets.core.sources.registry import Layout, Source, schema_error
from real_assets.core.sources.spec import SourceSpec

COLUMNS = ("prompt", "response")


def _layout(spec: SourceSpec, where: str, found: list[str]) -> Layout:
    if not set(COLUMNS) <= set(found):
        raise schema_error(spec, where, "columns prompt, response", found)
    max_chars = spec.max_chars

    def validate(row: dict) -> tuple[list[rc.Item], str]:
        prompt = rc.text(row.get("prompt"), "prompt", max_chars)
        response = rc.text(row.get("response"), "response", max_chars)
        return [(prompt, response, None)], rc.SCORED  # type: ignore[list-item]

    return Layout(COLUMNS, validate)


SOURCE = Source("generated", "candidates sampled from a policy (unlabelled: no score)", _layout)
