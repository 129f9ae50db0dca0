"""Running the conformance suite in a subprocess as a user does, on implementations written for
the test: variants of the examples (one edit each, as the mutant benchmark makes them) and
small modules that exit, hang or print."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def suite(
    impl: str | Path, *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """``GPTREF_IMPL=impl python -m pytest --pyargs gptref.conformance *args`` in ``cwd`` (the
    examples importable: the project root on PYTHONPATH)."""
    command = [sys.executable, "-m", "pytest", "--pyargs", "gptref.conformance",
               "-p", "no:cacheprovider", *args]  # fmt: skip
    # COLUMNS: pytest cuts -rf's message to the terminal's width, and drops it where none fits
    full_env = {**os.environ, "GPTREF_IMPL": str(impl), "PYTHONPATH": str(ROOT), "COLUMNS": "1000", **(env or {})}  # fmt: skip
    return subprocess.run(
        command, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def variant(
    folder: Path, name: str, edits: Sequence[tuple[str, str]] = (), *, example: str = "book_style",
    append: str = "",
) -> Path:  # fmt: skip
    """examples/<example>.py with each ``old`` (which must occur once) replaced by ``new``, and
    ``append`` added, written to folder/<name>.py."""
    text = (ROOT / "examples" / f"{example}.py").read_text()
    for old, new in edits:
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {example}.py"
        text = text.replace(old, new)
    path = folder / f"{name}.py"
    path.write_text(text + append)
    return path


def module(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.py"
    path.write_text(text)
    return path


def failures(out: str) -> dict[str, str]:
    """-rf's short summary: failing test name -> the first line of its message."""
    found = re.findall(r"^FAILED \S+::(\S+?)(?: - (.*))?$", out, re.M)
    return {name: message or "" for name, message in found}


def shown(done: subprocess.CompletedProcess, chars: int = 4000) -> str:
    """The end of a run's output, for an assertion message (separator lines shortened)."""
    out = re.sub(r"([=_!-])\1{20,}", r"\1\1\1", done.stdout)
    return out[-chars:] + "\n--- stderr ---\n" + done.stderr[-chars // 2 :]
