"""Hypothesis profiles and shared fixtures.

Profiles: ``dev`` (default, quick), ``ci`` (chosen when ``CI`` is set: derandomized,
no deadline), ``thorough`` (many examples; ``HYPOTHESIS_PROFILE=thorough pytest``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=30, deadline=None)
settings.register_profile(
    "ci",
    max_examples=50,
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

VERDICT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "the-verdict.txt"


@pytest.fixture(scope="session")
def verdict_text() -> str:
    """The book's corpus, read from ../shared/data (never copied into the project)."""
    if not VERDICT.is_file():
        pytest.skip(f"the book's corpus is absent: {VERDICT} (the-verdict.txt from ../shared/data)")
    return VERDICT.read_text(encoding="utf-8")
