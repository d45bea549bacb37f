"""The label noise `annotation_quality` measured, as the training steps read it (apart from the annotation
domain, which imports the training one)."""

import pandas as pd

from real_assets.core.annotation.quality import ALL_ROUNDS
from real_assets.defs.versions import WarehouseTable
from real_assets.resources import Warehouse, table_exists

QUALITY = WarehouseTable("eval.annotation_quality", ("strategy", "round"))


def measured_flip_rate(warehouse: Warehouse, strategy: str) -> float | None:
    """The estimated flip rate of a strategy's labels over every round (None when never measured)."""

    with warehouse.connect(read_only=True) as con:
        if not table_exists(con, QUALITY.name):
            return None
        row = con.execute(
            "select estimated_flip_rate from eval.annotation_quality where strategy = ? and round = ?",
            [strategy, ALL_ROUNDS],
        ).fetchone()
    return None if row is None or row[0] is None or pd.isna(row[0]) else float(row[0])
