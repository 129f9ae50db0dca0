"""The conformance suite as a tool: the book-style example adapter passes it, the broken one
fails with a reproducing message, missing functions fail (or skip) only their own tests.

(gptref itself runs the suite in this same ``python -m pytest``: gptref/conformance is on
the testpaths.) Each check runs the suite in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    """python -m ARGS from the project root (where ``examples`` is importable)."""
    return subprocess.run(
        [sys.executable, "-m", *args, "-p", "no:cacheprovider"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_book_style_example_passes_the_suite():
    """examples/book_style.py (the book's loops, declared book semantics) passes every test."""
    done = run(
        ["pytest", "--pyargs", "gptref.conformance", "-q"], GPTREF_IMPL="examples.book_style"
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout


def test_broken_example_fails_with_the_reproducing_call_and_names_itself():
    """`gptref conformance examples.book_style_broken` exits 1; the failures show the minimal
    call, the expected and the actual result; the header names the implementation."""
    done = run(["gptref", "conformance", "examples.book_style_broken", "-k", "chunk"])
    out = done.stdout
    assert done.returncode == 1, out[-3000:] + done.stderr[-2000:]
    assert "gptref conformance: implementation examples.book_style_broken book-style example 1.0, broken on purpose" in out  # fmt: skip
    assert "2 failed" in out, out[-3000:]
    for line in (
        "import torch; import examples.book_style_broken as impl",
        "impl.num_chunks(10, 9, 1)",
        "impl.chunk(torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]), 9, 1)",
        "expected:  [(1, 9), (1, 9), 'torch.int64', 'torch.int64']",
        "got:       [(0, 9), (0, 9), 'torch.int64', 'torch.int64']",
    ):
        assert line in out, f"{line!r} not in the output:\n{out[-4000:]}"


@pytest.mark.parametrize("allow_missing", [False, True])
def test_a_missing_function_fails_or_skips_only_its_own_tests(tmp_path, allow_missing):
    """An adapter with split but no num_chunks: the split test passes, the num_chunks test
    fails naming the function (or is skipped with --allow-missing)."""
    adapter = tmp_path / "only_split.py"
    adapter.write_text("from examples.book_style import split\n")
    flags = ["--allow-missing"] if allow_missing else []
    done = run(["pytest", "--pyargs", "gptref.conformance", "-q", "-rfs", "-k", "split or num_chunks", *flags],
               GPTREF_IMPL=str(adapter), PYTHONPATH=str(ROOT))  # fmt: skip
    out = done.stdout
    if allow_missing:
        assert done.returncode == 0 and "1 passed, 1 skipped" in out, out[-3000:]
    else:
        assert done.returncode == 1 and "1 failed, 1 passed" in out, out[-3000:]
    assert f"{adapter} has no num_chunks" in out, out[-3000:]
