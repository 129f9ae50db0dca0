"""The package's layers, read from its source: every import of every module (function-level and
``TYPE_CHECKING`` ones included) goes to the same layer or a lower one, and no imports form a
cycle. The layers, lowest first::

    helpers      gptref/_check.py, _io.py, _owned.py, _setting.py (import nothing of gptref)
    core         gptref/*.py: the book                    (imports the core and _check only)
    fast corpus                                           (opt-in paths; corpora on disk)
    plan run weights                                      (memory model; a run on disk; formats)
    bench track                                           (measurement; regression tracking)
    cli                                                   (the command line)
    conformance  the specification                        (imports the core and _check only)

A module of a package does not depend on the package's ``__init__`` by being inside it
(Python imports the parent first, but that is not a dependency); ``from gptref.run import
x`` of a name that is not a module is an import of ``gptref.run``'s ``__init__``. ``from
gptref import name`` imports the module that the lazy table of ``gptref/__init__.py`` loads
``name`` from.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

import gptref

PACKAGE = Path(gptref.__file__).parent

HELPERS = {"gptref._check", "gptref._io", "gptref._owned", "gptref._setting"}
FOLDERS = {"fast": 2, "corpus": 2, "plan": 3, "run": 3, "weights": 3, "bench": 4, "track": 4,
           "cli": 5}  # fmt: skip
RANK = {"core": 1, **FOLDERS}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def imports(name: str, path: Path, known: dict[str, Path]) -> set[tuple[str, int]]:
    """-> {(imported gptref module, line)} of every import statement in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from pkg import mod` imports the module; `from pkg import name` the package,
            # and `from gptref import name` the module the public API loads it from
            targets = []
            for alias in node.names:
                if f"{module}.{alias.name}" in known:
                    targets.append(f"{module}.{alias.name}")
                elif module == "gptref" and alias.name in gptref._EXPORTS:
                    targets.append(gptref._EXPORTS[alias.name])
                else:
                    targets.append(module)
        else:
            continue
        for target in targets:
            while target not in known and "." in target:
                target = target.rpartition(".")[0]
            if target in known and target != name:
                found.add((target, node.lineno))
    return found


def layer(name: str, known: dict[str, Path]) -> str:
    """'helper', 'api' (gptref/__init__.py, __main__.py), 'core' (the other top-level
    modules) or the name of the folder the module is in."""
    if name in HELPERS:
        return "helper"
    if name in ("gptref", "gptref.__main__"):
        return "api"
    parts = name.split(".")
    in_folder = len(parts) > 2 or known[name].name == "__init__.py"
    return parts[1] if in_folder else "core"


def allowed(source: str, target: str, known: dict[str, Path]) -> bool:
    src, dst = layer(source, known), layer(target, known)
    if src == dst:
        return True
    if src == "helper":
        return False  # helpers import nothing of gptref
    if dst == "api":
        return src != "core"  # gptref/__init__ itself (e.g. __version__) imports nothing
    if dst == "helper":  # the core and the suite use the checks alone
        return src not in ("core", "conformance") or target == "gptref._check"
    if src in ("core", "conformance"):
        return dst == "core"
    if src == "api":
        return dst == "cli"  # __main__ runs the command line; __init__ imports nothing
    if dst == "conformance":
        return src == "cli"  # gptref conformance runs the suite
    return dst in RANK and src in RANK and RANK[dst] <= RANK[src]


def violations(root: Path) -> list[str]:
    """Every import from a lower layer to a higher one, and every cycle, as readable lines."""
    known = modules(root)
    graph: dict[str, set[str]] = {}
    problems = []
    for name, path in known.items():
        edges = imports(name, path, known)
        graph[name] = {target for target, _ in edges}
        for target, line in sorted(edges):
            if not allowed(name, target, known):
                problems.append(
                    f"upward import: {path.relative_to(root.parent)}:{line} "
                    f"({layer(name, known)}) imports {target} ({layer(target, known)})"
                )
    problems += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as a path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component) + [min(component)])

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_import_goes_to_the_same_or_a_lower_layer_and_none_forms_a_cycle():
    assert violations(PACKAGE) == []


def test_every_module_is_in_a_known_layer():
    """A new folder must be given its place in the layers (here and in the docstring)."""
    known = modules(PACKAGE)
    expected = {*RANK, "helper", "api", "conformance"}
    assert [name for name in known if layer(name, known) not in expected] == []


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the package's source to plant imports in."""
    copy = tmp_path / "gptref"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "test_*.py"))
    return copy


def plant(file: Path, line: str) -> None:
    """Append a function whose body is ``line`` (a function-level import)."""
    file.write_text(file.read_text() + f"\n\ndef _planted():\n    {line}\n")


@pytest.mark.parametrize(
    ("file", "line", "expected"),
    [
        ("loss.py", "from gptref.fast.paths import FAST", "gptref/loss.py:"),
        ("loop.py", "from gptref.run.resume import save_state", "(core) imports gptref.run.resume"),
        ("data.py", "import gptref.corpus.tokens", "(core) imports gptref.corpus.tokens"),
        ("run/job.py", "from gptref.cli.main import main", "(run) imports gptref.cli.main (cli)"),
        ("fast/paths.py", "from gptref.plan import memory", "(fast) imports gptref.plan.memory"),
        ("_io.py", "from gptref.model import GPTModel", "(helper) imports gptref.model (core)"),
        ("conformance/impl.py", "from gptref.run import rundir", "(conformance) imports"),
        ("bench/sweep.py", "from gptref.cli import common", "(bench) imports gptref.cli.common"),
    ],
)
def test_a_planted_upward_import_is_found_with_its_file_and_layers(tree, file, line, expected):
    plant(tree / file, line)
    upward = [line for line in violations(tree) if line.startswith("upward import: ")]
    assert len(upward) == 1 and expected in upward[0]  # (an upward import may close a cycle too)


def test_a_planted_cycle_is_found_even_through_function_level_imports(tree):
    plant(tree / "data.py", "from gptref.loader import GPTDataset")  # loader imports data
    assert violations(tree) == ["import cycle: gptref.data -> gptref.loader -> gptref.data"]


def test_a_planted_cycle_between_peers_of_one_layer_is_found(tree):
    plant(tree / "run" / "checkpoint.py", "from gptref.weights.hf import export_hf")
    found = violations(tree)
    assert len(found) == 1 and found[0].startswith("import cycle: ")
    assert "gptref.run.checkpoint" in found[0] and "gptref.weights.hf" in found[0]
