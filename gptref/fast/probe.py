"""The probe behind ``--fast``: does this CPU multiply in bf16 faster than in float32?

bf16 autocast pays only where the CPU has native bf16 matrix instructions (AMX, AVX512-BF16):
there a bf16 matmul runs 2-4x a float32 one. Elsewhere (AVX2-only CPUs, and many laptops
and cloud VMs) PyTorch falls back to a generic kernel some 30-100x *slower* than float32,
and a bf16 run would crawl. Whether a CPU has the instructions is not enough to know (the
kernels PyTorch dispatches to decide it, and ``ONEDNN_MAX_CPU_ISA`` can forbid them), so
``probe_cpu`` measures it:

- a ``PROBE_SIZE``-square matmul in float32 and in bf16, each its best of a few repetitions
  (about 10 ms in all; ~50 ms where bf16 is the slow fallback);
- on one thread, timed in the thread's CPU time (``time.thread_time``): a loaded machine
  deschedules the thread but does not change the time its instructions took, so the ratio
  is the CPU's, not the moment's (on cores shared with several busy processes, two-thread
  wall-clock timings of small matmuls were off by 100x; the one-thread CPU-time ratio stayed
  within 10 %);
- cached in ``cache_path()`` (``$XDG_CACHE_HOME/gptref/fast-probe.json``) under a key of what
  decides the answer: the CPU model and flags, PyTorch's CPU capability, the torch version,
  the thread count and the environment variables that steer the kernels. An entry whose
  key differs (another machine, torch or setting) or whose values are not positive finite
  numbers is ignored, and a file that is not the cache's format is replaced; a cache that
  cannot be written only costs the next run its 10 ms.

``bf16_pays(probe)`` is the decision: bf16 when its matmul is at least ``BF16_MIN_SPEEDUP``
times the float32 one. Autocast casts every weight to bf16 each step and keeps LayerNorm,
softmax and the loss in float32, so the matmuls must gain enough to pay for that; the
measured CPUs sit far from the threshold on either side (AVX2: 0.01-0.03x; AVX512-BF16
without AMX: 2.0-2.2x; AMX: ~4x).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gptref._io import atomic_write_text

BF16_MIN_SPEEDUP = 1.5  # bf16 matmul over float32 from which the bf16 bundle is chosen
PROBE_SIZE = 256  # rows = columns = inner size of the probe's matmuls
PROBE_SECONDS = 0.005  # CPU time per dtype, after at least PROBE_REPS repetitions
PROBE_REPS = 3
CACHE_FORMAT = "gptref fast-path probe, version 1"
CACHE_ENTRIES = 16  # the most keys the cache keeps (one per machine x torch x threads x env)
# environment variables that change which matmul kernels run
KERNEL_ENV = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


@dataclass(frozen=True)
class Probe:
    """What ``probe_cpu`` measured: float32 and bf16 matmul FLOP/s on one thread."""

    fp32_flops: float  # FLOP/s of a PROBE_SIZE-square float32 matmul, one thread
    bf16_flops: float  # the same in bfloat16
    cached: bool = False  # read from the cache, not measured in this process

    def __post_init__(self) -> None:
        for name in ("fp32_flops", "bf16_flops"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"Probe: {name} must be a number, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"Probe: {name} must be a positive finite FLOP/s, got {value!r}")

    @property
    def bf16_speedup(self) -> float:
        """bf16 matmul FLOP/s over float32's."""
        return self.bf16_flops / self.fp32_flops

    def describe(self) -> str:
        """'bf16 430 vs fp32 200 GFLOP/s per core'"""
        return f"{_gflops(self.bf16_flops)} vs {_gflops(self.fp32_flops)} GFLOP/s per core"


def _gflops(flops: float) -> str:
    g = flops / 1e9
    return f"{g:.1f}" if g < 10 else f"{g:.0f}"


def bf16_pays(probe: Probe) -> bool:
    """Whether bf16 autocast pays on the probed CPU: its matmul >= BF16_MIN_SPEEDUP x fp32's."""
    return probe.bf16_speedup >= BF16_MIN_SPEEDUP


def bf16_reason(probe: Probe) -> str:
    """The probe's verdict in words, for the ``fast paths:`` line."""
    numbers = f"{probe.describe()}{', cached' if probe.cached else ''}"
    if bf16_pays(probe):
        return f"this CPU multiplies bf16 {probe.bf16_speedup:.1f}x faster: {numbers}"
    if probe.bf16_speedup < 1:
        return f"this CPU has no native bf16 matmul: {numbers}"
    return f"this CPU's bf16 matmul gains under {BF16_MIN_SPEEDUP}x: {numbers}"


def cpu_description() -> dict[str, Any]:
    """What decides the probe's answer: CPU model and flags, PyTorch's CPU capability and
    oneDNN bf16 support, torch version, threads, kernel-steering environment variables."""
    import torch

    model, flags = platform.processor() or "unknown", set()
    with contextlib.suppress(OSError):
        info = Path("/proc/cpuinfo").read_text()
        found = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
        model = found.group(1).strip() if found else model
        line = re.search(r"^flags\s*:\s*(.+)$", info, re.M)
        flags = set(line.group(1).split()) if line else set()
    onednn_bf16 = None
    with contextlib.suppress(AttributeError, RuntimeError):
        onednn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return {
        "cpu_model": model,
        "cpu_flags": sorted(f for f in CPU_FLAGS if f in flags),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_bf16": onednn_bf16,
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "env": {k: os.environ[k] for k in KERNEL_ENV if k in os.environ},
    }


def device_class(description: dict[str, Any] | None = None) -> str:
    """'cpu AVX512 avx512_bf16' / 'cpu AVX2' / 'cpu AVX512 amx_bf16': the CPU's kind, as the
    measured tables (``gptref.plan.planner``) key it: PyTorch's capability and its bf16 units."""
    d = cpu_description() if description is None else description
    units = [f for f in ("amx_bf16", "avx512_bf16") if f in d["cpu_flags"]][:1]
    return " ".join(["cpu", str(d["capability"]), *units])


def matmul_flops(dtype: str, size: int = PROBE_SIZE, *, seconds: float = PROBE_SECONDS,
                 reps: int = PROBE_REPS, clock=time.thread_time) -> float:  # fmt: skip
    """The best FLOP/s of a ``size``-square matmul in ``dtype`` ('float32', 'bfloat16') on
    the current torch threads, timed with ``clock``: at least ``reps`` repetitions, then
    more until ``seconds`` have passed (after one untimed call)."""
    return matmul_rates(dtype, size, seconds=seconds, reps=reps, clock=clock)[0]


def matmul_rates(dtype: str, size: int, *, seconds: float, reps: int = PROBE_REPS,
                 clock=time.thread_time) -> tuple[float, float]:  # fmt: skip
    """``matmul_flops``, and the FLOPs of all repetitions per second of this process's CPU
    time -> (best FLOP/s by ``clock``, FLOP per CPU second)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(size, size, generator=gen).to(getattr(torch, dtype))
    y = torch.randn(size, size, generator=gen).to(getattr(torch, dtype))
    x @ y  # loads the kernel (and JIT-compiles it, for oneDNN)
    best, done = math.inf, 0
    start, cpu0 = clock(), time.process_time()
    while done < reps or clock() - start < seconds:
        t0 = clock()
        x @ y
        best = min(best, clock() - t0)
        done += 1
    flops = 2 * size**3
    return flops / max(best, 1e-9), flops * done / max(time.process_time() - cpu0, 1e-9)


def measure_probe() -> Probe:
    """Both matmuls on one thread (restored after), in thread CPU time -> Probe."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return Probe(matmul_flops("float32"), matmul_flops("bfloat16"))
    finally:
        torch.set_num_threads(threads)


def cache_path() -> Path | None:
    """``$XDG_CACHE_HOME/gptref/fast-probe.json`` (``~/.cache`` when unset); None without a
    home directory."""
    root = os.environ.get("XDG_CACHE_HOME")
    if not root:
        try:
            root = Path.home() / ".cache"
        except RuntimeError:  # no HOME and no passwd entry
            return None
    return Path(root) / "gptref" / "fast-probe.json"


def probe_cpu(*, cache: bool = True) -> Probe:
    """This CPU's Probe: from the cache when it holds this machine's entry, else measured
    (and, with ``cache``, written to it)."""
    key, path = cpu_description(), cache_path() if cache else None
    found = read_cached(path, key) if path else None
    if found is not None:
        return found
    probe = measure_probe()
    if path:
        write_cached(path, key, probe)
    return probe


def _entries(path: Path) -> list[dict[str, Any]]:
    """The cache file's entries; [] for a missing, unreadable or foreign file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        return []
    entries = data.get("entries")
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def read_cached(path: Path, key: dict[str, Any]) -> Probe | None:
    """The Probe cached under ``key`` in ``path``; None when there is none, or it is damaged."""
    for entry in _entries(path):
        if entry.get("key") != key:
            continue
        try:
            return Probe(entry["fp32_flops"], entry["bf16_flops"], cached=True)
        except (KeyError, TypeError, ValueError):
            return None
    return None


def write_cached(path: Path, key: dict[str, Any], probe: Probe) -> None:
    """Put ``probe`` under ``key`` in ``path`` (atomically; the newest CACHE_ENTRIES kept).
    A cache that cannot be written is left as it is: the next run measures again."""
    measured = {k: v for k, v in asdict(probe).items() if k != "cached"}
    keep = [e for e in _entries(path) if e.get("key") != key][-(CACHE_ENTRIES - 1) :]
    data = {"format": CACHE_FORMAT, "entries": [*keep, {"key": key, **measured}]}
    with contextlib.suppress(OSError):
        atomic_write_text(path, json.dumps(data, indent=1) + "\n")
