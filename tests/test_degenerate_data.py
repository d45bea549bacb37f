"""Degenerate data is an error or an explicit warning, never NaN presented as a result: too few held-out
pairs, an empty split, one response per prompt and tied pairs each stop with their own cause and fix; the
judge recorded is the one used; a win rate made only of ties says so."""

import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from conftest import run_cli

from real_assets.core import evaluation
from real_assets.core.evaluation import EvalConfig
from real_assets.core.report import display_table, tie_note, with_tie_shares
from real_assets.defs.data_shape import no_pairs_reason
from real_assets.defs.evaluation import _scorer, held_out, win_rate_reading
from real_assets.resources import Warehouse

QUICK = [*("--seeds", "1", "--partition", "0|easy", "--model-backend", "fake")]


def _warehouse(tmp_path: Path, prompts: list[tuple[str, str, int]], responses, candidates=()) -> Warehouse:
    """A warehouse holding only what the data-shape checks read: raw.prompts (id, split, responses),
    raw.responses (prompt id, response id, gold) and selection.pair_candidates (prompt id, split)."""
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    with warehouse.connect() as con:
        con.execute(
            "create table raw.prompts (prompt_id varchar, prompt varchar, split varchar, source varchar, "
            "n_responses bigint, pairable boolean)"
        )
        for pid, split, n in prompts:
            con.execute(
                "insert into raw.prompts values (?, ?, ?, 'table', ?, ?)", [pid, pid, split, n, n >= 2]
            )
        con.execute(
            "create table raw.responses "
            "(prompt_id varchar, response_id varchar, response varchar, gold double)"
        )
        for pid, rid, gold in responses:
            con.execute("insert into raw.responses values (?, ?, ?, ?)", [pid, rid, rid, gold])
        con.execute(
            "create table selection.pair_candidates (prompt_id varchar, split varchar, chosen_id varchar, "
            "rejected_id varchar, gold_gap double)"
        )
        for row in candidates:
            con.execute("insert into selection.pair_candidates values (?, ?, ?, ?, ?)", list(row))
    return warehouse


def test_each_cause_of_no_pairs_has_its_own_message(tmp_path):
    every_prompt_held_out = _warehouse(tmp_path / "a", [("p1", "test", 3), ("p2", "test", 3)], [])
    assert "the train split is empty: all 2 prompts are in the held-out split" in no_pairs_reason(
        every_prompt_held_out, "train"
    )
    nothing_held_out = _warehouse(tmp_path / "b", [("p1", "train", 3)], [])
    reason = no_pairs_reason(nothing_held_out, "test")
    assert "held-out (test) split is empty" in reason and "test_fraction" in reason
    single = _warehouse(tmp_path / "c", [("p1", "train", 1), ("p2", "train", 1)], [])
    reason = no_pairs_reason(single, "train")
    assert "single response" in reason and "chosen and rejected" in reason
    tied = _warehouse(tmp_path / "d", [("p1", "train", 3)], [])
    reason = no_pairs_reason(tied, "train")
    assert "tied" in reason and "score" in reason


def test_the_judge_is_gold_only_when_held_out_responses_have_gold(tmp_path):
    """A table source without gold (here: nothing held out at all) never records judge = gold."""
    no_test = _warehouse(tmp_path / "a", [("p1", "train", 2)], [("p1", "r1", None), ("p1", "r2", None)])
    _, _, all_gold = held_out(no_test, EvalConfig())
    assert all_gold is False
    assert _scorer(EvalConfig(), all_gold) == ("none", None)
    gold = _warehouse(tmp_path / "b", [("p1", "test", 2)], [("p1", "r1", 1.0), ("p1", "r2", 0.0)])
    assert held_out(gold, EvalConfig())[2] is True


def test_a_win_rate_of_ties_only_reports_its_tie_share(monkeypatch):
    monkeypatch.setattr(evaluation, "generate", lambda model, tokenizer, prompts, *a, **k: list(prompts))
    scorer = lambda prompts, responses: np.ones(len(responses))  # noqa: E731 - the same score for both
    config = EvalConfig(samples_per_prompt=2)
    metrics, outcomes = evaluation._win_rate(
        None, None, None, [("a", "x"), ("b", "y")], scorer, config, None, 0, None
    )
    assert metrics["win_rate"] == 0.5 and metrics["win_ties"] == 1.0
    reading = win_rate_reading(metrics)
    assert "all 4 win-rate comparisons were ties (tie share 1.00)" in reading
    assert "did not tell" in reading
    assert win_rate_reading(metrics | {"win_ties": 0.75}) is None

    table = pd.DataFrame([{"strategy": "easy", "seeds": 1}])
    outcomes = outcomes.assign(strategy="easy", seed=0)
    table = with_tie_shares(table, outcomes)
    assert table["win_ties"].tolist() == [1.0]
    assert "win_rate of easy: every comparison was a tie" in tie_note(table)
    shown = display_table(
        table.assign(
            **{
                f"{m}{s}": 0.5
                for m in (
                    "pairs",
                    "mean_cosine",
                    "label_error_rate",
                    "preference_accuracy",
                    "reward_margin",
                    "win_rate",
                )
                for s in ("", "_low", "_high")
            }
        ),
        pd.DataFrame(columns=["strategy", "metric", "diff_vs_random", "diff_low", "diff_high", "p_value"]),
    )
    assert shown["win_rate"].iloc[0].endswith("(all ties)")


def _demo(capsys, home: Path, *args: str) -> tuple[int, str, str]:
    return run_cli(capsys, ["demo", "--home", str(home), *QUICK, *args])


def _table(path: Path, prompts: int, responses: int) -> Path:
    rows = [
        {
            "prompt": f"question number {i}: how do I do thing {i}?",
            "response": f"answer {j} to {i}",
            "score": j,
        }
        for i in range(prompts)
        for j in range(responses)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_the_budget_steps_before_any_eval_read_no_full_budget_and_no_python_variable(tmp_path):
    """Before eval_scores ever ran there is no `all` reference: the budget steps see none (and warn), and a
    warehouse query never resolves a missing table to a Python variable of its name (DuckDB's replacement
    scans are off: `eval_scores` is also the name of an asset object in the module that asks)."""
    from real_assets.defs.budget import _all_reference

    warehouse = Warehouse(path=str(tmp_path / "warehouse.duckdb"))
    with warehouse.connect():
        pass  # an empty warehouse: its schemas, no table
    rows, outcomes = _all_reference(warehouse)
    assert rows.empty and outcomes.empty and "checkpoint_version" in rows and "value" in outcomes
    responses = pd.DataFrame({"response": ["a"]})  # noqa: F841 - what a replacement scan would find
    with warehouse.connect(read_only=True) as con, pytest.raises(duckdb.CatalogException, match="responses"):
        con.execute("select * from responses")


@pytest.mark.slow
def test_two_prompts_fail_eval_instead_of_storing_nan(tmp_path, home_template, capsys):
    home = tmp_path / "home"
    code, out, err = _demo(capsys, home, "--n-prompts", "2")
    assert code == 1, out + err
    assert "error in eval_scores" in err and "min_eval_pairs = 10" in err
    assert "Traceback" not in err
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        stored = con.execute(
            "select count(*) from information_schema.tables where table_name = 'eval_scores'"
        ).fetchone()[0]
        assert not stored or not con.execute("select count(*) from eval.eval_scores").fetchone()[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("prompts", "responses", "extra", "step", "expected"),
    [
        (20, 1, [], "selected_pairs", "has a single response"),
        (
            20,
            3,
            ["--config", 'raw_responses={"test_fraction": 0.999}'],
            "reference_policy",
            "train split is empty",
        ),
    ],
    ids=["one response per prompt", "every prompt held out"],
)
def test_degenerate_tables_fail_with_their_own_cause(
    tmp_path, home_template, capsys, prompts, responses, extra, step, expected
):
    path = _table(tmp_path / "data.jsonl", prompts, responses)
    code, out, err = _demo(capsys, tmp_path / "home", "--source", "table", "--path", str(path), *extra)
    assert code == 1, out + err
    assert f"error in {step}" in err and expected in err, err
    assert "Traceback" not in err
