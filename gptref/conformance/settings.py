"""Test-session settings shared by the conformance suite and ``tests/conftest.py``.

Hypothesis profiles: ``dev`` (default, quick), ``ci`` (chosen when ``CI`` is set:
derandomized, no deadline), ``thorough`` (many examples; ``HYPOTHESIS_PROFILE=thorough``),
``detect`` (``ci`` without the shrink phase: a failure is reported with the first example that
falsified it, not the smallest; the mutant benchmark's measure of the time to a failure).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings


def configure() -> None:
    """Register the profiles, load the chosen one and run torch on one intra-op thread."""
    import torch

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
    settings.register_profile(
        "detect",
        settings.get_profile("ci"),
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
    )
    default = "ci" if os.environ.get("CI") else "dev"
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", default))
