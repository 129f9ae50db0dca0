"""Benchmark fixtures: machine info in the saved JSON, and a peak-memory probe.

Run with ``python -m pytest benchmarks`` (never collected by plain ``pytest``).
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return match.group(1).strip() if match else "unknown"


def machine_info() -> dict[str, Any]:
    info = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def pytest_benchmark_update_machine_info(config, machine_info: dict) -> None:  # noqa: ARG001
    machine_info.update(globals()["machine_info"]())


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
