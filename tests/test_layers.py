"""The package's rooms import one way only, and no two files import each other.

Every module under ``src/sequence`` is read with :mod:`ast`; each ``import`` and
``from … import`` anywhere in it — at the top, inside a function, under
``if TYPE_CHECKING:`` (a type is an arrow too) — is resolved to the file it
names. Two checks:

* **the ladder**: a room imports only itself and the rooms below it
  (:data:`LADDER`, highest first), and the runner only the leaves;
* **no cycles** between files: the file graph is acyclic (a cycle is reported
  as ``a -> b -> a``).

The rooms are ``sequence.<name>`` packages; every top-level module
(``settings.py``, ``secrets.py`` …) is a leaf. Importing a package's module does
not count as importing the package's ``__init__``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "sequence"

#: Highest first. A room may import the rooms after it, never those before it.
LADDER: tuple[str, ...] = (
    "cli",  # commands: options -> the API client -> rendering
    "api",  # the coordinator's app, auth, error envelope, routes
    "algos",  # WASM algos: the ABI, the Wasmtime host, the manager in the market process, replay
    "execution",  # the graph engine, its store writer, restore after a restart
    "store",  # the only SQL
    "trading",  # the pure trading model: graphs, matching core, fees, positions, wire shapes
    "market",  # market data: venues, books, catalogue, quotes and listings
    "stream",  # the /v1/stream hub and its channels
    "leaves",  # top-level modules: settings, secrets, lifecycle, bundle, echo, venues, …
)
#: Rooms beside the ladder, with what they may import. The runner talks to the
#: coordinator over HTTP only: it never sees the store, the market or the API code.
BESIDE: dict[str, frozenset[str]] = {"runner": frozenset({"leaves"})}
#: Who may import the rooms beside the ladder (``sequence runner`` starts one).
USERS_OF_BESIDE: dict[str, frozenset[str]] = {"runner": frozenset({"cli"})}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def room_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "sequence":
        raise ValueError(module)
    if len(parts) == 1:
        return "leaves"
    if (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return "leaves"


def _is_package(module: str) -> bool:
    return _modules()[module].name == "__init__.py"


def _resolve(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The ``sequence`` modules an import statement in ``module`` loads."""
    mods = _modules()
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name == "sequence" or alias.name.startswith("sequence."):
                name = alias.name
                while name not in mods and name:  # ``import sequence.x.y`` of a name that is not a file
                    name = name.rpartition(".")[0]
                if name:
                    yield name
        return
    if node.level:
        base = module.split(".")
        if not _is_package(module):
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join([*base, *([node.module] if node.module else [])])
    else:
        target = node.module or ""
    if target != "sequence" and not target.startswith("sequence."):
        return
    namespace = target not in mods  # a folder without __init__.py
    if namespace and not (SRC / target.replace(".", "/")).is_dir():
        raise AssertionError(f"{module}: cannot resolve the import of {target}")
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        if sub in mods:
            yield sub
        elif not namespace:
            yield target


@cache
def imports() -> dict[str, frozenset[str]]:
    """Module -> the modules it imports (anywhere in the file)."""
    out: dict[str, frozenset[str]] = {}
    for module, path in _modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                found.update(_resolve(module, node))
        found.discard(module)
        out[module] = frozenset(found)
    return out


def may_import(importer: str, imported: str) -> bool:
    if importer == imported:
        return True
    if imported in BESIDE:
        return importer in USERS_OF_BESIDE.get(imported, frozenset())
    if importer in BESIDE:
        return imported in BESIDE[importer]
    return LADDER.index(importer) < LADDER.index(imported)


def test_every_room_is_on_the_ladder_or_beside_it() -> None:
    rooms = {room_of(m) for m in _modules()}
    unknown = rooms - set(LADDER) - set(BESIDE)
    assert not unknown, f"new room(s) {sorted(unknown)}: place them in LADDER or BESIDE in {__file__}"


def test_no_import_runs_up_the_ladder() -> None:
    bad = []
    for module, targets in sorted(imports().items()):
        for target in sorted(targets):
            a, b = room_of(module), room_of(target)
            if not may_import(a, b):
                bad.append(f"{module} ({a}) imports {target} ({b})")
    assert not bad, "imports against the ladder " + " > ".join(LADDER) + ":\n" + "\n".join(bad)


def _find_cycle(graph: dict[str, frozenset[str]]) -> list[str] | None:
    color = dict.fromkeys(graph, 0)  # 0 new, 1 on the stack, 2 done
    for start in sorted(graph):
        if color[start]:
            continue
        path = [start]
        stack = [iter(sorted(graph[start]))]
        color[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                color[path.pop()] = 2
                stack.pop()
            elif color[nxt] == 1:
                return [*path[path.index(nxt):], nxt]
            elif color[nxt] == 0:
                color[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_no_import_cycle_between_files() -> None:
    cycle = _find_cycle(imports())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


# -- the checker itself ----------------------------------------------------------------------------


def test_the_checker_resolves_relative_and_type_only_imports() -> None:
    graph = imports()
    assert "sequence.market.book" in graph["sequence.market.service"]  # from .book import …
    assert room_of("sequence.settings") == "leaves" and room_of("sequence.market.venues.sim") == "market"


def test_the_checker_finds_a_cycle_and_an_upward_arrow() -> None:
    assert _find_cycle({"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"})}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": frozenset({"b"}), "b": frozenset()}) is None
    assert not may_import("store", "execution") and may_import("execution", "store")
    assert not may_import("runner", "store") and may_import("runner", "leaves")
    assert may_import("cli", "runner") and not may_import("api", "runner")
