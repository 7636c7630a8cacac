"""The one-way architecture, read from the source (every import statement, including those inside
functions): the CLI is the top layer and nothing below imports it, the explorer only calls the
library, and no module or package of ``dynviz`` imports one that imports it back."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]

CLI = ("dynviz.cli", "dynviz.commands")
"""The top layer: the ``dynviz`` command and its subcommands."""

CLI_MODULES = ("dynviz.__main__",)
"""Modules that are part of the command line without living in ``dynviz.commands``."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources(folder: str) -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((ROOT / folder).rglob("*.py"))}


LIBRARY = _sources("dynviz")
APPS = _sources("apps")


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """``(module, names, line)`` of every absolute import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    # Imports under ``if TYPE_CHECKING:`` never run, so they cannot form a runtime cycle.
    typing_only = {
        id(inner)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test).endswith("TYPE_CHECKING")
        for stmt in block.body
        for inner in ast.walk(stmt)
    }
    out = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module, [alias.name for alias in node.names], node.lineno))
    return out


def _resolve(module: str, names: list[str]) -> set[str]:
    """The ``dynviz`` modules an import statement loads: ``from dynviz.analysis import common``
    is the submodule ``dynviz.analysis.common``, ``from dynviz.analysis import extract_common``
    the package ``dynviz.analysis``. Packages above the target are not counted (importing
    ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__``, but those are the package's own
    choices, checked on their own lines)."""
    found = set()
    for target in [f"{module}.{name}" for name in names] or [module]:
        while target and target not in LIBRARY:
            target = target.rpartition(".")[0]
        if target:
            found.add(target)
    if names and not found and module in LIBRARY:
        found.add(module)
    return found


def _graph() -> nx.DiGraph:
    graph = nx.DiGraph()
    for name, path in LIBRARY.items():
        graph.add_node(name)
        for module, names, line in _imports(path):
            for target in _resolve(module, names):
                if target != name:
                    graph.add_edge(name, target, line=line)
    return graph


def _in(module: str, layer: tuple[str, ...]) -> bool:
    return any(module == top or module.startswith(top + ".") for top in layer)


def _where(graph: nx.DiGraph, a: str, b: str) -> str:
    return f"{LIBRARY[a].relative_to(ROOT)}:{graph.edges[a, b]['line']} imports {b}"


def test_the_scan_sees_the_package():
    graph = _graph()
    assert {"dynviz.cli", "dynviz.commands.flops", "dynviz.model.network"} <= set(graph)
    # a known edge of each kind: a plain import, a submodule by name, a lazy import in a function
    assert graph.has_edge("dynviz.commands.flops", "dynviz.model.zoo")
    assert graph.has_edge("dynviz.analysis", "dynviz.analysis.common")
    assert graph.has_edge("dynviz.cli", "dynviz.version")  # --version, without torch
    assert graph.has_edge("dynviz.analysis.common", "dynviz.model")  # build_model, in a function


def test_nothing_below_the_cli_imports_it():
    graph = _graph()
    upward = [
        _where(graph, a, b)
        for a, b in graph.edges
        if _in(b, CLI) and not _in(a, CLI) and a not in CLI_MODULES
    ]
    assert upward == []


def test_the_library_never_imports_the_app():
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in LIBRARY.values()
        for module, _, line in _imports(path)
        if module.split(".")[0] in ("apps", "_state", "views", "streamlit_app")
    ]
    assert offenders == []


def test_no_import_cycles_between_modules():
    graph = _graph()
    cycles = [" -> ".join(cycle + [cycle[0]]) for cycle in nx.simple_cycles(graph)]
    assert cycles == []


def _package(module: str) -> str:
    """The first level under ``dynviz``: ``dynviz.model.route`` -> ``dynviz.model``."""
    return ".".join(module.split(".")[:2])


def test_no_import_cycles_between_packages():
    """Folders are layers: e.g. ``dynviz.train`` may use ``dynviz.inference.evaluate``, which then
    uses nothing of ``dynviz.train``."""
    graph = _graph()
    packages = nx.DiGraph()
    for a, b in graph.edges:
        if _package(a) != _package(b) and "dynviz" not in (a, b):
            packages.add_edge(_package(a), _package(b), via=_where(graph, a, b))
    cycles = [
        " -> ".join(cycle + [cycle[0]])
        + " ("
        + "; ".join(
            packages.edges[x, y]["via"] for x, y in zip(cycle, cycle[1:] + cycle[:1], strict=True)
        )
        + ")"
        for cycle in nx.simple_cycles(packages)
    ]
    assert cycles == []


def test_no_lazy_module_lookup_hides_an_import():
    """``importlib.import_module`` and module ``__getattr__`` hide imports from this scan (and
    from readers): only the CLI dispatches commands by name, and ``dynviz.errors.require``
    imports optional third-party packages by name (never a dynviz module); ``dynviz._moved``
    imports the modules of its one table of old paths. The package root
    alone has a ``__getattr__`` (``import dynviz`` loads no torch); it imports by plain
    ``from dynviz import ...`` statements, which this scan sees."""
    hidden = []
    for name, path in LIBRARY.items():
        if _in(name, CLI):
            continue
        where = path.relative_to(ROOT)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
                if name == "dynviz" and _plain_imports_only(node):
                    continue
                hidden.append(f"{where}:{node.lineno} module __getattr__")
        for node in ast.walk(tree):
            if (
                name not in ("dynviz.errors", "dynviz._moved")
                and isinstance(node, ast.Attribute)
                and node.attr == "import_module"
                and isinstance(node.value, ast.Name)
                and node.value.id == "importlib"
            ):
                hidden.append(f"{where}:{node.lineno} importlib.import_module")
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", None)) == "require"
                and node.args
                and not (
                    isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                    and node.args[0].value.split(".")[0] != "dynviz"
                )
            ):
                hidden.append(f"{where}:{node.lineno} require() of a dynviz or computed module")
    assert hidden == []


def _plain_imports_only(function: ast.FunctionDef) -> bool:
    """Whether a function imports only by ``from dynviz[.package] import <module>`` statements (no
    ``import_module``, ``__import__`` or computed names) and imports something."""
    imports = [n for n in ast.walk(function) if isinstance(n, (ast.Import, ast.ImportFrom))]
    computed = [
        n
        for n in ast.walk(function)
        if isinstance(n, ast.Name)
        and n.id in ("importlib", "__import__")
        or isinstance(n, ast.Attribute)
        and n.attr == "import_module"
    ]
    plain = all(
        isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "dynviz"
        for n in imports
    )
    return bool(imports) and plain and not computed


def test_the_package_root_imports_its_lazy_names_visibly():
    graph = _graph()
    assert graph.has_edge("dynviz", "dynviz.model")
    assert graph.has_edge("dynviz", "dynviz.model.zoo")


@pytest.mark.parametrize("name", sorted(APPS))
def test_the_app_only_calls_public_library_modules(name):
    path = APPS[name]
    bad = []
    for module, names, line in _imports(path):
        top = module.split(".")[0]
        if top != "dynviz":
            continue
        private = [n for n in names if n.startswith("_")]
        if _in(module, CLI) or any(part.startswith("_") for part in module.split(".")) or private:
            bad.append(f"{path.relative_to(ROOT)}:{line} from {module} import {names}")
        elif module not in LIBRARY:
            bad.append(f"{path.relative_to(ROOT)}:{line} {module} is not a dynviz module")
    assert bad == []


STAGES = (
    "support",
    "data",
    "model",
    "gates",
    "plots",
    "inference",
    "interop",
    "record",
    "train",
    "analysis",
    "bench",
    "demo",
    "commands",
)
"""The packages of ``dynviz``, one per stage a reader knows, lowest first: each imports only
packages before it (docs/architecture.md)."""

TOP_MODULES = (
    "__init__",
    "__main__",
    "_moved",
    "cli",
    "errors",
    "explorer",
    "labels",
    "rules",
    "units",
    "version",
)
"""The modules beside them: the package, the command, the old paths, and the rules every stage
reads (errors, labels, rules, units, version)."""


def test_the_folder_list_is_the_architecture():
    package = ROOT / "dynviz"
    folders = sorted(p.name for p in package.iterdir() if (p / "__init__.py").is_file())
    modules = sorted(p.stem for p in package.glob("*.py"))
    assert folders == sorted(STAGES)
    assert modules == sorted(TOP_MODULES)


def test_the_old_module_paths_import_the_moved_modules():
    import importlib
    import warnings

    from dynviz._moved import MOVED

    for old, new in MOVED.items():
        assert not (ROOT / (old.replace(".", "/") + ".py")).exists(), old
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            moved = importlib.import_module(old)
        assert moved is importlib.import_module(new)
        assert moved.__spec__.name == new  # its own spec, not the alias's
        assert any(new in str(w.message) for w in caught if w.category is DeprecationWarning)


LONG_MODULE = 500
"""Lines above which a module says in its docstring why it is long (issue 22)."""


def test_a_long_module_says_why():
    sources = {**LIBRARY, **APPS}
    unexplained = []
    for path in sorted(sources.values()):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") <= LONG_MODULE:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if not re.search(r"\b\d{3,4}\s+lines\b", doc):
            unexplained.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
    assert unexplained == []


def test_each_stage_imports_only_the_stages_below_it():
    graph = _graph()
    upward = []
    for a, b in graph.edges:
        stage_a, stage_b = _package(a).removeprefix("dynviz."), _package(b).removeprefix("dynviz.")
        if (
            stage_a in STAGES
            and stage_b in STAGES
            and STAGES.index(stage_b) > STAGES.index(stage_a)
        ):
            upward.append(_where(graph, a, b))
    assert upward == []
