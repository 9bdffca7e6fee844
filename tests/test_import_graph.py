"""Imports point one way at every level: no cycle among modules, subpackages or the two top packages, and nothing in
``instance_nerfacto`` imports ``data_preprocess`` (scripts/import_graph.py reads the imports with ast; nothing is
imported, so this takes well under a second)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _import_graph():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


import_graph = _import_graph()


@pytest.mark.parametrize("level", ["module", "subpackage", "package"])
def test_no_import_cycle(level: str) -> None:
    graph = import_graph.levels(ROOT)[level]
    assert len(graph) > 1
    assert import_graph.cycles(graph) == [], f"{level} import cycle: run `python scripts/import_graph.py --edges`"


def test_the_plugin_never_imports_the_map_stage() -> None:
    graph = import_graph.levels(ROOT)["package"]
    assert graph["data_preprocess"] == {"instance_nerfacto"} and graph["instance_nerfacto"] == set()


def test_the_model_does_not_import_its_viewer_panel() -> None:
    graph = import_graph.levels(ROOT)["module"]
    assert "instance_nerfacto.edit.viewer" not in graph["instance_nerfacto.lift.model"]


def test_cycles_are_found_at_every_level() -> None:
    """The checker itself: a two-module loop, a loop through three groups, and a function-level import."""
    graph = {"a.x.m": {"a.y.n"}, "a.y.n": {"a.z.o"}, "a.z.o": {"a.x.p"}, "a.x.p": set()}
    assert import_graph.cycles(graph) == []
    assert import_graph.cycles(import_graph.collapse(graph, import_graph.subpackage)) == [["a.x", "a.y", "a.z"]]
    assert import_graph.cycles({"m": {"n"}, "n": {"m"}, "o": {"m"}}) == [["m", "n"]]


def test_imports_inside_functions_and_relative_imports_count(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "a.py").write_text("def f():\n    from pkg import b\n")
    (package / "b.py").write_text("from .sub import a\n")
    graph = import_graph.module_graph(import_graph.module_files(tmp_path, ["pkg"]))
    assert graph["pkg.sub.a"] == {"pkg.b"} and "pkg.sub.a" in graph["pkg.b"]
    assert import_graph.cycles(graph) == [["pkg.b", "pkg.sub.a"]]
