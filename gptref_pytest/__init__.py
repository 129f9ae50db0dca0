"""The pytest plugin gptref installs (entry point ``pytest11``) for its conformance suite:
the ``--allow-missing`` option and the report header naming the implementation.

pytest parses its command line before it finds the conftest of a package named by
``--pyargs``, so the option must come from an installed plugin. This one is a top-level
package of its own so that loading it imports neither gptref nor torch; it stays inert
outside the suite (the header appears only when the session runs ``gptref.conformance``).
The suite's fixtures and hooks are ``gptref/conformance/conftest.py``.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gptref conformance")
    group.addoption(
        "--allow-missing",
        action="store_true",
        default=False,
        help="gptref conformance suite: skip, not fail, the tests of functions the "
        "implementation ($GPTREF_IMPL) lacks (also: GPTREF_ALLOW_MISSING=1)",
    )


def pytest_report_header(config: pytest.Config) -> str | None:
    if not any(_is_suite(config, str(arg)) for arg in config.args):
        return None
    from gptref.conformance.impl import load_implementation

    try:
        return load_implementation().describe()
    except ValueError as e:
        return f"gptref conformance: {e}"


def _is_suite(config: pytest.Config, arg: str) -> bool:
    target = arg.split("::")[0]
    if config.option.pyargs and target.split(".")[:2] == ["gptref", "conformance"]:
        return True
    path = (config.invocation_params.dir / target).resolve().as_posix() + "/"
    return "/gptref/conformance/" in path
