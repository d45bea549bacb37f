"""What an asset declares about its tables, and how a partition maps to rows, for any partitioning."""

import dagster as dg
import duckdb
import pytest

from real_assets.definitions import defs
from real_assets.defs.sql_assets import table_owners
from real_assets.defs.versions import (
    WarehouseTable,
    content_version,
    partition_columns,
    table_metadata,
    tables_of,
)

MULTI = dg.MultiPartitionsDefinition(
    {
        "strategy": dg.StaticPartitionsDefinition(["easy", "hard"]),
        "seed": dg.StaticPartitionsDefinition(["0", "1"]),
    }
)


def test_partitions_map_to_columns_named_like_their_dimensions():
    assert partition_columns(MULTI, "1|hard", {}) == {"seed": "1", "strategy": "hard"}
    single = dg.StaticPartitionsDefinition(["easy"])
    assert partition_columns(
        single, "easy", table_metadata(WarehouseTable("s.t", ("k",)), partition_column="strategy")
    ) == {"strategy": "easy"}
    assert partition_columns(None, None, {}) == {}
    with pytest.raises(ValueError, match="partition_column"):
        partition_columns(single, "easy", {})


def test_content_of_one_multi_dimension_partition():
    con = duckdb.connect()
    con.execute("create schema s")
    con.execute(
        "create table s.t as select * from "
        "(values ('easy', 0, 'a'), ('easy', 1, 'b'), ('hard', 0, 'c')) v(strategy, seed, x)"
    )
    table = WarehouseTable("s.t", ("strategy", "seed"))
    one = content_version(con, [table], partition_columns(MULTI, "0|easy", {}))
    assert one.rows == 1
    con.execute("update s.t set x = 'changed' where strategy = 'hard'")
    assert (
        content_version(con, [table], partition_columns(MULTI, "0|easy", {})) == one
    )  # other rows: no change
    con.execute("update s.t set x = 'changed' where strategy = 'easy' and seed = 0")
    assert content_version(con, [table], partition_columns(MULTI, "0|easy", {})).version != one.version


def test_every_table_has_one_writer_and_every_sql_input_is_written():
    graph = defs.resolve_asset_graph()
    declared = [
        (key, table.name)
        for key in graph.get_all_asset_keys()
        for table in tables_of(graph.get(key).metadata)
    ]
    names = [name for _, name in declared]
    assert len(names) == len(set(names)), "two assets declare one table"
    owners = table_owners(defs.assets, [])
    assert {name: key for key, name in declared} == owners
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.metadata.get("dagster/table_name"), key
