"""Tasks out, annotations back, in Label Studio's formats (its import JSON and its JSON export), whether
they travel through its API or as files.

Every annotation read is accepted as a new version, recognised as already stored, or rejected with a reason
(`ANNOTATION_REASONS`). An annotation changed after it was stored comes back as its next version: nothing
stored is overwritten.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from real_assets.core.hashing import digest

SKIPPED = "skipped"
EMPTY_RESULT = "empty_result"
TWO_CHOICES = "two_choices"
MALFORMED = "malformed"
UNKNOWN_PAIR = "unknown_pair"
DUPLICATE = "duplicate"

ANNOTATION_REASONS = {
    SKIPPED: "the annotator skipped the task (was_cancelled)",
    EMPTY_RESULT: "an annotation with no result",
    TWO_CHOICES: "more than one pairwise choice in one annotation",
    MALFORMED: "a result that is not a pairwise choice of `left` or `right`, or an annotation without an id",
    UNKNOWN_PAIR: "a task whose request_id / pair_id is not an annotation request of this warehouse",
    DUPLICATE: "an annotation id twice in one export, or a second annotation of one task by one annotator",
}
CHOICES = ("left", "right")


@dataclass(frozen=True)
class Request:
    """What the warehouse knows of one request (one task)."""

    request_id: str
    pair_id: str
    prompt_id: str
    strategy: str
    round: int
    left_id: str
    right_id: str


def task_payload(request: Request, prompt: str, left: str, right: str) -> dict:
    """A Label Studio task: the prompt and the two answers in the request's left/right order shown to the
    annotator; the ids that bring the answer back in `data` (opaque hashes); strategy and round in `meta`,
    which the labeling view never shows (nor the similarity, which the task does not carry at all)."""
    return {
        "data": {
            "prompt": prompt,
            "left": left,
            "right": right,
            "pair_id": request.pair_id,
            "request_id": request.request_id,
        },
        "meta": {"strategy": request.strategy, "round": request.round, "request_id": request.request_id},
    }


@dataclass
class ReadAnnotations:
    """What one export held: new annotation versions, rejects, and how many were already stored."""

    versions: list[dict] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    unchanged: int = 0
    tasks: set[int] = field(default_factory=set)
    annotations_read: int = 0


def _annotator(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("id", value.get("email"))
    return f"label-studio-user:{value}"


def _choice(result: Any) -> tuple[str | None, str | None]:
    """(choice, reject reason) of an annotation's result list."""
    if not isinstance(result, list):
        return None, MALFORMED
    if not result:
        return None, EMPTY_RESULT
    pairwise = [r for r in result if isinstance(r, dict) and r.get("type") == "pairwise"]
    if len(pairwise) > 1:
        return None, TWO_CHOICES
    if len(pairwise) != 1 or len(result) != 1:
        return None, MALFORMED
    selected = (pairwise[0].get("value") or {}).get("selected")
    return (selected, None) if selected in CHOICES else (None, MALFORMED)


def read_export(
    tasks: Any,
    requests: Mapping[str, Request],
    stored: Mapping[tuple[int, int], tuple[int, str]],
    rejected: set[tuple[int, int, str]],
    origin: str,
) -> ReadAnnotations:
    """Read a Label Studio JSON export (a list of tasks with their `annotations`). `stored` maps (project,
    annotation id) to (latest version, its fingerprint) already in the warehouse; `rejected` holds the
    (project, annotation id, fingerprint) already rejected, so a reject is recorded once. Raises ValueError
    when the export is not a list of tasks."""
    if not isinstance(tasks, list):
        raise ValueError(
            f"{origin}: a Label Studio JSON export is a list of tasks, got {type(tasks).__name__}"
        )
    out = ReadAnnotations()
    seen: set[tuple[int, int]] = set()
    per_annotator: set[tuple[int, int, str]] = set()
    for number, task in enumerate(tasks, start=1):
        if not isinstance(task, dict):
            out.rejects.append(_reject(origin, 0, None, None, "task", MALFORMED, task, f"item {number}"))
            continue
        task_id = task.get("id")
        project = task.get("project") or 0
        out.tasks.add(task_id)
        data = task.get("data") if isinstance(task.get("data"), dict) else {}
        request = requests.get(str(data.get("request_id")))
        for annotation in task.get("annotations") or []:
            out.annotations_read += 1
            if not isinstance(annotation, dict) or not isinstance(annotation.get("id"), int):
                out.rejects.append(_reject(origin, project, task_id, None, "id", MALFORMED, annotation))
                continue
            project_id = int(annotation.get("project") or project or 0)
            key = (project_id, annotation["id"])
            fingerprint = digest(
                json.dumps(annotation.get("result"), sort_keys=True), str(annotation.get("updated_at"))
            )
            previous = stored.get(key)
            if previous is not None and previous[1] == fingerprint:
                out.unchanged += 1
                seen.add(key)
                per_annotator.add((project_id, task_id, _annotator(annotation.get("completed_by"))))
                continue
            reason, field_ = None, "result"
            choice = None
            if key in seen:
                reason, field_ = DUPLICATE, "id"
            elif annotation.get("was_cancelled"):
                reason, field_ = SKIPPED, "was_cancelled"
            elif request is None or str(data.get("pair_id")) != request.pair_id:
                reason, field_ = UNKNOWN_PAIR, "data.request_id"
            else:
                choice, reason = _choice(annotation.get("result"))
            annotator = _annotator(annotation.get("completed_by"))
            if reason is None and (project_id, task_id, annotator) in per_annotator:
                reason, field_ = DUPLICATE, "completed_by"
            seen.add(key)
            if reason is not None:
                if (project_id, annotation["id"], fingerprint) not in rejected:
                    out.rejects.append(
                        _reject(
                            origin,
                            project_id,
                            task_id,
                            annotation["id"],
                            field_,
                            reason,
                            annotation,
                            fingerprint,
                        )
                    )
                continue
            per_annotator.add((project_id, task_id, annotator))
            assert request is not None and choice is not None
            chosen, rejected_id = (
                (request.left_id, request.right_id)
                if choice == "left"
                else (request.right_id, request.left_id)
            )
            out.versions.append(
                {
                    "project_id": project_id,
                    "annotation_id": annotation["id"],
                    "version": (previous[0] + 1) if previous else 1,
                    "fingerprint": fingerprint,
                    "task_id": task_id,
                    "request_id": request.request_id,
                    "pair_id": request.pair_id,
                    "prompt_id": request.prompt_id,
                    "strategy": request.strategy,
                    "round": request.round,
                    "annotator": annotator,
                    "choice": choice,
                    "chosen_id": chosen,
                    "rejected_id": rejected_id,
                    "lead_time": _number(annotation.get("lead_time")),
                    "created_at": str(annotation.get("created_at") or ""),
                    "updated_at": str(annotation.get("updated_at") or ""),
                    "origin": origin,
                }
            )
    return out


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _reject(origin, project, task_id, annotation_id, field_, reason, raw, fingerprint="", where="") -> dict:
    text = json.dumps(raw, default=str)[:200] if raw is not None else ""
    return {
        "origin": origin,
        "project_id": int(project or 0),
        "task_id": task_id if isinstance(task_id, int) else None,
        "annotation_id": annotation_id,
        "fingerprint": fingerprint,
        "field": field_,
        "reason": reason,
        "excerpt": f"{where}: {text}" if where else text,
    }
