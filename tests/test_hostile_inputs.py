"""Hostile rows end as row-level rejects naming file, row and field; the good rows around them ingest."""

from __future__ import annotations

import collections
import json
from pathlib import Path

from real_assets.core.sources import SourceSpec, iter_source


def _run(spec: SourceSpec):
    batches = list(iter_source(spec))
    rejects = [r for b in batches for r in b.rejects]
    responses = [r for b in batches for r in b.responses]
    return (
        sum(b.input_rows for b in batches),
        sum(b.accepted_rows for b in batches),
        responses,
        {r.row_number: (r.field, r.reason) for r in rejects},
        rejects,
    )


def _good(i: int) -> bytes:
    return json.dumps({"prompt": f"question {i}", "response": f"answer {i}", "score": float(i)}).encode()


def test_lone_surrogate_is_a_row_reject(tmp_path: Path) -> None:
    path = tmp_path / "surrogate.jsonl"
    bad = b'{"prompt": "question 2", "response": "broken \\ud800 text", "score": 1}'
    path.write_bytes(b"\n".join([_good(1), bad, _good(3)]) + b"\n")
    inputs, accepted, responses, by_row, rejects = _run(SourceSpec(source="table", path=str(path)))
    assert (inputs, accepted, len(responses)) == (3, 2, 2)
    assert by_row == {2: ("response", "invalid_unicode")}
    assert rejects[0].source_file == str(path) and "broken" in rejects[0].excerpt


def test_json_nested_10000_deep_is_a_row_reject_even_on_line_1(tmp_path: Path) -> None:
    deep = "[" * 10_000 + "]" * 10_000
    path = tmp_path / "deep.jsonl"
    lines = [
        f'{{"prompt": "question 1", "response": {deep}, "score": 1}}'.encode(),
        _good(2),
        deep.encode(),
        _good(4),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    inputs, accepted, responses, by_row, _ = _run(SourceSpec(source="table", path=str(path)))
    assert (inputs, accepted, len(responses)) == (4, 2, 2)
    assert by_row == {1: ("row", "too_deeply_nested"), 3: ("row", "too_deeply_nested")}


def test_oversized_numbers_are_row_rejects(tmp_path: Path) -> None:
    path = tmp_path / "numbers.jsonl"
    lines = [
        _good(1),
        b'{"prompt": "q", "response": "a", "score": 1e999}',
        b'{"prompt": "q", "response": "b", "score": ' + b"9" * 400 + b"}",
        b'{"prompt": "q", "response": "c", "score": ' + b"9" * 5000 + b"}",
        b'{"prompt": "q", "response": "d", "score": -1e-999}',
        _good(6),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    inputs, accepted, responses, by_row, _ = _run(SourceSpec(source="table", path=str(path)))
    assert (inputs, accepted) == (6, 3)
    assert by_row == {
        2: ("score", "non_finite_score"),
        3: ("score", "non_finite_score"),
        4: ("row", "invalid_json"),
    }
    assert [r.score for r in responses] == [1.0, -0.0, 6.0]


def test_stray_csv_quote_is_reported_where_it_starts_and_the_rest_is_read(tmp_path: Path) -> None:
    rows = [f"prompt {i},answer {i},{i}" for i in range(1, 11)]
    rows[2] = 'prompt 3,"answer 3 with a stray quote,3'
    path = tmp_path / "stray.csv"
    path.write_text("prompt,response,score\n" + "\n".join(rows) + "\n")
    inputs, accepted, responses, by_row, rejects = _run(SourceSpec(source="table", path=str(path)))
    assert (inputs, accepted, len(responses)) == (10, 9, 9)
    assert by_row == {3: ("row", "bad_csv_row")}
    assert "stray quote" in rejects[0].excerpt
    assert [r.response for r in responses] == [f"answer {i}" for i in (1, 2, 4, 5, 6, 7, 8, 9, 10)]
    # A later quote that closes the stray one does not hide the rows between them either.
    rows[6] = 'prompt 7,"answer 7",7'
    path.write_text("prompt,response,score\n" + "\n".join(rows) + "\n")
    inputs, accepted, responses, by_row, _ = _run(SourceSpec(source="table", path=str(path)))
    assert (inputs, accepted, len(responses)) == (10, 9, 9)
    assert by_row == {3: ("row", "bad_csv_row")}


def test_more_hostile_bytes_end_in_row_rejects(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    lines = [
        b"\xef\xbb\xbf" + _good(1) + b"\r",  # BOM and CRLF
        b'{"prompt": "q", "response": "r", "score": NaN}',
        b'{"prompt": "q", "response": "r", "score": "7"}',  # numeric string: a score
        b'{"prompt": "q", "response": "r2", "score": true}',
        b'{"prompt": "q", "response": "x", "score": 1,}',  # trailing comma: not JSON
        b'{"prompt": "q", "response": "first", "response": "second", "score": 2}',  # the first one counts
        b'{"prompt": "q\\u0000", "response": "nul", "score": 2}',
        b'{"prompt": "q", "response": "\xff\xfe", "score": 2}',
        b'{"prompt": "q", "response": "' + b"long " * 2000 + b'", "score": 2}',
        b'{"prompt": "q", "response": {"nested": "object"}, "score": 2}',
        b'{"prompt": "q", "\'; drop table raw.responses; --": 1, "response": "sql", "score": 3}',
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    inputs, accepted, responses, by_row, _ = _run(SourceSpec(source="table", path=str(path)))
    assert inputs == 11 and accepted == 5
    assert by_row == {
        2: ("score", "non_finite_score"),
        4: ("score", "wrong_type"),
        5: ("row", "invalid_json"),
        8: ("row", "undecodable_bytes"),
        9: ("response", "text_too_long"),
        10: ("response", "wrong_type"),
    }
    by_number = {r.row_number: r for r in responses}
    assert by_number[1].prompt == "question 1" and by_number[3].score == 7.0
    assert by_number[6].response == "first" and by_number[7].prompt == "q\x00"
    assert by_number[11].response == "sql"


def test_sql_looking_column_names_and_a_truncated_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import pytest

    from real_assets.core.records import SourceError

    cmap = {"prompt": "q'; drop table x; --", "response": 'a"b', "score": "s c"}
    table = pa.table(
        {cmap["prompt"]: ["p1", "p1"], cmap["response"]: ["r1", "r2"], cmap["score"]: [1.0, None]}
    )
    path = tmp_path / "odd.parquet"
    pq.write_table(table, path)
    inputs, accepted, _, by_row, _ = _run(SourceSpec(source="table", path=str(path), column_map=cmap))
    assert (inputs, accepted) == (2, 1) and by_row == {2: ("s c", "missing_field")}
    data = path.read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=r"cannot read .*cut\.parquet"):
        _run(SourceSpec(source="table", path=str(tmp_path / "cut.parquet"), column_map=cmap))


def test_reasons_are_documented() -> None:
    from real_assets.core.sources import REASONS

    assert collections.Counter(REASONS)  # every code has a description
    assert {"invalid_unicode", "too_deeply_nested"} <= set(REASONS)


def test_rows_that_differ_only_at_their_ends_are_not_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "ends.csv"
    path.write_text("prompt,response,score\np,r,1\np,r,10\np,r,1 \nn,r,1\np,r,1\n")
    inputs, accepted, _, by_row, _ = _run(SourceSpec(source="table", path=str(path)))
    assert (inputs, accepted) == (5, 4) and by_row == {5: ("row", "duplicate_row")}
