"""The lineage audit: walk every checkpoint and table row back to the raw data and re-check every link.

For each asset of the code location, upstream first (and each materialized partition of a partitioned one),
the audit takes the latest Dagster materialization and

- recomputes the content from the warehouse exactly as the asset does (`content_version` over the tables
  the asset declares), or for checkpoints re-hashes every file against the `models.checkpoints` manifest
  (`checkpoint_problems`); the result must equal the Dagster data version (and, for checkpoints, the folder
  name). Tables outside the data version (ingestion records, rejects) must hash to the digest recorded in
  the materialization's `table_digests`;
- checks the MLflow run named in the metadata exists, is tagged with the materialization's Dagster run id,
  data version and partition, and that every number the materialization reports equals the MLflow metric
  of that name;
- follows the links: the checkpoint row names the same Dagster and MLflow runs; a table row that names a
  `checkpoint_version` names a recorded checkpoint of its upstream checkpoint asset.

A mismatch or a missing link is a *problem* (naming asset and partition). A step built from an upstream
version that is no longer the latest is *stale*: a warning, since automation may not have caught up yet.

Not covered: the Dagster event log itself (the audit trusts the recorded materializations), MLflow params
and artifacts other than the registered checkpoint files, and files under `<home>/reports`.
"""

import contextlib
import datetime as dt
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb

from real_assets.audit_report import AuditReport, StepAudit
from real_assets.core.checkpoints import UNPARTITIONED
from real_assets.core.hashing import TABLE_DIGEST_FORMAT, digest_manifest
from real_assets.defs.annotation import LOOP_GROUPS
from real_assets.defs.common import data_version_of, latest_materialization
from real_assets.defs.partitions import partition_tag
from real_assets.defs.versions import (
    checkpoint_problems,
    content_version,
    is_checkpoint,
    partition_columns,
    tables_of,
)
from real_assets.resources import Warehouse, table_exists


@contextlib.contextmanager
def readable_stores(home: Path, tracking_uri: str) -> Iterator[tuple[Path, str]]:
    """(Dagster instance folder, MLflow tracking URI) to read the home from. On a home this process cannot
    write (a read-only mount), SQLite cannot open the stores even to read (the Dagster instance's WAL mode
    needs its `-shm` file; both check their schema by writing): they are read from a copy made for this
    audit, which leaves the home untouched."""
    dagster_home = home / "dagster"
    if os.access(home, os.W_OK) and os.access(dagster_home, os.W_OK):
        yield dagster_home, tracking_uri
        return
    with tempfile.TemporaryDirectory(prefix="real-assets-audit-") as tmp:
        copy = Path(tmp) / "dagster"
        shutil.copytree(dagster_home, copy)
        mlflow_db = home / "mlflow.db"
        if tracking_uri == f"sqlite:///{mlflow_db}" and mlflow_db.exists():
            shutil.copy2(mlflow_db, Path(tmp) / "mlflow.db")
            tracking_uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        yield copy, tracking_uri


def _metadata_value(record: dg.EventLogRecord, key: str) -> Any:
    value = record.asset_materialization.metadata.get(key)
    return getattr(value, "value", value)


class _Auditor:
    """One audit: the asset graph, the instance, a read-only warehouse connection and an MLflow client."""

    def __init__(self, graph, instance: dg.DagsterInstance, con: duckdb.DuckDBPyConnection, mlflow_client):
        self.graph = graph
        self.instance = instance
        self.con = con
        self.mlflow = mlflow_client
        self.versions: dict[tuple[str, str | None], str | None] = {}

    def partitions(self, key: dg.AssetKey, wanted: str | None) -> list[str]:
        """The materialized partitions of a partitioned asset, in the order of its partitions definition;
        with `wanted`, only the key itself or the keys that have it as one dimension's value."""
        done = self.instance.get_materialized_partitions(key)
        keys = [k for k in self.graph.get(key).partitions_def.get_partition_keys() if k in done]
        return [k for k in keys if wanted is None or wanted == k or wanted in k.split("|")]

    def partitions_named(self, key: dg.AssetKey, wanted: str) -> list[str]:
        """The partition keys of an asset (materialized or not) that are `wanted` or have it as one
        dimension's value."""
        keys = self.graph.get(key).partitions_def.get_partition_keys()
        return [k for k in keys if wanted == k or wanted in k.split("|")]

    def upstream(self, key: dg.AssetKey, partition: str | None) -> dict[str, tuple[str, str | None]]:
        """{MLflow upstream tag name: (parent asset, parent partition)} as the step records them: the
        parent's name where it reads one partition (or an unpartitioned parent), `name/partition` for each
        partition where it reads several."""
        out: dict[str, tuple[str, str | None]] = {}
        for parent in sorted(self.graph.get(key).parent_keys, key=lambda k: k.to_user_string()):
            name = parent.to_user_string()
            if self.graph.get(parent).partitions_def is None:
                out[name] = (name, None)
                continue
            mapped = self.graph.get_parent_partition_keys_for_child(partition, parent, key)
            parts = sorted(mapped.partitions_subset.get_partition_keys())
            if partition is not None and len(parts) == 1:
                out[name] = (name, parts[0])
            else:
                out.update({f"{name}/{partition_tag(p)}": (name, p) for p in parts})
        return out

    def audit_step(self, step: StepAudit) -> None:
        node = self.graph.get(dg.AssetKey.from_user_string(step.asset))
        upstream = self.upstream(node.key, step.partition)
        record = latest_materialization(self.instance, node.key, step.partition)
        if record is None or record.asset_materialization is None:
            step.problems.append("never materialized in this Dagster instance")
            return
        tags = record.asset_materialization.tags or {}
        step.dagster_run_id = record.run_id
        step.materialized_at = dt.datetime.fromtimestamp(record.timestamp, dt.UTC).strftime(
            "%Y-%m-%d %H:%M:%S"
        )
        step.code_version = tags.get("dagster/code_version")
        step.data_version = data_version_of(record)
        step.mlflow_run_id = _metadata_value(record, "mlflow_run_id")
        if not step.data_version:
            step.problems.append("materialization has no data version")
            return
        if _metadata_value(record, "data_version") not in (None, step.data_version):
            step.problems.append("metadata data_version differs from the Dagster data version")
        if is_checkpoint(node.metadata):
            self.checkpoint_content(step)
        elif tables_of(node.metadata):
            self.table_content(step, node, record)
            self.checkpoint_links(step, node, upstream)
        self.mlflow_run(step, record, upstream)

    def table_content(self, step: StepAudit, node, record: dg.EventLogRecord) -> None:
        """Recompute the content of a table asset and compare it with the materialization."""
        tables = tables_of(node.metadata)
        missing = [t.name for t in tables if not table_exists(self.con, t.name)]
        if missing:
            step.problems.append(f"table {', '.join(missing)} is missing")
            return
        recorded_format = int(_metadata_value(record, "table_digest_format") or 1)
        if recorded_format != TABLE_DIGEST_FORMAT:
            step.problems.append(
                f"its table digests are in format {recorded_format}, from an older real-assets; this one "
                f"computes format {TABLE_DIGEST_FORMAT}, so the content cannot be compared: re-materialize it"
            )
            return
        where = partition_columns(node.partitions_def, step.partition, node.metadata)
        content = content_version(self.con, tables, where)
        step.recomputed_version, step.rows = content.version, content.rows
        recorded = _metadata_value(record, "table_digests") or {}
        if content.version != step.data_version:
            changed = [
                t.name for t in tables if t.versioned and recorded.get(t.name) != content.digests[t.name]
            ]
            step.problems.append(
                f"{', '.join(changed or [tables[0].name])} content hashes to {content.version}, "
                f"Dagster data version is {step.data_version}"
            )
        for table in tables:
            if not table.versioned and recorded.get(table.name) != content.digests[table.name]:
                step.problems.append(f"{table.name} differs from its digest recorded at materialization")
        if step.partition and step.rows == 0:
            step.problems.append(f"no rows for partition {step.partition} in {tables[0].name}")

    def checkpoint_content(self, step: StepAudit) -> None:
        problems, ckpt = checkpoint_problems(self.con, step.asset, step.partition, step.data_version)
        step.problems += problems
        if ckpt is None:
            return
        files_ok = not any(p.startswith("checkpoint file") for p in problems)
        step.recomputed_version = digest_manifest(ckpt.manifest)[:16] if files_ok else "files differ"
        step.rows = len(ckpt.manifest)
        for system, recorded, expected in (
            ("Dagster", ckpt.dagster_run_id, step.dagster_run_id),
            ("MLflow", ckpt.mlflow_run_id, step.mlflow_run_id),
        ):
            if recorded != expected:
                step.problems.append(f"models.checkpoints names {system} run {recorded}, not {expected}")

    def checkpoint_links(self, step: StepAudit, node, upstream: dict[str, tuple[str, str | None]]) -> None:
        """Rows that name a `checkpoint_version` name a recorded checkpoint of their upstream checkpoint."""
        table = tables_of(node.metadata)[0].name
        if not table_exists(self.con, table):
            return
        columns = {row[0] for row in self.con.execute(f"describe {table}").fetchall()}
        checkpoint_parents = {
            tag: ref
            for tag, ref in upstream.items()
            if is_checkpoint(self.graph.get(dg.AssetKey.from_user_string(ref[0])).metadata)
        }
        if "checkpoint_version" not in columns or not checkpoint_parents:
            return
        where = partition_columns(node.partitions_def, step.partition, node.metadata)
        condition = " and ".join(f"{column} = ?" for column in where) or "true"
        named = self.con.execute(
            f"select distinct checkpoint_version from {table} where {condition}", list(where.values())
        ).fetchall()
        if not named:
            step.problems.append(f"no {table} row")
        for tag, (parent, parent_partition) in checkpoint_parents.items():
            current = self.versions.get((parent, parent_partition))
            for (version,) in named:
                found = self.con.execute(
                    "select count(*) from models.checkpoints where asset = ? and partition = ? "
                    "and data_version = ?",
                    [parent, parent_partition or UNPARTITIONED, version],
                ).fetchone()[0]
                if not found:
                    step.problems.append(f"row names checkpoint {version}, which models.checkpoints lacks")
                elif current and version != current:
                    step.warnings.append(f"evaluated checkpoint {version}; {tag} is now {current}")

    def mlflow_run(
        self, step: StepAudit, record: dg.EventLogRecord, upstream: dict[str, tuple[str, str | None]]
    ) -> None:
        """The MLflow run exists, points back at this materialization, holds the reported numbers as its
        metrics and was built from the upstream versions that are current (else: stale)."""
        if not step.mlflow_run_id:
            step.problems.append("materialization metadata has no mlflow_run_id")
            return
        from mlflow.exceptions import MlflowException

        try:
            run = self.mlflow.get_run(step.mlflow_run_id)
        except MlflowException as e:
            step.problems.append(f"MLflow run {step.mlflow_run_id} not found: {str(e).splitlines()[0]}")
            return
        run_tags = run.data.tags
        expected = {
            "dagster.run_id": step.dagster_run_id,
            "dagster.data_version": step.data_version,
            "dagster.partition": step.partition or "",
            "dagster.asset_key": step.asset,
        }
        for tag, want in expected.items():
            if run_tags.get(tag) != want:
                step.problems.append(
                    f"MLflow run {step.mlflow_run_id[:8]} tag {tag}={run_tags.get(tag)!r}, expected {want!r}"
                )
        if run.info.status != "FINISHED":
            step.warnings.append(f"MLflow run {step.mlflow_run_id[:8]} is {run.info.status}")
        for name, value in record.asset_materialization.metadata.items():
            number = getattr(value, "value", value)
            if isinstance(number, bool) or not isinstance(number, int | float) or number != number:
                continue
            logged = run.data.metrics.get(name)
            if logged is None or not math.isclose(logged, number, rel_tol=1e-9, abs_tol=1e-12):
                step.problems.append(f"MLflow metric {name}={logged}, the materialization reports {number}")
        for tag, ref in sorted(upstream.items()):
            version = self.versions.get(ref)
            used = run_tags.get(f"dagster.upstream.{tag}")
            if version and used is None:
                step.problems.append(f"MLflow run lacks tag dagster.upstream.{tag}")
            elif version and used != version:
                step.warnings.append(f"stale: built from {tag} {used}, which is now {version}")
            elif not version and used is not None:
                step.problems.append(f"built from {tag} {used}, which this home has no materialization of")


def audit(defs: dg.Definitions, partition: str | None = None) -> AuditReport:
    """Audit the lineage of every asset of `defs` in the home its resources name (`definitions(locations)`:
    the same warehouse, MLflow store and folders the assets wrote): every materialized partition, or only
    the partitions named by `partition` (a partition key or one dimension's value, e.g. a strategy)."""
    home = Path(defs.resources["home"].path).resolve()
    report = AuditReport(str(home), [])
    warehouse: Warehouse = defs.resources["warehouse"]
    tracking_uri = defs.resources["tracking"].uri()
    dagster_home = home / "dagster"
    for path in [dagster_home] if warehouse.is_lake else [warehouse.database(), dagster_home]:
        if not path.exists():
            report.problems.append(f"{path} does not exist: is {home} a real-assets home?")
    if report.problems:
        return report
    from mlflow import MlflowClient

    graph = defs.resolve_asset_graph()
    partitioned = {k for k in graph.get_all_asset_keys() if graph.get(k).partitions_def is not None}
    with (
        readable_stores(home, tracking_uri) as (instance_folder, tracking_uri),
        dg.DagsterInstance.from_config(str(instance_folder)) as instance,
        warehouse.connect(read_only=True) as con,
    ):
        auditor = _Auditor(graph, instance, con, MlflowClient(tracking_uri=tracking_uri))
        audited: set[str] = set()
        reads_partitions: set[dg.AssetKey] = set()
        """Unpartitioned assets built from every partition of an upstream: skipped for one partition."""
        for key in graph.toposorted_asset_keys:
            if latest_materialization(instance, key) is None:
                # Never run here (a skipped step, the annotation loop in a demo home): outside this home's
                # lineage, said but not a problem. A step that recorded building on it is checked below.
                if graph.get(key).group_name not in LOOP_GROUPS:
                    report.warnings.append(f"{key.to_user_string()}: never materialized in this home")
                continue
            parents = graph.get(key).parent_keys
            if key not in partitioned and parents & (partitioned | reads_partitions):
                reads_partitions.add(key)
            if key in partitioned:
                keys = auditor.partitions(key, partition)
                if partition is not None and not auditor.partitions_named(key, partition):
                    continue  # partitioned otherwise (the budget points): not part of this partition
                if not keys:
                    what = f"partition {partition}" if partition else "partition"
                    report.problems.append(f"{key.to_user_string()}: no {what} was ever materialized")
                audited.update(keys)
            else:
                keys = [] if partition is not None and key in reads_partitions else [None]
            for part in keys:
                step = StepAudit(key.to_user_string(), part)
                auditor.audit_step(step)
                auditor.versions[(step.asset, part)] = step.data_version
                report.steps.append(step)
        report.partitions = sorted(audited)
    return report
