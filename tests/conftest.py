"""Hypothesis profiles and shared fixtures.

Profiles (``gptref.conformance.settings``, shared with the conformance suite): ``dev``
(default, quick), ``ci`` (chosen when ``CI`` is set: derandomized, no deadline),
``thorough`` (many examples; ``HYPOTHESIS_PROFILE=thorough pytest``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gptref.conformance.settings import configure

configure()

VERDICT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "the-verdict.txt"


@pytest.fixture(scope="session")
def verdict_text() -> str:
    """The book's corpus, read from ../shared/data (never copied into the project)."""
    if not VERDICT.is_file():
        pytest.skip(f"the book's corpus is absent: {VERDICT} (the-verdict.txt from ../shared/data)")
    return VERDICT.read_text(encoding="utf-8")


@pytest.fixture(scope="session", autouse=True)
def _fast_probe_cache_in_tmp(tmp_path_factory):
    """``--fast``'s probe caches its answer under $XDG_CACHE_HOME: in the tests (and the
    processes they start) that is a temporary folder, never the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield
