"""Simulated annotators for offline runs: Bradley-Terry on gold quality, seeded.

Annotator `i` shown a prompt with answers `left` and `right` picks left with probability
sigmoid((gold(left) - gold(right)) / temperature + bias_i), where bias_i ~ N(0, bias_sd) is its own lean
towards the left (or right) answer; with probability `lapse_rate` it answers at random instead (an error
rate independent of the pair). Gold is `core.synthetic.gold_quality` of the texts the annotator sees.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from real_assets.core.hashing import digest
from real_assets.core.synthetic import gold_quality


@dataclass(frozen=True)
class SimulatedAnnotators:
    """A pool of `n_annotators` simulated annotators (see the module docstring)."""

    n_annotators: int = 3
    temperature: float = 0.5
    lapse_rate: float = 0.1
    bias_sd: float = 0.3
    seed: int = 0

    def bias(self, annotator: int) -> float:
        rng = np.random.default_rng(int(digest("bias", str(self.seed), str(annotator))[:8], 16))
        return float(rng.normal(0.0, self.bias_sd)) if self.bias_sd > 0 else 0.0

    def p_left(self, annotator: int, prompt: str, left: str, right: str) -> float:
        """Probability that this annotator picks the left answer."""
        gap = (gold_quality(prompt, left) - gold_quality(prompt, right)) / self.temperature
        bt = 1.0 / (1.0 + math.exp(-(gap + self.bias(annotator))))
        return (1 - self.lapse_rate) * bt + self.lapse_rate * 0.5

    def choose(self, annotator: int, task_key: str, prompt: str, left: str, right: str) -> str:
        """`left` or `right`, the same for the same annotator and task on every run."""
        u = int(digest("answer", str(self.seed), str(annotator), task_key)[:12], 16) / float(16**12)
        return "left" if u < self.p_left(annotator, prompt, left, right) else "right"

    def annotators_for(self, task_key: str, count: int) -> list[int]:
        """`count` distinct annotators for a task, in a seeded order."""
        order = sorted(
            range(self.n_annotators), key=lambda a: digest("who", str(self.seed), task_key, str(a))
        )
        return order[: min(count, self.n_annotators)]


def pairwise_result(choice: str) -> list[dict]:
    """A Label Studio pairwise result, as its labeling view submits it."""
    return [
        {
            "from_name": "comparison",
            "to_name": "left,right",
            "type": "pairwise",
            "value": {"selected": choice},
        }
    ]


def annotate_import_file(
    tasks: list[dict], annotators: SimulatedAnnotators, labels_needed: Callable[[dict], int], project: int = 0
) -> list[dict]:
    """A Label Studio JSON export of these tasks (an import file's payloads) answered by the simulated
    annotators, `labels_needed(task)` of them per task: what a team without a server sends back. Task and
    annotation ids are hashes of the request and annotator, so the same answer exported twice is one
    annotation."""
    now = datetime.now(UTC).isoformat()
    out = []
    for task in tasks:
        data = task["data"]
        key = data["request_id"]
        annotations = []
        for annotator in annotators.annotators_for(key, labels_needed(task)):
            choice = annotators.choose(annotator, key, data["prompt"], data["left"], data["right"])
            annotations.append(
                {
                    "id": int(digest("annotation", key, str(annotator))[:12], 16),
                    "completed_by": annotator + 1,
                    "result": pairwise_result(choice),
                    "was_cancelled": False,
                    "lead_time": 5.0,
                    "created_at": now,
                    "updated_at": now,
                    "project": project,
                }
            )
        out.append(
            {
                "id": int(digest("task", key)[:12], 16),
                "project": project,
                "data": data,
                "meta": task.get("meta", {}),
                "annotations": annotations,
            }
        )
    return out


def answer_in_label_studio(
    browsers: list, project_id: int, annotators: SimulatedAnnotators, labels_needed=None
) -> int:
    """The simulated annotators answer the open tasks of a project through their browser sessions
    (`browser.LabelStudioBrowser`, one per annotator): each task gets the answers its `overlap` asks for
    (or `labels_needed(task)`), from annotators who have not answered it yet. Returns the answers given."""
    given = 0
    tasks = browsers[0].tasks(project_id)
    user_ids = [b.user_id() for b in browsers]
    for task in tasks:
        data = task["data"]
        key = str(data.get("request_id"))
        done = {a.get("completed_by") for a in task.get("annotations") or [] if isinstance(a, dict)}
        need = labels_needed(task) if labels_needed else int(task.get("overlap") or 1)
        for annotator in annotators.annotators_for(key, len(browsers))[:need]:
            if user_ids[annotator] in done or len(done) >= need:
                continue
            choice = annotators.choose(annotator, key, data["prompt"], data["left"], data["right"])
            browsers[annotator].submit(task["id"], pairwise_result(choice), lead_time=5.0)
            done.add(user_ids[annotator])
            given += 1
    return given
