from real_assets.core.hashing import (
    digest,
    normalise_text,
    prompt_id,
    response_id,
    split_for,
)


def test_ids_ignore_whitespace_and_unicode_form_but_not_content():
    assert prompt_id("How  do I\n bake?") == prompt_id(" How do I bake? ")
    assert prompt_id("caf\u00e9") == prompt_id("cafe\u0301")  # NFC
    assert prompt_id("How do I bake?") != prompt_id("How do I bake bread?")
    pid = prompt_id("q")
    assert response_id(pid, "a b") == response_id(pid, "a  b")
    assert response_id(pid, "a") != response_id(prompt_id("other"), "a")


def test_digest_separates_parts():
    assert digest("ab", "c") != digest("a", "bc")
    assert normalise_text("  a \t b ") == "a b"


def test_split_is_deterministic_and_near_the_fraction():
    ids = [prompt_id(f"prompt {i}") for i in range(4000)]
    splits = [split_for(i, 0.2) for i in ids]
    assert splits == [split_for(i, 0.2) for i in ids]
    share = splits.count("test") / len(splits)
    assert 0.17 < share < 0.23
    assert {split_for(i, 0.0) for i in ids} == {"train"}


def _package(root, helper_body: str, other_body: str = "return 0"):
    """A throw-away package `pkg_<n>`: an asset-like function that calls a helper in another module."""
    import importlib
    import sys

    name = f"pkg_{abs(hash(str(root)))}"
    package = root / name
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "logic.py").write_text(
        f"LIMIT = 3\n\n\ndef helper(x):\n    {helper_body}\n\n\ndef unrelated():\n    {other_body}\n"
    )
    (package / "asset.py").write_text(
        f"from {name}.logic import LIMIT, helper\n\n\ndef asset(x):\n    return helper(x) + LIMIT\n"
    )
    sys.path.insert(0, str(root))
    try:
        for module in [m for m in sys.modules if m.startswith(name)]:
            del sys.modules[module]
        importlib.invalidate_caches()
        return importlib.import_module(f"{name}.asset").asset, name
    finally:
        sys.path.remove(str(root))


def test_code_digest_moves_with_the_logic_an_asset_runs_and_only_with_it(tmp_path):
    from real_assets.core.hashing import code_digest

    asset, name = _package(tmp_path, "return x + 1")
    base = code_digest(asset, name)
    assert code_digest(asset, name) == base
    changed_helper, _ = _package(tmp_path, "return x + 2")
    assert code_digest(changed_helper, name) != base
    changed_unrelated, _ = _package(tmp_path, "return x + 1", other_body="return 1")
    assert code_digest(changed_unrelated, name) == base


def test_code_digest_ignores_docstrings_and_comments_but_not_code(tmp_path):
    from real_assets.core.hashing import code_digest

    asset, name = _package(tmp_path, '"""Adds one."""\n    return x + 1  # the next one')
    base = code_digest(asset, name)
    reworded, _ = _package(tmp_path, '"""Adds one to x."""\n    # a comment\n    return x + 1')
    assert code_digest(reworded, name) == base
    undocumented, _ = _package(tmp_path, "return (x +\n        1)")
    assert code_digest(undocumented, name) == base
    changed, _ = _package(tmp_path, '"""Adds one."""\n    return x + 1.0  # the next one')
    assert code_digest(changed, name) != base
    string_changed, _ = _package(tmp_path, '"""Adds one."""\n    return str(x) + "1"')
    assert code_digest(string_changed, name) != code_digest(
        _package(tmp_path, '"""Adds one."""\n    return str(x) + "2"')[0], name
    )


def test_every_python_asset_carries_the_digest_of_its_code():
    from real_assets.core.hashing import code_digest, code_sources
    from real_assets.definitions import PACKAGE, defs
    from real_assets.defs import ingest

    graph = defs.resolve_asset_graph()
    versions = {k.to_user_string(): graph.get(k).code_version for k in graph.get_all_asset_keys()}
    assert len(set(versions.values())) == len(versions), "every asset runs different code"
    assert (
        versions["raw_responses"]
        == code_digest(ingest.raw_responses.op.compute_fn.decorated_fn, PACKAGE)[:12]
    )
    # the ingest logic it calls and the config class it takes are part of it
    sources = code_sources(ingest.raw_responses.op.compute_fn.decorated_fn, PACKAGE)
    assert {"function real_assets.defs.ingest.ingest", "class real_assets.defs.ingest.IngestConfig"} <= set(
        sources
    )


def test_table_digest_follows_content_not_storage_order():
    import duckdb

    from real_assets.resources import table_digest

    con = duckdb.connect()
    con.execute("create schema s")
    con.execute("create table s.t as select * from (values (2, 'b', [1.0, 2.0]), (1, 'a', null)) v(k, x, e)")
    before = table_digest(con, "s.t")
    con.execute("create or replace table s.t as select * from s.t order by k")  # same rows, other order
    assert table_digest(con, "s.t") == before
    assert before[1] == 2
    con.execute("update s.t set x = 'a ' where k = 1")
    assert table_digest(con, "s.t")[0] != before[0]
    assert table_digest(con, "s.t", where={"k": 2}) == table_digest(con, "s.t", where={"x": "b"})
    assert table_digest(con, "s.t", where={"k": 3})[1] == 0


def test_code_digest_is_the_same_in_every_process_and_reads_each_kind_of_definition():
    """A frozenset constant (its order follows the process's string hashing) gives one digest under any
    PYTHONHASHSEED; decorated functions, methods and classes nested in classes or functions are read from
    their file's syntax tree as `inspect.getsource` gives them (tests/digest_fixture)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    fixture = Path(__file__).parent / "digest_fixture"
    outputs = {
        subprocess.run(
            [sys.executable, str(fixture / "probe.py"), str(fixture)],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1, outputs
    (output,) = outputs
    assert output.startswith("True [")
    assert "__doc__" not in output  # the module's docstring, which a class body names, is no code
    for part in (
        "class pkg_defs.logic.Outer.Inner",
        "constant pkg_defs.logic.KEYS",
        "function pkg_defs.logic.cached",
    ):
        assert part in output


VERSIONS_PROBE = """
import json
from real_assets.core.hashing import _source_cache
from real_assets.definitions import defs
graph = defs.resolve_asset_graph()
versions = {key.to_user_string(): graph.get(key).code_version for key in graph.get_all_asset_keys()}
print(json.dumps({"versions": versions, "parsed": _source_cache().added}))
"""


def test_code_versions_read_from_the_source_cache_equal_those_computed_without_it(tmp_path):
    """The first process to load the code location parses and prints the syntax trees and keeps the texts
    (`SourceCache`, under $XDG_CACHE_HOME); the next one parses nothing and gets the same code versions."""
    import json
    import os
    import subprocess
    import sys

    def load() -> dict:
        env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
        done = subprocess.run(
            [sys.executable, "-c", VERSIONS_PROBE], env=env, capture_output=True, text=True, check=True
        )
        return json.loads(done.stdout.splitlines()[-1])

    cold = load()
    [cache] = (tmp_path / "real-assets").glob("code-sources-py*.json")
    assert cold["parsed"] > 0 and len(json.loads(cache.read_text())) == cold["parsed"]
    warm = load()
    assert warm == {"versions": cold["versions"], "parsed": 0}


def test_a_damaged_or_unwritable_source_cache_is_an_empty_one(tmp_path):
    import json

    from real_assets.core.hashing import SourceCache

    path = tmp_path / "cache" / "code-sources.json"
    path.parent.mkdir()
    path.write_text("{not json")
    cache = SourceCache(path)
    assert cache.get("k") is None
    cache.put("k", "text")
    cache.save()
    assert json.loads(path.read_text()) == {"k": "text"}
    path.write_text("[1, 2]")  # JSON, but not a cache
    assert SourceCache(path).get("k") is None
    blocked = tmp_path / "a-file" / "code-sources.json"  # its folder cannot be made: a file is there
    blocked.parent.write_text("")
    unwritable = SourceCache(blocked)
    unwritable.put("k", "text")
    unwritable.save()  # says nothing: the next process parses again
    assert unwritable.get("k") == "text" and blocked.parent.read_text() == ""
