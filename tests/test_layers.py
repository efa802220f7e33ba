"""The layering rules of docs/architecture.md, checked by walking every import of the product's code.

Imports inside functions count as much as those at the top of a module: hiding an import in a
function hides a dependency, it does not remove it. Tests and benchmarks are not checked.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("hif", "node", "federation", "ui")

# Layers, lowest first: a module may import its own layer or a lower one, never a higher one.
# The longest matching prefix decides a module's layer.
LAYERS: dict[str, int] = {
    "hif.errors": 0,  # the one exception tree and the loop-optional concurrency helpers that
    "hif.aio": 0,  # the stores themselves raise and use
    "hif.store": 1,  # the seam and its stores
    "hif": 2,  # plumbing: objects, trees, mainline, sessions, landing, history, checks, git interop
    "hif.worktree": 3,  # the working copy
    "hif.forge": 3,  # the client of a forge
    "hif.testing": 3,  # simulation and the fault/latency wrapper: for tests, never for the product
    "hif.porcelain": 4,  # the SDK (Repository)
    "hif.cli": 5,  # the hif command
    "hif.mcp": 5,  # the MCP server (hif mcp; the node serves its tools too)
    "hif.__main__": 5,
    "federation": 10,
    "node": 20,
    "ui": 30,
    # the composition root and the programs that start it: nothing else imports them
    "node.composition": 40,
    "node.server": 40,
    "node.cli": 40,
}
# ``hif`` itself (hif/__init__.py) is the SDK's public face (``hif.Repository``): a porcelain module.
FACADES = {"hif": 4}
TOP = 40
# Modules only tests, benchmarks and these modules may import.
CLOSED = {
    "hif.testing": ("hif.testing",),
    "hif.cli": ("hif.cli", "hif.__main__", "node.cli"),  # the library never imports the CLI
}


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    names: tuple[str, ...]
    line: int
    nested: bool  # inside a function (or a class body, or a conditional block)
    commented: bool  # a comment on its line or the line above says why


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _ours(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(module: str, path: Path, known: dict[str, Path]) -> Iterator[Import]:
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def commented(n: ast.stmt) -> bool:
        here = lines[n.lineno - 1]
        above = lines[n.lineno - 2] if n.lineno >= 2 else ""
        return "#" in here or above.strip().startswith("#")

    def walk(body: list[ast.stmt], nested: bool) -> Iterator[Import]:
        for n in body:
            if isinstance(n, ast.If) and _type_checking(n):
                continue  # annotations only: never run
            if isinstance(n, ast.Import):
                for alias in n.names:
                    if _ours(alias.name):
                        yield Import(module, alias.name, (), n.lineno, nested, commented(n))
            elif isinstance(n, ast.ImportFrom):
                base = n.module or ""
                if n.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (n.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                if not _ours(base):
                    continue
                names = tuple(a.name for a in n.names)
                # ``from hif import porcelain`` imports the submodule hif.porcelain
                subs = [f"{base}.{a}" for a in names if f"{base}.{a}" in known]
                for target in subs or [base]:
                    yield Import(module, target, names if not subs else (), n.lineno, nested,
                                 commented(n))
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(n, field, None)
                if isinstance(inner, list) and inner and isinstance(inner[0], ast.stmt | ast.ExceptHandler):
                    stmts = [s for h in inner for s in (h.body if isinstance(h, ast.ExceptHandler) else [h])]
                    yield from walk(stmts, nested or not isinstance(n, ast.Module))

    yield from walk(tree.body, False)


def layer(module: str) -> int:
    if module in FACADES:
        return FACADES[module]
    best, rank = "", None
    for prefix, value in LAYERS.items():
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
            best, rank = prefix, value
    assert rank is not None, f"{module} is in no layer: add it to LAYERS"
    return rank


def area(module: str) -> str:
    top = module.split(".")[0]
    return "node+ui" if top in ("node", "ui") else top


def all_imports() -> list[Import]:
    known = modules()
    return [i for m, p in known.items() for i in imports_of(m, p, known)]


AREAS = ["hif", "federation", "node+ui"]


@pytest.mark.parametrize("where", AREAS)
def test_dependencies_point_down(where: str) -> None:
    bad = []
    for i in all_imports():
        if area(i.importer) != where:
            continue
        if layer(i.target) > layer(i.importer):
            bad.append(f"{i.importer}:{i.line} imports {i.target}, a higher layer")
        for closed, allowed in CLOSED.items():
            if (i.target == closed or i.target.startswith(closed + ".")) and not any(
                i.importer == a or i.importer.startswith(a + ".") for a in allowed
            ):
                bad.append(f"{i.importer}:{i.line} imports {i.target} (only {', '.join(allowed)} may)")
        if layer(i.target) == TOP and layer(i.importer) != TOP:
            bad.append(f"{i.importer}:{i.line} imports {i.target}, which only the server and tests may")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("where", AREAS)
def test_no_circles(where: str) -> None:
    graph: dict[str, set[str]] = {}
    for i in all_imports():
        graph.setdefault(i.importer, set()).add(i.target)
    # Tarjan's strongly connected components, iteratively
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    circles: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                elif nxt in on:
                    low[v] = min(low[v], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                scc = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    scc.append(w)
                    if w == v:
                        break
                if len(scc) > 1:
                    circles.append(sorted(scc))
    mine = [c for c in circles if any(area(m) == where for m in c)]
    assert not mine, "import circles:\n" + "\n".join(" <-> ".join(c) for c in mine)


@pytest.mark.parametrize("where", AREAS)
def test_no_private_names_from_other_modules(where: str) -> None:
    bad = [
        f"{i.importer}:{i.line} imports {', '.join(n for n in i.names if n.startswith('_'))} from {i.target}"
        for i in all_imports()
        if area(i.importer) == where and i.target != i.importer
        and any(n.startswith("_") and not n.startswith("__") for n in i.names)
    ]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("where", AREAS)
def test_function_level_imports_say_why(where: str) -> None:
    bad = [
        f"{i.importer}:{i.line} imports {i.target} inside a function without a comment saying why"
        for i in all_imports()
        if area(i.importer) == where and i.nested and not i.commented
    ]
    assert not bad, "\n".join(bad)
