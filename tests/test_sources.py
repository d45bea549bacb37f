"""Sources: every schema on its fixture, the bad-input corpus, ids, errors, limits, formats. Offline."""

from __future__ import annotations

import collections
import gzip
import json
import os
from pathlib import Path
from typing import ClassVar

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest
import sample_files as sf

from real_assets.core import sources
from real_assets.core.hashing import prompt_id, response_id, split_for
from real_assets.core.records import SourceError
from real_assets.core.sources import SOURCE_NAMES, SourceSpec, check_source, iter_source
from real_assets.core.synthetic import iter_synthetic


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("fixtures")
    return {
        "hh": sf.write_hh_rlhf(d / "hh.jsonl"),
        "hh_gz": sf.write_hh_rlhf(d / "hh.jsonl.gz"),
        "shp2": sf.write_shp2(d / "shp2.jsonl"),
        "uf": sf.write_ultrafeedback(d / "uf.jsonl"),
        "ufb": sf.write_ultrafeedback_binarized(d / "ufb.jsonl"),
        "csv": sf.write_table_csv(d / "table.csv"),
        "parquet": sf.write_table_parquet(d / "table.parquet"),
    }


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, sf.Expected]]:
    d = tmp_path_factory.mktemp("bad")
    return d, sf.write_bad_corpus(d)


def run(spec: SourceSpec, batch_size: int = 50_000):
    batches = list(iter_source(spec, batch_size=batch_size))
    for b in batches:
        assert b.input_rows == b.accepted_rows + len(b.rejects)
        assert b.input_rows <= batch_size
    responses = [r for b in batches for r in b.responses]
    rejects = [r for b in batches for r in b.rejects]
    return batches, responses, rejects


def totals(batches) -> tuple[int, int]:
    return sum(b.input_rows for b in batches), sum(b.accepted_rows for b in batches)


def check_records(responses, spec: SourceSpec) -> None:
    for r in responses:
        assert r.prompt_id == prompt_id(r.prompt)
        assert r.response_id == response_id(r.prompt_id, r.response)
        assert r.split == split_for(r.prompt_id, spec.test_fraction)
        assert r.gold is None
        assert r.source == spec.source and r.source_file == spec.path
        assert r.row_number >= 1


# ------------------------------------------------------------------------------------------ bad corpus


def test_bad_corpus_covers_at_least_15_reasons(bad) -> None:
    _, expected = bad
    reasons = {reason for exp in expected.values() for reason in exp.rejects}
    assert len(reasons) >= 15
    assert reasons <= set(sources.REASONS)


@pytest.mark.parametrize(
    "name",
    [
        "hh_bad.jsonl",
        "shp2_bad.jsonl.gz",
        "uf_bad.jsonl",
        "ufb_bad.jsonl",
        "table_bad.csv",
        "table_bad.parquet",
    ],
)
@pytest.mark.parametrize("batch_size", [50_000, 2])
def test_bad_corpus_exact_counts(bad, name: str, batch_size: int) -> None:
    d, expected = bad
    exp = expected[name]
    spec = SourceSpec(
        source=exp.source, path=str(d / name), column_map=exp.column_map, max_chars=exp.max_chars
    )
    batches, responses, rejects = run(spec, batch_size)
    assert totals(batches) == (exp.input_rows, exp.accepted_rows)
    assert exp.input_rows == exp.accepted_rows + len(rejects)
    assert dict(collections.Counter(r.reason for r in rejects)) == exp.rejects
    assert len(responses) == exp.responses
    rows = [r.row_number for r in rejects]
    assert len(set(rows)) == len(rows), "one reject per rejected input row"
    for r in rejects:
        assert r.source == exp.source and r.source_file == spec.path and r.row_number >= 1
        assert r.field and len(r.excerpt) <= sources.EXCERPT_CHARS and r.excerpt
        if r.reason in exp.reject_fields:
            assert r.field == exp.reject_fields[r.reason], r
    check_records(responses, spec)


def test_reject_row_numbers_are_line_numbers(bad) -> None:
    d, _ = bad
    _, _, rejects = run(SourceSpec(source="hh_rlhf", path=str(d / "hh_bad.jsonl")))
    by_reason = {r.reason: r.row_number for r in rejects if r.reason != "missing_field"}
    assert by_reason["invalid_json"] == 2
    assert by_reason["duplicate_row"] == 12  # line 11 is blank: not a row, but lines keep their numbers
    assert by_reason["undecodable_bytes"] == 13
    assert "caf" in next(r.excerpt for r in rejects if r.reason == "undecodable_bytes")


def test_text_over_max_chars_is_rejected_not_truncated(files) -> None:
    spec = SourceSpec(source="table", path=str(files["csv"]), max_chars=60)
    _, responses, rejects = run(spec)
    assert rejects and {r.reason for r in rejects} == {"text_too_long"}
    assert all(len(r.prompt) <= 60 and len(r.response) <= 60 for r in responses)


# ------------------------------------------------------------------------------------------ sources


def test_hh_rlhf_fixture(files) -> None:
    spec = SourceSpec(source="hh_rlhf", path=str(files["hh"]))
    batches, responses, rejects = run(spec)
    assert totals(batches) == (48, 48) and not rejects
    assert len(responses) == 96
    assert len({r.prompt_id for r in responses}) == 48
    for chosen, rejected in zip(responses[::2], responses[1::2], strict=True):
        assert chosen.prompt_id == rejected.prompt_id and chosen.row_number == rejected.row_number
        assert (chosen.score, rejected.score) == (1.0, 0.0)
        assert chosen.prompt.endswith("\n\nAssistant:")
        assert chosen.response == chosen.response.strip() and "Human:" not in chosen.response
    assert {r.split for r in responses} == {"train", "test"}
    check_records(responses, spec)


def test_gz_reads_like_plain(files) -> None:
    _, plain, _ = run(SourceSpec(source="hh_rlhf", path=str(files["hh"])))
    _, gz, _ = run(SourceSpec(source="hh_rlhf", path=str(files["hh_gz"])))
    assert files["hh_gz"].read_bytes()[:2] == b"\x1f\x8b"
    assert [(r.response_id, r.score, r.split) for r in plain] == [
        (r.response_id, r.score, r.split) for r in gz
    ]
    assert gz[0].source_file == str(files["hh_gz"])


def test_shp2_fixture_groups_by_post(files) -> None:
    spec = SourceSpec(source="shp2", path=str(files["shp2"]))
    batches, responses, rejects = run(spec)
    assert totals(batches) == (50, 50) and not rejects
    assert len(responses) == 40  # 10 posts x 4 distinct comments, each yielded once
    assert len({r.response_id for r in responses}) == 40
    assert len({r.prompt_id for r in responses}) == 10
    raw = [json.loads(line) for line in files["shp2"].read_text().splitlines()]
    score_of = {}
    for row in raw:
        score_of[row["human_ref_A"]] = row["score_A"]
        score_of[row["human_ref_B"]] = row["score_B"]
    assert all(r.score == score_of[r.response] for r in responses)
    check_records(responses, spec)


def test_ultrafeedback_original(files) -> None:
    spec = SourceSpec(source="ultrafeedback", path=str(files["uf"]))
    batches, responses, rejects = run(spec)
    assert totals(batches) == (20, 20) and not rejects
    assert len(responses) == 80 and len({r.prompt_id for r in responses}) == 20
    row1 = [r.score for r in responses if r.row_number == 1]
    assert row1 == [10.0, 7.5, 5.0, 0.5]  # overall_score
    row5 = [r.score for r in responses if r.row_number == 5]  # no overall_score: mean of ratings
    assert row5 == [4.75, 4.0, 3.0, 1.25]
    check_records(responses, spec)


def test_ultrafeedback_binarized(files) -> None:
    spec = SourceSpec(source="ultrafeedback", path=str(files["ufb"]))
    batches, responses, rejects = run(spec)
    assert totals(batches) == (24, 24) and not rejects
    assert len(responses) == 48
    assert len({r.prompt_id for r in responses}) == 20  # rows 20-23 repeat prompts 0-3
    scores = {r.row_number: [] for r in responses}
    for r in responses:
        scores[r.row_number].append(r.score)
    assert scores[1] == [9.0, 2.5] and scores[9] == [1.0, 0.0] and scores[21] == [6.5, 2.5]
    assert responses[0].prompt == sf.QA_BANK[0][0]
    check_records(responses, spec)


def test_table_csv_pointwise(files) -> None:
    spec = SourceSpec(source="table", path=str(files["csv"]))
    batches, responses, rejects = run(spec)
    assert totals(batches) == (48, 48) and not rejects
    assert len(responses) == 48 and len({r.prompt_id for r in responses}) == 12
    assert [r.score for r in responses[:4]] == [4.5, 3.0, 2.5, 0.5]
    check_records(responses, spec)


def test_table_parquet_pairs(files) -> None:
    spec = SourceSpec(source="table", path=str(files["parquet"]))
    batches, responses, rejects = run(spec, batch_size=10)
    assert totals(batches) == (48, 48) and not rejects
    assert len(batches) == 10  # a batch ends at batch_size responses too
    assert len(responses) == 96
    assert [r.score for r in responses[:2]] == [1.0, 0.0]
    check_records(responses, spec)


def test_table_column_map_renamed_columns(tmp_path: Path) -> None:
    rows = [
        {"q": p["prompt"], "good": p["chosen"], "bad": p["rejected"], "g": 3, "b": 1}
        for p in sf.table_pair_rows()
    ]
    sf._write_jsonl(tmp_path / "t.jsonl", rows)
    cmap = {"prompt": "q", "chosen": "good", "rejected": "bad", "score_chosen": "g", "score_rejected": "b"}
    spec = SourceSpec(source="table", path=str(tmp_path / "t.jsonl"), column_map=cmap)
    _, responses, rejects = run(spec)
    assert not rejects and len(responses) == 96
    assert {r.score for r in responses} == {3.0, 1.0}


def test_synthetic_delegates(files) -> None:
    _, responses, _ = run(SourceSpec(n_prompts=12, seed=3))
    direct = [r for b in iter_synthetic(n_prompts=12, seed=3) for r in b.responses]
    assert responses == direct
    batches, _, _ = run(SourceSpec(n_prompts=12, limit=5))
    assert totals(batches) == (5, 5)


# ------------------------------------------------------------------------------------------ ids, limit


def test_ids_are_idempotent(files) -> None:
    for name, source in (("hh", "hh_rlhf"), ("shp2", "shp2"), ("uf", "ultrafeedback"), ("parquet", "table")):
        spec = SourceSpec(source=source, path=str(files[name]))
        first = [(r.prompt_id, r.response_id, r.split, r.score) for r in run(spec)[1]]
        second = [(r.prompt_id, r.response_id, r.split, r.score) for r in run(spec)[1]]
        assert first == second and first


def test_limit_counts_input_rows(files, bad) -> None:
    batches, responses, _ = run(SourceSpec(source="hh_rlhf", path=str(files["hh"]), limit=5))
    assert totals(batches) == (5, 5) and len(responses) == 10
    d, _ = bad
    batches, _, rejects = run(SourceSpec(source="hh_rlhf", path=str(d / "hh_bad.jsonl"), limit=4))
    assert totals(batches) == (4, 1) and len(rejects) == 3
    assert run(SourceSpec(source="table", path=str(files["parquet"]), limit=0))[0] == []


def test_datasets_local_directory(files, tmp_path: Path) -> None:
    d = tmp_path / "hh_dir"
    d.mkdir()
    (d / "train.jsonl").write_bytes(files["hh"].read_bytes())
    spec = SourceSpec(source="hh_rlhf", path=str(d), limit=20)
    batches, responses, rejects = run(spec, batch_size=8)
    assert totals(batches) == (20, 20) and not rejects
    direct = run(SourceSpec(source="hh_rlhf", path=str(files["hh"]), limit=20))[1]
    assert [r.response_id for r in responses] == [r.response_id for r in direct]
    assert responses[0].source_file == str(d)
    with pytest.raises(SourceError, match="cannot load dataset"):
        check_source(SourceSpec(source="hh_rlhf", path=str(d), split="no_such_split"))


def test_hub_id_goes_through_datasets_streaming(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls = []
    rows = [
        {
            "history": "Why is the sky blue?",
            "human_ref_A": "Rayleigh scattering.",
            "human_ref_B": "Magic.",
            "score_A": 10,
            "score_B": 1,
            "labels": 1,
            "post_id": "x",
        }
    ]

    class FakeStream:
        column_names: ClassVar[list[str]] = list(rows[0])

        def __iter__(self):
            return iter(rows)

    def fake_load(path, **kwargs):
        calls.append((path, kwargs))
        return FakeStream()

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    spec = SourceSpec(source="shp2", path="stanfordnlp/SHP-2", revision="abc123", split="validation")
    _, responses, _ = run(spec)
    assert [r.score for r in responses] == [10.0, 1.0]
    assert responses[0].source_file == "stanfordnlp/SHP-2"
    assert calls[0] == ("stanfordnlp/SHP-2", {"split": "validation", "streaming": True, "revision": "abc123"})

    def offline(path, **kwargs):
        raise ConnectionError("Couldn't reach 'owner/name' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(SourceError, match="owner/name"):
        check_source(SourceSpec(source="hh_rlhf", path="owner/name"))


# ------------------------------------------------------------------------------------------ errors


def test_unknown_source_lists_valid_names() -> None:
    with pytest.raises(SourceError) as e:
        check_source(SourceSpec(source="reddit"))
    assert "reddit" in str(e.value) and all(name in str(e.value) for name in SOURCE_NAMES)


def test_missing_and_unsupported_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(SourceError, match=r"file not found.*nope\.jsonl"):
        check_source(SourceSpec(source="hh_rlhf", path=str(missing)))
    with pytest.raises(SourceError, match="needs a path"):
        check_source(SourceSpec(source="shp2"))
    (tmp_path / "data.xlsx").write_bytes(b"PK\x03\x04")
    with pytest.raises(SourceError, match=r"unsupported file type.*data\.xlsx"):
        check_source(SourceSpec(source="table", path=str(tmp_path / "data.xlsx")))
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(SourceError, match=r"empty\.jsonl is empty"):
        check_source(SourceSpec(source="hh_rlhf", path=str(tmp_path / "empty.jsonl")))
    (tmp_path / "garbage.jsonl").write_text("not json\nstill not\n")
    with pytest.raises(SourceError, match=r"garbage\.jsonl is not a JSON Lines file"):
        check_source(SourceSpec(source="hh_rlhf", path=str(tmp_path / "garbage.jsonl")))
    (tmp_path / "broken.parquet").write_bytes(b"definitely not parquet")
    with pytest.raises(SourceError, match=r"cannot read .*broken\.parquet"):
        check_source(SourceSpec(source="table", path=str(tmp_path / "broken.parquet")))


def test_truncated_gzip_fails_loudly(files, tmp_path: Path) -> None:
    data = gzip.compress(files["hh"].read_bytes() * 20)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=r"cannot read .*cut\.jsonl\.gz"):
        run(SourceSpec(source="hh_rlhf", path=str(path)))


def test_wrong_schema_names_file_and_columns(files) -> None:
    with pytest.raises(SourceError) as e:
        check_source(SourceSpec(source="hh_rlhf", path=str(files["shp2"])))
    msg = str(e.value)
    assert str(files["shp2"]) in msg and "chosen, rejected" in msg and "human_ref_A" in msg
    with pytest.raises(SourceError, match=r"shp2.*history"):
        check_source(SourceSpec(source="shp2", path=str(files["parquet"])))
    with pytest.raises(SourceError, match="instruction, completions"):
        check_source(SourceSpec(source="ultrafeedback", path=str(files["csv"])))
    with pytest.raises(SourceError, match="or pass a column_map"):
        check_source(SourceSpec(source="table", path=str(files["uf"])))


def test_iter_source_checks_before_yielding(files) -> None:
    it = iter_source(SourceSpec(source="hh_rlhf", path=str(files["shp2"])))
    with pytest.raises(SourceError):
        next(it)


@pytest.mark.parametrize(
    ("cmap", "match"),
    [
        ({"prompt": "prompt", "response": "response"}, "bad column_map keys"),
        ({"prompt": "prompt", "response": "response", "score": "score", "extra": "x"}, "bad column_map keys"),
        ({"prompt": "prompt", "chosen": "response", "score": "score"}, "bad column_map keys"),
        ({"prompt": "prompt", "response": "", "score": "score"}, "bad column_map"),
        (
            {"prompt": "prompt", "response": "answer", "score": "score"},
            r"lacks the mapped column\(s\) \['answer'\]",
        ),
    ],
)
def test_bad_column_map(files, cmap: dict[str, str], match: str) -> None:
    with pytest.raises(SourceError, match=match) as e:
        check_source(SourceSpec(source="table", path=str(files["csv"]), column_map=cmap))
    if "lacks" in match:
        assert str(files["csv"]) in str(e.value)


def test_column_map_only_for_table_and_spec_values(files) -> None:
    with pytest.raises(SourceError, match="only used by the table source"):
        check_source(SourceSpec(source="hh_rlhf", path=str(files["hh"]), column_map={"prompt": "x"}))
    with pytest.raises(SourceError, match="test_fraction"):
        check_source(SourceSpec(test_fraction=1.5))
    with pytest.raises(SourceError, match="max_chars"):
        check_source(SourceSpec(source="hh_rlhf", path=str(files["hh"]), max_chars=0))
    with pytest.raises(SourceError, match="batch_size"):
        next(iter_source(SourceSpec(), batch_size=0))


# ------------------------------------------------------------------------------------------ internals


def test_duplicate_rows_are_found_across_chunks_with_no_cap(tmp_path: Path, monkeypatch) -> None:
    from real_assets.core.sources import readers

    monkeypatch.setattr(readers, "CHUNK_BYTES", 4096)  # many chunks: duplicates must be found across them
    rows = [json.dumps({"prompt": f"p{i % 50}", "response": f"r{i}", "score": i}) for i in range(3000)]
    path = tmp_path / "dups.jsonl"
    path.write_text("\n".join(rows + rows[::7]) + "\n")
    batches, _, rejects = run(SourceSpec(source="table", path=str(path)))
    assert totals(batches) == (3000 + len(rows[::7]), 3000)
    assert {r.reason for r in rejects} == {"duplicate_row"} and len(rejects) == len(rows[::7])
    assert min(r.row_number for r in rejects) == 3001


def test_read_ahead_keeps_order_raises_where_the_reader_failed_and_stops_with_the_caller() -> None:
    import threading

    from real_assets.core.sources.readers import read_ahead

    def failing():
        yield from range(3)
        raise SourceError("cannot read row 4")

    got = []
    with pytest.raises(SourceError, match="row 4"):
        for item in read_ahead(failing()):
            got.append(item)
    assert got == [0, 1, 2]

    produced = []

    def endless():
        n = 0
        while True:
            produced.append(n)
            yield n
            n += 1

    ahead = read_ahead(endless())
    assert [next(ahead) for _ in range(5)] == [0, 1, 2, 3, 4]
    ahead.close()  # the caller stops: the reader thread ends, having read at most two items ahead
    assert not any(t.name == "read_ahead" for t in threading.enumerate())
    assert len(produced) <= 5 + 2


def test_rows_checked_in_sql_and_row_by_row_get_the_same_ids(tmp_path: Path) -> None:
    """Ids are computed in SQL for the rows the vectorized checks accept and in Python for the others:
    the same text gets the same prompt id, response id and split either way."""
    texts = [
        ("Caf\u00e9 \u2003 hours?", " Open\tfrom 9\u00a0to 5 "),  # non-ASCII whitespace, composed e-acute
        ("Cafe\u0301 hours?", "Open from 9 to 5"),  # decomposed: the same ids after NFC
        ("plain prompt", "plain answer"),
    ]
    sql_path, python_path = tmp_path / "sql.jsonl", tmp_path / "python.jsonl"
    # A score of "3_0" is a number to Python's float() but not to the SQL check: row by row.
    for path, score in ((sql_path, 3), (python_path, "3_0")):
        lines = [json.dumps({"prompt": p, "response": r, "score": score}) for p, r in texts]
        path.write_text("\n".join(lines) + "\n")

    def ids(path: Path) -> list[tuple[str, str, str, float]]:
        batches = list(iter_source(SourceSpec(source="table", path=str(path), test_fraction=0.5)))
        return [(r.prompt_id, r.response_id, r.split, r.score) for b in batches for r in b.responses]

    by_sql, by_python = ids(sql_path), ids(python_path)
    assert [s for *_, s in by_sql] == [3.0] * 3 and [s for *_, s in by_python] == [30.0] * 3
    assert [i[:3] for i in by_sql] == [i[:3] for i in by_python]
    expected = []
    for p, r in texts:
        pid = prompt_id(p)
        expected.append((pid, response_id(pid, r), split_for(pid, 0.5)))
    assert [i[:3] for i in by_sql] == expected
    assert by_sql[0][:2] == by_sql[1][:2]  # NFC and whitespace do not change ids


def test_a_completion_repeated_within_a_row_is_kept_once_with_its_first_score(tmp_path: Path) -> None:
    rows = sf.ultrafeedback_rows()[:3]
    first = rows[1]["completions"]
    first[2]["response"] = " " + first[0]["response"]  # the same text as the first, up to whitespace
    path = tmp_path / "uf.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = SourceSpec(source="ultrafeedback", path=str(path))
    batches, responses, rejects = run(spec)
    assert totals(batches) == (3, 3) and not rejects
    row2 = [(r.response, r.score) for r in responses if r.row_number == 2]
    assert len(row2) == 3 and row2[0] == (first[0]["response"], first[0]["overall_score"])
    assert len({r.response_id for r in responses}) == len(responses) == 11
