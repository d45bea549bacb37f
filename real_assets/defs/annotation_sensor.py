"""The Label Studio sensor: a `raw_annotations` run whenever the annotations in the projects the tasks went
to change (added, edited, removed), never a crash when the server is down or refuses the key."""

import dagster as dg

from real_assets.core.annotation.labelstudio import LabelStudioError
from real_assets.core.hashing import digest
from real_assets.defs.annotation import LABEL_STUDIO, TASKS, raw_annotations, read_label_studio_exports
from real_assets.resources import LabelStudio, Warehouse, table_exists

ANNOTATIONS_JOB = "ingest_annotations"
annotations_job = dg.define_asset_job(ANNOTATIONS_JOB, selection=[raw_annotations.key])


def export_fingerprint(exports: list[tuple[str, list, set]]) -> str:
    """What the sensor compares: every annotation's id and update time, and the tasks present."""
    parts = []
    for origin, export, _ in exports:
        for task in export if isinstance(export, list) else []:
            if not isinstance(task, dict):
                continue
            parts.append(f"{origin}/task/{task.get('id')}")
            for a in task.get("annotations") or []:
                if isinstance(a, dict):
                    parts.append(f"{origin}/{a.get('id')}/{a.get('updated_at')}/{a.get('was_cancelled')}")
    return digest(*sorted(parts))[:16]


@dg.sensor(
    name="label_studio_sensor",
    job_name=ANNOTATIONS_JOB,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="A raw_annotations run whenever annotations in the Label Studio projects are added, changed "
    "or removed.",
)
def label_studio_sensor(context: dg.SensorEvaluationContext, label_studio: LabelStudio, warehouse: Warehouse):
    """Polls every project the tasks went to; requests one raw_annotations run per new state of their
    annotations (the cursor and run key are the state's fingerprint). A server that is down or refuses the
    key is a skip with the reason, never a crash; nothing already stored is touched."""
    try:
        with warehouse.connect(read_only=True) as con:
            if not table_exists(con, TASKS.name):
                return dg.SkipReason("no tasks were sent to Label Studio yet (annotation_tasks)")
        exports = read_label_studio_exports(warehouse, label_studio)
    except FileNotFoundError as e:
        return dg.SkipReason(str(e))
    except LabelStudioError as e:
        return dg.SkipReason(str(e))
    if not exports:
        return dg.SkipReason("no tasks were sent to Label Studio yet (annotation_tasks)")
    state = export_fingerprint(exports)
    if state == context.cursor:
        return dg.SkipReason("no new or changed annotations")
    context.update_cursor(state)
    return dg.RunRequest(
        run_key=state, run_config={"ops": {"raw_annotations": {"config": {"origin": LABEL_STUDIO}}}}
    )


jobs = [annotations_job]
sensors = [label_studio_sensor]
