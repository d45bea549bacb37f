"""What an asset writes in the warehouse, declared once on the asset, and its content version.

An asset that writes tables declares them in its decorator: `metadata=table_metadata(TABLE, ...)`. The first
table is the asset's `dagster/table_name`; every table lists its key columns. Tables of a
partitioned asset carry one column per partition dimension, named like the dimension, so a partition maps to
`where <dimension> = ?` for each of them. Everything else (the audit, the SQL assets' upstream tables, the
demo) reads these facts from the asset graph.
"""

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import duckdb

from real_assets.core import table_digests
from real_assets.core.checkpoints import UNPARTITIONED, verify
from real_assets.core.hashing import TABLE_DIGEST_FORMAT, digest, digest_manifest
from real_assets.core.models import ModelError, is_adapter, parent_of
from real_assets.defs.common import data_version_of, latest_materialization
from real_assets.resources import Warehouse, table_digest

TABLE_NAME_KEY = "dagster/table_name"
"""`TableMetadataSet.table_name` (the set itself is not exported at the top level of dagster 1.13)."""
TABLES_KEY = "real_assets/tables"
PARTITION_COLUMN_KEY = "real_assets/partition_column"
CHECKPOINTS_KEY = "real_assets/checkpoints"
CHECKPOINTS_TABLE = "models.checkpoints"


@dataclass(frozen=True)
class WarehouseTable:
    """One table an asset writes, defined once: its name, key columns and columns with their DuckDB types
    (the DDL, the column schema in the asset's metadata and the frames written to it all come from here).
    `versioned`: part of the asset's data version; tables that record runs (ingestion ids, timestamps) are
    not, and are audited by their digest in the materialization metadata."""

    name: str
    keys: tuple[str, ...]
    versioned: bool = True
    columns: tuple[tuple[str, str], ...] = ()
    """(column, DuckDB type with its constraints) in table order; empty for a table written by `create
    table ... as select` or a view."""

    @property
    def column_names(self) -> list[str]:
        return [name for name, _ in self.columns]

    def ddl(self) -> str:
        """`create table if not exists` with the columns."""
        body = ", ".join(f"{name} {kind}" for name, kind in self.columns)
        return f"create table if not exists {self.name} ({body})"

    def to_json(self) -> dict:
        return {"name": self.name, "keys": list(self.keys), "versioned": self.versioned}


def table_metadata(*tables: WarehouseTable, partition_column: str | None = None) -> dict:
    """Definition metadata of an asset that writes `tables` (the first is its `dagster/table_name`).
    `partition_column` names the column of a single-dimension partition (multi-dimension partitions use
    their dimension names)."""
    metadata = {
        TABLE_NAME_KEY: tables[0].name,
        TABLES_KEY: dg.MetadataValue.json([t.to_json() for t in tables]),
    }
    if tables[0].columns:
        metadata["dagster/column_schema"] = dg.TableSchema(
            columns=[dg.TableColumn(name, kind.split()[0]) for name, kind in tables[0].columns]
        )
    if partition_column:
        metadata[PARTITION_COLUMN_KEY] = partition_column
    return metadata


def checkpoint_metadata() -> dict:
    """Definition metadata of an asset whose content is a checkpoint folder recorded in models.checkpoints."""
    return {TABLE_NAME_KEY: CHECKPOINTS_TABLE, CHECKPOINTS_KEY: True}


def _value(metadata: Mapping, key: str):
    value = metadata.get(key)
    return getattr(value, "value", value)


def tables_of(metadata: Mapping) -> list[WarehouseTable]:
    """The tables an asset declares in its definition metadata (none for other assets)."""
    return [
        WarehouseTable(t["name"], tuple(t["keys"]), t.get("versioned", True))
        for t in _value(metadata, TABLES_KEY) or []
    ]


def is_checkpoint(metadata: Mapping) -> bool:
    return bool(_value(metadata, CHECKPOINTS_KEY))


def partition_columns(
    partitions_def: dg.PartitionsDefinition | None, partition_key: str | None, metadata: Mapping
) -> dict[str, str]:
    """{column: value} that select one partition's rows: one column per dimension, named like it."""
    if partitions_def is None or partition_key is None:
        return {}
    if isinstance(partitions_def, dg.MultiPartitionsDefinition):
        return dict(partitions_def.get_partition_key_from_str(partition_key).keys_by_dimension)
    column = _value(metadata, PARTITION_COLUMN_KEY)
    if not column:
        raise ValueError("a single-dimension partitioned table asset declares its partition_column")
    return {column: partition_key}


def context_partition(context: dg.AssetExecutionContext) -> dict[str, str]:
    """`partition_columns` of the partition an asset is materializing."""
    return partition_columns(
        context.assets_def.partitions_def,
        context.partition_key if context.has_partition_key else None,
        context.assets_def.metadata_by_key[context.asset_key],
    )


@dataclass
class Content:
    """The content version of an asset's tables: the data version (over the versioned tables), the rows
    of its main table, and the digest of every table (what the audit compares)."""

    version: str
    rows: int
    digests: dict[str, str] = field(default_factory=dict)

    def metadata(self) -> dict:
        return digest_metadata(self.digests)

    def fields(self) -> dict:
        """rows, data_version and table_digests, as a step's result dict carries them to its asset."""
        return {"rows": self.rows, "data_version": self.version, "table_digests": self.digests}


def digest_metadata(digests: Mapping[str, str]) -> dict:
    """Materialization metadata of table digests: the digests and the format they were computed in."""
    return {
        "table_digests": dg.MetadataValue.json(dict(digests)),
        # text, not a number: numbers in materialization metadata are MLflow metrics of the step
        "table_digest_format": dg.MetadataValue.text(str(TABLE_DIGEST_FORMAT)),
    }


def content_version(
    con: duckdb.DuckDBPyConnection,
    tables: Sequence[WarehouseTable],
    partition: Mapping[str, str] | None = None,
) -> Content:
    """The content of `tables` (only the partition's rows where `partition` is given)."""
    return content_of([(table, *table_digest(con, table.name, where=partition or None)) for table in tables])


def content_of(digests: Sequence[tuple[WarehouseTable, str, int]]) -> Content:
    """The content version of tables from each one's (table, digest, rows): the data version over the
    versioned tables' digests, the rows of the first table."""
    versioned = [content for table, content, _ in digests if table.versioned]
    rows = digests[0][2] if digests else 0
    return Content(digest(*versioned)[:16], rows, {table.name: content for table, content, _ in digests})


def tracked_content_version(con: duckdb.DuckDBPyConnection, tables: Sequence[WarehouseTable]) -> Content:
    """`content_version` from the digests its writer keeps up to date (`core.table_digests`) for the
    tables that are tracked, so no row is read; a table that is not tracked (a view) is read in full.
    Equal to `content_version` of the same tables."""
    digests = []
    for table in tables:
        marker = con.execute(
            f"select key_column from {table_digests.KEY_DIGESTS} where table_name = ? and key is null",
            [table.name],
        ).fetchone()
        if marker is not None and table_digests.is_tracked(con, table.name, marker[0]):
            digests.append((table, *table_digests.tracked_digest(con, table.name)))
        else:
            digests.append((table, *table_digest(con, table.name)))
    return content_of(digests)


# ---------------------------------------------------------------------------------------------- checkpoints


@dataclass
class CheckpointRecord:
    """A `models.checkpoints` row: the folder, its file manifest, the runs that made it and the training
    record (hyperparameters and lineage) it was trained with."""

    path: Path
    manifest: dict[str, str]
    mlflow_run_id: str | None
    dagster_run_id: str | None
    training: dict


def read_checkpoint_record(
    con: duckdb.DuckDBPyConnection, asset: str, partition: str | None, data_version: str
) -> CheckpointRecord | None:
    """The recorded checkpoint of an asset partition with this data version, if any."""
    row = con.execute(
        "select path, manifest, mlflow_run_id, dagster_run_id, training from models.checkpoints "
        "where asset = ? and partition = ? and data_version = ?",
        [asset, partition or UNPARTITIONED, data_version],
    ).fetchone()
    if row is None:
        return None
    path, manifest, mlflow_run_id, dagster_run_id, training = row
    return CheckpointRecord(
        Path(path), json.loads(manifest), mlflow_run_id, dagster_run_id, json.loads(training or "{}")
    )


def checkpoint_problems(
    con: duckdb.DuckDBPyConnection, asset: str, partition: str | None, data_version: str
) -> tuple[list[str], CheckpointRecord | None]:
    """Problems of one recorded checkpoint: its `models.checkpoints` row must exist, its manifest must
    hash to the data version, the folder must be `<asset>/<partition>/<data_version>` and every file
    must match the manifest (`core.checkpoints.verify`); a LoRA adapter's parent must be there, unchanged."""
    part = partition or UNPARTITIONED
    record = read_checkpoint_record(con, asset, part, data_version)
    if record is None:
        return [f"no models.checkpoints row for data version {data_version}"], None
    problems = []
    if digest_manifest(record.manifest)[:16] != data_version:
        problems.append(f"manifest hashes to {digest_manifest(record.manifest)[:16]}, not {data_version}")
    folder = record.path.parts[-3:]
    if tuple(folder) != (asset, part, data_version):
        problems.append(f"checkpoint folder {record.path} is not .../{asset}/{part}/{data_version}")
    problems += [f"checkpoint file {p}" for p in verify(record.path, record.manifest)]
    if not problems and is_adapter(record.path):
        try:
            parent_of(record.path)  # the model the adapter applies to is there and unchanged
        except ModelError as e:
            problems.append(str(e))
    return problems, record


CHECKPOINT_MATCHES_MANIFEST = "checkpoint_matches_manifest"


def checkpoint_check(asset: dg.AssetsDefinition) -> dg.AssetChecksDefinition:
    """The blocking check of a checkpoint asset: every file of the (partition's) latest checkpoint matches
    its models.checkpoints manifest, and the folder name, manifest digest and Dagster data version agree."""

    def _check(context: dg.AssetCheckExecutionContext, warehouse: Warehouse) -> dg.AssetCheckResult:
        partition = context.partition_key if asset.partitions_def else None
        version = data_version_of(latest_materialization(context.instance, asset.key, partition))
        if version is None:
            return dg.AssetCheckResult(passed=False, metadata={"problems": "never materialized"})
        with warehouse.connect(read_only=True) as con:
            problems, ckpt = checkpoint_problems(con, asset.key.to_user_string(), partition, version)
        return dg.AssetCheckResult(
            passed=not problems,
            metadata={
                "data_version": version,
                "files": len(ckpt.manifest) if ckpt else 0,
                "problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none"),
            },
        )

    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", dg.PreviewWarning
        )  # a partitioned asset check is a preview API in 1.13
        return dg.asset_check(
            asset=asset,
            name=CHECKPOINT_MATCHES_MANIFEST,
            partitions_def=asset.partitions_def,
            blocking=True,
            description="Every file of the latest checkpoint matches its models.checkpoints manifest, and "
            "the folder name, manifest digest and Dagster data version agree.",
        )(_check)
