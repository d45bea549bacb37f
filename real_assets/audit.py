"""`real-assets audit`: walk every checkpoint and eval row back to the raw data and re-check every link.

For each step of the lineage (raw_responses -> response_embeddings -> response_similarity ->
pair_candidates -> selected_pairs[s] -> reference_policy, dpo_checkpoint[s] -> eval_scores[s] ->
strategy_comparison) the audit takes the latest Dagster materialization and

- recomputes the content version from the warehouse exactly as the asset does (`content_version`), or for
  checkpoints re-hashes every file against the `models.checkpoints` manifest (`checkpoint_problems`); the
  result must equal the Dagster data version (and, for checkpoints, the folder name);
- checks the MLflow run named in the metadata exists, is tagged with the materialization's Dagster run id,
  data version and partition;
- follows the links: the checkpoint row names the same Dagster and MLflow runs; an eval row names a
  recorded checkpoint of its strategy.

A mismatch or a missing link is a *problem* (exit 1, naming asset and partition). A step built from an
upstream version that is no longer the latest is *stale*: reported as a warning, since automation may
simply not have caught up yet.
"""

import argparse
import datetime as dt
import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb

from real_assets.core.checkpoints import UNPARTITIONED, verify
from real_assets.core.hashing import digest_manifest
from real_assets.core.selection import STRATEGIES
from real_assets.defs.common import data_version_of, latest_materialization, strategy_partitions
from real_assets.defs.versions import CONTENT_TABLES, content_version
from real_assets.resources import Warehouse, table_exists


def lineage_steps() -> list[tuple[str, bool, tuple[str, ...]]]:
    """(asset, partitioned by strategy, upstream assets) for every asset of the code location, upstream
    first, read from the asset graph itself."""
    from real_assets.definitions import defs  # the definitions import this module for its check

    graph = defs.resolve_asset_graph()
    return [
        (
            key.to_user_string(),
            graph.get(key).partitions_def is not None,
            tuple(sorted(p.to_user_string() for p in graph.get(key).parent_keys)),
        )
        for key in graph.toposorted_asset_keys
    ]


CHECKPOINT_ASSETS = ("reference_policy", "dpo_checkpoint")

CHECKPOINT_MATCHES_MANIFEST = "checkpoint_matches_manifest"


# ---------------------------------------------------------------------------------------------- content


@dataclass
class CheckpointRecord:
    path: Path
    manifest: dict[str, str]
    mlflow_run_id: str | None
    dagster_run_id: str | None


def checkpoint_problems(
    con: duckdb.DuckDBPyConnection, asset: str, partition: str | None, data_version: str
) -> tuple[list[str], CheckpointRecord | None]:
    """Problems of one recorded checkpoint: its `models.checkpoints` row must exist, its manifest must
    hash to the data version, the folder must be `<asset>/<partition>/<data_version>` and every file
    must match the manifest (`core.checkpoints.verify`)."""
    part = partition or UNPARTITIONED
    row = con.execute(
        "select path, manifest, mlflow_run_id, dagster_run_id from models.checkpoints "
        "where asset = ? and partition = ? and data_version = ?",
        [asset, part, data_version],
    ).fetchone()
    if row is None:
        return [f"no models.checkpoints row for data version {data_version}"], None
    record = CheckpointRecord(Path(row[0]), json.loads(row[1]), row[2], row[3])
    problems = []
    if digest_manifest(record.manifest)[:16] != data_version:
        problems.append(f"manifest hashes to {digest_manifest(record.manifest)[:16]}, not {data_version}")
    folder = record.path.parts[-3:]
    if tuple(folder) != (asset, part, data_version):
        problems.append(f"checkpoint folder {record.path} is not .../{asset}/{part}/{data_version}")
    problems += [f"checkpoint file {p}" for p in verify(record.path, record.manifest)]
    return problems, record


# ---------------------------------------------------------------------------------------------- report


@dataclass
class StepAudit:
    asset: str
    partition: str | None
    dagster_run_id: str | None = None
    materialized_at: str | None = None
    code_version: str | None = None
    data_version: str | None = None
    recomputed_version: str | None = None
    mlflow_run_id: str | None = None
    rows: int | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.asset}[{self.partition}]" if self.partition else self.asset

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class AuditReport:
    home: str
    strategies: list[str]
    steps: list[StepAudit] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Problems not tied to one step (no home, no checkpoint at all)."""

    @property
    def ok(self) -> bool:
        return not self.problems and all(s.ok for s in self.steps)

    def all_problems(self) -> list[str]:
        return self.problems + [f"{s.label}: {p}" for s in self.steps for p in s.problems]

    def all_warnings(self) -> list[str]:
        return [f"{s.label}: {w}" for s in self.steps for w in s.warnings]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "home": self.home,
            "strategies": self.strategies,
            "steps": [asdict(s) | {"ok": s.ok} for s in self.steps],
            "problems": self.all_problems(),
            "warnings": self.all_warnings(),
        }

    def format_table(self) -> str:
        header = (
            "step",
            "dagster run",
            "materialized (UTC)",
            "code",
            "data version",
            "recomputed",
            "mlflow run",
            "rows",
            "status",
        )
        body = [
            (
                s.label,
                (s.dagster_run_id or "-")[:8],
                s.materialized_at or "-",
                s.code_version or "-",
                s.data_version or "-",
                s.recomputed_version or "-",
                (s.mlflow_run_id or "-")[:8],
                "-" if s.rows is None else str(s.rows),
                "FAIL" if s.problems else ("stale" if s.warnings else "ok"),
            )
            for s in self.steps
        ]
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *body]
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        out = [f"audit of {self.home} (strategies: {', '.join(self.strategies) or 'none'})", "", *lines, ""]
        out += [f"PROBLEM  {p}" for p in self.all_problems()]
        out += [f"warning  {w}" for w in self.all_warnings()]
        out.append("audit passed" if self.ok else f"audit FAILED: {len(self.all_problems())} problem(s)")
        return "\n".join(out)


# ---------------------------------------------------------------------------------------------- walk


def _tracking_uri(home: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"


def _metadata_text(record: dg.EventLogRecord, key: str) -> str | None:
    value = record.asset_materialization.metadata.get(key)
    if value is None:
        return None
    return str(getattr(value, "value", value))


def _audit_step(
    step: StepAudit,
    instance: dg.DagsterInstance,
    con: duckdb.DuckDBPyConnection,
    mlflow_client,
    upstream: dict[str, str | None],
) -> None:
    record = latest_materialization(instance, dg.AssetKey(step.asset), step.partition)
    if record is None or record.asset_materialization is None:
        step.problems.append("never materialized in this Dagster instance")
        return
    tags = record.asset_materialization.tags or {}
    step.dagster_run_id = record.run_id
    step.materialized_at = dt.datetime.fromtimestamp(record.timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    step.code_version = tags.get("dagster/code_version")
    step.data_version = data_version_of(record)
    step.mlflow_run_id = _metadata_text(record, "mlflow_run_id")
    if not step.data_version:
        step.problems.append("materialization has no data version")
        return
    if _metadata_text(record, "data_version") not in (None, step.data_version):
        step.problems.append("metadata data_version differs from the Dagster data version")

    # Content: recompute from the warehouse or re-hash the checkpoint files.
    if step.asset in CHECKPOINT_ASSETS:
        problems, ckpt = checkpoint_problems(con, step.asset, step.partition, step.data_version)
        step.problems += problems
        if ckpt is not None:
            files_ok = not any(p.startswith("checkpoint file") for p in problems)
            step.recomputed_version = digest_manifest(ckpt.manifest)[:16] if files_ok else "files differ"
            step.rows = len(ckpt.manifest)
            if ckpt.dagster_run_id != step.dagster_run_id:
                step.problems.append(
                    f"models.checkpoints names Dagster run {ckpt.dagster_run_id}, not {step.dagster_run_id}"
                )
            if ckpt.mlflow_run_id != step.mlflow_run_id:
                step.problems.append(
                    f"models.checkpoints names MLflow run {ckpt.mlflow_run_id}, not {step.mlflow_run_id}"
                )
    elif not table_exists(con, table := CONTENT_TABLES[step.asset][0][0]):
        step.problems.append(f"table {table} is missing")
    else:
        step.recomputed_version, step.rows = content_version(con, step.asset, step.partition)
        if step.recomputed_version != step.data_version:
            step.problems.append(
                f"{table} content hashes to {step.recomputed_version}, "
                f"Dagster data version is {step.data_version}"
            )
        if step.partition and step.rows == 0:
            step.problems.append(f"no rows for partition {step.partition} in {table}")

    if step.asset == "eval_scores" and table_exists(con, "eval.eval_scores"):
        row = con.execute(
            "select checkpoint_version from eval.eval_scores where strategy = ?", [step.partition]
        ).fetchone()
        if row is None:
            step.problems.append("no eval.eval_scores row")
        else:
            found = con.execute(
                "select count(*) from models.checkpoints where asset = 'dpo_checkpoint' and "
                "partition = ? and data_version = ?",
                [step.partition, row[0]],
            ).fetchone()[0]
            if not found:
                step.problems.append(f"eval row names checkpoint {row[0]}, which models.checkpoints lacks")
            elif upstream.get("dpo_checkpoint") and row[0] != upstream["dpo_checkpoint"]:
                step.warnings.append(
                    f"evaluated checkpoint {row[0]}; dpo_checkpoint is now {upstream['dpo_checkpoint']}"
                )

    # MLflow: the run exists and points back at this materialization.
    if not step.mlflow_run_id:
        step.problems.append("materialization metadata has no mlflow_run_id")
        return
    from mlflow.exceptions import MlflowException

    try:
        run = mlflow_client.get_run(step.mlflow_run_id)
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
    for name, version in sorted(upstream.items()):
        used = run_tags.get(f"dagster.upstream.{name}")
        if version and used is None:
            step.problems.append(f"MLflow run lacks tag dagster.upstream.{name}")
        elif version and used != version:
            step.warnings.append(f"stale: built from {name} {used}, which is now {version}")


def audit(home: Path, strategy: str | None = None) -> AuditReport:
    """Audit the lineage of every (or one strategy's) checkpoint and eval row in a home."""
    home = Path(home).resolve()
    if strategy is not None and strategy not in STRATEGIES:
        report = AuditReport(str(home), [strategy])
        report.problems.append(f"unknown strategy {strategy!r}; strategies: {', '.join(STRATEGIES)}")
        return report
    report = AuditReport(str(home), [])
    # The warehouse the home's assets write: `$REAL_ASSETS_WAREHOUSE` (a DuckLake catalog) or its DuckDB file.
    warehouse = Warehouse() if Warehouse().is_lake else Warehouse(path=str(home / "warehouse.duckdb"))
    dagster_home = home / "dagster"
    for path in [dagster_home] if warehouse.is_lake else [warehouse.database(), dagster_home]:
        if not path.exists():
            report.problems.append(f"{path} does not exist: is {home} a real-assets home?")
    if report.problems:
        return report
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=_tracking_uri(home))
    with (
        dg.DagsterInstance.from_config(str(dagster_home)) as instance,
        warehouse.connect(read_only=True) as con,
    ):
        if strategy is not None:
            strategies = [strategy]
        else:
            strategies = [
                s
                for s in STRATEGIES
                if latest_materialization(instance, dg.AssetKey("dpo_checkpoint"), s) is not None
                or latest_materialization(instance, dg.AssetKey("eval_scores"), s) is not None
            ]
            if not strategies:
                report.problems.append("dpo_checkpoint: no partition was ever materialized")
        report.strategies = strategies
        versions: dict[tuple[str, str | None], str | None] = {}
        steps = lineage_steps()
        partitioned_assets = {asset for asset, partitioned, _ in steps if partitioned}
        for asset, partitioned, deps in steps:
            if asset == "strategy_comparison" and strategy is not None:
                continue  # built from every strategy's eval row
            for partition in strategies if partitioned else [None]:
                upstream: dict[str, str | None] = {}
                for dep in deps:
                    if dep in partitioned_assets and not partitioned:
                        # an unpartitioned step reads every partition: one MLflow tag each
                        upstream.update({f"{dep}/{p}": versions.get((dep, p)) for p in strategies})
                    else:
                        upstream[dep] = versions.get((dep, partition if dep in partitioned_assets else None))
                step = StepAudit(asset, partition)
                _audit_step(step, instance, con, client, upstream)
                versions[(asset, partition)] = step.data_version
                report.steps.append(step)
    return report


# ---------------------------------------------------------------------------------------------- check


def _checkpoint_matches_manifest(context: dg.AssetCheckExecutionContext, warehouse: Warehouse):
    partition = context.partition_key
    record = latest_materialization(context.instance, dg.AssetKey("dpo_checkpoint"), partition)
    version = data_version_of(record)
    if version is None:
        return dg.AssetCheckResult(passed=False, metadata={"problems": "never materialized"})
    with warehouse.connect(read_only=True) as con:
        problems, ckpt = checkpoint_problems(con, "dpo_checkpoint", partition, version)
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={
            "data_version": version,
            "files": len(ckpt.manifest) if ckpt else 0,
            "problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none"),
        },
    )


with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.PreviewWarning)  # a partitioned asset check is a preview API in 1.13
    checkpoint_matches_manifest = dg.asset_check(
        asset=dg.AssetKey("dpo_checkpoint"),
        name=CHECKPOINT_MATCHES_MANIFEST,
        partitions_def=strategy_partitions,
        blocking=True,
        description="Every file of the partition's latest checkpoint matches its models.checkpoints "
        "manifest, and the folder name, manifest digest and Dagster data version agree.",
    )(_checkpoint_matches_manifest)

audit_checks = [checkpoint_matches_manifest]


# ---------------------------------------------------------------------------------------------- CLI


def run_audit(args: argparse.Namespace) -> int:
    from real_assets.cli import prepare_home

    root = prepare_home(args.home)
    report = audit(root, args.strategy)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format_table())
    return 0 if report.ok else 1


def add_audit_parser(subparsers) -> argparse.ArgumentParser:
    """`real-assets audit [--home DIR] [--strategy S] [--json]`: exit 0 when every link holds, else 1."""
    p = subparsers.add_parser("audit", help="walk checkpoints and eval rows back to raw data, re-hash all")
    p.add_argument("--home", help="home folder (default $REAL_ASSETS_HOME or ./.real_assets)")
    p.add_argument("--strategy", choices=list(STRATEGIES), help="audit one strategy (default: all)")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.set_defaults(func=run_audit)
    return p
