"""One run of the suite: the implementation under test (loaded once per process, after the
offline tokenizer is in place and under the guard), the time limit, the level recorder and the
end-of-run summary.

Shared by the pytest plugin (``plugin.py``, loaded in every pytest session) and the suite's
conftest, so that neither imports the other. Imports neither torch nor hypothesis: the plugin
imports this module only in a session that runs the suite.
"""

from __future__ import annotations

import os
from functools import partial

import pytest

from gptref.conformance.guard import TIMEOUT_ENV, Guard, parse_timeout
from gptref.conformance.impl import Implementation, load_implementation, require_from_env
from gptref.conformance.levels import LEVELS, check_level
from gptref.conformance.report import Recorder

IMPL_KEY = pytest.StashKey[Implementation]()
GUARD_KEY = pytest.StashKey[Guard]()


def option(config: pytest.Config, name: str, default=None):
    """A command-line option of the plugin; ``default`` when the plugin is not loaded
    (``-p no:gptref_conformance``)."""
    try:
        value = config.getoption(name)
    except ValueError:
        return default
    return default if value is None else value


def under_xdist(config: pytest.Config) -> bool:
    """True in a pytest-xdist controller (``-n`` has set ``--dist``) and in its workers."""
    return getattr(config.option, "dist", "no") != "no" or hasattr(config, "workerinput")


def start(config: pytest.Config) -> Implementation:
    """The implementation under test, loaded on the first call: the guard goes in first (exits
    and the time limit apply to the import too), then the offline tokenizer
    (``load_implementation``), then the import. A module that cannot be imported is a
    ``pytest.UsageError`` of one line."""
    impl = config.stash.get(IMPL_KEY, None)
    if impl is not None:
        return impl
    try:
        limit = parse_timeout(option(config, "--call-timeout", os.environ.get(TIMEOUT_ENV)))
    except ValueError as e:
        raise pytest.UsageError(f"gptref conformance: {e}") from None
    guard = Guard(limit, on_stuck=partial(_to_terminal, config)).install()
    config.add_cleanup(guard.uninstall)
    config.stash[GUARD_KEY] = guard
    try:
        impl = load_implementation()
    except ValueError as e:
        raise pytest.UsageError(f"gptref conformance: {e}") from None
    config.stash[IMPL_KEY] = impl
    return impl


def _to_terminal(config: pytest.Config, line: str) -> None:
    """Write past pytest's output capture (the watchdog's last words)."""
    capture = config.pluginmanager.get_plugin("capturemanager")
    try:
        if capture is not None:
            capture.suspend_global_capture(in_=True)
    finally:
        os.write(2, line.encode("utf-8", "replace"))


def required(config: pytest.Config) -> set[str]:
    """The levels in which "not provided" fails: ``--require`` and ``$GPTREF_REQUIRE``."""
    names = (option(config, "--require") or "").split(",") + require_from_env()
    names = [n.strip() for n in names if n.strip()]
    if "all" in names:
        return set(LEVELS)
    try:
        return {check_level(n) for n in names}
    except ValueError as e:
        raise pytest.UsageError(f"gptref conformance: --require: {e}") from None


def new_recorder(config: pytest.Config) -> Recorder:
    """A Recorder for the implementation under test."""
    return Recorder(start(config), required(config))


def write_summary(config: pytest.Config, terminalreporter, recorder: Recorder) -> None:
    """The end-of-run level verdicts, on the terminal and (``--conformance-json``) as JSON."""
    if not recorder.levels:
        return
    recorder.write_terminal(terminalreporter)
    path = option(config, "--conformance-json")
    if path:
        recorder.write_json(path)
        terminalreporter.write_line(f"gptref conformance: levels written to {path}")
