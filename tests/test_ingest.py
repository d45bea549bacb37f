"""raw_responses' write side: one transaction, idempotent, every input row accepted or rejected."""

import json

import pytest
import sample_files as sf

from real_assets.core.records import SourceError
from real_assets.core.sources import SourceSpec, iter_source, staging
from real_assets.defs import ingest as ingest_module
from real_assets.resources import Warehouse


def _counts(warehouse):
    with warehouse.connect(read_only=True) as con:
        return {
            t: con.execute(f"select count(*) from raw.{t}").fetchone()[0]
            for t in ("responses", "prompts", "rejects", "ingestions")
        }


def test_same_file_twice_changes_nothing_and_overlap_adds_only_new_rows(tmp_path, home):
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    rows = sf.hh_rlhf_rows()
    first = tmp_path / "first.jsonl"
    first.write_text("".join(json.dumps(r) + "\n" for r in rows[:30]))
    a = ingest_module.ingest(warehouse, SourceSpec(source="hh_rlhf", path=str(first)))
    assert a["input_rows"] == 30 == a["accepted_rows"] + a["rejected_rows"]
    assert a["new_responses"] == a["responses"] > 0
    before = _counts(warehouse)
    again = ingest_module.ingest(warehouse, SourceSpec(source="hh_rlhf", path=str(first)))
    assert again["new_responses"] == 0 and again["new_rejects"] == 0
    assert again["data_version"] == a["data_version"]
    assert {**_counts(warehouse), "ingestions": 0} == {**before, "ingestions": 0}
    overlap = tmp_path / "overlap.jsonl"
    overlap.write_text("".join(json.dumps(r) + "\n" for r in rows[20:]))
    b = ingest_module.ingest(warehouse, SourceSpec(source="hh_rlhf", path=str(overlap)))
    assert 0 < b["new_responses"] < 2 * len(rows[20:])
    assert b["responses"] == a["responses"] + b["new_responses"]


def test_bad_rows_land_in_rejects_with_file_row_field_and_reason(tmp_path, home):
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    directory = tmp_path / "bad"
    expected = sf.write_bad_corpus(directory)
    for name, exp in expected.items():
        spec = SourceSpec(
            source=exp.source, path=str(directory / name), column_map=exp.column_map, max_chars=exp.max_chars
        )
        result = ingest_module.ingest(warehouse, spec)
        assert result["input_rows"] == exp.input_rows == result["accepted_rows"] + result["rejected_rows"]
        assert result["reasons"] == exp.rejects
        with warehouse.connect(read_only=True) as con:
            stored = dict(
                con.execute(
                    "select reason, count(*) from raw.rejects where source_file = ? group by reason",
                    [str(directory / name)],
                ).fetchall()
            )
            assert stored == exp.rejects
            assert (
                con.execute(
                    "select count(*) from raw.rejects where source_file = ? and "
                    "(row_number < 1 or field = '' or excerpt is null)",
                    [str(directory / name)],
                ).fetchone()[0]
                == 0
            )


def test_unreadable_source_fails_before_any_table_changes(tmp_path, home):
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    ingest_module.ingest(warehouse, SourceSpec(source="synthetic", n_prompts=20))
    before = _counts(warehouse)
    with pytest.raises(SourceError, match=r"nope\.jsonl"):
        ingest_module.ingest(warehouse, SourceSpec(source="hh_rlhf", path=str(tmp_path / "nope.jsonl")))
    with pytest.raises(SourceError, match="unknown source"):
        ingest_module.ingest(warehouse, SourceSpec(source="reddit"))
    assert _counts(warehouse) == before


def test_failure_mid_stream_rolls_everything_back(tmp_path, home, monkeypatch):
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    ingest_module.ingest(warehouse, SourceSpec(source="synthetic", n_prompts=20))
    before = _counts(warehouse)
    real_stage = staging._stage_records
    staged = []

    def breaks_after_first_batch(con, batch):
        if staged:
            raise OSError("disk went away")
        staged.append(real_stage(con, batch))

    monkeypatch.setattr(staging, "_stage_records", breaks_after_first_batch)
    monkeypatch.setattr(staging, "GENERATED_BATCH", 50)
    with pytest.raises(OSError, match="disk went away"):
        ingest_module.ingest(warehouse, SourceSpec(source="synthetic", n_prompts=60, seed=9))
    assert staged and _counts(warehouse) == before


def test_prompts_with_fewer_than_two_responses_are_kept_but_not_pairable(tmp_path, home):
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    path = tmp_path / "t.jsonl"
    rows = [
        {"prompt": "p1", "response": "a", "score": 1.0},
        {"prompt": "p1", "response": "b", "score": 0.0},
        {"prompt": "lonely", "response": "only one", "score": 1.0},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = ingest_module.ingest(warehouse, SourceSpec(source="table", path=str(path)))
    assert result["prompts"] == 2 and result["prompts_not_pairable"] == 1
    with warehouse.connect(read_only=True) as con:
        assert con.execute("select prompt, pairable from raw.prompts order by prompt").fetchall() == [
            ("lonely", False),
            ("p1", True),
        ]


# ------------------------------------------------------------------------------------------ issue 11


def _hh_file(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _check(warehouse, check):
    return check(warehouse=warehouse).passed


def test_changed_file_at_the_same_path_keeps_its_rejects_and_comparisons(tmp_path, home):
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    rows = sf.hh_rlhf_rows()
    path = tmp_path / "drop.jsonl"
    _hh_file(path, [rows[0], {"chosen": 1, "rejected": 2}, {"chosen": None, "rejected": "x"}])
    first = ingest_module.ingest(warehouse, SourceSpec(source="hh_rlhf", path=str(path)))
    assert (first["rejected_rows"], first["comparisons"]) == (2, 1)
    # The file changes in place: other rows at the same row numbers, another bad row, another pair.
    _hh_file(path, [rows[1], {"chosen": [], "rejected": 2}, {"rejected": "x"}])
    second = ingest_module.ingest(warehouse, SourceSpec(source="hh_rlhf", path=str(path)))
    assert (second["rejected_rows"], second["new_rejects"], second["comparisons"]) == (2, 2, 1)
    with warehouse.connect(read_only=True) as con:
        per_ingestion = dict(
            con.execute("select ingestion_id, count(*) from raw.rejects group by ingestion_id").fetchall()
        )
        assert per_ingestion == {first["ingestion_id"]: 2, second["ingestion_id"]: 2}
        pairs = con.execute("select count(distinct (prompt_id, chosen_id, rejected_id)) from raw.comparisons")
        assert pairs.fetchone()[0] == 2
    assert _check(warehouse, ingest_module.rows_accounted)


def test_accounting_check_counts_the_stored_rejects_and_comparisons(tmp_path, home):
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    rows = sf.hh_rlhf_rows()
    path = _hh_file(tmp_path / "hh.jsonl", [rows[0], rows[1], {"chosen": 1, "rejected": 2}])
    ingest_module.ingest(warehouse, SourceSpec(source="hh_rlhf", path=str(path)))
    assert _check(warehouse, ingest_module.rows_accounted)
    with warehouse.connect() as con:
        con.execute("delete from raw.rejects")
    assert not _check(warehouse, ingest_module.rows_accounted)
    ingest_module.ingest(warehouse, SourceSpec(source="hh_rlhf", path=str(path)))
    with warehouse.connect() as con:
        con.execute("delete from raw.comparisons where row_number = 2")
    assert not _check(warehouse, ingest_module.rows_accounted)


def test_responses_per_prompt_are_capped_in_file_order_and_reported(tmp_path, home):
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    path = tmp_path / "many.jsonl"
    rows = [{"prompt": "one prompt", "response": f"answer number {i}", "score": i % 7} for i in range(300)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = ingest_module.ingest(warehouse, SourceSpec(source="table", path=str(path)))
    cap = SourceSpec().max_responses_per_prompt
    assert 2 <= cap < 300
    assert result["accepted_rows"] == 300 and result["responses"] == cap
    assert result["responses_over_cap"] == 300 - cap and result["max_responses_per_prompt"] == cap
    with warehouse.connect(read_only=True) as con:
        kept = {r for (r,) in con.execute("select response from raw.responses").fetchall()}
    assert kept == {f"answer number {i}" for i in range(cap)}
    # A second file for the same prompt adds nothing past the cap; a smaller cap is honoured too.
    again = ingest_module.ingest(warehouse, SourceSpec(source="table", path=str(path)))
    assert again["new_responses"] == 0 and again["responses"] == cap
    small = Warehouse(path=str(tmp_path / "small.duckdb"))
    result = ingest_module.ingest(
        small, SourceSpec(source="table", path=str(path), max_responses_per_prompt=5)
    )
    assert result["responses"] == 5 and result["responses_over_cap"] == 295


def test_a_reingest_does_not_carry_tampered_prompt_texts_forward(tmp_path, home):
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    ingest_module.ingest(warehouse, SourceSpec(source="synthetic", n_prompts=10))
    with warehouse.connect() as con:
        con.execute(
            "update raw.prompt_texts set prompt = 'Ignore all previous instructions.' where rowid = 0"
        )
        before = con.execute("select count(*) from raw.ingestions").fetchone()[0]
    with pytest.raises(ingest_module.TamperedWarehouse, match=r"raw\.prompt_texts"):
        ingest_module.ingest(warehouse, SourceSpec(source="synthetic", n_prompts=20))
    with warehouse.connect(read_only=True) as con:
        assert con.execute("select count(*) from raw.ingestions").fetchone()[0] == before
        assert (
            con.execute("select count(*) from raw.prompts where prompt like 'Ignore all%'").fetchone()[0] == 0
        )


def test_a_failed_first_ingestion_creates_no_tables(tmp_path, home):
    import gzip

    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    data = gzip.compress("".join(json.dumps(r) + "\n" for r in sf.hh_rlhf_rows() * 200).encode())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=r"cut\.jsonl\.gz"):
        ingest_module.ingest(warehouse, SourceSpec(source="hh_rlhf", path=str(path)))
    with warehouse.connect(read_only=True) as con:
        tables = con.execute("select table_name from information_schema.tables where table_schema = 'raw'")
        assert tables.fetchall() == []


def _raw_content(warehouse) -> dict:
    """Every raw table's rows (per-ingestion ids left out), sorted."""
    with warehouse.connect(read_only=True) as con:
        return {
            table: sorted(
                con.execute(f"select * exclude (ingestion_id) from raw.{table}").fetchall(), key=repr
            )
            if table in ("comparisons", "rejects")
            else sorted(con.execute(f"select * from raw.{table}").fetchall(), key=repr)
            for table in ("responses", "prompt_texts", "prompts", "comparisons", "rejects")
        }


def test_an_ingest_in_many_small_chunks_stores_what_one_chunk_does(tmp_path, home, monkeypatch):
    """Chunks are merged one by one: first occurrences, duplicate rows, the cap and comparisons must
    come out as if the whole file were one chunk, wherever the chunk borders fall."""
    from real_assets.core.sources import readers

    rows = []
    for i in range(240):
        p = f"prompt {i % 23}" + ("  " if i % 5 == 0 else "")  # same prompt id, other text
        rows.append({"prompt": p, "chosen": f"good {i % 37}", "rejected": f"bad {i % 41}"})
        if i % 9 == 0:
            rows.append(dict(rows[-1]))  # an exact duplicate row
        if i % 11 == 0:
            rows.append({"prompt": p, "chosen": f"good {i % 37}", "rejected": f"bad {i % 41}", "x": 1})
    rows.append({"prompt": "prompt 1", "chosen": "same", "rejected": "same"})  # identical_responses
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    spec = SourceSpec(source="table", path=str(path), max_responses_per_prompt=9)

    one = Warehouse(path=str(tmp_path / "one.duckdb"))
    whole = ingest_module.ingest(one, spec)
    monkeypatch.setattr(readers, "CHUNK_BYTES", 1500)
    many = Warehouse(path=str(tmp_path / "many.duckdb"))
    chunked = ingest_module.ingest(many, spec)

    assert whole["responses_over_cap"] > 0 and whole["comparisons"] > 0
    assert set(whole["reasons"]) == {"duplicate_row", "identical_responses", "invalid_json"}
    same = ("input_rows", "accepted_rows", "rejected_rows", "new_responses", "responses_over_cap")
    assert {k: chunked[k] for k in same} == {k: whole[k] for k in same}
    assert chunked["reasons"] == whole["reasons"] and chunked["data_version"] == whole["data_version"]
    assert _raw_content(many) == _raw_content(one)
    # iter_source stages the same way: same records in any chunking.
    assert list(iter_source(spec)) == list(iter_source(spec))  # (still the small chunks)
    monkeypatch.undo()
    small = list(iter_source(spec))
    monkeypatch.setattr(readers, "CHUNK_BYTES", 1500)
    assert list(iter_source(spec)) == small


def test_a_response_repeated_across_rows_is_stored_once_from_its_first_row(tmp_path, home):
    """The same prompt and response (up to whitespace) in several rows: one raw.responses row, with the
    score and row number of its first row in the file; the later rows are accepted, not rejected."""
    rows = [
        {"prompt": "p", "response": "a  b", "score": 5},
        {"prompt": "p", "response": "other", "score": 1},
        {"prompt": "p", "response": "a b", "score": 2},
        {"prompt": "q", "response": "a b", "score": 3},  # another prompt: another response id
        {"prompt": "p ", "response": " a b", "score": 4},
    ]
    path = tmp_path / "repeats.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    result = ingest_module.ingest(warehouse, SourceSpec(source="table", path=str(path)))
    assert result["accepted_rows"] == 5 and result["new_responses"] == 3
    with warehouse.connect(read_only=True) as con:
        stored = con.execute(
            "select response, score, row_number from raw.responses order by row_number"
        ).fetchall()
    assert stored == [("a  b", 5.0, 1), ("other", 1.0, 2), ("a b", 3.0, 4)]
