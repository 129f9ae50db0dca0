"""The conformance suite and its pytest plugin are one package without an import loop, and
the plugin, which pytest loads in every session of an environment with gptref, stays light
(no torch, no hypothesis at import) and inert outside the suite (issue 20, the suite's part)."""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

SUITE = ROOT / "gptref" / "conformance"
# what the suite may import of gptref: the core (the book; gpt_config is model.py's config) and
# the suite's own modules (tests/test_architecture.py checks the layers of the whole package)
CORE = {"tokenizer", "data", "loader", "model", "gpt_config", "loss", "schedule", "step", "loop",
        "generation", "state", "rng", "_check"}  # fmt: skip


def imported(path: Path) -> set[str]:
    """Every module a file imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_the_pytest11_entry_point_is_the_suites_plugin_module():
    points = [e for e in importlib.metadata.entry_points(group="pytest11") if e.name == "gptref_conformance"]  # fmt: skip
    assert [e.value for e in points] == ["gptref.conformance.plugin"]


def test_importing_the_plugin_loads_neither_torch_nor_hypothesis_nor_the_suite():
    code = ("import sys, gptref.conformance.plugin\n"
            "heavy = [m for m in ('torch', 'hypothesis', 'gptref.conformance.conftest', "
            "'gptref.conformance.session', 'gptref.conformance.repro') if m in sys.modules]\n"
            "print(heavy)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_plugin_and_conftest_do_not_import_each_other():
    """The loop the plugin had: it imported the conftest (running its module-level configure())
    and the conftest imported it. Both now share session.py."""
    plugin, conftest = imported(SUITE / "plugin.py"), imported(SUITE / "conftest.py")
    assert not {n for n in plugin if n.startswith("gptref.conformance.conftest")}, plugin
    assert not {n for n in conftest if n.startswith("gptref.conformance.plugin")}, conftest


def test_the_suite_imports_only_gptrefs_core_and_its_own_modules():
    bad = {}
    for path in sorted(SUITE.rglob("*.py")):
        for name in imported(path):
            parts = name.split(".")
            if parts[0] != "gptref" or parts[:2] == ["gptref", "conformance"]:
                continue
            if len(parts) < 2 or parts[1] not in CORE:
                bad.setdefault(str(path.relative_to(ROOT)), []).append(name)
    assert not bad, bad


def test_outside_the_suite_the_plugin_adds_only_its_options(tmp_path):
    """A pytest session of someone else's tests: no header, no implementation loaded (no torch,
    no guard on os._exit), and the suite's options are known (--call-timeout, --fast-fail)."""
    (tmp_path / "test_other.py").write_text(
        "import os, sys\n\n"
        "def test_nothing_of_the_suite_is_loaded():\n"
        "    assert 'torch' not in sys.modules\n"
        "    assert 'gptref.conformance.session' not in sys.modules\n"
        "    assert os._exit.__module__ in ('posix', 'nt')\n"
    )  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--call-timeout", "5", "--fast-fail"],  # fmt: skip
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr
    assert "gptref conformance" not in done.stdout, done.stdout
