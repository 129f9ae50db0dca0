"""The pytest plugin gptref installs (entry point ``pytest11``) for its conformance suite:
its options and the report header naming the implementation (under ``-q`` too).

pytest parses its command line before it finds the conftest of a package named by
``--pyargs``, so the options must come from an installed plugin. This one is a top-level
package of its own so that loading it imports neither gptref nor torch; it stays inert
outside the suite (the header appears only when the session runs ``gptref.conformance``).
The suite's fixtures and hooks are ``gptref/conformance/conftest.py``; the end-of-run level
report is ``gptref/conformance/report.py``.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gptref conformance")
    group.addoption(
        "--require",
        default=None,
        metavar="LEVELS",
        help="gptref conformance suite: comma-separated levels (or 'all') in which a test "
        "the implementation does not provide fails instead of being reported 'not provided' "
        "(also: GPTREF_REQUIRE)",
    )
    group.addoption(
        "--conformance-json",
        default=None,
        metavar="PATH",
        help="gptref conformance suite: write each level's verdict and outcomes to PATH as JSON",
    )
    group.addoption(
        "--allow-missing",
        action="store_true",
        default=False,
        help="gptref conformance suite: accepted for compatibility; a missing function is "
        "reported 'not provided' by default (see --require)",
    )


def under_xdist(config: pytest.Config) -> bool:
    """True in a pytest-xdist controller (``-n`` has set ``--dist``) and in its workers."""
    return getattr(config.option, "dist", "no") != "no" or hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    if under_xdist(config) and not hasattr(config, "workerinput"):  # the controller
        config.pluginmanager.register(_XdistLevels(config), "gptref-conformance-xdist-levels")


class _XdistLevels:
    """Level verdicts under pytest-xdist (``-n``). The controller collects no tests, so the
    suite's conftest (which records each outcome into its level) runs only in the workers;
    the controller receives every report, with the ``gptref_level`` property the conftest
    gave the item, and records and writes the verdicts here. gptref is imported only once a
    conformance report arrives."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.recorder = None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        level = dict(report.user_properties).get("gptref_level")
        if level is None:
            return
        if self.recorder is None:
            from gptref.conformance.conftest import new_recorder

            self.recorder = new_recorder(self.config)
        self.recorder.record(level, report)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.recorder is not None:
            from gptref.conformance.conftest import write_summary

            write_summary(self.config, terminalreporter, self.recorder)


def pytest_report_header(config: pytest.Config) -> str | None:
    return _header(config)


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Under -q pytest prints no header at all: print ours anyway, it names what is tested."""
    config = session.config
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or config.get_verbosity() >= 0:
        return
    header = _header(config)
    if header:
        reporter.write_line(header)


def _header(config: pytest.Config) -> str | None:
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
