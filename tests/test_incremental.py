"""Refreshes that cost what changed: tracked table digests, incremental SQL models, selection in SQL.

Every incremental path is checked against the full one: the same rows and the same digest."""

import csv
import hashlib
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from real_assets.core import table_digests
from real_assets.core.ranges import key_ranges
from real_assets.core.selection import SelectionConfig, select_pairs
from real_assets.core.sources import SourceSpec
from real_assets.core.sql_models import load_sql_models, run_sql_model
from real_assets.defs.features import EmbeddingConfig, embed_new_responses
from real_assets.defs.ingest import RAW_TABLES, ingest
from real_assets.defs.pair_scores import TRAIN_CANDIDATES
from real_assets.defs.selection import CHANGED_PROMPTS, SELECTED_PAIRS, select_in_warehouse
from real_assets.defs.train_candidates import read_train_candidates
from real_assets.defs.versions import content_version, tracked_content_version
from real_assets.resources import Compute, Warehouse, table_digest

MODELS = {m.name: m for m in load_sql_models()}


def unit_vector(text: str, dim: int = 8) -> np.ndarray:
    """A deterministic random unit vector per text: the tests here are not about the embedding model."""
    rng = np.random.default_rng(int(hashlib.sha256(text.encode()).hexdigest()[:16], 16))
    v = rng.standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


class RandomVectors(Compute):
    """`Compute` whose embedder gives `unit_vector` of each text, chunk by chunk as the real one."""

    def embed_chunks(self, chunks, model_id, trust_remote_code=False, progress=None):
        def vectors():
            for chunk in chunks:
                yield np.stack([unit_vector(text) for text in chunk])

        return vectors(), "random"


def more_rows(warehouse: Warehouse, path: Path, existing_prompts: int, new_prompts: int) -> Path:
    """A `table` CSV: two new responses to each of the first `existing_prompts` stored prompts, and
    `new_prompts` new prompts with three responses each."""
    with warehouse.connect(read_only=True) as con:
        prompts = [
            p
            for (p,) in con.execute(
                "select prompt from raw.prompts order by prompt_id limit ?", [existing_prompts]
            ).fetchall()
        ]
    rows = [
        {"prompt": p, "response": f"Another answer, number {k}, to: {p[:20]}", "score": float(k + 1)}
        for p in prompts
        for k in range(2)
    ]
    rows += [
        {
            "prompt": f"A brand new question {i}?",
            "response": f"Answer {k} to question {i}.",
            "score": float(k),
        }
        for i in range(new_prompts)
        for k in range(3)
    ]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["prompt", "response", "score"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def run_models(warehouse: Warehouse, code_version: str = "v1", full_refresh: bool = False) -> dict:
    runs = {}
    with warehouse.connect() as con:
        for name in ("response_similarity", "pair_candidates"):
            runs[name] = run_sql_model(con, MODELS[name], code_version, full_refresh)
    return runs


def rows_of(warehouse: Warehouse, table: str) -> pd.DataFrame:
    with warehouse.connect(read_only=True) as con:
        frame = con.execute(f"select * from {table}").df()
    return frame.sort_values(list(frame.columns[:4])).reset_index(drop=True)


@pytest.fixture
def built(tmp_path, home) -> Warehouse:
    """A warehouse with 30 synthetic prompts ingested, embedded and both SQL models built."""
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    ingest(warehouse, SourceSpec(source="synthetic", n_prompts=30))
    embed_new_responses(warehouse, RandomVectors(device="cpu"), EmbeddingConfig(model="random"))
    runs = run_models(warehouse)
    assert {r.mode for r in runs.values()} == {"full"}
    return warehouse


def test_tracked_digests_of_the_raw_and_embedding_tables_equal_a_full_recomputation(built, tmp_path):
    ingest(built, SourceSpec(source="table", path=str(more_rows(built, tmp_path / "more.csv", 3, 2))))
    report = embed_new_responses(built, RandomVectors(device="cpu"), EmbeddingConfig(model="random"))
    assert report["embedded_now"] == 3 * 2 + 2 * 3
    with built.connect() as con:
        for table in [t.name for t in RAW_TABLES if t.name != "raw.comparison_pairs"] + [
            "features.response_embeddings"
        ]:
            key = None if table in ("raw.rejects", "raw.ingestions") else "prompt_id"
            assert table_digests.is_tracked(con, table, key), table  # kept up to date, not recounted
            assert table_digests.tracked_digest(con, table) == table_digest(con, table), table
        assert tracked_content_version(con, RAW_TABLES) == content_version(con, RAW_TABLES)
        full, rows = table_digest(con, "features.response_embeddings")
        assert report["table_digests"] == {"features.response_embeddings": full} and report["rows"] == rows
        # Something else edits a tracked table: its row count no longer matches, so it is recounted.
        con.execute("delete from raw.rejects")
        con.execute("insert into raw.rejects select 's', 'f', 1, 'x', 'y', null, 'i'")
        con.execute("insert into raw.rejects select 's', 'f', 2, 'x', 'y', null, 'i'")
        assert tracked_content_version(con, RAW_TABLES) == content_version(con, RAW_TABLES)


def test_an_incremental_refresh_recomputes_only_the_changed_prompts_and_equals_a_full_rebuild(
    built, tmp_path
):
    ingest(built, SourceSpec(source="table", path=str(more_rows(built, tmp_path / "more.csv", 3, 2))))
    embed_new_responses(built, RandomVectors(device="cpu"), EmbeddingConfig(model="random"))
    with built.connect() as con:  # and one prompt loses a response (its embedding, so its pairs, go)
        gone = con.execute(
            "select prompt_id, min(response_id) from features.response_embeddings group by prompt_id "
            "having count(*) >= 4 order by prompt_id desc limit 1"
        ).fetchone()
        table_digests.apply_delta(
            con,
            "features.response_embeddings",
            "prompt_id",
            f"(select * from features.response_embeddings where response_id = '{gone[1]}')",
            -1,
        )
        con.execute("delete from features.response_embeddings where response_id = ?", [gone[1]])
    runs = run_models(built)
    similarity, candidates = runs["response_similarity"], runs["pair_candidates"]
    assert similarity.mode == candidates.mode == "incremental"
    assert (
        similarity.recomputed_keys == 3 + 2 + 1
    )  # prompts with new responses, new prompts, the one that lost one
    assert candidates.recomputed_keys == 3 + 2 + 1
    assert similarity.rows_added - similarity.rows_removed == similarity.rows - rows_before(similarity)
    incremental = {
        t: rows_of(built, t) for t in ("features.response_similarity", "selection.pair_candidates")
    }

    copy = Warehouse(path=str(tmp_path / "copy.duckdb"))
    shutil.copy(built.database(), copy.database())
    full = run_models(copy, full_refresh=True)
    for name, table in (
        ("response_similarity", "features.response_similarity"),
        ("pair_candidates", "selection.pair_candidates"),
    ):
        assert full[name].mode == "full"
        pd.testing.assert_frame_equal(incremental[table], rows_of(copy, table))
        assert runs[name].digest == full[name].digest  # the digest kept from rows removed and added
        with built.connect(read_only=True) as con:
            assert table_digest(con, table) == (runs[name].digest, runs[name].rows)  # = a full recomputation

    again = run_models(built)
    assert {r.recomputed_keys for r in again.values()} == {0}
    assert again["pair_candidates"].digest == runs["pair_candidates"].digest


def rows_before(run) -> int:
    return run.rows - run.rows_added + run.rows_removed


def test_a_new_code_version_a_request_or_an_outside_edit_rebuilds_in_full(built):
    assert run_models(built, code_version="v2")["response_similarity"].reason.startswith(
        "code or config changed"
    )
    assert (
        run_models(built, code_version="v2", full_refresh=True)["pair_candidates"].reason
        == "full refresh requested"
    )
    assert run_models(built, code_version="v2")["pair_candidates"].mode == "incremental"
    with built.connect() as con:
        con.execute(
            "delete from selection.pair_candidates "
            "where prompt_id = (select min(prompt_id) from selection.pair_candidates)"
        )
    run = run_models(built, code_version="v2")["pair_candidates"]
    assert (run.mode, run.reason) == ("full", "selection.pair_candidates changed outside its runs")


def expected_selection(warehouse: Warehouse, strategy: str, config: SelectionConfig, seed: int) -> list:
    """The DataFrame path over every train candidate: what the warehouse partition must hold."""
    with warehouse.connect(read_only=True) as con:
        similarity = con.execute("select * from features.response_similarity").df()
    candidates, _ = read_train_candidates(warehouse, with_embeddings=False)
    picked = select_pairs(candidates, strategy, config, seed, similarity=similarity)
    return list(picked[["prompt_id", "chosen_id", "rejected_id"]].itertuples(index=False, name=None))


def stored_selection(warehouse: Warehouse, strategy: str, seed: int) -> list:
    with warehouse.connect(read_only=True) as con:
        return con.execute(
            "select prompt_id, chosen_id, rejected_id from selection.selected_pairs "
            "where strategy = ? and seed = ? order by all",
            [strategy, seed],
        ).fetchall()


@pytest.mark.parametrize("strategy", ["easy", "hard", "random", "all", "aepo"])
def test_selection_in_the_warehouse_equals_the_dataframe_path_and_refreshes_per_prompt(
    built, strategy, tmp_path
):
    config = SelectionConfig()

    def counted_in_full():  # the partition's content from all of its rows
        with built.connect(read_only=True) as con:
            return content_version(con, [SELECTED_PAIRS], {"strategy": strategy, "seed": "3"})

    content, summary = select_in_warehouse(built, strategy, 3, config, "v1")
    assert content == counted_in_full()
    expected = expected_selection(built, strategy, config, 3)
    assert stored_selection(built, strategy, 3) == expected
    with built.connect(read_only=True) as con:
        train_prompts = con.execute(f"select count(distinct prompt_id) from {TRAIN_CANDIDATES}").fetchone()[0]
    assert content.rows == summary["pairs"] == len(expected)
    assert summary["prompts"] == train_prompts and summary["mode"] == "per_prompt"
    assert (summary["refresh"], summary["refresh_reason"]) == ("full", "first run")

    ingest(built, SourceSpec(source="table", path=str(more_rows(built, tmp_path / "more.csv", 3, 2))))
    embed_new_responses(built, RandomVectors(device="cpu"), EmbeddingConfig(model="random"))
    run_models(built)
    content, summary = select_in_warehouse(built, strategy, 3, config, "v1")
    assert (summary["refresh"], summary["prompts_recomputed"]) == ("incremental", 3 + 2)
    assert stored_selection(built, strategy, 3) == expected_selection(built, strategy, config, 3)
    assert content == counted_in_full()  # kept from the rows removed and added
    again_content, again = select_in_warehouse(built, strategy, 3, config, "v1")
    assert (again["refresh"], again["prompts_recomputed"]) == ("incremental", 0)
    assert again_content == content
    _, other = select_in_warehouse(built, strategy, 3, SelectionConfig(aepo_lambda=0.5), "v2")
    assert other["refresh_reason"].startswith("code or config changed")


def test_the_tracked_digests_and_an_incremental_refresh_are_exact_on_ducklake(tmp_path, home):
    """DuckLake (here with a DuckDB file as its catalog) keeps HUGEINT columns to a double's precision:
    the tracked sums must survive it, and the incremental path must equal the full one there too."""
    from postgres_server import lake_unavailable

    if lake_unavailable():
        pytest.skip(lake_unavailable())
    lake = Warehouse(path=f"ducklake:{tmp_path / 'meta.ducklake'}", data_path=str(tmp_path / "data"))
    ingest(lake, SourceSpec(source="synthetic", n_prompts=20))
    embed_new_responses(lake, RandomVectors(device="cpu"), EmbeddingConfig(model="random"))
    run_models(lake)
    config, strategies = SelectionConfig(), ("easy", "aepo")
    for strategy in strategies:
        select_in_warehouse(lake, strategy, 0, config, "v1")
    ingest(lake, SourceSpec(source="table", path=str(more_rows(lake, tmp_path / "more.csv", 2, 1))))
    embed_new_responses(lake, RandomVectors(device="cpu"), EmbeddingConfig(model="random"))
    runs = run_models(lake)
    assert {r.mode for r in runs.values()} == {"incremental"}
    for strategy in strategies:  # the second partition reads the copy the first one made
        _, summary = select_in_warehouse(lake, strategy, 0, config, "v1")
        assert (summary["refresh"], summary["prompts_recomputed"]) == ("incremental", 3)
        assert stored_selection(lake, strategy, 0) == expected_selection(lake, strategy, config, 0)
    with lake.connect() as con:
        assert tracked_content_version(con, RAW_TABLES) == content_version(con, RAW_TABLES)
        for name, table in (
            ("response_similarity", "features.response_similarity"),
            ("pair_candidates", "selection.pair_candidates"),
        ):
            assert table_digest(con, table) == (runs[name].digest, runs[name].rows), name


def test_labelled_comparisons_refresh_incrementally_as_a_full_rebuild_would(tmp_path, home):
    """HH-RLHF rows: only the compared pairs of a prompt are candidates (raw.comparisons). A new comparison
    for a stored prompt and a new prompt refresh those two prompts alone, and equal a full rebuild."""
    import json

    def rows(path: Path, pairs) -> Path:
        def row(question, chosen, rejected):
            prompt = f"\n\nHuman: {question}\n\nAssistant:"
            return {"chosen": f"{prompt} {chosen}", "rejected": f"{prompt} {rejected}"}

        path.write_text("".join(json.dumps(row(*p)) + "\n" for p in pairs))
        return path

    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    first = [(f"Question {i}?", f"Good answer {i}.", f"Bad answer {i}.") for i in range(6)]
    ingest(warehouse, SourceSpec(source="hh_rlhf", path=str(rows(tmp_path / "a.jsonl", first))))
    embed_new_responses(warehouse, RandomVectors(device="cpu"), EmbeddingConfig(model="random"))
    run_models(warehouse)
    later = [("Question 2?", "Another good answer.", "Another bad answer."), ("Question 9?", "Yes.", "No.")]
    ingest(warehouse, SourceSpec(source="hh_rlhf", path=str(rows(tmp_path / "b.jsonl", later))))
    embed_new_responses(warehouse, RandomVectors(device="cpu"), EmbeddingConfig(model="random"))
    runs = run_models(warehouse)
    assert runs["pair_candidates"].mode == "incremental" and runs["pair_candidates"].recomputed_keys == 2
    incremental = rows_of(warehouse, "selection.pair_candidates")
    assert len(incremental) == 6 + 2 and incremental["labelled_pair"].all()
    copy = Warehouse(path=str(tmp_path / "copy.duckdb"))
    shutil.copy(warehouse.database(), copy.database())
    full = run_models(copy, full_refresh=True)
    pd.testing.assert_frame_equal(incremental, rows_of(copy, "selection.pair_candidates"))
    assert full["pair_candidates"].digest == runs["pair_candidates"].digest


def test_key_ranges_cover_every_row_in_whole_keys_of_about_max_rows():
    con = duckdb.connect()
    keys = ["a"] * 3 + ["b"] + ["c"] * 5 + ["d"] * 2 + ["e"]
    con.execute("create table t as select unnest(?::varchar[]) as prompt_id", [keys])
    # a range ends at the key that reaches 4 rows: a+b (4), c alone (5: one key larger than the limit), d+e
    assert key_ranges(con, "select * from t", [], 4) == [("", "b"), ("b", "c"), ("c", "e")]
    assert key_ranges(con, "select * from t where prompt_id > ?", ["c"], 100) == [("", "e")]
    assert key_ranges(con, "select * from t", [], 1) == [
        ("", "a"),
        ("a", "b"),
        ("b", "c"),
        ("c", "d"),
        ("d", "e"),
    ]
    assert key_ranges(con, "select * from t where false", [], 4) == []


def hashed_scores(_warehouse, pairs, _version, _compute, _report) -> pd.DataFrame:
    """A stand-in for the reference model (`pair_scores._reference_scores`): scores from the pair ids."""
    seed = pd.util.hash_pandas_object(pairs[["chosen_id", "rejected_id"]], index=False).to_numpy()
    return pd.DataFrame({"ref_margin": seed % 1000 / 1000.0, "ches": seed % 997 / 997.0})


def test_centroid_and_the_reference_scores_read_in_small_ranges_give_what_one_read_gives(built, monkeypatch):
    """`centroid` (per prompt) and the reference scores of `margin`/`ches` read the candidates a range of
    whole prompts at a time: many small ranges give the same picks and scores as one range of all."""
    from real_assets.defs import pair_scores, train_candidates

    monkeypatch.setattr(pair_scores, "_reference_scores", hashed_scores)
    config, lines = SelectionConfig(), []

    def read_both(version: str):
        picks = train_candidates.centroid_picks(built, config, 1, "per_prompt", None, lines.append)
        scored = pair_scores.score_pending_pairs(built, version, None, None)
        with built.connect(read_only=True) as con:
            table = con.execute(
                "select prompt_id, chosen_id, rejected_id, ref_margin, ches from "
                "selection.reference_pair_scores order by all"
            ).fetchall()
        return picks.sort_values(list(picks.columns)).reset_index(drop=True), scored, table

    one_range, scored, table = read_both("v1")
    assert len(lines) == 1 and scored == len(table) > 0
    monkeypatch.setattr(train_candidates, "CENTROID_PAIRS_PER_RANGE", 7)
    monkeypatch.setattr(pair_scores, "SCORE_PAIRS_PER_RANGE", 7)
    small_ranges, scored_again, table_again = read_both("v2")  # a new version: every pair scored again
    assert len(lines) > 5 and scored_again == scored
    pd.testing.assert_frame_equal(small_ranges, one_range)
    assert table_again == table


def test_builds_and_refreshes_in_small_key_ranges_equal_one_statement_over_everything(
    built, tmp_path, monkeypatch
):
    """A full build and a refresh read their upstream rows one range of prompts at a time (memory bounded
    by the range, neither by the corpus nor by the batch): ranges of 7 upstream rows give the same rows and
    digests as one range of everything."""
    from real_assets.core import sql_models

    copy = Warehouse(path=str(tmp_path / "copy.duckdb"))
    shutil.copy(built.database(), copy.database())
    ranges_per_statement: list[int] = []

    def counted_ranges(*args):
        ranges = key_ranges(*args)
        ranges_per_statement.append(len(ranges))
        return ranges

    monkeypatch.setattr(sql_models, "key_ranges", counted_ranges)

    def both_ways(step) -> None:
        monkeypatch.setattr(sql_models, "MAX_ROWS_PER_RANGE", 200_000)
        one = step(built)
        monkeypatch.setattr(sql_models, "MAX_ROWS_PER_RANGE", 7)
        ranges_per_statement.clear()
        ranged = step(copy)
        assert min(ranges_per_statement) > 3  # each model read its rows in many ranges
        for name, run in ranged.items():
            assert run == one[name] and run.rows > 0, name
            assert rows_of(copy, MODELS[name].table).equals(rows_of(built, MODELS[name].table)), name

    with built.connect(read_only=True) as con:
        assert len(key_ranges(con, "select prompt_id from features.response_embeddings", [], 7)) > 20
    both_ways(lambda warehouse: run_models(warehouse, full_refresh=True))
    # new responses to 12 prompts and 6 new prompts: the refresh's changed prompts span many ranges
    csv_path = more_rows(built, tmp_path / "more.csv", 12, 6)
    for warehouse in (built, copy):
        ingest(warehouse, SourceSpec(source="table", path=str(csv_path)))
        embed_new_responses(warehouse, RandomVectors(device="cpu"), EmbeddingConfig(model="random"))
    both_ways(run_models)


def test_the_rows_per_range_follow_the_duckdb_memory_limit():
    from real_assets.core.sql_models import MAX_ROWS_PER_RANGE, RANGE_BYTES_PER_ROW, rows_per_range

    for limit, rows in (("128MB", int(122.0 * 2**20) // RANGE_BYTES_PER_ROW), ("64GB", MAX_ROWS_PER_RANGE)):
        with duckdb.connect(config={"memory_limit": limit}) as con:
            assert rows_per_range(con) == rows, limit
    with duckdb.connect(config={"memory_limit": "1MB"}) as con:
        assert rows_per_range(con) == 1_000  # a range of whole prompts still needs some rows


def test_reference_scores_after_new_rows_look_only_at_the_changed_prompts(built, tmp_path, monkeypatch):
    """After a complete pass, `score_pending_pairs` looks only at the prompts whose candidates changed:
    it scores exactly the pairs a scan of every pair would find unscored, and then none."""
    from real_assets.defs import pair_scores

    asked: list[set[str]] = []

    def scores(_warehouse, pairs, _version, _compute, _report):  # a stand-in for the reference model
        asked.append(set(pairs["prompt_id"]))
        return pd.DataFrame({"ref_margin": [0.5] * len(pairs), "ches": [0.25] * len(pairs)})

    monkeypatch.setattr(pair_scores, "_reference_scores", scores)
    first = pair_scores.score_pending_pairs(built, "v1", None, None)
    with built.connect(read_only=True) as con:
        assert first == con.execute(f"select count(*) from {TRAIN_CANDIDATES}").fetchone()[0]
    ingest(built, SourceSpec(source="table", path=str(more_rows(built, tmp_path / "more.csv", 3, 2))))
    embed_new_responses(built, RandomVectors(device="cpu"), EmbeddingConfig(model="random"))
    run_models(built)
    with built.connect(read_only=True) as con:
        unscored = con.execute(
            f"select prompt_id from {TRAIN_CANDIDATES} as k anti join selection.reference_pair_scores as s "
            "using (prompt_id, chosen_id, rejected_id)"
        ).fetchall()
    asked.clear()
    assert pair_scores.score_pending_pairs(built, "v1", None, None) == len(unscored) > 0
    assert set().union(*asked) == {prompt for (prompt,) in unscored}
    asked.clear()
    assert pair_scores.score_pending_pairs(built, "v1", None, None) == 0 and asked == []


def test_partitions_of_a_refresh_share_one_copy_of_the_changed_rows_and_pick_as_a_full_read(built, tmp_path):
    config, embed = SelectionConfig(), EmbeddingConfig(model="random")

    def new_rows(name: str, existing: int, new: int) -> None:
        ingest(built, SourceSpec(source="table", path=str(more_rows(built, tmp_path / name, existing, new))))
        embed_new_responses(built, RandomVectors(device="cpu"), embed)
        run_models(built)

    def copied_prompts() -> int:
        with built.connect(read_only=True) as con:
            return con.execute(f"select count(*) from {CHANGED_PROMPTS}").fetchone()[0]

    for strategy in ("easy", "aepo"):
        select_in_warehouse(built, strategy, 0, config, "v1")
    new_rows("first.csv", 3, 2)
    _, easy = select_in_warehouse(built, "easy", 0, config, "v1")  # copies the first batch's prompts
    assert copied_prompts() == easy["prompts_recomputed"] == 5
    new_rows("second.csv", 8, 0)
    # aepo missed the first refresh: its prompts are both batches', which the copy does not cover
    _, aepo = select_in_warehouse(built, "aepo", 0, config, "v1")
    both = aepo["prompts_recomputed"]
    assert copied_prompts() == both > 5
    # easy's prompts (the second batch's) are in the copy, which it reads as it is
    _, easy = select_in_warehouse(built, "easy", 0, config, "v1")
    assert 0 < easy["prompts_recomputed"] < both and copied_prompts() == both
    for strategy in ("easy", "aepo"):
        assert stored_selection(built, strategy, 0) == expected_selection(built, strategy, config, 0)
    # a copy of older tables is not read, even where it holds the changed prompt
    with built.connect(read_only=True) as con:
        (prompt,) = con.execute(
            f"select min(prompt) from raw.prompts where prompt_id in (from {CHANGED_PROMPTS})"
        ).fetchone()
    third = tmp_path / "third.csv"
    pd.DataFrame({"prompt": [prompt], "response": ["One more, late answer."], "score": [9.0]}).to_csv(third)
    ingest(built, SourceSpec(source="table", path=str(third)))
    embed_new_responses(built, RandomVectors(device="cpu"), embed)
    run_models(built)
    _, easy = select_in_warehouse(built, "easy", 0, config, "v1")
    assert copied_prompts() == easy["prompts_recomputed"] == 1
    assert stored_selection(built, "easy", 0) == expected_selection(built, "easy", config, 0)
    # a copy table gone (dropped by hand) is made again, not read
    with built.connect() as con:
        con.execute("drop table selection.changed_candidates")
    _, aepo = select_in_warehouse(built, "aepo", 0, config, "v1")
    assert copied_prompts() == aepo["prompts_recomputed"] == 1
    assert stored_selection(built, "aepo", 0) == expected_selection(built, "aepo", config, 0)


def test_margin_selects_by_the_scores_of_a_reference_version_that_holds_a_quote(built, monkeypatch):
    """The reference version is a Dagster data version, which whoever reports a materialization chooses:
    the selection binds it as a parameter. Put into the SQL as text, a quote broke the statement (or
    changed what it reads)."""
    from real_assets.defs import pair_scores

    monkeypatch.setattr(pair_scores, "_reference_scores", hashed_scores)
    version = "the reference's v1"
    assert pair_scores.score_pending_pairs(built, version, None, None) > 0
    _, summary = select_in_warehouse(built, "margin", 0, SelectionConfig(), "v1", reference_version=version)
    with built.connect(read_only=True) as con:
        picked, off_minimum = con.execute(
            "select count(*), count(*) filter (where abs(s.ref_margin) > (select min(abs(o.ref_margin)) "
            "from selection.reference_pair_scores as o where o.prompt_id = p.prompt_id)) "
            "from selection.selected_pairs as p join selection.reference_pair_scores as s "
            "using (prompt_id, chosen_id, rejected_id) "
            "where p.strategy = 'margin' and p.seed = 0 and s.reference_version = ?",
            [version],
        ).fetchone()
    assert picked == summary["prompts_recomputed"] > 0 and off_minimum == 0
