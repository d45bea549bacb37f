"""The annotation lineage of a DPO checkpoint: from the checkpoint to the pairs it was trained on, the
annotations that labelled them (annotator, task, project, version), the generated responses, and the
policy version that generated them, with a problem for every link that does not hold."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import duckdb

from real_assets.core.checkpoints import UNPARTITIONED
from real_assets.resources import Warehouse, table_exists
from real_assets.settings import Locations

LOOP_TABLES = ("raw.annotations", "raw.generations")


@dataclass
class CheckpointLineage:
    """What one DPO checkpoint was trained on, back to annotators and the generating policy."""

    partition: str
    checkpoint_version: str | None = None
    strategy: str | None = None
    seed: int | None = None
    pairs: list[dict[str, Any]] = field(default_factory=list)
    """Per pair: ids, its annotations (annotator, task, project, version, choice) and the generations of
    its two responses (policy asset, partition, version, sampling seed)."""
    problems: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        annotations = [a for p in self.pairs for a in p["annotations"]]
        generated = [g for p in self.pairs for g in p["generations"]]
        return {
            "partition": self.partition,
            "checkpoint_version": self.checkpoint_version,
            "strategy": self.strategy,
            "seed": self.seed,
            "pairs": len(self.pairs),
            "annotated_pairs": sum(1 for p in self.pairs if p["annotations"]),
            "annotations": len(annotations),
            "annotators": sorted({a["annotator"] for a in annotations}),
            "tasks": len({(a["project_id"], a["task_id"]) for a in annotations}),
            "projects": sorted({a["project_id"] for a in annotations}),
            "generating_policies": sorted({f"{g['model_asset']}@{g['model_version']}" for g in generated}),
            "problems": self.problems,
        }


def checkpoint_lineage(con: duckdb.DuckDBPyConnection, partition: str) -> CheckpointLineage:
    """Walk the latest `dpo_checkpoint[partition]` recorded in models.checkpoints."""
    out = CheckpointLineage(partition)
    row = con.execute(
        "select data_version, training from models.checkpoints where asset = 'dpo_checkpoint' "
        "and partition = ? order by created_at desc limit 1",
        [partition],
    ).fetchone()
    if row is None:
        out.problems.append(f"no dpo_checkpoint[{partition}] in models.checkpoints")
        return out
    out.checkpoint_version, training = row[0], json.loads(row[1] or "{}")
    out.strategy, out.seed = training.get("strategy"), training.get("seed")
    pairs = con.execute(
        "select prompt_id, chosen_id, rejected_id from selection.selected_pairs "
        "where strategy = ? and seed = ? order by 1, 2, 3",
        [out.strategy, out.seed],
    ).fetchall()
    if not pairs:
        out.problems.append(
            f"selection.selected_pairs has no rows for the checkpoint's {out.strategy}/{out.seed}"
        )
    missing = [t for t in LOOP_TABLES if not table_exists(con, t)]
    if missing:
        out.problems.append(
            f"{', '.join(missing)} missing: these pairs did not come through the annotation loop"
        )
        return out
    annotations = con.execute("""
        select prompt_id, chosen_id, rejected_id, annotator, task_id, project_id, version, choice, origin,
               request_id, strategy, round
        from raw.annotations
        qualify row_number() over (partition by project_id, annotation_id order by version desc) = 1
        """).fetchall()
    by_pair: dict[tuple, list[dict]] = {}
    for a in annotations:
        key = (a[0], *sorted((a[1], a[2])))
        by_pair.setdefault(key, []).append(
            {
                "annotator": a[3],
                "task_id": a[4],
                "project_id": a[5],
                "version": a[6],
                "chosen_id": a[1],
                "origin": a[8],
                "request_id": a[9],
                "requested_by": a[10],
                "round": a[11],
            }
        )
    generations: dict[str, list[dict]] = {}
    for g in con.execute(
        "select response_id, model_asset, model_partition, model_version, seed, temperature, top_p "
        "from raw.generations"
    ).fetchall():
        generations.setdefault(g[0], []).append(
            dict(
                zip(
                    ("model_asset", "model_partition", "model_version", "seed", "temperature", "top_p"), g[1:]
                )
            )
        )
    recorded = set(con.execute("select asset, partition, data_version from models.checkpoints").fetchall())
    for prompt_id, chosen, rejected in pairs:
        found = by_pair.get((prompt_id, *sorted((chosen, rejected))), [])
        made = [g for r in (chosen, rejected) for g in generations.get(r, [])]
        if not found:
            out.problems.append(f"pair {chosen} > {rejected} of prompt {prompt_id} has no annotation")
        elif not any(a["chosen_id"] == chosen for a in found):
            out.problems.append(
                f"no annotation of prompt {prompt_id} chose {chosen}, yet it was trained as chosen"
            )
        for g in made:
            checkpoint = (g["model_asset"], g["model_partition"] or UNPARTITIONED, g["model_version"])
            if checkpoint not in recorded:
                out.problems.append(
                    f"a response of prompt {prompt_id} was generated by "
                    f"{g['model_asset']}@{g['model_version']}, which models.checkpoints does not record"
                )
        out.pairs.append(
            {
                "prompt_id": prompt_id,
                "chosen_id": chosen,
                "rejected_id": rejected,
                "annotations": found,
                "generations": made,
            }
        )
    return out


def annotation_lineage(locations: Locations, partition: str) -> CheckpointLineage:
    """`checkpoint_lineage` of one partition in the warehouse of a home's `Locations`."""
    warehouse = Warehouse(path=locations.warehouse, data_path=locations.warehouse_data)
    with warehouse.connect(read_only=True) as con:
        return checkpoint_lineage(con, partition)


def format_lineage(lineage: CheckpointLineage) -> str:
    """The walk as lines: the summary, then one line per pair and annotation."""
    summary = lineage.summary()
    lines = [f"annotation lineage of dpo_checkpoint[{lineage.partition}] {lineage.checkpoint_version}:"]
    lines += [
        f"  {k}: {v}" for k, v in summary.items() if k not in ("partition", "checkpoint_version", "problems")
    ]
    for pair in lineage.pairs:
        lines.append(f"  pair {pair['chosen_id']} > {pair['rejected_id']} (prompt {pair['prompt_id']})")
        for a in pair["annotations"]:
            lines.append(
                f"    annotation by {a['annotator']}: task {a['task_id']} of project {a['project_id']}, "
                f"version {a['version']}, requested by {a['requested_by']} in round {a['round']}"
            )
        for g in {json.dumps(g, sort_keys=True) for g in pair["generations"]}:
            lines.append(f"    generated by {json.loads(g)}")
    lines += [f"PROBLEM  {p}" for p in lineage.problems]
    lines.append(
        "lineage holds" if not lineage.problems else f"lineage BROKEN: {len(lineage.problems)} problem(s)"
    )
    return "\n".join(lines)


def lineage_json(lineage: CheckpointLineage) -> str:
    return json.dumps(asdict(lineage) | {"summary": lineage.summary()}, indent=2, default=str)
