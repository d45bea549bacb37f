"""Garbage-collector tuning for the long processes that run steps: the demo, Dagster's run workers, Ray
tasks. Importing Dagster, MLflow, torch, transformers and TRL leaves ~750k objects that live as long as
the process; every full collection walks them all (0.4-0.5 s on CPU), and transformers' Trainer runs one
as each training starts (`Accelerator.free_memory`), besides Python's own. A command's start-up runs with
the collector paused (`paused_collections`); then, and before each step and training, what is alive is
frozen (`freeze_imported`)."""

from __future__ import annotations

import contextlib
import gc
import sys

_modules_at_last_freeze = 0


def freeze_imported() -> None:
    """When modules were imported since the last call: collect, then move every object alive into the
    collector's permanent generation (`gc.freeze`), so that later collections walk only what was made
    after. Otherwise nothing (one length check). Frozen objects are still freed when their last reference
    goes; only a frozen object that later ends up in a reference cycle is never collected, so call this
    between steps, when what is alive is mostly modules and what lives as long as the process."""
    global _modules_at_last_freeze
    if len(sys.modules) == _modules_at_last_freeze:
        return
    gc.collect()
    gc.freeze()
    _modules_at_last_freeze = len(sys.modules)


@contextlib.contextmanager
def paused_collections():
    """No automatic collections inside (a command's start-up: imports, definitions, a Dagster instance,
    which make long-lived objects and little garbage; a demo's start ran 9 full collections, 1.3 s); then
    `freeze_imported`, and collections as they were."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        freeze_imported()
        if enabled:
            gc.enable()
