"""Automation conditions, used on the asset decorators.

- Cheap steps follow their inputs at once (`EAGER`).
- Training and evaluation run when an input's *data version* changed (a rerun that reproduces the same
  content triggers nothing), at most once per tick of `$REAL_ASSETS_TRAIN_CRON` (default 03:00 UTC), read
  when the code location loads.
"""

from __future__ import annotations

import os

import dagster as dg

TRAIN_CRON_ENV = "REAL_ASSETS_TRAIN_CRON"
DEFAULT_TRAIN_CRON = "0 3 * * *"
CRON_TIMEZONE = "UTC"

EAGER = dg.AutomationCondition.eager()
"""Cheap steps: they follow their inputs at once."""


def train_cron() -> str:
    return os.environ.get(TRAIN_CRON_ENV) or DEFAULT_TRAIN_CRON


def on_data_change_at_most_per_cron(cron: str, timezone: str = CRON_TIMEZONE) -> dg.AutomationCondition:
    """True when a cron tick has passed since the target was last requested or updated, AND an input's
    data version changed since then (or the target is missing). So at most one request per tick, and
    none for an upstream rerun that reproduced the same content. Not while an input is missing, in
    progress or about to be requested (a DPO run waits for the reference retrained in the same tick)."""
    A = dg.AutomationCondition
    tick = A.cron_tick_passed(cron, timezone).since_last_handled().with_label(f"tick of {cron} since handled")
    changed = (
        A.any_deps_match(A.data_version_changed())
        .since_last_handled()
        .with_label("input data version changed since handled")
    )
    return (
        tick
        & (changed | A.missing())
        & ~A.any_deps_missing()
        & ~A.any_deps_in_progress()
        & ~A.any_deps_match(A.will_be_requested()).with_label("input requested this tick")
        & ~A.in_progress()
    ).with_label(f"on_data_change_at_most_per_cron({cron}, {timezone})")


def on_new_training_data() -> dg.AutomationCondition:
    """Training and evaluation: on an input's data version change, at most once per training cron tick."""
    return on_data_change_at_most_per_cron(train_cron())
