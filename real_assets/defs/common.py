"""What every asset shares: pools, partitions, upstream versions and the materialization result."""

from typing import Any

import dagster as dg

from real_assets.core.selection import STRATEGIES
from real_assets.resources import StepRun, Tracking

WAREHOUSE_POOL = "warehouse"
"""Assets that write the DuckDB warehouse: DuckDB allows one writing process per file."""
GPU_POOL = "gpu"
"""Assets that load models on the accelerator: two must not share a GPU by accident."""

strategy_partitions = dg.StaticPartitionsDefinition(list(STRATEGIES))
"""A new strategy is one new entry in `STRATEGIES`, not a new asset."""


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
            for upstream_partition in strategy_partitions.get_partition_keys():
                version = data_version_of(latest_materialization(context.instance, key, upstream_partition))
                if version:
                    out[f"{name}/{upstream_partition}"] = version
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
