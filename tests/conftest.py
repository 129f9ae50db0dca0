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
