"""The registry of sources: every module in `sources/catalog/` that defines `SOURCE` is one source.

Adding a source is one module there (plus its tests): nothing else lists source names.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

from real_assets.core.records import SourceError
from real_assets.core.sources.rowchecks import Validator
from real_assets.core.sources.spec import SourceSpec
from real_assets.core.sources.sqlchecks import Col

CATALOG = __name__.rsplit(".", 1)[0] + ".catalog"
"""The package whose modules are the sources."""


@dataclass(frozen=True)
class Vectorized:
    """A layout's checks as SQL over its columns (`col(name)` gives a column as a `Col`).

    `accept` is true for rows that the row validator would accept with exactly `items`
    [(prompt, response, score) SQL expressions]; other rows go to the row validator. `labelled` is true
    where the pair is a bare chosen/rejected label."""

    accept: str
    items: Sequence[tuple[str, str, str]]
    labelled: str = "false"
    lets: Sequence[tuple[str, str]] = ()
    """(name, expression) computed first; accept and items may use the names."""


@dataclass(frozen=True)
class Layout:
    """How one source reads one file: the columns it reads, its row validator, its SQL form (or None)."""

    columns: tuple[str, ...]
    validate: Validator
    pair_field: str = ""
    """The rejected-side column, named in identical_responses rejects ('' for pointwise layouts)."""
    vectorized: Callable[[Callable[[str], Col]], Vectorized] | None = None


@dataclass(frozen=True)
class Source:
    """One source. `layout(spec, where, columns found)` raises SourceError on a wrong schema.
    `records` is set for generated sources (no file): it yields SourceBatches itself."""

    name: str
    describe: str
    layout: Callable[[SourceSpec, str, list[str]], Layout] | None = None
    records: Callable[[SourceSpec, int], object] | None = None
    check: Callable[[SourceSpec], None] | None = None
    """Extra spec checks of a generated source (file sources check through `layout`)."""
    takes_column_map: bool = False
    unique_responses: bool = False
    """Yield each response id once per run (a source that repeats responses across its rows)."""

    @property
    def reads_files(self) -> bool:
        return self.layout is not None


@cache
def sources() -> dict[str, Source]:
    """{name: Source} of every module in the catalog, by name."""
    catalog = importlib.import_module(CATALOG)  # by name: the catalog's modules import this one
    found: dict[str, Source] = {}
    for info in sorted(pkgutil.iter_modules(catalog.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{CATALOG}.{info.name}")
        source = getattr(module, "SOURCE", None)
        if isinstance(source, Source):
            if source.name in found:
                raise RuntimeError(f"two sources named {source.name!r}")
            found[source.name] = source
    return dict(sorted(found.items()))


def source_names() -> tuple[str, ...]:
    """Every registered source name."""
    return tuple(sources())


def file_source_names() -> tuple[str, ...]:
    """The sources that read a file or dataset (all but generated ones)."""
    return tuple(name for name, s in sources().items() if s.reads_files)


def get_source(name: str) -> Source:
    """The source called name; SourceError listing the valid names otherwise."""
    found = sources().get(name)
    if found is None:
        raise SourceError(f"unknown source {name!r}; valid sources: {', '.join(source_names())}")
    return found


def schema_error(spec: SourceSpec, where: str, need: str, found: list[str]) -> SourceError:
    """The wrong-schema error, naming the file and what was found."""
    return SourceError(
        f"{spec.source}: {where} does not have the {spec.source} schema: needs {need}; "
        f"found columns {sorted(found)}"
    )
