"""Annotation domain: candidates sampled from a policy, pairs chosen for annotators before labels exist,
tasks sent to Label Studio (or written in its import format), annotations read back, their agreement and
noise measured (docs: DESIGN.md, "The annotation loop").

The labels reach the rest of the graph the way every source's do: `raw_responses` ingests the generated
candidates (source `generated`: no score) and the annotations (source `table`, chosen/rejected rows), and
`pair_candidates` directs each annotated pair by its comparisons.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pandas as pd

from real_assets.core.annotation.generation import (
    SamplingConfig,
    missing_samples,
    sample_candidates,
)
from real_assets.core.annotation.prompts import read_prompts
from real_assets.core.hashing import response_id
from real_assets.core.records import SourceError
from real_assets.defs.common import Step, step_asset, step_config
from real_assets.defs.training import recorded_checkpoint, reference_policy
from real_assets.defs.versions import WarehouseTable, content_version, digest_metadata, table_metadata
from real_assets.resources import Compute, Warehouse, replace_rows
from real_assets.settings import home_dir

GENERATIONS = WarehouseTable("raw.generations", ("model_version", "prompt_id", "sample_index"))
PROMPT_REJECTS = WarehouseTable(
    "raw.prompt_rejects", ("run_id", "source_file", "row_number", "field", "reason"), versioned=False
)
GENERATED_SOURCE = "generated"

_GENERATIONS_DDL = """
create table if not exists raw.generations (
    model_version varchar not null, prompt_id varchar not null, sample_index integer not null,
    response_id varchar not null, prompt varchar not null, response varchar not null,
    external_id varchar, prompts_file varchar not null, prompt_row bigint not null,
    model_asset varchar not null, model_partition varchar not null, model_path varchar not null,
    temperature double not null, top_p double not null, max_new_tokens integer not null,
    seed bigint not null, generated_at timestamp not null
);
create table if not exists raw.prompt_rejects (
    source varchar not null, source_file varchar not null, row_number bigint not null,
    field varchar not null, reason varchar not null, excerpt varchar, run_id varchar not null
);
"""


class GenerationConfig(step_config(SamplingConfig, "SamplingStepConfig")):
    """Which prompts, which policy, how to sample: `prompts_path` is a JSONL or Parquet file of `prompt`
    (and optional `id`); the policy is the recorded checkpoint of `policy_asset` (`reference_policy`, or
    `dpo_checkpoint` with `policy_partition` such as `0|easy`) at `policy_version` (empty: the version its
    latest materialization names)."""

    prompts_path: str = ""
    policy_asset: str = "reference_policy"
    policy_partition: str = ""
    policy_version: str = ""
    max_chars: int = 8000
    test_fraction: float = 0.2

    def to_core(self) -> GenerationConfig:
        return self  # the step needs the file and policy fields too; `sampling()` is what core receives

    def sampling(self) -> SamplingConfig:
        fields = SamplingConfig.__dataclass_fields__
        return SamplingConfig(**{k: v for k, v in self.model_dump().items() if k in fields})


def generations_dir() -> Path:
    """Where the generated candidates are written as files for `raw_responses` (source `generated`)."""
    path = home_dir() / "generations"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _policy(step: Step, warehouse: Warehouse, config: GenerationConfig) -> tuple[Path, str, str]:
    """(checkpoint folder, data version, partition) of the policy to sample from."""
    from real_assets.core.checkpoints import UNPARTITIONED
    from real_assets.defs.common import data_version_of, latest_materialization

    partition = config.policy_partition or UNPARTITIONED
    version = config.policy_version
    if not version and config.policy_asset == "reference_policy":
        version = step.upstream.get("reference_policy", "")
    if not version:
        record = latest_materialization(
            step.context.instance, dg.AssetKey(config.policy_asset), config.policy_partition or None
        )
        version = data_version_of(record) or ""
    path, _ = recorded_checkpoint(warehouse, config.policy_asset, version, partition)
    return path, version, partition


def generate_responses(
    warehouse: Warehouse,
    compute: Compute,
    config: GenerationConfig,
    policy: tuple[Path, str, str],
    run_id: str,
) -> dict:
    """Read the prompts file (bad rows to raw.prompt_rejects), sample the missing candidates of every prompt
    from the policy (one model step), record them with their provenance in raw.generations, and write every
    candidate of this policy version to a file for `raw_responses` (source `generated`)."""
    sampling = config.sampling()
    try:
        sampling.check()
    except ValueError as e:
        raise SourceError(f"generated_responses: {e}") from None
    prompts = read_prompts(config.prompts_path, config.max_chars, config.test_fraction)
    path, version, partition = policy
    with warehouse.connect() as con:
        con.execute(_GENERATIONS_DDL)
        if prompts.rejects:
            frame = pd.DataFrame([asdict(r) for r in prompts.rejects]).assign(run_id=run_id)
            replace_rows(con, PROMPT_REJECTS.name, frame, ["run_id", "row_number"])
        have: dict[str, set[int]] = {}
        for pid, index in con.execute(
            "select prompt_id, sample_index from raw.generations where model_version = ?", [version]
        ).fetchall():
            have.setdefault(pid, set()).add(index)
    todo = missing_samples([(p.prompt_id, p.prompt) for p in prompts.prompts], have, sampling.k)
    samples, device = ([], "") if not todo else compute.run(sample_candidates, path, todo, sampling)
    by_id = {p.prompt_id: p for p in prompts.prompts}
    now = datetime.now(UTC).replace(tzinfo=None)

    rows = [
        {
            "model_version": version,
            "prompt_id": pid,
            "sample_index": index,
            "response_id": response_id(pid, text) if text.strip() else "",
            "prompt": by_id[pid].prompt,
            "response": text,
            "external_id": by_id[pid].external_id,
            "prompts_file": prompts.path,
            "prompt_row": by_id[pid].row_number,
            "model_asset": config.policy_asset,
            "model_partition": partition,
            "model_path": str(path),
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_new_tokens": sampling.max_new_tokens,
            "seed": sampling.seed,
            "generated_at": now,
        }
        for pid, index, text in samples
    ]
    with warehouse.connect() as con:
        if rows:
            replace_rows(con, GENERATIONS.name, pd.DataFrame(rows), list(GENERATIONS.keys))
        content = content_version(con, [GENERATIONS, PROMPT_REJECTS])
        candidates = con.execute(
            "select prompt, response from raw.generations where model_version = ? "
            "order by prompt_id, sample_index",
            [version],
        ).df()
    out = generations_dir() / f"generated__{version}.parquet"
    candidates.to_parquet(out, index=False)
    return {
        "prompts_file": prompts.path,
        "input_rows": prompts.input_rows,
        "accepted_rows": prompts.accepted_rows,
        "rejected_rows": len(prompts.rejects),
        "prompts_sampled": len(todo),
        "samples_drawn": len(samples),
        "empty_samples": sum(1 for _, _, t in samples if not t.strip()),
        "policy_asset": config.policy_asset,
        "policy_partition": partition,
        "policy_version": version,
        "device": device,
        **sampling.provenance(),
        "candidates_file": str(out),
        "rows": content.rows,
        "data_version": content.version,
        "table_digests": content.digests,
    }


@step_asset(
    config=GenerationConfig,
    kinds={"duckdb", "pytorch"},
    deps=[reference_policy],
    metadata=table_metadata(GENERATIONS, PROMPT_REJECTS),
)
def generated_responses(step: Step, warehouse: Warehouse, compute: Compute) -> dg.MaterializeResult:
    """K candidate responses per prompt of a prompts file, sampled from a policy version (the reference by
    default), with their provenance (model version, sampling settings, seed) in raw.generations; only the
    samples a prompt still lacks are drawn. The candidates reach raw.responses unlabelled through
    `raw_responses` with `{"source": "generated", "path": <candidates_file>}`."""
    config: GenerationConfig = step.config
    try:
        policy = _policy(step, warehouse, config)
        result = generate_responses(warehouse, compute, config, policy, step.context.run_id)
    except SourceError as e:
        raise dg.Failure(description=str(e), allow_retries=False) from None
    version = result.pop("data_version")
    digests = result.pop("table_digests")
    metadata = {
        **result,
        **digest_metadata(digests),
        "candidates_file": dg.MetadataValue.path(result["candidates_file"]),
        "ingest_config": dg.MetadataValue.json(
            {"source": GENERATED_SOURCE, "path": result["candidates_file"]}
        ),
        "dagster/row_count": result["rows"],
    }
    return step.finish(version, metadata)
