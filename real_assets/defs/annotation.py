"""Annotation domain: the requested pairs as Label Studio tasks (or its import file), the annotations read
back by a sensor into raw.annotations (bad ones to rejects, changes as new versions), and their agreement and
noise (docs/annotation.md). The labels reach the rest of the graph the way every source's do: `raw_responses`
ingests the generated candidates (source `generated`: no score) and the annotations (source `table`,
chosen/rejected rows), and `pair_candidates` directs each annotated pair by its comparisons.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pandas as pd

from real_assets.core.annotation.exchange import Request, read_export, task_payload
from real_assets.core.annotation.labelstudio import PAIRWISE_CONFIG, LabelStudioError
from real_assets.core.annotation.quality import ALL_ROUNDS
from real_assets.core.annotation.quality import annotation_quality as compute_quality
from real_assets.defs.candidates import REQUESTS_DDL, annotation_requests
from real_assets.defs.common import Step, step_asset
from real_assets.defs.label_noise import QUALITY
from real_assets.defs.versions import WarehouseTable, content_version, digest_metadata, table_metadata
from real_assets.resources import Home, Warehouse, replace_rows
from real_assets.resources.labelstudio import LabelStudio

TASKS = WarehouseTable("selection.annotation_tasks", ("destination", "request_id"))
ANNOTATIONS = WarehouseTable("raw.annotations", ("project_id", "annotation_id", "version"))
ANNOTATION_REJECTS = WarehouseTable(
    "raw.annotation_rejects", ("project_id", "annotation_id", "fingerprint", "reason"), versioned=False
)
LABEL_STUDIO, FILE = "label_studio", "file"

_EXCHANGE_DDL = """
create table if not exists selection.annotation_tasks (
    destination varchar not null, request_id varchar not null, project_id bigint not null, task_id bigint,
    server varchar, path varchar, exported_at timestamp not null
);
create table if not exists raw.annotations (
    project_id bigint not null, annotation_id bigint not null, version integer not null,
    fingerprint varchar not null, task_id bigint, request_id varchar not null, pair_id varchar not null,
    prompt_id varchar not null, strategy varchar not null, round bigint not null, annotator varchar not null,
    choice varchar not null, chosen_id varchar not null, rejected_id varchar not null, lead_time double,
    created_at varchar, updated_at varchar, origin varchar not null, run_id varchar not null,
    ingested_at timestamp not null
);
create table if not exists raw.annotation_rejects (
    origin varchar not null, project_id bigint not null, task_id bigint, annotation_id bigint,
    fingerprint varchar not null, field varchar not null, reason varchar not null, excerpt varchar,
    run_id varchar not null
);
"""


class TaskExportConfig(dg.Config):
    """Where the tasks of the annotation requests go: `label_studio` (the project named by the resource,
    created or reused, overlap set to `overlap`) or `file` (a Label Studio import file under
    <home>/annotation_tasks). Only requests not yet sent to that destination are sent."""

    destination: str = LABEL_STUDIO
    overlap: float = 0.2


def _requests(con) -> dict[str, Request]:
    rows = con.execute(
        "select request_id, pair_id, prompt_id, strategy, round, left_id, right_id "
        "from selection.annotation_requests"
    ).fetchall()
    return {r[0]: Request(*r) for r in rows}


def export_tasks(
    warehouse: Warehouse, label_studio: LabelStudio, config: TaskExportConfig, run_id: str, files: Path
) -> dict:
    """Send the requests not yet sent to the destination as tasks (an import file goes to `files`); record
    where each went."""
    if config.destination not in (LABEL_STUDIO, FILE):
        raise dg.Failure(f"destination must be {LABEL_STUDIO} or {FILE}, not {config.destination!r}")
    with warehouse.connect() as con:
        con.execute(REQUESTS_DDL + ";" + _EXCHANGE_DDL)
        pending = con.execute(
            """
            select q.request_id, q.pair_id, q.prompt_id, q.strategy, q.round, q.left_id, q.right_id,
                   p.prompt, l.response, r.response
            from selection.annotation_requests as q
            join raw.prompts as p using (prompt_id)
            join raw.responses as l on l.response_id = q.left_id
            join raw.responses as r on r.response_id = q.right_id
            where q.request_id not in (
                select request_id from selection.annotation_tasks where destination = ?)
            order by q.round, q.strategy, q.request_id""",
            [config.destination],
        ).fetchall()
    payloads = [task_payload(Request(*row[:7]), *row[7:]) for row in pending]
    now = datetime.now(UTC).replace(tzinfo=None)
    server, path, project_id, task_ids, created = None, None, 0, [None] * len(payloads), False
    if config.destination == LABEL_STUDIO:
        client = label_studio.client()
        server = client.url
        project_id, created = client.ensure_project(
            label_studio.project_title, PAIRWISE_CONFIG, config.overlap
        )
        task_ids = client.import_tasks(project_id, payloads)
    elif payloads:
        out = files / f"tasks__{run_id[:8]}.json"
        out.write_text(json.dumps(payloads, indent=1))
        path = str(out)
    rows = [
        {
            "destination": config.destination,
            "request_id": row[0],
            "project_id": project_id,
            "task_id": task_id,
            "server": server,
            "path": path,
            "exported_at": now,
        }
        for row, task_id in zip(pending, task_ids, strict=True)
    ]
    with warehouse.connect() as con:
        if rows:
            replace_rows(con, TASKS.name, pd.DataFrame(rows), list(TASKS.keys))
        content = content_version(con, [TASKS])
    return {
        "destination": config.destination,
        "tasks_sent": len(rows),
        "project_id": project_id,
        "project_created": created,
        **({"server": server} if server else {}),
        **({"tasks_file": path} if path else {}),
        **content.fields(),
    }


@step_asset(
    config=TaskExportConfig,
    kinds={"duckdb", "python"},
    deps=[annotation_requests],
    metadata=table_metadata(TASKS),
)
def annotation_tasks(
    step: Step, home: Home, warehouse: Warehouse, label_studio: LabelStudio
) -> dg.MaterializeResult:
    """The annotation requests as Label Studio tasks (selection.annotation_tasks): imported into the
    project (created with a pairwise-comparison config, or reused) or written as an import file. A task shows
    the prompt and the two answers in a seeded left/right order; never the similarity or the strategy."""
    try:
        files = home.folder("annotation_tasks")
        result = export_tasks(warehouse, label_studio, step.config, step.context.run_id, files)
    except LabelStudioError as e:
        raise dg.Failure(description=str(e), allow_retries=True) from None
    version, digests = result.pop("data_version"), result.pop("table_digests")
    return step.finish(version, {**result, **digest_metadata(digests), "dagster/row_count": result["rows"]})


class AnnotationImportConfig(dg.Config):
    """Where the annotations come from: `label_studio` (every project the tasks went to) or `file` (a Label
    Studio JSON export at `export_path`, e.g. dropped into the inbox)."""

    origin: str = LABEL_STUDIO
    export_path: str = ""


def read_label_studio_exports(warehouse: Warehouse, label_studio: LabelStudio) -> list[tuple[str, list, set]]:
    """(origin, export, task ids sent there) of every project the tasks went to."""
    with warehouse.connect(read_only=True) as con:
        sent = con.execute(
            "select project_id, task_id from selection.annotation_tasks where destination = ?", [LABEL_STUDIO]
        ).fetchall()
    client = label_studio.client()
    projects: dict[int, set] = {}
    for project_id, task_id in sent:
        projects.setdefault(int(project_id), set()).add(task_id)
    return [(f"{LABEL_STUDIO}:project/{p}", client.export(p), ids) for p, ids in sorted(projects.items())]


def import_annotations(
    warehouse: Warehouse, exports: list[tuple[str, list, set]], run_id: str
) -> tuple[dict, list[dict]]:
    """Store the new annotation versions and the rejects of these exports; returns the counts and the
    current label of every annotation (its latest accepted version) for the labels file."""
    with warehouse.connect() as con:
        con.execute(REQUESTS_DDL + ";" + _EXCHANGE_DDL)
        requests = _requests(con)
        stored = {
            (p, a): (v, f)
            for p, a, v, f in con.execute(
                "select project_id, annotation_id, version, fingerprint from raw.annotations "
                "qualify row_number() over (partition by project_id, annotation_id order by version desc) = 1"
            ).fetchall()
        }
        rejected = set(
            con.execute(
                "select project_id, annotation_id, fingerprint from raw.annotation_rejects"
            ).fetchall()
        )
    now = datetime.now(UTC).replace(tzinfo=None)
    versions, rejects, unchanged, read, missing = [], [], 0, 0, 0
    for origin, export, sent in exports:
        try:
            found = read_export(export, requests, stored, rejected, origin)
        except ValueError as e:
            raise dg.Failure(description=str(e), allow_retries=False) from None
        versions += found.versions
        rejects += found.rejects
        unchanged += found.unchanged
        read += found.annotations_read
        missing += len({t for t in sent if t is not None} - found.tasks)
    with warehouse.connect() as con:
        if versions:
            frame = pd.DataFrame(versions).assign(run_id=run_id, ingested_at=now)
            replace_rows(con, ANNOTATIONS.name, frame, list(ANNOTATIONS.keys))
        if rejects:
            frame = pd.DataFrame(rejects).assign(run_id=run_id)
            replace_rows(con, ANNOTATION_REJECTS.name, frame, list(ANNOTATION_REJECTS.keys))
        content = content_version(con, [ANNOTATIONS, ANNOTATION_REJECTS])
        labels = con.execute("""
            select p.prompt, c.response as chosen, r.response as rejected, a.project_id, a.annotation_id,
                   a.version, a.annotator
            from raw.annotations as a
            join raw.prompts as p using (prompt_id)
            join raw.responses as c on c.response_id = a.chosen_id
            join raw.responses as r on r.response_id = a.rejected_id
            qualify row_number() over (partition by a.project_id, a.annotation_id order by a.version desc) = 1
            order by a.project_id, a.annotation_id""").df()
        reasons = dict(
            con.execute(
                "select reason, count(*) from raw.annotation_rejects where run_id = ? group by 1", [run_id]
            ).fetchall()
        )
    counts = {
        "annotations_read": read,
        "new_versions": len(versions),
        "changed_annotations": sum(1 for v in versions if v["version"] > 1),
        "unchanged": unchanged,
        "new_rejects": len(rejects),
        "tasks_missing": missing,
        "rejects_by_reason": reasons,
        **content.fields(),
    }
    return counts, labels.to_dict("records")


def write_labels(labels: list[dict], version: str, folder: Path) -> Path:
    """The current labels as a `table` source file (prompt, chosen, rejected: one row per annotation, so two
    annotators who disagree are both there) in `folder`: the inbox, where the inbox sensor ingests it."""
    out = folder / f"table__annotations-{version}.jsonl"
    partial = out.with_suffix(".jsonl.tmp")
    partial.write_text("".join(json.dumps(row, default=str) + "\n" for row in labels))
    partial.replace(out)
    return out


@step_asset(
    config=AnnotationImportConfig,
    kinds={"duckdb", "python"},
    deps=[annotation_tasks],
    metadata=table_metadata(ANNOTATIONS, ANNOTATION_REJECTS),
)
def raw_annotations(
    step: Step, home: Home, warehouse: Warehouse, label_studio: LabelStudio
) -> dg.MaterializeResult:
    """Annotations from Label Studio (its API, or its JSON export as a file) in raw.annotations: pair id,
    choice, chosen/rejected ids, annotator, task and project, lead time, created/updated times. A changed
    annotation is stored again as its next version; skipped, empty, malformed, duplicate and unknown-pair
    annotations go to raw.annotation_rejects with their reason. The current labels are written as a `table`
    source file for `raw_responses` (the inbox), from which they reach pair_candidates like any source's."""
    config: AnnotationImportConfig = step.config
    try:
        if config.origin == LABEL_STUDIO:
            exports = read_label_studio_exports(warehouse, label_studio)
        elif config.origin == FILE:
            path = Path(config.export_path)
            try:
                export = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise dg.Failure(
                    description=f"cannot read the Label Studio export {path}: {e}", allow_retries=False
                ) from None
            exports = [(f"{FILE}:{path}", export, set())]
        else:
            raise dg.Failure(f"origin must be {LABEL_STUDIO} or {FILE}, not {config.origin!r}")
    except LabelStudioError as e:
        raise dg.Failure(description=str(e), allow_retries=True) from None
    result, labels = import_annotations(warehouse, exports, step.context.run_id)
    if result["tasks_missing"]:
        step.log.warning(
            f"{result['tasks_missing']} task(s) sent to Label Studio are gone from their project (deleted "
            "there): the annotations already stored for them are kept"
        )
    version, digests = result.pop("data_version"), result.pop("table_digests")
    labels_file = write_labels(labels, version, home.inbox)
    metadata = {
        **{k: v for k, v in result.items() if k != "rejects_by_reason"},
        **digest_metadata(digests),
        "rejects_by_reason": dg.MetadataValue.json(result["rejects_by_reason"]),
        "labels": len(labels),
        "labels_file": dg.MetadataValue.path(str(labels_file)),
        "ingest_config": dg.MetadataValue.json({"source": "table", "path": str(labels_file)}),
        "dagster/row_count": result["rows"],
    }
    return step.finish(version, metadata)


# ---------------------------------------------------------------------------------------- quality


def current_annotations(warehouse: Warehouse) -> pd.DataFrame:
    """The latest version of every stored annotation, with the gold gap of its choice where gold is known:
    the response's own gold (synthetic source), else the synthetic gold function for prompts of its topics."""
    from real_assets.core.synthetic import gold_quality, topic_of

    with warehouse.connect(read_only=True) as con:
        frame = con.execute("""
            select a.strategy, a.round, a.request_id, a.annotator, a.chosen_id, a.rejected_id, p.prompt,
                   c.response as chosen, r.response as rejected,
                   c.gold as chosen_gold, r.gold as rejected_gold
            from raw.annotations as a
            join raw.prompts as p using (prompt_id)
            join raw.responses as c on c.response_id = a.chosen_id
            join raw.responses as r on r.response_id = a.rejected_id
            qualify row_number() over (partition by a.project_id, a.annotation_id order by a.version desc) = 1
            order by a.strategy, a.round, a.request_id, a.annotator""").df()

    def gap(row) -> float:
        if pd.notna(row.chosen_gold) and pd.notna(row.rejected_gold):
            return float(row.chosen_gold - row.rejected_gold)
        if topic_of(row.prompt) is not None:
            return gold_quality(row.prompt, row.chosen) - gold_quality(row.prompt, row.rejected)
        return float("nan")

    return frame.assign(gold_gap=[gap(r) for r in frame.itertuples()] if len(frame) else [])


@step_asset(kinds={"duckdb", "python"}, deps=[raw_annotations], metadata=table_metadata(QUALITY))
def annotation_quality(step: Step, warehouse: Warehouse) -> dg.MaterializeResult:
    """Per strategy and round (round -1: every round): agreement between the two annotators of
    double-labelled tasks, the label-flip rate it implies, the true error rate against gold where gold
    exists, and the annotations of pairs that tie on gold (eval.annotation_quality). DPO's robust loss takes
    its label smoothing from here."""
    table = compute_quality(current_annotations(warehouse))
    with warehouse.connect() as con:
        con.execute("drop table if exists eval.annotation_quality")
        con.register("_quality", table)
        con.execute("create table eval.annotation_quality as select * from _quality")
        con.unregister("_quality")
        content = content_version(con, [QUALITY])
    pooled = table[table["round"] == ALL_ROUNDS]
    metrics = {}
    for row in pooled.itertuples():
        for name in ("agreement", "estimated_flip_rate", "true_error_rate"):
            value = getattr(row, name)
            if value is not None and not pd.isna(value):
                metrics[f"{row.strategy}/{name}"] = float(value)
        if row.annotations:
            metrics[f"{row.strategy}/gold_tie_share"] = row.gold_ties / row.annotations
    rows = [
        "| strategy | round | tasks | double | agreement | est. flip rate | true error | gold ties |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ] + [
        f"| {r.strategy} | {'all' if r.round == ALL_ROUNDS else r.round} | {r.tasks} | {r.double_labelled} | "
        f"{_fmt(r.agreement)} | {_fmt(r.estimated_flip_rate)} | {_fmt(r.true_error_rate)} | "
        f"{r.gold_ties}/{r.annotations} |"
        for r in table.itertuples()
    ]
    metadata = {
        **metrics,
        "quality": dg.MetadataValue.md("\n".join(rows)),
        **content.metadata(),
        "dagster/row_count": content.rows,
    }
    return step.finish(content.version, metadata)


def _fmt(value) -> str:
    return "" if value is None or pd.isna(value) else f"{value:.3f}"


LOOP_GROUPS = ("candidates", "annotation")
"""The groups of the annotation loop's assets, left out of the default demo."""


def loop_asset_names(defs: dg.Definitions) -> list[str]:
    """The assets of the annotation loop in a code location."""
    graph = defs.resolve_asset_graph()
    return sorted(
        k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).group_name in LOOP_GROUPS
    )
