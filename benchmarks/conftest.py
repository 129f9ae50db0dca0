"""Benchmark fixtures: machine info in the saved JSON, and a peak-memory probe.

Run with ``python -m pytest benchmarks`` (never collected by plain ``pytest``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from gptref.bench import machine_info as gptref_machine_info


def pytest_benchmark_update_machine_info(config, machine_info: dict) -> None:  # noqa: ARG001
    machine_info.update(gptref_machine_info())


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_rss_growth(fn: Callable[[], Any]) -> tuple[Any, int]:
    """Run fn once -> (its result, peak resident-set growth in bytes during the call).

    Resets the kernel's high-water mark first (``echo 5 > /proc/self/clear_refs``),
    so several measurements in one process do not see each other's peaks.
    Returns -1 for the growth where /proc is unavailable.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kib("VmRSS")
    except OSError:
        return fn(), -1
    result = fn()
    return result, (_status_kib("VmHWM") - before) * 1024
