"""The deterministic synthetic source (`core/synthetic.py`): prompts with responses of known gold quality."""

from __future__ import annotations

from collections.abc import Iterator

from real_assets.core.records import SourceBatch, SourceError
from real_assets.core.sources.registry import Source
from real_assets.core.sources.spec import SourceSpec
from real_assets.core.synthetic import iter_synthetic


def _check(spec: SourceSpec) -> None:
    if spec.n_prompts <= 0:
        raise SourceError(f"synthetic: n_prompts must be > 0, got {spec.n_prompts}")


def _records(spec: SourceSpec, batch_size: int) -> Iterator[SourceBatch]:
    n = spec.n_prompts if spec.limit is None else min(spec.n_prompts, spec.limit)
    if n > 0:
        yield from iter_synthetic(
            n_prompts=n, seed=spec.seed, test_fraction=spec.test_fraction, batch_size=batch_size
        )


SOURCE = Source(
    "synthetic", "generated prompts and responses with known gold quality", records=_records, check=_check
)
