"""The project's import graph and its cycles, at module, subpackage and top-package level.

    python scripts/import_graph.py            # prints each level's cycles (exit status 1 when there is one)
    python scripts/import_graph.py --edges    # also the subpackage edges, with the imports that make each

Imports are read with ``ast`` (nothing is imported), wherever they are in a file: an import inside a function is a
dependency all the same, it only runs later. A subpackage is the first two parts of a module's name
(``instance_nerfacto.lift``, ``data_preprocess.synth``); a module directly in a top package is its own node
(``instance_nerfacto.pipeline``). The rule the graph checks: imports point one way at every level, e.g.
``data_preprocess`` may import ``instance_nerfacto.core`` but nothing in ``instance_nerfacto`` imports
``data_preprocess``.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, Set

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("instance_nerfacto", "data_preprocess")
"""The top packages whose imports are checked (tests, benchmarks and scripts may import anything)."""

Graph = Dict[str, Set[str]]


def module_files(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> Dict[str, Path]:
    """Dotted module name -> file, for every module of the packages (``pkg/__init__.py`` is ``pkg``)."""
    modules: Dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imported_names(module: str, path: Path) -> Set[str]:
    """Every dotted name the module imports, relative imports resolved against the module's package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from pkg import mod` imports the module pkg.mod; `from mod import func` imports mod
            names.update(f"{source}.{alias.name}" for alias in node.names)
            names.add(source)
    return names


def module_graph(modules: Dict[str, Path]) -> Graph:
    """Module -> the project modules it imports. A name resolves to the longest project module it starts with; a
    package's ``__init__`` is not counted as imported by its own modules."""
    graph: Graph = {name: set() for name in modules}
    for name, path in modules.items():
        for imported in imported_names(name, path):
            parts = imported.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            target = ".".join(parts)
            if target and target != name and not name.startswith(target + "."):
                graph[name].add(target)
    return graph


def collapse(graph: Graph, key) -> Graph:
    """The graph of groups of modules (``key(module)`` names a module's group); edges inside a group dropped."""
    grouped: Graph = defaultdict(set)
    for source, targets in graph.items():
        grouped[key(source)]
        for target in targets:
            if key(target) != key(source):
                grouped[key(source)].add(key(target))
    return dict(grouped)


def subpackage(module: str) -> str:
    return ".".join(module.split(".")[:2])


def top_package(module: str) -> str:
    return module.split(".")[0]


def cycles(graph: Graph) -> List[List[str]]:
    """The strongly connected components of more than one node (Tarjan, iterative), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    on_stack: Set[str] = set()
    stack: List[str] = []
    found: List[List[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def levels(root: Path = ROOT) -> Dict[str, Graph]:
    """The import graph at each level: ``module``, ``subpackage`` and ``package``."""
    graph = module_graph(module_files(root))
    return {"module": graph, "subpackage": collapse(graph, subpackage), "package": collapse(graph, top_package)}


def edge_reasons(graph: Graph, source_group: str, target_group: str) -> List[str]:
    """The module imports behind one subpackage edge."""
    return sorted(f"{source} -> {target}" for source, targets in graph.items() for target in targets
                  if subpackage(source) == source_group and subpackage(target) == target_group)


def main(argv: List[str]) -> int:
    graphs = levels()
    if "--edges" in argv:
        for source, targets in sorted(graphs["subpackage"].items()):
            for target in sorted(targets):
                print(f"{source} -> {target}")
                for reason in edge_reasons(graphs["module"], source, target):
                    print(f"    {reason}")
    status = 0
    for level, graph in graphs.items():
        found = cycles(graph)
        print(f"{level}: {len(graph)} nodes, {sum(map(len, graph.values()))} edges, "
              f"{len(found)} cycle{'s' if len(found) != 1 else ''}")
        for component in found:
            print("    " + ", ".join(component))
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
