"""Hypothesis profiles and shared fixtures.

Profiles: ``dev`` (default, quick), ``ci`` (chosen when ``CI`` is set: derandomized,
no deadline), ``thorough`` (many examples; ``HYPOTHESIS_PROFILE=thorough pytest``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

# Tests run tiny tensors, where a second intra-op thread costs more than it gives, and two
# threads per process thrash when test processes share the cores (tox, parallel runs).
# One thread also makes float reductions independent of the machine's core count.
torch.set_num_threads(int(os.environ.get("GPTREF_TEST_THREADS", "1")))

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
