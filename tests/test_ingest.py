"""raw_responses' write side: one transaction, idempotent, every input row accepted or rejected."""

import json

import pytest

from real_assets.core import sample_files as sf
from real_assets.core.records import SourceError
from real_assets.core.sources import SourceSpec
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
    real_iter = ingest_module.iter_source

    def breaks_after_first_batch(spec):
        yield next(iter(real_iter(spec)))
        raise OSError("disk went away")

    monkeypatch.setattr(ingest_module, "iter_source", breaks_after_first_batch)
    with pytest.raises(OSError, match="disk went away"):
        ingest_module.ingest(warehouse, SourceSpec(source="synthetic", n_prompts=60, seed=9))
    assert _counts(warehouse) == before


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
