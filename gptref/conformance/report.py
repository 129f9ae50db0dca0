"""The end-of-run report: each level's verdict, on the terminal (also under ``-q``) and as JSON.

===================== gptref conformance: levels =====================
implementation examples.book_style (book-style example 2.0)
book            passed        52 passed
seeded          passed        4 passed
exact-schedule  not provided  6 not applicable
  not applicable: a property of LR_SCHEDULE='exact'; ... declares 'appendix_d'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gptref.conformance.levels import LEVELS, LevelResult, skip_outcome


class Recorder:
    """Collects each conformance test's outcome into its level."""

    def __init__(self, impl: Any, required: set[str]) -> None:
        self.impl = impl
        self.required = required
        self.levels: dict[str, LevelResult] = {}

    def record(self, level: str, report: Any) -> None:
        result = self.levels.setdefault(level, LevelResult(level))
        test_id = report.nodeid.split("gptref/conformance/")[-1]
        if report.failed:
            result.record(test_id, "failed")
        elif report.skipped:
            reason = _skip_reason(report)
            result.record(test_id, skip_outcome(reason), reason)
        elif report.when == "call":
            result.record(test_id, "passed")

    def ordered(self) -> list[LevelResult]:
        return [self.levels[name] for name in LEVELS if name in self.levels]

    def write_terminal(self, tr: Any) -> None:
        tr.write_sep("=", "gptref conformance: levels")
        tr.write_line(f"implementation {self.impl.name} {self.impl.version}")
        for result in self.ordered():
            markup = {"passed": {"green": True}, "failed": {"red": True}}.get(result.status, {})
            tr.write(f"{result.name:<15} ")
            tr.write(f"{result.status:<13}", **markup, bold=bool(markup))
            tr.write_line(f" {result.summary()}")
            for outcome in ("not provided", "not applicable"):
                reasons = result.reasons(outcome)
                for reason in reasons[:3]:
                    tr.write_line(f"    {reason}")
                if len(reasons) > 3:
                    tr.write_line(f"    ... and {len(reasons) - 3} more ({outcome})")

    def to_dict(self) -> dict:
        return {
            "implementation": self.impl.name,
            "spec": self.impl.spec,
            "version": self.impl.version,
            "conventions": {
                k: sorted(v) if isinstance(v, frozenset) else v
                for k, v in self.impl.conventions.items()
            },
            "required": sorted(self.required),
            "levels": {r.name: r.to_dict() for r in self.ordered()},
        }

    def write_json(self, path: str) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n")


def _skip_reason(report: Any) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)
