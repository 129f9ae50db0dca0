"""``gptref conformance``: gptref's specification run against another implementation."""

from __future__ import annotations

import argparse
import dataclasses

from gptref._setting import setting

NAME = "conformance"
HELP = "run gptref's conformance suite against another implementation"
DESCRIPTION = (
    "Run gptref's specification (pytest --pyargs gptref.conformance) against MODULE, an adapter "
    "exposing split, chunk, ..., generate; exits with pytest's status. Equivalent to: "
    "GPTREF_IMPL=MODULE python -m pytest --pyargs gptref.conformance --fast-fail [PYTEST_ARGS]: "
    "each failing test reports its first counterexample, unshrunk (add --shrink for the "
    "smallest); a call that runs past --call-timeout SECONDS (default 60) fails as a hang."
)


@dataclasses.dataclass(frozen=True)
class Args:
    impl: str = setting(
        None, "package.module importable from here, or path/to/adapter.py", positional=True,
        metavar="MODULE",
    )  # fmt: skip
    allow_missing: bool = setting(False, "skip, not fail, the tests of functions MODULE lacks")
    pytest_args: tuple[str, ...] = setting(
        (), "passed on to pytest, e.g. -x -k chunk", positional=True, nargs=argparse.REMAINDER,
        metavar="PYTEST_ARGS",
    )  # fmt: skip


def main(args: Args) -> int:
    from gptref.conformance import run_suite
    from gptref.conformance.impl import load_implementation

    load_implementation(
        args.impl
    )  # a module that does not import: one line here, not in pytest's output
    extra = (["--allow-missing"] if args.allow_missing else []) + list(args.pytest_args)
    return run_suite(args.impl, extra)
