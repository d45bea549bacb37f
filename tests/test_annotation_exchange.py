"""Tasks out and annotations back (Label Studio's formats), agreement and noise, simulated annotators, the
label-free requests, the HTTP client's errors, and the robust DPO loss settings: no server, no model."""

import http.server
import json
import socket
import threading

import numpy as np
import pandas as pd
import pytest

from real_assets.core.annotation.exchange import Request, read_export, task_payload
from real_assets.core.annotation.labelstudio import (
    LabelStudioAuthError,
    LabelStudioClient,
    LabelStudioUnreachable,
)
from real_assets.core.annotation.quality import ALL_ROUNDS, annotation_quality, flip_rate_from_agreement
from real_assets.core.annotation.requests import NeedsLabels, RequestConfig, choose_requests
from real_assets.core.annotation.simulated import SimulatedAnnotators, pairwise_result
from real_assets.core.train_config import DpoConfig
from real_assets.core.training import dpo_loss_args

REQUEST = Request("r1", "p1", "prompt1", "easy", 0, "left-id", "right-id")
REQUESTS = {"r1": REQUEST}


def task(annotations, request_id="r1", pair_id="p1", task_id=10):
    data = {"prompt": "q", "left": "a", "right": "b", "request_id": request_id, "pair_id": pair_id}
    return {"id": task_id, "project": 3, "data": data, "annotations": annotations}


def annotation(id_, choice="left", by=1, updated="2026-01-01T00:00:00Z", **extra):
    return {"id": id_, "completed_by": by, "result": pairwise_result(choice), "updated_at": updated, **extra}


def test_a_task_shows_the_texts_and_hides_strategy_and_similarity():
    payload = task_payload(REQUEST, "q", "a", "b")
    assert payload["data"] == {"prompt": "q", "left": "a", "right": "b", "pair_id": "p1", "request_id": "r1"}
    assert payload["meta"]["strategy"] == "easy" and "cosine" not in json.dumps(payload)


def test_annotations_are_accepted_or_rejected_with_a_reason():
    export = [
        task(
            [
                annotation(1, "left", by=1),
                annotation(2, "right", by=2),
                annotation(3, by=3, was_cancelled=True),
                {"id": 4, "completed_by": 4, "result": []},
                {"id": 5, "completed_by": 5, "result": pairwise_result("left") + pairwise_result("right")},
                {"id": 6, "completed_by": 6, "result": [{"type": "choices", "value": {"choices": ["x"]}}]},
                annotation(1, "left", by=1),  # the same id again
                annotation(7, "right", by=1),  # annotator 1 a second time on this task
                {"result": pairwise_result("left")},  # no id
            ]
        ),
        task([annotation(8)], request_id="nope", task_id=11),
        task([annotation(9)], pair_id="other", task_id=12),
        "not a task",
    ]
    read = read_export(export, REQUESTS, {}, set(), "file:x")
    assert [(v["annotation_id"], v["choice"], v["chosen_id"], v["rejected_id"]) for v in read.versions] == [
        (1, "left", "left-id", "right-id"),
        (2, "right", "right-id", "left-id"),
    ]
    assert all(v["version"] == 1 and v["task_id"] == 10 and v["project_id"] == 3 for v in read.versions)
    reasons = sorted((r["annotation_id"], r["reason"]) for r in read.rejects if r["annotation_id"])
    assert reasons == [
        (1, "duplicate"),
        (3, "skipped"),
        (4, "empty_result"),
        (5, "two_choices"),
        (6, "malformed"),
        (7, "duplicate"),
        (8, "unknown_pair"),
        (9, "unknown_pair"),
    ]
    assert sorted(r["reason"] for r in read.rejects if not r["annotation_id"]) == ["malformed", "malformed"]


def test_a_changed_annotation_comes_back_as_its_next_version_and_nothing_is_read_twice():
    first = read_export([task([annotation(1, "left")])], REQUESTS, {}, set(), "o")
    stored = {(3, 1): (1, first.versions[0]["fingerprint"])}
    again = read_export([task([annotation(1, "left")])], REQUESTS, stored, set(), "o")
    assert again.versions == [] and again.unchanged == 1
    changed = read_export(
        [task([annotation(1, "right", updated="2026-01-02")])], REQUESTS, stored, set(), "o"
    )
    assert [(v["version"], v["choice"]) for v in changed.versions] == [(2, "right")]
    skipped = read_export([task([annotation(2, by=2, was_cancelled=True)])], REQUESTS, {}, set(), "o")
    known = {(3, 2, skipped.rejects[0]["fingerprint"])}
    assert (
        read_export([task([annotation(2, by=2, was_cancelled=True)])], REQUESTS, {}, known, "o").rejects == []
    )


def test_an_export_that_is_not_a_list_is_an_error():
    with pytest.raises(ValueError, match="list of tasks"):
        read_export({"tasks": []}, REQUESTS, {}, set(), "file:x.json")


def test_flip_rate_from_agreement():
    assert flip_rate_from_agreement(1.0) == 0.0
    assert flip_rate_from_agreement(0.5) == 0.5 and flip_rate_from_agreement(0.3) == 0.5
    e = 0.1
    assert flip_rate_from_agreement((1 - e) ** 2 + e**2) == pytest.approx(e)
    assert flip_rate_from_agreement(None) is None


def test_quality_per_strategy_and_round():
    rows = [
        # easy round 0: two double-labelled tasks, one agreement; gold says the first choice is right
        ("easy", 0, "r1", "a", "x", 1.0),
        ("easy", 0, "r1", "b", "x", 1.0),
        ("easy", 0, "r2", "a", "y", -2.0),
        ("easy", 0, "r2", "b", "z", 2.0),
        ("easy", 1, "r3", "a", "w", float("nan")),
        ("hard", 0, "r4", "a", "v", 0.0),
    ]
    frame = pd.DataFrame(
        rows, columns=["strategy", "round", "request_id", "annotator", "chosen_id", "gold_gap"]
    )
    table = annotation_quality(frame).set_index(["strategy", "round"])
    easy0 = table.loc[("easy", 0)]
    assert (easy0.tasks, easy0.annotations, easy0.double_labelled, easy0.agreement) == (2, 4, 2, 0.5)
    assert easy0.estimated_flip_rate == 0.5 and easy0.true_error_rate == 0.25
    pooled = table.loc[("easy", ALL_ROUNDS)]
    assert (pooled.tasks, pooled.annotations, pooled.gold_known) == (3, 5, 4)
    hard = table.loc[("hard", 0)]
    assert pd.isna(hard.agreement) and pd.isna(hard.true_error_rate)  # one label, a gold tie
    assert (hard.gold_ties, easy0.gold_ties, pooled.gold_ties) == (1, 0, 0)


def test_simulated_annotators_follow_gold_with_their_bias_and_lapses():
    prompt = "How do I care for basil?"
    good = "Water in the morning and check the soil moisture. Use pots with drainage holes."
    bad = "That is a stupid question."
    exact = SimulatedAnnotators(temperature=0.01, lapse_rate=0.0, bias_sd=0.0)
    assert all(exact.choose(a, f"t{i}", prompt, good, bad) == "left" for a in range(3) for i in range(20))
    assert all(exact.choose(a, f"t{i}", prompt, bad, good) == "right" for a in range(3) for i in range(20))
    noisy = SimulatedAnnotators(temperature=0.01, lapse_rate=1.0, bias_sd=0.0)
    picks = [noisy.choose(0, f"t{i}", prompt, good, bad) for i in range(400)]
    assert 0.4 < picks.count("left") / 400 < 0.6
    assert picks == [noisy.choose(0, f"t{i}", prompt, good, bad) for i in range(400)]  # seeded
    biased = SimulatedAnnotators(bias_sd=2.0, seed=1)
    assert biased.bias(0) != biased.bias(1)
    assert SimulatedAnnotators().annotators_for("t", 2) == SimulatedAnnotators().annotators_for("t", 2)
    assert len(set(SimulatedAnnotators().annotators_for("t", 2))) == 2


def unlabelled(prompts=6, per_prompt=3):
    rows = []
    for p in range(prompts):
        ids = [f"p{p}r{i}" for i in range(per_prompt)]
        for i in range(per_prompt):
            for j in range(i + 1, per_prompt):
                rows.append((f"p{p}", ids[i], ids[j], (i + j) / 10))
    return pd.DataFrame(rows, columns=["prompt_id", "response_id_a", "response_id_b", "cosine"])


def test_requests_within_budget_one_pair_per_prompt_seeded_sides():
    pairs = unlabelled()
    config = RequestConfig(round=0, strategies=["easy"], budget=4, overlap=0.5, seed=0)
    first = choose_requests(pairs, "easy", config, set())
    assert len(first) == 4 and first["prompt_id"].is_unique
    assert (first["cosine"] == 0.1).all()  # easy: the least similar pair of each prompt (r0, r1)
    assert {tuple(sorted(x)) for x in zip(first["left_id"], first["right_id"], strict=True)} == {
        tuple(sorted(x)) for x in zip(first["response_id_a"], first["response_id_b"], strict=True)
    }
    second = choose_requests(pairs, "easy", RequestConfig(1, ["easy"], 4, 0.5, 0), set(first["prompt_id"]))
    assert len(second) == 2 and not set(second["prompt_id"]) & set(first["prompt_id"])
    hard = choose_requests(pairs, "hard", RequestConfig(0, ["hard"], 6, 0.5, 0), set())
    assert (hard["cosine"] == 0.3).all()
    assert first.equals(choose_requests(pairs, "easy", config, set()))
    sides = choose_requests(unlabelled(200, 2), "easy", RequestConfig(0, ["easy"], 200, 0.5, 0), set())
    assert 0.35 < (sides["left_id"] == sides["response_id_a"]).mean() < 0.65
    assert 0.35 < sides["double_label"].mean() < 0.65


def test_a_strategy_that_needs_labels_is_refused_saying_so():
    with pytest.raises(NeedsLabels, match="'all' needs labels"):
        RequestConfig(strategies=["easy", "all"]).check()
    with pytest.raises(ValueError, match="unknown strategy"):
        RequestConfig(strategies=["nope"]).check()
    with pytest.raises(ValueError, match="overlap"):
        RequestConfig(overlap=1.5).check()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_server_that_is_down_is_named_without_the_key():
    client = LabelStudioClient(f"http://127.0.0.1:{free_port()}", "secret-legacy-token", timeout_s=2)
    with pytest.raises(LabelStudioUnreachable, match="does not answer") as e:
        client.export(1)
    assert "secret" not in str(e.value) and "secret" not in repr(client)
    from real_assets.resources import LabelStudio

    assert "secret" not in repr(LabelStudio(url="http://x", api_key="secret-token"))


class _Refuse(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(401)
        self.end_headers()
        self.wfile.write(b'{"detail": "Invalid token."}')

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("key", ["a" * 40, "aaa.bbb.ccc"])
def test_a_server_that_answers_401_says_the_key_was_refused(key):
    server = http.server.HTTPServer(("127.0.0.1", 0), _Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = LabelStudioClient(f"http://127.0.0.1:{server.server_port}", key, timeout_s=5)
        with pytest.raises(LabelStudioAuthError, match="refused the credentials") as e:
            client.export(1)
        assert key not in str(e.value)
    finally:
        server.shutdown()
        server.server_close()


def test_dpo_loss_settings_reach_trl_spelled_its_way():
    assert dpo_loss_args(DpoConfig()) == {"loss_type": ["sigmoid"], "label_smoothing": 0.0}
    assert dpo_loss_args(DpoConfig(loss_type="robust", label_smoothing=0.1)) == {
        "loss_type": ["robust"],
        "label_smoothing": 0.1,
    }
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss_args(DpoConfig(loss_type="cdpo"))
    with pytest.raises(ValueError, match=r"\[0, 0\.5\)"):
        dpo_loss_args(DpoConfig(loss_type="robust", label_smoothing=0.5))
    assert np.isclose(DpoConfig().beta, 0.2)
