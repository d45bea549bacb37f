"""A snapshot of every asset spec: any change to the lineage graph shows up in review.

Regenerate after an intended change with `UPDATE_SNAPSHOTS=1 ./scripts/test tests/test_asset_specs.py`.
"""

import json
import os
from pathlib import Path

from real_assets.definitions import defs

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_specs.json"


def _config_fields(assets_def) -> dict | None:
    """The asset's config fields and their defaults, as Dagster sees them."""
    schema = assets_def.op.config_schema
    fields = getattr(schema.config_type, "fields", None) if schema else None
    if not fields:
        return None
    return {name: field.default_value if field.default_provided else None for name, field in fields.items()}


def _specs() -> dict:
    graph = defs.resolve_asset_graph()
    out = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets_def = defs.get_assets_def(key)
        condition = node.automation_condition
        out[key.to_user_string()] = {
            "group": node.group_name,
            "deps": sorted(p.to_user_string() for p in node.parent_keys),
            "code_version": bool(node.code_version),  # its value moves with every logic change
            "partitions": list(node.partitions_def.get_partition_keys()) if node.partitions_def else None,
            "automation_condition": condition.get_label() if condition else None,
            "kinds": sorted(node.kinds),
            "pool": assets_def.op.pool,
            "checks": sorted(c.name for c in graph.get_check_keys_for_assets([key])),
            "table": node.metadata.get("dagster/table_name"),
            "resources": sorted(assets_def.required_resource_keys),
            "config": _config_fields(assets_def),
            "described": bool(node.description),
        }
    return out


def test_asset_specs_match_the_snapshot():
    specs = _specs()
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(json.dumps(specs, indent=2, sort_keys=True) + "\n")
    assert specs == json.loads(SNAPSHOT.read_text()), "asset graph changed: review, then UPDATE_SNAPSHOTS=1"


def test_every_asset_has_a_group_code_version_pool_and_table():
    for name, spec in _specs().items():
        assert spec["group"] != "default", name
        assert spec["code_version"], name
        assert spec["pool"] in ("warehouse", "gpu"), name
        assert spec["table"], name
