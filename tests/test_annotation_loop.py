"""`real-assets demo --loop` offline, through the file route (the tasks as a Label Studio import file, the
simulated annotators' JSON export back): agreement and flip rate per strategy, DPO with the robust loss at
the measured flip rate, and the lineage from a checkpoint back to annotators and the generating policy."""

import json

import pytest

from real_assets.annotation_audit import annotation_lineage
from real_assets.cli import main
from real_assets.resources import Warehouse
from real_assets.settings import Locations

pytestmark = pytest.mark.slow


def test_demo_loop_offline_with_the_robust_loss(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code = main(
        [
            "demo",
            "--loop",
            "--home",
            str(home),
            *("--n-prompts", "16", "--sft-epochs", "1", "--dpo-epochs", "1"),
            *("--strategies", "easy,hard"),
            "--config",
            'dpo_checkpoint={"loss_type": "robust", "batch_size": 4}',
            "--config",
            'eval_scores={"samples_per_prompt": 1, "max_new_tokens": 4}',
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "annotation quality" in out and "estimated_flip_rate" in out and "preference_accuracy" in out
    warehouse = Warehouse(path=str(home / "warehouse.duckdb"))
    with warehouse.connect(read_only=True) as con:
        quality = con.execute(
            "select strategy, double_labelled, estimated_flip_rate from eval.annotation_quality "
            "where round = -1 order by 1"
        ).fetchall()
        trained = con.execute(
            "select training from models.checkpoints where asset = 'dpo_checkpoint' order by partition"
        ).fetchall()
        requested = con.execute(
            "select count(*) from selection.selected_pairs as s where not exists (select 1 from "
            "selection.annotation_requests as q where q.strategy = s.strategy and q.prompt_id = s.prompt_id "
            "and least(s.chosen_id, s.rejected_id) = q.response_id_a "
            "and greatest(s.chosen_id, s.rejected_id) = q.response_id_b)"
        ).fetchone()[0]
    assert [q[0] for q in quality] == ["easy", "hard"] and all(q[1] > 0 for q in quality)
    flip = {q[0]: q[2] for q in quality}
    for (training,) in trained:
        record = json.loads(training)
        assert record["loss_type"] == "robust"
        assert record["label_smoothing"] == pytest.approx(min(flip[record["strategy"]], 0.49))
    assert requested == 0  # every trained pair was chosen before its label
    lineage = annotation_lineage(Locations.resolve(home), "0|easy")
    assert lineage.problems == [] and lineage.summary()["annotations"] > 0
    assert lineage.summary()["projects"] == [0]  # the file route: no Label Studio project
