"""`core.heap`: objects alive when new modules were imported are frozen for the garbage collector; without
new imports a call does nothing; what is made later is collected as before; `paused_collections` pauses the
collector and leaves it as it was."""

import gc
import sys
import types
import weakref

from real_assets.core.heap import freeze_imported, paused_collections


class _Node:
    pass


def test_freeze_imported_freezes_what_is_alive_once_modules_were_imported():
    freeze_imported()  # whatever the session imported so far
    before = gc.get_freeze_count()
    freeze_imported()
    assert gc.get_freeze_count() == before  # nothing imported since: nothing to do
    sys.modules["_real_assets_heap_probe"] = types.ModuleType("_real_assets_heap_probe")
    alive = [[i] for i in range(1000)]  # container objects: tracked by the collector
    try:
        freeze_imported()
        assert gc.get_freeze_count() >= before + len(alive)
    finally:
        del sys.modules["_real_assets_heap_probe"]


def test_a_cycle_made_after_the_freeze_is_still_collected():
    freeze_imported()
    node = _Node()
    node.itself = node
    ref = weakref.ref(node)
    del node
    gc.collect()
    assert ref() is None


def test_paused_collections_pause_inside_then_freeze_and_restore():
    assert gc.isenabled()
    with paused_collections():
        assert not gc.isenabled()
        sys.modules["_real_assets_heap_probe"] = types.ModuleType("_real_assets_heap_probe")
        before = gc.get_freeze_count()
    del sys.modules["_real_assets_heap_probe"]
    assert gc.isenabled() and gc.get_freeze_count() > before
    gc.disable()
    try:
        with paused_collections():
            pass
        assert not gc.isenabled()  # left as it was
    finally:
        gc.enable()
