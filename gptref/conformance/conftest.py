"""The suite's fixtures and hooks: the implementation under test, levels and outcomes.

``GPTREF_IMPL`` names the implementation (default ``gptref``). Every test carries
``@pytest.mark.level(name)`` and declares what it needs:

- ``@pytest.mark.uses("chunk", ...)``: functions it calls; one the implementation lacks makes
  the test "not provided" (skipped), and so does ``NotImplementedError`` raised by it;
- ``@pytest.mark.requires("greedy")``: optional features (``conventions.FEATURES``); one in
  the implementation's ``UNSUPPORTED`` makes the test "not applicable";
- ``@pytest.mark.semantics(LR_SCHEDULE="exact")``: a property of one declared convention,
  "not applicable" under another.

``--require LEVEL,...`` (or ``GPTREF_REQUIRE``; ``all`` for every level) turns "not provided"
into a failure in those levels. The end of the run reports each level's verdict
(``report.py``); ``--conformance-json PATH`` writes it as JSON. The options and the header
come from ``gptref_pytest``, the pytest plugin installed with gptref.
"""

from __future__ import annotations

import pytest

from gptref.conformance.impl import Implementation, load_implementation, require_from_env
from gptref.conformance.levels import LEVELS, check_level
from gptref.conformance.report import Recorder
from gptref.conformance.settings import configure
from gptref.conformance.tokenizer import install_offline_gpt2
from gptref_pytest import under_xdist

configure()

IMPL_KEY = pytest.StashKey[Implementation]()
RECORDER_KEY = pytest.StashKey[Recorder]()


def pytest_configure(config: pytest.Config) -> None:
    for line in (
        "level(name): the conformance level a test belongs to",
        "uses(*names): the implementation's functions a conformance test calls",
        "requires(*features): optional features a test needs (UNSUPPORTED ones skip it)",
        "semantics(**declared): a property of these declared conventions only",
    ):
        config.addinivalue_line("markers", line)
    try:
        impl = load_implementation()
    except ValueError as e:
        raise pytest.UsageError(f"gptref conformance: {e}") from None
    config.stash[IMPL_KEY] = impl
    install_offline_gpt2()
    config.stash[RECORDER_KEY] = Recorder(impl, _required(config))
    config.pluginmanager.register(_LevelRecording(config), "gptref-conformance-levels")


def _option(config: pytest.Config, name: str, default=None):
    try:
        return config.getoption(name)
    except ValueError:  # the plugin is not loaded (-p no:gptref_conformance)
        return default


def _required(config: pytest.Config) -> set[str]:
    names = (_option(config, "--require") or "").split(",") + require_from_env()
    names = [n.strip() for n in names if n.strip()]
    if "all" in names:
        return set(LEVELS)
    try:
        return {check_level(n) for n in names}
    except ValueError as e:
        raise pytest.UsageError(f"gptref conformance: --require: {e}") from None


def level_of(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("level")
    return check_level(marker.args[0]) if marker is not None else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "/gptref/conformance/" not in item.path.as_posix():
            continue
        level = level_of(item)
        assert level is not None, f"{item.nodeid}: every conformance test needs a level marker"
        item.user_properties.append(("gptref_level", level))  # junitxml shows it


def _not_provided(item: pytest.Item, message: str) -> None:
    __tracebackhide__ = True
    level = level_of(item)
    if level in item.config.stash[RECORDER_KEY].required:
        pytest.fail(f"{message} (level {level!r} is required: --require)", pytrace=False)
    pytest.skip(f"not provided: {message}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item):
    impl = item.config.stash[IMPL_KEY]
    semantics = item.get_closest_marker("semantics")
    for key, value in semantics.kwargs.items() if semantics else ():
        declared = impl.conventions[key]
        if declared != value:
            pytest.skip(f"not applicable: a property of {key}={value!r}; {impl.name} declares {declared!r}")  # fmt: skip
    requires = item.get_closest_marker("requires")
    unsupported = [f for f in (requires.args if requires else ()) if not impl.supports(f)]
    if unsupported:
        pytest.skip(f"not applicable: needs {', '.join(unsupported)}, which {impl.name} declares UNSUPPORTED")  # fmt: skip
    uses = item.get_closest_marker("uses")
    missing = [name for name in (uses.args if uses else ()) if not impl.has(name)]
    if missing:
        _not_provided(item, f"{impl.name} has no {', '.join(missing)}")
    try:
        return (yield)
    except NotImplementedError as e:  # raised outside a Call (which turns it into a skip)
        _not_provided(item, f"{impl.name} raised NotImplementedError({e})")
    except pytest.skip.Exception as e:
        if str(e).startswith("not provided:"):  # from a Call: fails when the level is required
            _not_provided(item, str(e).removeprefix("not provided: "))
        raise


class _LevelRecording:
    """Records each report into its level where the reports arrive: in the one process, or,
    under pytest-xdist, in the controller (which gets every worker's reports, with the
    ``gptref_level`` user property, and writes the summary; the workers write none)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        recorder = self.config.stash.get(RECORDER_KEY, None)
        level = dict(report.user_properties).get("gptref_level")
        if recorder is not None and level is not None:
            recorder.record(level, report)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    recorder = config.stash.get(RECORDER_KEY, None)
    if recorder is None or under_xdist(config):  # gptref_pytest's controller plugin reports
        return
    write_summary(config, terminalreporter, recorder)


def new_recorder(config: pytest.Config) -> Recorder:
    """A Recorder for the implementation under test (``gptref_pytest`` makes one under xdist)."""
    return Recorder(load_implementation(), _required(config))


def write_summary(config: pytest.Config, terminalreporter, recorder: Recorder) -> None:
    """The end-of-run level verdicts, on the terminal and (``--conformance-json``) as JSON."""
    if not recorder.levels:
        return
    recorder.write_terminal(terminalreporter)
    path = _option(config, "--conformance-json")
    if path:
        recorder.write_json(path)
        terminalreporter.write_line(f"gptref conformance: levels written to {path}")


@pytest.fixture(scope="session")
def impl(pytestconfig: pytest.Config) -> Implementation:
    """The implementation under test."""
    return pytestconfig.stash[IMPL_KEY]
