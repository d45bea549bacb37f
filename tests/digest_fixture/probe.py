"""Run by test_hashing.py in processes of different PYTHONHASHSEED: prints what the digest reads."""

import inspect
import sys

sys.path.insert(0, sys.argv[1])
from pkg_defs import logic

from real_assets.core import hashing

made = logic.factory()
read_alike = all(
    hashing._source(v) == hashing.behaviour_source(inspect.getsource(v))
    for v in (logic.cached.__wrapped__, logic.Outer.Inner, logic.Outer.Inner.run, made, made.value)
)
print(
    read_alike,
    sorted(hashing.code_sources(logic.asset, "pkg_defs")),
    hashing.code_digest(logic.asset, "pkg_defs"),
)
