"""Test-session settings shared by the conformance suite and ``tests/conftest.py``.

Hypothesis profiles: ``dev`` (default, quick), ``ci`` (chosen when ``CI`` is set:
derandomized, no deadline), ``thorough`` (many examples; ``HYPOTHESIS_PROFILE=thorough``),
``detect`` (``ci`` without the shrink phase: a failure is reported with the first example that
falsified it, not the smallest; the mutant benchmark's measure of the time to a failure).
``fast_fail()`` (the suite's ``--fast-fail``, the default of ``gptref conformance``) drops the
shrink phase from whichever profile is loaded.

No profile runs Hypothesis's explain phase (its "Explanation" lines name lines of the suite,
not of the code under test) or reports several distinct bugs of one test (an ExceptionGroup):
a failing test shows one failure, its first.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

NO_EXPLAIN = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)
NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)


def configure() -> None:
    """Register the profiles, load the chosen one and run torch on one intra-op thread."""
    import torch

    # Tests run tiny tensors, where a second intra-op thread costs more than it gives, and two
    # threads per process thrash when test processes share the cores (tox, parallel runs).
    # One thread also makes float reductions independent of the machine's core count.
    torch.set_num_threads(int(os.environ.get("GPTREF_TEST_THREADS", "1")))

    one = dict(phases=NO_EXPLAIN, report_multiple_bugs=False)
    settings.register_profile("dev", max_examples=30, deadline=None, **one)
    settings.register_profile(
        "ci",
        max_examples=50,
        derandomize=True,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
        **one,
    )
    settings.register_profile("thorough", max_examples=1000, deadline=None, **one)
    settings.register_profile("detect", settings.get_profile("ci"), phases=NO_SHRINK)
    default = "ci" if os.environ.get("CI") else "dev"
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", default))


def fast_fail() -> None:
    """The loaded profile without the shrink phase: each failing test reports the first
    example that falsified it, as found (seconds, where shrinking takes minutes)."""
    settings.register_profile("fast-fail", settings.default, phases=NO_SHRINK)
    settings.load_profile("fast-fail")
