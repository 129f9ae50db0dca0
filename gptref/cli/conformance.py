"""``gptref conformance``: gptref's specification run against another implementation."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from gptref._setting import setting

NAME = "conformance"
HELP = "run gptref's conformance suite against another implementation"
DESCRIPTION = (
    "Run gptref's specification (pytest --pyargs gptref.conformance) against MODULE: a module "
    "with the book's names (GPTDatasetV1, create_dataloader_v1, calc_loss_batch, ...; no "
    "adapter needed) or gptref's function protocol (split, chunk, ..., generate), importable "
    "from the current folder as `python -m` would import it. A function MODULE lacks makes its "
    "tests 'not provided', not failed (--require makes them fail). Each failing test reports "
    "its first counterexample, unshrunk (--shrink: the smallest); a call that runs past "
    "--call-timeout SECONDS (default 60) fails as a hang. Exits with pytest's status. "
    "Equivalent to: GPTREF_IMPL=MODULE python -m pytest --pyargs gptref.conformance "
    "--fast-fail [PYTEST_ARGS]."
)


@dataclasses.dataclass(frozen=True)
class Args:
    impl: str = setting(
        None, "package.module importable from the current folder, path/to/module.py, modules "
        "joined by + (pkg.ch02+pkg.ch05), or a known name (gptref, llms_from_scratch)",
        positional=True, metavar="MODULE",
    )  # fmt: skip
    allow_missing: bool = setting(
        False, "accepted for compatibility: a function MODULE lacks is reported 'not provided' "
        "anyway (see --require)",
    )  # fmt: skip
    require: str | None = setting(
        None, "levels (comma-separated, or 'all') in which a test of a function MODULE lacks "
        "fails instead of being reported 'not provided'", metavar="LEVELS",
    )  # fmt: skip
    pytest_args: tuple[str, ...] = setting(
        (), "passed on to pytest, e.g. -x -k chunk", positional=True, nargs=argparse.REMAINDER,
        metavar="PYTEST_ARGS",
    )  # fmt: skip


def main(args: Args) -> int:
    from gptref.conformance import run_suite
    from gptref.conformance.impl import load_implementation

    # the current folder first on the import path, as `python -m` (and so the suite's own
    # interpreter, `python -m pytest`) has it; a console script's path starts at its bin/
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    # a module that does not import: one line here, not in pytest's output
    load_implementation(args.impl)
    extra = (["--allow-missing"] if args.allow_missing else []) + (
        ["--require", args.require] if args.require else []
    )
    return run_suite(args.impl, extra + list(args.pytest_args))
