"""Conformance levels (as array-api-tests has extensions) and the verdict of one level.

Every test of the suite belongs to exactly one level (``@pytest.mark.level("book")``). A test
ends in one of four outcomes: passed, failed, not provided (the implementation lacks a
function the test calls, or raised ``NotImplementedError``), not applicable (the test is a
property of a convention or a feature the implementation declares otherwise). A level is
"failed" when any of its tests failed, "passed" when none failed and at least one passed,
and "not provided" when none ran.

This module imports neither torch nor pytest: the plugin (``plugin.py``) uses it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

LEVELS: dict[str, str] = {
    "book": "chapters 2, 5 and appendix D: windows, the book's loaders, losses, generate, "
    "train_model_simple / train_model and appendix D's schedule, by the book's names or "
    "gptref's function protocol",
    "seeded": "shuffling as a pure function of (seed, epoch): batch_order(shuffle=True)",
    "distributed": "sharding for world_size > 1, as SHARDING declares: batch_order(rank=...)",
    "padding": "collate of ragged pairs: right-padded with pad_token_id / ignore_index",
    "accumulation": "train_step(accumulation_steps=k), weighted as ACCUMULATION_WEIGHTING says",
    "exact-schedule": "lr_at ending at exactly min_lr (LR_SCHEDULE='exact')",
}

OUTCOMES = ("passed", "failed", "not provided", "not applicable")
# a skip's reason starts with its outcome: "not provided: ...", "not applicable: ..."
SKIP_PREFIXES = ("not provided", "not applicable")


def check_level(name: str) -> str:
    if name not in LEVELS:
        raise ValueError(f"unknown conformance level {name!r}; the levels are {', '.join(LEVELS)}")
    return name


def skip_outcome(reason: str) -> str:
    """The outcome a skip's reason names; any other skip counts as not applicable."""
    text = reason.removeprefix("Skipped: ").strip()
    for prefix in SKIP_PREFIXES:
        if text.startswith(prefix):
            return prefix
    return "not applicable"


@dataclass
class LevelResult:
    """The outcomes of one level's tests: test id -> (outcome, reason)."""

    name: str
    tests: dict[str, tuple[str, str]] = field(default_factory=dict)

    def record(self, test_id: str, outcome: str, reason: str = "") -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
        # a failure in any phase (setup, call, teardown) wins over an earlier pass
        if self.tests.get(test_id, ("",))[0] != "failed":
            self.tests[test_id] = (outcome, reason)

    def counts(self) -> Counter:
        return Counter(outcome for outcome, _ in self.tests.values())

    @property
    def status(self) -> str:
        counts = self.counts()
        if counts["failed"]:
            return "failed"
        if counts["passed"]:
            return "passed"
        return "not provided"

    def summary(self) -> str:
        """``"12 passed, 1 failed, 3 not provided"``: the non-zero counts, in OUTCOMES order."""
        counts = self.counts()
        return ", ".join(f"{counts[o]} {o}" for o in OUTCOMES if counts[o]) or "no tests"

    def reasons(self, outcome: str) -> list[str]:
        """The distinct reasons of this outcome, in order of first appearance."""
        seen: dict[str, None] = {}
        for o, reason in self.tests.values():
            if o == outcome and reason:
                seen.setdefault(reason, None)
        return list(seen)

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "counts": {o: self.counts()[o] for o in OUTCOMES},
            "description": LEVELS.get(self.name, ""),
            "tests": {
                tid: {"outcome": o, "reason": r} if r else {"outcome": o}
                for tid, (o, r) in self.tests.items()
            },
        }
