"""The package's import graph, read from the source with ``ast`` (imports inside functions count).

Used by ``test_layers.py``; also a script: ``python tests/import_graph.py`` prints the cycles and
the upward imports for the layer table in ``test_layers.py``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "headstart"


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def _resolve(current: str, is_package: bool, level: int, target: str | None) -> str:
    base = current.split(".") if is_package else current.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports(known: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the headstart modules it imports (the longest known prefix of each import)."""
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        is_package = path.name == "__init__.py"
        found: set[str] = set()
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mod = _resolve(name, is_package, node.level, node.module) if node.level else (node.module or "")
                targets = [f"{mod}.{a.name}" for a in node.names] + [mod]
            for t in targets:
                if not t.startswith(PACKAGE):
                    continue
                while t and t not in known:
                    t = t.rpartition(".")[0]
                if t and t != name:
                    found.add(t)
        graph[name] = found
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    import sys

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def layer_of(module: str, layers: list[tuple[str, Iterable[str]]]) -> int:
    """The index of the first layer with a prefix that matches ``module`` (longest prefix wins)."""
    best, best_len = -1, -1
    for i, (_, prefixes) in enumerate(layers):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    return best


def upward(graph: dict[str, set[str]], layers: list[tuple[str, Iterable[str]]]) -> list[tuple[str, str]]:
    """Imports from a lower layer to a higher one (0 is the ground floor)."""
    bad = []
    for mod, deps in graph.items():
        lm = layer_of(mod, layers)
        for d in deps:
            if mod.startswith(d + ".") and d != PACKAGE:
                continue  # a module importing its own package's __init__ (re-exports); the root sits on top
            if layer_of(d, layers) > lm:
                bad.append((mod, d))
    return sorted(bad)


if __name__ == "__main__":
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("test_layers", Path(__file__).with_name("test_layers.py"))
    layers_mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.path.insert(0, str(Path(__file__).parent))
    spec.loader.exec_module(layers_mod)  # type: ignore[union-attr]
    g = imports(modules())
    print("cycles:", len(cycles(g)))
    for c in cycles(g):
        print("  ", " <-> ".join(c))
    ups = upward(g, layers_mod.LAYERS)
    print("upward imports:", len(ups))
    for a, b in ups:
        print(f"   {a} -> {b}")
