"""Candidates domain: responses sampled from a policy for a prompts-only file, and the pairs each
label-free strategy asks annotators to label, per round and within a budget, before any label exists
(docs/annotation.md). The annotation domain (`defs/annotation.py`) sends them to Label Studio."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from real_assets.core.annotation.generation import (
    SamplingConfig,
    missing_samples,
    sample_candidates,
)
from real_assets.core.annotation.prompts import read_prompts
from real_assets.core.annotation.requests import RequestConfig, choose_requests, label_free_ches
from real_assets.core.hashing import response_id
from real_assets.core.records import SourceError
from real_assets.core.selection import STRATEGY_REGISTRY
from real_assets.defs.common import Step, step_asset, step_config
from real_assets.defs.training import recorded_checkpoint, reference_policy
from real_assets.defs.versions import WarehouseTable, content_version, digest_metadata, table_metadata
from real_assets.resources import Compute, Home, Warehouse, replace_rows, table_exists

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
    generations: Path,
) -> dict:
    """Read the prompts file (bad rows to raw.prompt_rejects), sample the missing candidates of every prompt
    from the policy (one model step), record them with their provenance in raw.generations, and write every
    candidate of this policy version to a file in `generations` for `raw_responses` (source `generated`)."""
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
    out = generations / f"generated__{version}.parquet"
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
        **content.fields(),
    }


@step_asset(
    config=GenerationConfig,
    kinds={"duckdb", "pytorch"},
    deps=[reference_policy],
    metadata=table_metadata(GENERATIONS, PROMPT_REJECTS),
)
def generated_responses(
    step: Step, home: Home, warehouse: Warehouse, compute: Compute
) -> dg.MaterializeResult:
    """K candidate responses per prompt of a prompts file, sampled from a policy version (the reference by
    default), with their provenance (model version, sampling settings, seed) in raw.generations; only the
    samples a prompt still lacks are drawn. The candidates reach raw.responses unlabelled through
    `raw_responses` with `{"source": "generated", "path": <candidates_file>}`."""
    config: GenerationConfig = step.config
    try:
        policy = _policy(step, warehouse, config)
        result = generate_responses(
            warehouse, compute, config, policy, step.context.run_id, home.folder("generations")
        )
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


# ---------------------------------------------------------------------------------------- requests

REQUESTS = WarehouseTable("selection.annotation_requests", ("round", "strategy", "pair_id"))

REQUESTS_DDL = """
create table if not exists selection.annotation_requests (
    request_id varchar not null, round bigint not null, strategy varchar not null, pair_id varchar not null,
    prompt_id varchar not null, response_id_a varchar not null, response_id_b varchar not null,
    cosine double, left_id varchar not null, right_id varchar not null, double_label boolean not null,
    seed bigint not null
)
"""


def read_requested_pairs(warehouse: Warehouse, strategy: str) -> pd.DataFrame:
    """(prompt_id, response_id_a, response_id_b) of every pair a strategy requested, over all rounds."""
    with warehouse.connect(read_only=True) as con:
        if not table_exists(con, "selection.annotation_requests"):
            return pd.DataFrame(columns=["prompt_id", "response_id_a", "response_id_b"])
        return con.execute(
            "select distinct prompt_id, response_id_a, response_id_b from selection.annotation_requests "
            "where strategy = ? order by 1, 2, 3",
            [strategy],
        ).df()


class RequestStepConfig(step_config(RequestConfig, "RequestStepConfig")):
    """One round of annotation requests (`core.annotation.requests.RequestConfig`)."""


def read_unlabelled_pairs(warehouse: Warehouse, with_texts: bool) -> pd.DataFrame:
    """Candidate pairs of the train split whose two responses have no label score (generated candidates),
    with their similarity (and texts when asked)."""
    texts = ", p.prompt, ra.response as chosen, rb.response as rejected" if with_texts else ""
    with warehouse.connect(read_only=True) as con:
        return con.execute(f"""
            select s.prompt_id, s.response_id_a, s.response_id_b, s.cosine{texts}
            from features.response_similarity as s
            join raw.responses as ra on ra.response_id = s.response_id_a
            join raw.responses as rb on rb.response_id = s.response_id_b
            join raw.prompts as p on p.prompt_id = s.prompt_id
            where ra.score is null and rb.score is null and p.split = 'train'
            order by s.prompt_id, s.response_id_a, s.response_id_b""").df()


def _with_label_free_reference_scores(
    warehouse: Warehouse, pairs: pd.DataFrame, reference_version: str | None, compute: Compute, report
) -> pd.DataFrame:
    from real_assets.core.reference_scores import reference_pair_scores

    reference, training = recorded_checkpoint(warehouse, "reference_policy", reference_version)
    lengths = {
        "max_length": training["max_length"],
        "min_response_tokens": training.get("min_response_tokens", 4),
    }
    forward, _ = compute.run(
        reference_pair_scores, reference, pairs[["prompt", "chosen", "rejected"]], **lengths
    )
    swapped = pairs[["prompt", "rejected", "chosen"]].set_axis(["prompt", "chosen", "rejected"], axis=1)
    backward, _ = compute.run(reference_pair_scores, reference, swapped, report=report, **lengths)
    return pairs.reset_index(drop=True).assign(
        ref_margin=forward["ref_margin"].to_numpy(),
        ches=label_free_ches(forward["ches"].to_numpy(), backward["ches"].to_numpy()),
    )


def request_round(
    warehouse: Warehouse, compute: Compute, config: RequestConfig, reference_version: str | None, report=None
) -> dict:
    """Choose one round's requests for every configured strategy and store them (a round already stored
    for a strategy is replaced); returns the counts per strategy and the table's content."""
    try:
        config.check()
    except ValueError as e:  # NeedsLabels among them: the message says which strategy and why
        raise dg.Failure(description=str(e), allow_retries=False) from None
    needs = {STRATEGY_REGISTRY[s].needs for s in config.strategies}
    unlabelled = read_unlabelled_pairs(warehouse, with_texts="reference_scores" in needs)
    if unlabelled.empty:
        raise dg.Failure(
            "no unlabelled candidate pairs in the train split: materialize generated_responses, ingest its "
            "candidates_file with raw_responses (source `generated`), then the embeddings and similarity"
        )
    if "reference_scores" in needs:
        unlabelled = _with_label_free_reference_scores(
            warehouse, unlabelled, reference_version, compute, report
        )
    embeddings = {}
    with warehouse.connect() as con:
        con.execute(REQUESTS_DDL)
        if "embeddings" in needs:
            ids = set(unlabelled["response_id_a"]) | set(unlabelled["response_id_b"])
            rows = con.execute("select response_id, embedding from features.response_embeddings").fetchall()
            embeddings = {rid: np.asarray(v, dtype=np.float32) for rid, v in rows if rid in ids}
        earlier = con.execute(
            "select strategy, prompt_id from selection.annotation_requests where round < ?", [config.round]
        ).fetchall()
    counts = {}
    frames = []
    for strategy in config.strategies:
        done = {pid for s, pid in earlier if s == strategy}
        chosen = choose_requests(unlabelled, strategy, config, done, embeddings)
        counts[f"requests/{strategy}"] = len(chosen)
        frames.append(chosen)
    frame = pd.concat(frames, ignore_index=True).assign(seed=config.seed)
    with warehouse.connect() as con:
        con.execute("begin transaction")
        con.execute(
            "delete from selection.annotation_requests where round = ? and strategy in "
            f"({', '.join('?' * len(config.strategies))})",
            [config.round, *config.strategies],
        )
        con.register("_requests", frame)
        con.execute("insert into selection.annotation_requests by name select * from _requests")
        con.unregister("_requests")
        con.execute("commit")
        content = content_version(con, [REQUESTS])
    return {
        **counts,
        "round": config.round,
        "budget": config.budget,
        "unlabelled_pairs": len(unlabelled),
        "double_labelled": int(frame["double_label"].sum()),
        **content.fields(),
    }


@step_asset(
    config=RequestStepConfig,
    kinds={"duckdb", "python"},
    deps=["response_similarity", "response_embeddings", reference_policy],
    metadata=table_metadata(REQUESTS),
)
def annotation_requests(step: Step, warehouse: Warehouse, compute: Compute) -> dg.MaterializeResult:
    """The pairs annotators are asked to label, per strategy and round (selection.annotation_requests):
    the label-free strategies (easy, hard, random, centroid, margin, ches, aepo where present) over the
    unlabelled candidate pairs, one pair per prompt, `budget` pairs per strategy and round, with the
    left/right order annotators will see and whether the pair is labelled twice. A strategy that needs labels
    is refused."""
    result = request_round(
        warehouse, compute, step.config, step.upstream.get("reference_policy"), step.log.info
    )
    version = result.pop("data_version")
    digests = result.pop("table_digests")
    return step.finish(version, {**result, **digest_metadata(digests), "dagster/row_count": result["rows"]})


# ---------------------------------------------------------------------------------------- Label Studio
