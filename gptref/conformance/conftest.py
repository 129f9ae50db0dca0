"""The suite's fixtures and hooks: the implementation under test, missing functions.

``GPTREF_IMPL`` names the implementation (default ``gptref``). A test declares the functions
it calls with ``@pytest.mark.uses("chunk", ...)``; when the implementation lacks one, that
test fails (or, with ``--allow-missing`` / ``GPTREF_ALLOW_MISSING=1``, is skipped) before it
runs, and no other test is affected. ``--allow-missing`` and the report header come from
``gptref_pytest``, the pytest plugin installed with gptref.
"""

from __future__ import annotations

import pytest

from gptref.conformance.impl import Implementation, allow_missing_from_env, load_implementation
from gptref.conformance.settings import configure

configure()

IMPL_KEY = pytest.StashKey[Implementation]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "uses(*names): the implementation's functions a conformance test calls"
    )
    config.addinivalue_line(
        "markers", "semantics(**declared): a property of these declared semantics only"
    )
    try:
        config.stash[IMPL_KEY] = load_implementation()
    except ValueError as e:
        raise pytest.UsageError(f"gptref conformance: {e}") from None


def _allow_missing(config: pytest.Config) -> bool:
    try:
        option = config.getoption("--allow-missing")
    except ValueError:  # the plugin is not loaded (-p no:gptref_conformance)
        option = False
    return bool(option) or allow_missing_from_env()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    impl = item.config.stash[IMPL_KEY]
    semantics = item.get_closest_marker("semantics")
    if semantics is not None:
        for key, value in semantics.kwargs.items():
            if impl.semantics[key] != value:
                declared = impl.semantics[key]
                pytest.skip(f"a property of {key}={value!r}; {impl.name} declares {declared!r}")
    marker = item.get_closest_marker("uses")
    if marker is None:
        return
    missing = [name for name in marker.args if not impl.has(name)]
    if not missing:
        return
    names = ", ".join(missing)
    message = f"{impl.name} has no {names}"
    if _allow_missing(item.config):
        pytest.skip(f"{message} (--allow-missing)")
    pytest.fail(
        f"{message}: implement it, or pass --allow-missing to skip the tests that use it",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def impl(pytestconfig: pytest.Config) -> Implementation:
    """The implementation under test."""
    return pytestconfig.stash[IMPL_KEY]
