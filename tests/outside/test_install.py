"""The journeys' ground: the wheel, installed, is what runs, from a folder outside the repository."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # a wheel built and installed into a fresh venv (once a session)


def test_the_journeys_import_gptref_from_the_installed_wheel_not_the_repository(installed, outside):
    """``import gptref`` in the journeys' venv, from a folder outside the repository, finds the
    wheel's copy in that venv's site-packages; no path of the repository is on sys.path."""
    code = "import gptref, gptref.conformance.plugin, sys; print(gptref.__file__); print(*sys.path, sep='\\n')"
    result = installed.run([str(installed.python), "-c", code], cwd=outside)
    assert result.status == 0, result.log
    where, *path = result.stdout.splitlines()
    assert where == str(installed.site_packages / "gptref" / "__init__.py"), result.log
    assert str(REPO) not in path, result.log  # ("" is the current folder: outside)
    # the venv's copy comes first; an outer environment's entries follow it (its packages,
    # torch above all, through the .pth path line): an editable gptref there is a finder that a
    # path line does not run, an installed copy (tox installs one) is shadowed by the venv's
    holders = [p for p in path if p and Path(p, "gptref").exists()]
    assert holders[0] == str(installed.site_packages), result.log


def test_the_wheel_holds_the_package_and_its_pytest_plugin_and_no_tests(installed):
    """What pip installs: gptref, its conformance suite inside with the pytest plugin whose
    pytest11 entry point gives the suite its options (gptref.conformance.plugin), and the
    console script; not tests/, benchmarks/ or examples/."""
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entries = wheel.read(entry_points).decode()
    tops = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert tops == {"gptref"}, tops
    assert {"gptref/conformance/test_data.py", "gptref/py.typed"} <= set(names)
    scripts, plugins = (entries.split(f"[{section}]\n")[1].split("\n\n")[0].splitlines()
                        for section in ("console_scripts", "pytest11"))  # fmt: skip
    assert [line.split(" = ")[0] for line in scripts] == ["gptref"], entries
    assert plugins == ["gptref_conformance = gptref.conformance.plugin"], entries
