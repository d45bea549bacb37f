"""What every asset shares: pools, partitions, step configs, upstream versions and the materialization
result."""

import dataclasses
import typing
from typing import Any

import dagster as dg
import pydantic

from real_assets.core.selection import STRATEGIES
from real_assets.resources import StepRun, Tracking

WAREHOUSE_POOL = "warehouse"
"""Assets that write the DuckDB warehouse: DuckDB allows one writing process per file."""
GPU_POOL = "gpu"
"""Assets that load models on the accelerator: two must not share a GPU by accident."""

SEEDS = tuple(str(s) for s in range(5))
"""Seeds of the strategy x seed grid; a run uses the first N (`real-assets demo --seeds N`)."""
strategy_partitions = dg.StaticPartitionsDefinition(list(STRATEGIES))
"""A new strategy is one new entry in `core.selection.STRATEGY_REGISTRY`, not a new asset."""
strategy_seed_partitions = dg.MultiPartitionsDefinition(
    {"strategy": strategy_partitions, "seed": dg.StaticPartitionsDefinition(list(SEEDS))}
)
"""Selection, training and eval repeat over seeds; keys read `<seed>|<strategy>` (dimensions by name)."""


def strategy_and_seed(context: dg.AssetExecutionContext) -> tuple[str, int]:
    """The strategy and seed of a `strategy_seed_partitions` partition being materialized."""
    dims = partition_dims(context)
    return dims["strategy"], int(dims["seed"])


def partition_dims(context: dg.AssetExecutionContext) -> dict[str, str]:
    """{dimension: value} of the partition being materialized ({} when unpartitioned)."""
    if not context.has_partition_key:
        return {}
    key = context.partition_key
    if isinstance(key, dg.MultiPartitionKey):
        return dict(key.keys_by_dimension)
    return {"strategy": key}


def partition_tag(partition: str) -> str:
    """A partition key as MLflow allows it in a tag or metric name (`0|easy` -> `easy/0`)."""
    parts = str(partition).split("|")
    return "/".join(reversed(parts))


def step_config(core_class: type, name: str) -> type[dg.Config]:
    """The Dagster config of a step, generated from the plain dataclass `core/` owns (one set of fields,
    one set of defaults); `to_core(config)` gives the dataclass back."""
    hints = typing.get_type_hints(core_class)
    fields = {
        f.name: (
            hints[f.name],
            f.default
            if f.default_factory is dataclasses.MISSING
            else pydantic.Field(default_factory=f.default_factory),
        )
        for f in dataclasses.fields(core_class)
    }
    return pydantic.create_model(
        name, __base__=dg.Config, __doc__=core_class.__doc__, __module__=core_class.__module__, **fields
    )


def to_core(config: dg.Config, core_class: type):
    """The core dataclass of a step config (see `step_config`)."""
    return core_class(**config.model_dump())


def latest_materialization(
    instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None = None
) -> dg.EventLogRecord | None:
    """The newest materialization record of an asset (or one partition of it)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1
    ).records
    return records[0] if records else None


def data_version_of(record: dg.EventLogRecord | None) -> str | None:
    if record is None or record.asset_materialization is None:
        return None
    return record.asset_materialization.tags.get("dagster/data_version")


def upstream_versions(context: dg.AssetExecutionContext) -> dict[str, str]:
    """The data version of each upstream asset this materialization read (same partition if partitioned)."""
    out = {}
    partition = context.partition_key if context.has_partition_key else None
    for key in sorted(context.assets_def.asset_deps[context.asset_key], key=lambda k: k.to_user_string()):
        name = key.to_user_string()
        # The same partition of a partitioned upstream; else its latest unpartitioned materialization.
        record = latest_materialization(context.instance, key, partition) if partition else None
        if record is None:
            record = latest_materialization(context.instance, key)
        if record is not None and record.partition_key is not None and record.partition_key != partition:
            # An unpartitioned asset reads every partition of a partitioned upstream.
            for upstream_partition in sorted(context.instance.get_materialized_partitions(key)):
                version = data_version_of(latest_materialization(context.instance, key, upstream_partition))
                if version:
                    out[f"{name}/{partition_tag(upstream_partition)}"] = version
            continue
        version = data_version_of(record)
        if version:
            out[name] = version
    return out


def finish(
    context: dg.AssetExecutionContext,
    tracking: Tracking,
    step: StepRun,
    data_version: str,
    metadata: dict[str, Any],
) -> dg.MaterializeResult:
    """Close the loop between Dagster and MLflow: the MLflow run gets the data version, the
    materialization gets the MLflow run id and link."""
    step.set_tags({"dagster.data_version": data_version})
    step.log_metrics(
        {k: v for k, v in metadata.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    )
    return dg.MaterializeResult(
        data_version=dg.DataVersion(data_version),
        metadata={
            **metadata,
            "data_version": data_version,
            "mlflow_run_id": step.run_id,
            "mlflow_run": dg.MetadataValue.url(tracking.run_url(step)),
        },
    )
