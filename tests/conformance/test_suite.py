"""The conformance suite as a tool: the book-style example adapter passes it, the broken one
fails with a reproducing message, missing functions fail (or skip) only their own tests.

(gptref itself runs the suite in this same ``python -m pytest``: gptref/conformance is on
the testpaths.) Each check runs the suite in a subprocess, as a user would."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


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
    assert "gptref conformance: implementation examples.book_style_broken book-style example 2.0, broken on purpose" in out  # fmt: skip
    # the one bug (the last window dropped) fails exactly the window tests, nothing else
    failed = sorted(re.findall(r"^FAILED \S+::(\w+)", out, re.M))
    assert failed == [
        "test_chunk_of_a_view_windows_the_view",
        "test_chunk_rows_equal_the_books_loop",
        "test_num_chunks_is_the_books_window_count",
    ], out[-3000:]
    for line in (
        "import torch; import examples.book_style_broken as impl",
        "impl.num_chunks(10, 9, 1)",
        "impl.chunk(torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]), 9, 1)",
        "chunk: the number of windows: rows of (inputs, targets)",
        "expected:  [1, 1]",
        "got:       [0, 0]",
    ):
        assert line in out, f"{line!r} not in the output:\n{out[-4000:]}"


@pytest.mark.parametrize("require", [False, True])
def test_a_missing_function_is_not_provided_or_fails_when_its_level_is_required(tmp_path, require):
    """An adapter with split but no num_chunks: the split test passes, the num_chunks test is
    reported "not provided" (skipped) naming the function, or fails under --require book."""
    adapter = tmp_path / "only_split.py"
    adapter.write_text("from examples.book_style import split\n")
    flags = ["--require", "book"] if require else []
    done = run(["pytest", "--pyargs", "gptref.conformance", "-q", "-rfs", "-k", "split_parts or num_chunks_is_the", *flags],
               GPTREF_IMPL=str(adapter), PYTHONPATH=str(ROOT))  # fmt: skip
    out = done.stdout
    if require:
        assert done.returncode == 1 and "1 failed, 1 passed" in out, out[-3000:]
        assert "(level 'book' is required: --require)" in out, out[-3000:]
    else:
        assert done.returncode == 0 and "1 passed, 1 skipped" in out, out[-3000:]
        assert "not provided:" in out, out[-3000:]
    assert f"{adapter} has no num_chunks" in out, out[-3000:]


def test_quiet_run_shows_the_header_and_the_level_verdicts_and_writes_json(tmp_path):
    """Under -q the header still names the implementation, the end of the run gives each
    level's verdict, --conformance-json writes them, and --junitxml records each test's level."""
    out_json, out_xml = tmp_path / "levels.json", tmp_path / "junit.xml"
    done = run(["pytest", "--pyargs", "gptref.conformance", "-q", "-k", "split_parts or exact_schedule_end",
                f"--conformance-json={out_json}", f"--junitxml={out_xml}"],
               GPTREF_IMPL="examples.book_style")  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-2000:]
    assert out.startswith("gptref conformance: implementation examples.book_style book-style example 2.0"), out[:500]  # fmt: skip
    assert "gptref conformance: levels" in out
    assert re.search(r"^book\s+passed\s+1 passed$", out, re.M), out[-2000:]
    assert re.search(r"^exact-schedule\s+not provided\s+1 not applicable$", out, re.M), out[-2000:]
    levels = json.loads(out_json.read_text())
    assert levels["implementation"] == "examples.book_style"
    assert levels["levels"]["book"]["status"] == "passed"
    assert levels["levels"]["book"]["counts"] == {"passed": 1, "failed": 0, "not provided": 0, "not applicable": 0}  # fmt: skip
    assert levels["levels"]["exact-schedule"]["status"] == "not provided"
    assert '<property name="gptref_level" value="book"' in out_xml.read_text()


@pytest.mark.slow
def test_under_xdist_the_level_verdicts_and_json_are_the_one_process_runs(tmp_path):
    """pytest -n 2: the conftest runs only in the workers; the controller still prints each
    level's verdict once and writes the same JSON as a run in one process."""
    select = ["-k", "split_parts or exact_schedule_end or num_chunks_is_the"]
    verdicts = {}
    for name, extra in (("serial", []), ("xdist", ["-n", "2"])):
        out_json = tmp_path / f"{name}.json"
        done = run(["pytest", "--pyargs", "gptref.conformance", "-q", *select, *extra,
                    f"--conformance-json={out_json}"], GPTREF_IMPL="examples.book_style_broken")  # fmt: skip
        assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-2000:]
        assert len(re.findall(r"=+ gptref conformance: levels =+", done.stdout)) == 1, done.stdout[-3000:]  # fmt: skip
        assert re.search(r"^book\s+failed\s+1 passed, 1 failed$", done.stdout, re.M), done.stdout[-2000:]  # fmt: skip
        verdicts[name] = json.loads(out_json.read_text())["levels"]
    assert verdicts["xdist"] == verdicts["serial"]


SHARD_BUG = """
from examples.book_style import *  # noqa: F403
from examples.book_style import batch_order as _book_batch_order


def batch_order(n, batch_size, *, rank=0, world_size=1, **kw):
    # the bug: every rank takes a contiguous block, not every world_size-th sample
    order = [int(i) for b in _book_batch_order(n, 1, **kw) for i in b]
    per_rank = n // world_size
    mine = order[rank * per_rank : (rank + 1) * per_rank]
    out = [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]
    if kw.get("drop_last"):
        out = [b for b in out if len(b) == batch_size]
    import torch
    return [torch.tensor(b, dtype=torch.int64) for b in out]
"""


def test_a_sharding_failure_shows_every_ranks_call(tmp_path):
    """A shard bug fails the distributed level only, and the message lists the call of every
    rank (the expectation for one rank depends on the others)."""
    adapter = tmp_path / "shard_bug.py"
    adapter.write_text(SHARD_BUG)
    done = run(["pytest", "--pyargs", "gptref.conformance", "-q", "-x", "-k", "shards_are_the_declared"],
               GPTREF_IMPL=str(adapter), PYTHONPATH=str(ROOT))  # fmt: skip
    out = done.stdout
    assert done.returncode == 1, out[-3000:]
    calls = re.findall(r"impl\.batch_order\(\d+, \d+, rank=(\d+), world_size=(\d+)", out)
    world_size = int(calls[0][1])
    assert sorted({int(r) for r, _ in calls}) == list(range(world_size)), out[-3000:]
    assert re.search(r"^distributed\s+failed", out, re.M), out[-2000:]


def test_nanogpt_formulas_pass_under_their_declared_conventions():
    """examples/nanogpt_formulas.py (IGNORE_INDEX=-1, nanoGPT's warmup, "exact" cosine, "batch"
    accumulation, no greedy / eos) passes the schedule, loss and train_step tests it declares
    conventions for; the rest of its levels run in .ci/run."""
    done = run(["pytest", "--pyargs", "gptref.conformance", "-q", "-k", "lr_at or exact_schedule or loss or train_step"],
               GPTREF_IMPL="examples.nanogpt_formulas")  # fmt: skip
    out = done.stdout
    assert done.returncode == 0 and " passed" in out and "failed" not in out, out[-3000:]
    assert re.search(r"^exact-schedule\s+passed", out, re.M), out[-2000:]
    assert re.search(r"^accumulation\s+passed", out, re.M), out[-2000:]
