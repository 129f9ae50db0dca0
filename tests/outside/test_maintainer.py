"""The maintainer's journey: two checkouts of gptref, one whose ``chunk`` got slower, and
``gptref track check`` and ``gptref track compare`` run from inside each, with an installed
gptref (which is neither checkout).

The checkouts are a git repository made from this checkout's files (branch ``main``) and a
``git worktree`` of it on branch ``slow``, where ``chunk`` first spins on the CPU for about
half a millisecond (several times its own cost on 1M ids; the benchmarks time CPU seconds, so
the spin, not a sleep). Each command must say which tree each side measured (its path and
commit), find the slow-down, and exit 1 on it. The fewest rounds the test allows (8) and one
benchmark keep each run to seconds of CPU.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each command runs worker processes that import torch

FAST = ("--bench", "chunk", "--rounds", "8")
SLOWER = """

_chunk = chunk


def chunk(*args, **kwargs):  # noqa: F811 - the slower chunk this journey must catch
    import time

    end = time.process_time() + 0.0005
    while time.process_time() < end:
        pass
    return _chunk(*args, **kwargs)
"""


def _git(*args: str, cwd: Path) -> str:
    who = ["-c", "user.name=journey", "-c", "user.email=journey@example.invalid"]
    proc = subprocess.run(["git", *who, *args], cwd=cwd, capture_output=True, text=True,
                          check=True)  # fmt: skip
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def checkouts(installed, tmp_path_factory) -> dict[str, dict[str, str | Path]]:
    """{"main": its folder and commit, "slow": the same for the worktree with the slow chunk}."""
    home = tmp_path_factory.mktemp("maintainer")
    main, slow = home / "gptref", home / "gptref-slow"
    shutil.copytree(installed.source, main)
    _git("init", "-q", "-b", "main", cwd=main)
    _git("add", "-A", cwd=main)
    _git("commit", "-q", "-m", "as it is", cwd=main)
    _git("worktree", "add", "-q", "-b", "slow", str(slow), cwd=main)
    with (slow / "gptref" / "data.py").open("a") as f:
        f.write(SLOWER)
    _git("commit", "-q", "-am", "chunk spins first", cwd=slow)
    return {name: {"path": folder, "commit": _git("rev-parse", "HEAD", cwd=folder)}
            for name, folder in (("main", main), ("slow", slow))}  # fmt: skip


def _named(out: str, label: str) -> str:
    """The line that says which tree side ``label`` measured."""
    lines = [line for line in out.splitlines() if line.startswith(f"{label}: ")]
    assert len(lines) == 1, out
    return lines[0]


def _says_tree(line: str, checkout: dict, *, folder: bool) -> None:
    """``line`` names the checkout's commit, and its path when the side was a folder."""
    assert checkout["commit"][:10] in line, line
    if folder:
        assert re.search(rf"the tree at {re.escape(str(checkout['path']))} \(", line), line


def _verdict(out: str) -> str:
    (line,) = [line for line in out.splitlines() if "chunk: " in line]
    return line


CHECKS = {  # where it runs -> (the baseline, its exit status, how the verdict line starts)
    "slow": ("main", 1, "FAIL chunk: "),
    "main": ("slow", 0, "ok   chunk: "),
}


@pytest.mark.parametrize("where", list(CHECKS))
def test_track_check_measures_the_checkout_it_runs_in_and_names_both_trees(
    installed, checkouts, where
):
    """``gptref track check --baseline OTHER`` from inside each checkout measures that
    checkout (not the installed gptref) against the other branch, prints the path and commit
    of both sides, and exits 1 in the slow one (chunk's slow-down, a regression), 0 in main
    (faster)."""
    baseline, status, verdict = CHECKS[where]
    result = installed.gptref("track", "check", "--baseline", baseline, *FAST,
                              cwd=checkouts[where]["path"])  # fmt: skip
    assert result.status == status, result.log
    _says_tree(_named(result.stdout, "baseline"), checkouts[baseline], folder=False)
    _says_tree(_named(result.stdout, "current"), checkouts[where], folder=True)
    assert _verdict(result.stdout).startswith(verdict), result.log
    assert ("REGRESSION" if status else "faster") in _verdict(result.stdout), result.log


@pytest.mark.parametrize("where", ["slow", "main"])
def test_track_compare_from_either_checkout_exits_1_on_the_regression(installed, checkouts, where):
    """``gptref track compare`` with main as A and the slow tree as B, from inside either
    checkout (named as a revision, ``.`` or a path): both sides' trees are printed and the
    slow-down of B is a regression, exit 1."""
    sides = {"slow": ("--a", "main", "--b", "."), "main": ("--a", ".", "--b", "../gptref-slow")}
    result = installed.gptref("track", "compare", *sides[where], *FAST, "--reps", "2",
                              cwd=checkouts[where]["path"])  # fmt: skip
    assert result.status == 1, result.log
    _says_tree(_named(result.stdout, "A"), checkouts["main"], folder=where == "main")
    _says_tree(_named(result.stdout, "B"), checkouts["slow"], folder=True)
    assert "REGRESSION" in _verdict(result.stdout), result.log
