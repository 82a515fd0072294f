"""The package's layer contract: every module imports only its own layer or lower, nothing
imports the commands, there is no import circle, and imports between package modules stand at
the top of files. ``make lint`` runs it; ``tests/test_layers.py`` checks that it fails on a planted
violation.

    python scripts/check_layers.py [PACKAGE_DIR]     # default: habitat_helpers

Layers, lowest first (a module not listed is an error, so a new module must be placed):
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

#: Each layer and its modules, lowest first (book/contributing.md shows the same as a diagram).
LAYERS = {
    "foundations": ("errors", "cache", "paths", "runtime", "profiles", "eunis", "labels", "spatial", "metrics",
                    "landmask"),
    "data": ("datasets", "demo", "dataspec", "environment", "fetch", "fetch.http", "fetch.lucas",
             "fetch.sentinel2", "fetch.covariates"),
    "models": ("encoders", "embed", "losses", "align", "classify"),
    "evaluation": ("evaluation", "calibration", "pipeline"),
    "products": ("maps", "report", "records", "qc", "tiles", "viz"),
    "commands": ("cli", "cli.options", "cli.evaluate", "cli.map", "cli.qc", "notebooks", "workshop", "__main__"),
}
#: The package itself (``__init__``) imports nothing of its own at import time; it is outside the layers.
OUTSIDE = ("",)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path, root: Path) -> list[tuple[str, int, bool]]:
    """The package modules that ``path`` imports: ``(module, line, at_top)``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path, root).split(".") if module_name(path, root) else []
    package = here if path.name == "__init__.py" else here[:-1]
    top = set(tree.body)
    known = {module_name(p, root) for p in root.rglob("*.py")}
    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1] if node.level > 1 else package
                stem = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == root.name:
                stem = node.module.split(".", 1)[1] if "." in node.module else ""
            else:
                continue
            for alias in node.names:
                full = f"{stem}.{alias.name}" if stem else alias.name
                targets.append(full if full in known else stem)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == root.name and "." in alias.name:
                    targets.append(alias.name.split(".", 1)[1])
        at_top = node in top
        found += [(t, node.lineno, at_top) for t in targets if t in known]
    return found


def check(root: Path) -> list[str]:
    """Every breach of the contract in the package at ``root``, as messages (empty: it holds)."""
    layer_of = {m: i for i, (_, mods) in enumerate(LAYERS.items()) for m in mods}
    names = list(LAYERS)
    problems, graph = [], {}
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        if name in OUTSIDE:
            continue
        if name not in layer_of:
            problems.append(f"{path}: module {name!r} is in no layer (add it to LAYERS in scripts/check_layers.py)")
            continue
        graph[name] = set()
        for target, line, at_top in imports(path, root):
            if target == name or target in OUTSIDE:
                continue
            graph[name].add(target)
            where = f"{path}:{line}"
            if target not in layer_of:
                continue
            if layer_of[target] > layer_of[name]:
                problems.append(f"{where}: {name} ({names[layer_of[name]]}) imports {target} "
                                f"({names[layer_of[target]]}), a higher layer")
            if not at_top:
                problems.append(f"{where}: {name} imports {target} inside a function; imports between package "
                                "modules stand at the top of the file")
    problems += [f"import circle: {' -> '.join(c)}" for c in circles(graph)]
    return problems


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle through each strongly connected group of modules (Tarjan), as a path."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group) + [sorted(group)[0]])

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "habitat_helpers"
    problems = check(root)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"layer contract: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"layer contract holds: {sum(1 for _ in root.rglob('*.py'))} modules in "
          f"{len(LAYERS)} layers, no circle")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
