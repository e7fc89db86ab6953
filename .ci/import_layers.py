#!/usr/bin/env python3
# Copy of ../shared/tools/import_layers.py for clones without it (`make lint` prefers that one).
"""Import graph of a checkout: cycles between apps and between modules.

Reads every import (also those inside functions) of the project's packages,
tests, bench and migrations left out. Prints the app-level edges, every
strongly connected component of apps and of modules, and a last line
`apps in cycles: N, module cycles: M, upward into config or clarion_dev: K`. Exits 0 only
when all three are 0.

    python ../shared/tools/import_layers.py [CHECKOUT]   (from the project root: python ../shared/tools/import_layers.py .)
"""
from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

SKIP_DIRS = {"tests", "bench", "migrations", ".venv", "node_modules", ".devdata", "demo", "docs"}
# Top layers: the apps may not import them (Celery tasks use shared_task / current_app).
TOP = {"config", "clarion_dev"}


def modules(root: Path) -> dict[str, Path]:
    out = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if any(part in SKIP_DIRS or part.startswith(".") for part in rel.parts[:-1]):
            continue
        if len(rel.parts) == 1:  # manage.py and other top-level scripts
            continue
        name = ".".join(rel.with_suffix("").parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        out[name] = path
    return out


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def sccs(graph: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

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

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    mods = modules(root)
    known = set(mods)
    mod_graph = {m: imports(p, m, known) for m, p in mods.items()}
    app_graph: dict[str, set[str]] = defaultdict(set)
    edges: dict[tuple[str, str], int] = defaultdict(int)
    for m, targets in mod_graph.items():
        for t in targets:
            a, b = m.split(".")[0], t.split(".")[0]
            if a != b:
                app_graph[a].add(b)
                edges[(a, b)] += 1
    for (a, b), n in sorted(edges.items()):
        print(f"edge {a} -> {b} ({n})")
    app_cycles = sccs(dict(app_graph))
    mod_cycles = sccs(mod_graph)
    for c in app_cycles:
        print("app cycle:", " <-> ".join(c))
    for c in mod_cycles:
        print("module cycle:", " <-> ".join(c))
    upward = sum(n for (a, b), n in edges.items() if b in TOP and a not in TOP)
    apps_in_cycles = sum(len(c) for c in app_cycles)
    print(f"apps in cycles: {apps_in_cycles}, module cycles: {len(mod_cycles)}, upward into config or clarion_dev: {upward}")
    return 0 if apps_in_cycles == 0 and not mod_cycles and upward == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
