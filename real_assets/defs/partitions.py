"""The strategy x seed grid that selection, training and eval repeat over, and how a partition key reads."""

import dagster as dg

from real_assets.core.selection import STRATEGIES

SEEDS = tuple(str(s) for s in range(5))
"""Seeds of the strategy x seed grid; a run uses the first N (`real-assets demo --seeds N`)."""
strategy_partitions = dg.StaticPartitionsDefinition(list(STRATEGIES))
"""A new strategy is one new entry in `core.selection.STRATEGY_REGISTRY`, not a new asset."""
strategy_seed_partitions = dg.MultiPartitionsDefinition(
    {"strategy": strategy_partitions, "seed": dg.StaticPartitionsDefinition(list(SEEDS))}
)
"""Selection, training and eval repeat over seeds; keys read `<seed>|<strategy>` (dimensions by name)."""


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
