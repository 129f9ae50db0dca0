"""The pytest plugin gptref installs (entry point ``pytest11``, ``gptref_conformance``) for its
conformance suite: the suite's options, the report header naming the implementation (under
``-q`` too) and, under pytest-xdist, the level verdicts in the controller.

pytest parses its command line before it finds the conftest of a package named by
``--pyargs``, so the options must come from an installed plugin. It is loaded in every pytest
session of an environment that has gptref: importing it imports pytest alone (no torch, no
hypothesis), and outside a session that runs ``gptref.conformance`` it only adds its options.
In such a session it loads the implementation at configure time (``session.start``), so that
an import that fails, exits or hangs is one line before any test runs. It never imports the
suite's conftest (``conftest.py``), which imports ``session.py`` as this does.
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
        "--call-timeout",
        default=None,
        metavar="SECONDS",
        help="gptref conformance suite: the time one call into the implementation (and the "
        "use of what it returned) may take before it fails as a hang; 0: no limit; default "
        "60 (also: GPTREF_CALL_TIMEOUT)",
    )
    group.addoption(
        "--fast-fail",
        action="store_true",
        default=False,
        help="gptref conformance suite: report each failing test's first counterexample as "
        "found, without shrinking it (seconds instead of minutes; the default of `gptref "
        "conformance`)",
    )
    group.addoption(
        "--shrink",
        action="store_true",
        default=False,
        help="gptref conformance suite: shrink each failing example to the smallest one "
        "(hypothesis's default; overrides --fast-fail)",
    )
    group.addoption(
        "--allow-missing",
        action="store_true",
        default=False,
        help="gptref conformance suite: accepted for compatibility; a missing function is "
        "reported 'not provided' by default (see --require)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if not is_suite(config):
        return
    from gptref.conformance import session

    session.start(config)
    if session.under_xdist(config) and not hasattr(config, "workerinput"):  # the controller
        config.pluginmanager.register(_XdistLevels(config), "gptref-conformance-xdist-levels")


class _XdistLevels:
    """Level verdicts under pytest-xdist (``-n``). The controller collects no tests, so the
    suite's conftest (which records each outcome into its level) runs only in the workers;
    the controller receives every report, with the ``gptref_level`` property the conftest
    gave the item, and records and writes the verdicts here."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.recorder = None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        level = dict(report.user_properties).get("gptref_level")
        if level is None:
            return
        if self.recorder is None:
            from gptref.conformance.session import new_recorder

            self.recorder = new_recorder(self.config)
        self.recorder.record(level, report)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.recorder is not None:
            from gptref.conformance.session import write_summary

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
    if not is_suite(config):
        return None
    from gptref.conformance.session import IMPL_KEY

    impl = config.stash.get(IMPL_KEY, None)
    return impl.describe() if impl is not None else None


def is_suite(config: pytest.Config) -> bool:
    """Whether this session runs the conformance suite (``--pyargs gptref.conformance``, or a
    path inside ``gptref/conformance/``)."""
    return any(_names_suite(config, str(arg)) for arg in config.args)


def _names_suite(config: pytest.Config, arg: str) -> bool:
    target = arg.split("::")[0]
    if config.option.pyargs and target.split(".")[:2] == ["gptref", "conformance"]:
        return True
    path = (config.invocation_params.dir / target).resolve().as_posix() + "/"
    return "/gptref/conformance/" in path
