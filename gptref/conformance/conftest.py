"""The suite's fixtures and hooks: the implementation under test, levels, outcomes, the order
of the tests and what a failure shows.

``GPTREF_IMPL`` names the implementation (default ``gptref``); ``session.py`` loads it (the
offline tokenizer first, then the import under the guard). Every test carries
``@pytest.mark.level(name)`` and declares what it needs:

- ``@pytest.mark.uses("chunk", ...)``: functions it calls; one the implementation lacks makes
  the test "not provided" (skipped), and so does ``NotImplementedError`` raised by it;
- ``@pytest.mark.requires("greedy")``: optional features (``conventions.FEATURES``); one in
  the implementation's ``UNSUPPORTED`` makes the test "not applicable";
- ``@pytest.mark.semantics(LR_SCHEDULE="exact")``: a property of one declared convention,
  "not applicable" under another.

Tests run causes first (``ORDER``): the data, the losses, the schedule and the step, generation,
evaluation and the per-epoch sample, then the loops that call them all, so that under ``-x``
the first failure names the function at fault. Each test runs under the guard (``guard.py``):
an exit or a hang of the implementation fails it, naming the call. What the implementation
printed is cut to ``MAX_OUTPUT`` characters per section of a report.

``--require LEVEL,...`` (or ``GPTREF_REQUIRE``; ``all`` for every level) turns "not provided"
into a failure in those levels. The end of the run reports each level's verdict
(``report.py``); ``--conformance-json PATH`` writes it as JSON. The options and the header
come from ``plugin.py``, the pytest plugin installed with gptref.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest

from gptref.conformance import session
from gptref.conformance.guard import ImplementationStopped
from gptref.conformance.impl import Implementation
from gptref.conformance.levels import check_level
from gptref.conformance.report import Recorder
from gptref.conformance.settings import configure, fast_fail

configure()

RECORDER_KEY = pytest.StashKey[Recorder]()
# causes before the functions that call them (a file not listed runs after these)
ORDER = ("test_data.py", "test_book_data.py", "test_edge_cases.py", "test_loss.py",
         "test_schedule.py", "test_train_step.py", "test_generate.py", "test_book_parts.py",
         "test_book_loop.py")  # fmt: skip
MAX_OUTPUT = 4000  # characters of captured output shown per report section
SUITE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    for line in (
        "level(name): the conformance level a test belongs to",
        "uses(*names): the implementation's functions a conformance test calls",
        "requires(*features): optional features a test needs (UNSUPPORTED ones skip it)",
        "semantics(**declared): a property of these declared conventions only",
    ):
        config.addinivalue_line("markers", line)
    impl = session.start(config)
    if session.option(config, "--fast-fail", False) and not session.option(config, "--shrink", False):  # fmt: skip
        fast_fail()
    config.stash[RECORDER_KEY] = Recorder(impl, session.required(config))
    config.pluginmanager.register(_LevelRecording(config), "gptref-conformance-levels")


def level_of(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("level")
    return check_level(marker.args[0]) if marker is not None else None


def _in_suite(item: pytest.Item) -> bool:
    return "/gptref/conformance/" in item.path.as_posix()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if not _in_suite(item):
            continue
        level = level_of(item)
        assert level is not None, f"{item.nodeid}: every conformance test needs a level marker"
        item.user_properties.append(("gptref_level", level))  # junitxml shows it

    def rank(item: pytest.Item) -> int:
        name = item.path.name if _in_suite(item) else ""
        return ORDER.index(name) if name in ORDER else len(ORDER)

    items.sort(key=rank)  # stable: the tests of one file keep their order


def _not_provided(item: pytest.Item, message: str) -> None:
    __tracebackhide__ = True
    level = level_of(item)
    if level in item.config.stash[RECORDER_KEY].required:
        pytest.fail(f"{message} (level {level!r} is required: --require)", pytrace=False)
    pytest.skip(f"not provided: {message}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item):
    if not _in_suite(item):
        return (yield)
    impl = item.config.stash[session.IMPL_KEY]
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
    guard = item.config.stash.get(session.GUARD_KEY, None)
    failure = None
    try:
        if guard is None:
            return (yield)
        with guard.test(item.name):
            return (yield)
    except ImplementationStopped as e:  # an exit or a hang: the message names the call
        failure = str(e)
    except NotImplementedError as e:  # raised outside a Call (which turns it into a skip)
        _not_provided(item, f"{impl.name} raised NotImplementedError({e})")
    except pytest.skip.Exception as e:
        if str(e).startswith("not provided:"):  # from a Call: fails when the level is required
            _not_provided(item, str(e).removeprefix("not provided: "))
        raise
    except Exception as e:
        failure = raised_by_implementation(e, impl, guard)
        if failure is None:  # the suite's own assertion, or an error of the suite
            raise
    pytest.fail(failure, pytrace=False)  # outside the except: no "during handling of" chain


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    if _in_suite(item) and call.excinfo is not None:
        _drop_suite_notes(call.excinfo.value)
    report = yield
    if _in_suite(item):
        report.sections = [(title, _cut(text)) for title, text in report.sections]
        if report.failed and call.when == "call":
            uses = item.get_closest_marker("uses")
            impl = item.config.stash[session.IMPL_KEY]
            for name in uses.args if uses else ():
                impl.failed.setdefault(name, item.name)
    return report


def raised_by_implementation(e: Exception, impl: Implementation, guard) -> str | None:
    """An exception raised inside the implementation's code (a frame of its files in the
    traceback), as one failure whose first line names the function: "generate: raised
    IndexError: ... (at mymod.py:12, in generate: ...)", then the reproduce line. None for an
    exception of the suite itself (its assertions)."""
    roots = implementation_files(impl)
    frames = [f for f in traceback.extract_tb(e.__traceback__) if _within(f.filename, roots)]
    if not frames:
        return None
    if "\n  reproduce: " in str(
        e
    ):  # already the suite's own message (a time limit), listing included
        return str(e)
    where = frames[-1]
    call = getattr(e, "_gptref_call", None)
    if call is not None:
        name, listing = call.describe()
    elif guard is not None and guard.last is not None:  # in what a call returned
        name, listing = guard.last()
    else:
        name, listing = where.name, ""
    text = " ".join(str(e).split()) or "(no message)"
    text = text if len(text) <= 500 else text[:500] + " ..."
    line = f": {where.line.strip()}" if where.line else ""
    message = f"{name}: raised {type(e).__name__}: {text} (at {Path(where.filename).name}:{where.lineno}, in {where.name}{line})"  # fmt: skip
    if listing:
        message += f"\n  reproduce: {listing}"
    notes = [n for n in getattr(e, "__notes__", ()) if not n.startswith("gptref conformance: raised by") and not _points_into_suite(n)]  # fmt: skip
    return "\n".join([message, *notes])


def implementation_files(impl: Implementation) -> list[Path]:
    """The files and package folders of the implementation's modules, the suite excluded (its
    shipped adapters included)."""
    roots = []
    for m in impl.modules:
        file = getattr(m, "__file__", None)
        if file:
            path = Path(file).resolve()
            roots.append(path.parent if path.name == "__init__.py" else path)
    return roots


def _within(filename: str, roots: list[Path]) -> bool:
    path = Path(filename).resolve()
    if SUITE in path.parents and SUITE / "adapters" not in path.parents:
        return False
    return any(path == root or root in path.parents for root in roots)


def _drop_suite_notes(exc: BaseException) -> None:
    """Hypothesis's notes that point into the suite, not the implementation: its
    "Explanation" (lines of the suite always run by failing examples) and the
    ``@reproduce_failure`` blob (for editing the suite's own tests)."""
    notes = getattr(exc, "__notes__", None)
    if notes:
        notes[:] = [n for n in notes if not _points_into_suite(n)]


def _points_into_suite(note: str) -> bool:
    return note.startswith("Explanation:") or "@reproduce_failure(" in note


def _cut(text: str) -> str:
    """Captured output, its middle cut to MAX_OUTPUT characters in all."""
    if len(text) <= MAX_OUTPUT:
        return text
    half = MAX_OUTPUT // 2
    return f"{text[:half]}\n... ({len(text) - 2 * half} characters of output cut) ...\n{text[-half:]}"  # fmt: skip


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
    if recorder is None or session.under_xdist(config):  # the plugin's controller reports
        return
    session.write_summary(config, terminalreporter, recorder)


@pytest.fixture(scope="session")
def impl(pytestconfig: pytest.Config) -> Implementation:
    """The implementation under test."""
    return pytestconfig.stash[session.IMPL_KEY]
