"""A package for code_digest to read: each kind of definition, and frozenset constants."""

import functools

KEYS = frozenset({"source", "split", "limit", "seed", "test_fraction", "max_chars", "column_map"})
PAIRS = (frozenset({"a", "b", "c", "d", "e"}), 2)


@functools.cache
def cached(x):
    """Doc."""
    return x in KEYS and PAIRS


def factory():
    class Made:
        """Doc."""

        def value(self):
            return cached("seed")

    return Made


class Outer:
    class Inner:
        @staticmethod
        def run():
            return factory()().value()


def asset():
    return Outer.Inner.run()
