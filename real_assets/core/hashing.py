"""The one hashing helper: content ids, data versions and file digests all come from here."""

from __future__ import annotations

import ast
import atexit
import contextlib
import functools
import hashlib
import inspect
import json
import os
import re
import sys
import tempfile
import textwrap
import types
import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path

_WHITESPACE = re.compile(r"\s+")
ID_LENGTH = 16


def normalise_text(text: str) -> str:
    """Unicode NFC, whitespace collapsed and stripped: the form that ids are computed from."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def digest(*parts: str | bytes) -> str:
    """SHA-256 hex digest of the parts, separated so that ("ab", "c") != ("a", "bc")."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def prompt_id(prompt: str) -> str:
    """Stable id of a prompt: hash of its normalised text."""
    return digest("prompt", normalise_text(prompt))[:ID_LENGTH]


def response_id(prompt_key: str, response: str) -> str:
    """Stable id of a response to one prompt: hash of the prompt id and the normalised text."""
    return digest("response", prompt_key, normalise_text(response))[:ID_LENGTH]


def split_for(prompt_key: str, test_fraction: float) -> str:
    """Deterministic train/test split by prompt: the same prompt always lands on the same side."""
    bucket = int(digest("split", prompt_key)[:8], 16) % 10_000
    return "test" if bucket < round(test_fraction * 10_000) else "train"


TABLE_DIGEST_FORMAT = 2
"""Which `table_digest_sql` wrote a table digest, recorded beside every set of digests so that the audit can
tell an older format from changed content. 1 (untagged): SHA-256 over the rows' text in key order; 2: the
order-free sum of row hashes below."""


def table_digest_sql(table: str, where_columns: Sequence[str] = ()) -> str:
    """The SQL (DuckDB) that returns (rows, digest) of a table: a digest of the multiset of its rows, so the
    database does the hashing and no sort is needed. Each row's JSON is hashed with md5 and the 128-bit
    hashes are summed exactly (as two 64-bit halves in HUGEINT); the digest is the SHA-256 of the row count
    and the two sums. Storage order does not matter, the same rows always give the same digest, and a
    digest over a table is the combination of the digests of any split of its rows. Identifiers must be
    validated by the caller; the `where_columns` values are bound as parameters in order."""
    where = " and ".join(f"{column} = ?" for column in where_columns) or "true"
    half = "18446744073709551615"  # 2**64 - 1
    return (
        "select count(*), sha256(count(*)::varchar || ':' || coalesce(sum((h >> 64)::ubigint), 0)::varchar "
        f"|| ':' || coalesce(sum((h & {half})::ubigint), 0)::varchar) "
        f"from (select md5_number(to_json(t)) as h from {table} as t where {where})"
    )


def digest_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def digest_directory(root: Path) -> dict[str, str]:
    """Digest of every file under root, keyed by its path relative to root (sorted)."""
    return {str(p.relative_to(root)): digest_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def digest_manifest(manifest: dict[str, str]) -> str:
    """One digest for a {name: digest} manifest."""
    return digest(*(f"{k}={v}" for k, v in sorted(manifest.items())))


_CONSTANT_TYPES = (str, bytes, int, float, bool, tuple, frozenset, type(None))


def code_digest(obj: object, package: str) -> str:
    """Digest of the code of a function (or class) and of everything of `package` it uses (`code_sources`),
    so it moves when the package's logic behind `obj` changes and stays put otherwise: each piece is its
    syntax tree without docstrings, comments or layout (`behaviour_source`): editing those moves nothing."""
    return digest(*(f"{name}\n{text}" for name, text in sorted(code_sources(obj, package).items())))


def code_sources(obj: object, package: str) -> dict[str, str]:
    """The code (`behaviour_source`) of a function (or class) and of everything of `package` it uses,
    transitively: the functions and classes it calls or annotates with, the modules it reads attributes of,
    and the simple constants (strings, numbers, tuples) it names; by "function|class|module|constant
    <qualified name>". Code outside `package` does not count."""
    seen: set[int] = set()
    parts: dict[str, str] = {}

    def ours(value: object) -> bool:
        module = getattr(value, "__module__", None) or getattr(value, "__name__", "")
        return module == package or module.startswith(package + ".")

    def names_of(code: types.CodeType) -> Iterator[str]:
        yield from code.co_names
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                yield from names_of(const)

    def visit(value: object) -> None:
        if id(value) in seen:
            return
        seen.add(id(value))
        if isinstance(value, types.ModuleType):
            parts[f"module {value.__name__}"] = _source(value)
            return
        value = inspect.unwrap(value) if callable(value) else value
        if isinstance(value, type):
            try:
                source = _source(value)
            except OSError:  # generated (a step config made from a core dataclass): its fields stand for it
                source = repr(getattr(value, "model_fields", sorted(vars(value))))
            parts[f"class {value.__module__}.{value.__qualname__}"] = source
            for member in vars(value).values():
                function = getattr(member, "__func__", member)
                if isinstance(function, types.FunctionType):
                    follow(function)
                elif isinstance(member, type) and ours(member):  # a nested class
                    visit(member)
        elif isinstance(value, types.FunctionType):
            try:
                source = _source(value)
            except OSError:
                return  # generated (a dataclass __init__): its class's source covers it
            parts[f"function {value.__module__}.{value.__qualname__}"] = source
            follow(value)

    def follow(function: types.FunctionType) -> None:
        namespace = function.__globals__
        cells = dict(zip(function.__code__.co_freevars, function.__closure__ or (), strict=True))
        # Dunder names are the module's own (a class body reads `__name__` and writes `__doc__`, which
        # would find the module's docstring), not code it uses.
        referenced = {
            name: namespace[name]
            for name in names_of(function.__code__)
            if name in namespace and not (name.startswith("__") and name.endswith("__"))
        }
        referenced |= {name: cell.cell_contents for name, cell in cells.items() if _filled(cell)}
        referenced |= {f"annotation {k}": v for k, v in function.__annotations__.items()}
        for name, value in sorted(referenced.items()):
            if isinstance(value, _CONSTANT_TYPES) and " at 0x" not in repr(value):
                parts[f"constant {function.__module__}.{name}"] = _constant_text(value)
            elif (
                isinstance(value, type | types.FunctionType | types.ModuleType) or callable(value)
            ) and ours(value):
                visit(value)

    visit(obj)
    return parts


def _constant_text(value: object) -> str:
    """`repr`, with a frozenset's items sorted: its own order follows string hashing, which changes from one
    process to the next (PYTHONHASHSEED), and would move the code version with it."""
    if type(value) is frozenset:
        return f"frozenset({sorted(_constant_text(item) for item in value)})"
    if type(value) is tuple:  # not a named tuple or a record, which keep their repr
        return f"tuple({[_constant_text(item) for item in value]})"
    return repr(value)


@functools.cache
def _source(value: object) -> str:
    # Each code location load digests every asset, and the assets share most of what they call.
    located = _located(value)
    if located is None:  # a lambda
        return behaviour_source(inspect.getsource(value))
    filename, source, where = located
    cache = _source_cache()
    key = f"{hashlib.sha256(source).hexdigest()[:32]}:{where}"
    text = cache.get(key)
    if text is None:
        node = _definition(value, filename, source)
        text = behaviour_source(inspect.getsource(value)) if node is None else ast.unparse(node)
        cache.put(key, text)
    return text


def _located(value: object) -> tuple[str, bytes, str] | None:
    """(file name, the file's bytes as they are now, which definition in it) of a module, function or
    class; None for a lambda or something without a source file."""
    if not isinstance(value, types.FunctionType | type | types.ModuleType) or value.__name__ == "<lambda>":
        return None
    try:
        filename = inspect.getsourcefile(value)
    except TypeError:
        return None
    if filename is None:
        return None
    source = Path(filename).read_bytes()  # the file as it is now, as `inspect.getsource` reads it
    if isinstance(value, types.ModuleType):
        return filename, source, "module"
    if isinstance(value, types.FunctionType):
        return filename, source, f"function {value.__qualname__} {value.__code__.co_firstlineno}"
    return filename, source, f"class {value.__qualname__}"


@functools.cache
def _source_cache() -> SourceCache:
    try:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "real-assets"
    except RuntimeError:  # no home directory to be found: the cache lives as long as the temp folder
        root = Path(tempfile.gettempdir()) / "real-assets"
    return SourceCache(root / f"code-sources-py{sys.version_info[0]}{sys.version_info[1]}.json")


class SourceCache:
    """`_source` texts kept between processes, keyed by the digest of the file's bytes and the definition:
    parsing, stripping and printing the package's syntax trees was about 0.3 of the 1.4 CPU s that loading
    the code location took (1.1 s with this cache), in every Dagster process and command. The printed tree
    is a function of the file's bytes (and of the Python version, in the file name), so an entry never goes
    stale; a file that cannot be read or written is the same as an empty one."""

    MAX_ENTRIES = 20_000

    def __init__(self, path: Path):
        self.path = path
        self.entries = self._read()
        self.used: set[str] = set()
        self.added = 0

    def get(self, key: str) -> str | None:
        self.used.add(key)
        return self.entries.get(key)

    def put(self, key: str, text: str) -> None:
        if not self.added:
            atexit.register(self.save)
        self.entries[key] = text
        self.added += 1

    def save(self) -> None:
        """Merge what this process added into the file (another process may have written since), keeping
        only the entries this process used once it holds more than `MAX_ENTRIES`; atomic by rename."""
        entries = {**self._read(), **self.entries}
        if len(entries) > self.MAX_ENTRIES:
            entries = {key: text for key, text in entries.items() if key in self.used}
        staging = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            staging.write_text(json.dumps(entries))
            os.replace(staging, self.path)
        with contextlib.suppress(OSError):
            staging.unlink(missing_ok=True)

    def _read(self) -> dict[str, str]:
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return entries if isinstance(entries, dict) else {}


def _definition(value: object, filename: str, source: bytes) -> ast.AST | None:
    """The syntax tree of a module, or the node of a function or class in it, from its file parsed once
    (`inspect.getsource` would tokenize the file again for each definition and, for a class, walk the whole
    module's tree). None where there is no such node."""
    if isinstance(value, types.ModuleType):
        return _module_tree(filename, source)
    if isinstance(value, types.FunctionType):
        return _functions_by_line(filename, source).get(value.__code__.co_firstlineno)
    body, node = _module_tree(filename, source).body, None
    for name in (part for part in value.__qualname__.split(".") if part != "<locals>"):
        named = [n for n in body if isinstance(n, _DEFINITIONS) and n.name == name]
        if not named:
            return None
        node = named[-1]  # the last definition of a name is the one bound
        body = node.body
    return node


_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


@functools.cache
def _module_tree(filename: str, source: bytes) -> ast.Module:
    """The file's syntax tree without its bare string statements (`_strip_docstrings`)."""
    return _strip_docstrings(ast.parse(source, filename))


@functools.cache
def _functions_by_line(filename: str, source: bytes) -> dict[int, ast.AST]:
    # A function's code starts at its first decorator's line, or at `def` when it has none.
    return {
        min([node.lineno, *(d.lineno for d in node.decorator_list)]): node
        for node in ast.walk(_module_tree(filename, source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def behaviour_source(source: str) -> str:
    """Python source as its syntax tree prints it, without comments, layout, docstrings or any other bare
    string statement (an attribute's docstring): two sources that differ only there give the same text.
    A fragment that does not parse alone (a lambda inside a call) is returned as it is."""
    try:
        tree = ast.parse(textwrap.dedent(source))
    except SyntaxError:
        return source
    return ast.unparse(_strip_docstrings(tree))


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    """`tree`, changed in place: every bare string statement (a docstring) left out of every body."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        kept = [
            statement
            for statement in body
            if not (
                isinstance(statement, ast.Expr)
                and isinstance(statement.value, ast.Constant)
                and isinstance(statement.value.value, str)
            )
        ]
        node.body = kept or [ast.Pass()]
    return tree


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True
