"""Measuring one configuration's ``train_step``: step times and peak memory, in this process
or in a fresh one (``run_isolated``), so that one configuration's memory never shows in the
next one's peak.

Memory is measured the way ``gptref.plan.memory.estimate_training_memory`` predicts it: from a
baseline taken after a kernel warm-up and ``malloc_trim``, the highest resident set over the
timed steps (CPU; ``/proc/self/clear_refs`` resets the high-water mark) or
``max_memory_allocated`` (CUDA).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import gc
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from gptref.bench.flops import device_peak_flops
from gptref.fast.paths import REFERENCE, FastPaths
from gptref.model import GPTConfig, GPTModel, resolve_config
from gptref.step import train_step


def machine_info() -> dict[str, Any]:
    """The machine a result came from: CPU model, PyTorch's CPU capability, the CPU's bf16
    units, oneDNN's bf16 support, torch, threads, the CUDA card."""
    from gptref.fast.probe import cpu_description

    d = cpu_description()
    return {
        "cpu_model": d["cpu_model"],
        "cpu_capability": d["capability"],
        "cpu_flags": d["cpu_flags"],
        "onednn_bf16": d["onednn_bf16"],
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _rss(field: str = "VmRSS") -> int:
    found = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(found.group(1)) * 1024


def release_freed_memory(collect: bool = True) -> None:
    """Collect garbage (a full pass costs ~0.2 s in a big process) and return glibc's free heap
    pages to the kernel, so RSS is live memory."""
    if collect:
        gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


_PROC = Path("/proc/self/clear_refs").exists()  # Linux: resident-set high-water mark


def _reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    elif _PROC:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS


def _peak(device: str, base: int) -> int | None:
    if device == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    return _rss("VmHWM") - base if _PROC else None


def _batch(cfg: GPTConfig, rows: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(
        0,
        cfg.vocab_size,
        (rows, cfg.context_length + 1),
        generator=torch.Generator().manual_seed(0),
    )
    return ids[:, :-1].contiguous().to(device), ids[:, 1:].contiguous().to(device)


def _warm_kernels(cfg: GPTConfig, fast: FastPaths, device: str) -> None:
    """Two steps of a 2-row, 8-token, 64-word model with the same ops: loads the kernels'
    code pages and thread pools before the baseline, so they do not count as training memory."""
    small = GPTConfig.from_dict(
        {**cfg.to_dict(), "vocab_size": 64, "context_length": min(8, cfg.context_length),
         "n_layers": 1}
    )  # fmt: skip
    measure_config(small, 2, device, fast=fast, warmup=1, steps=1, warm=False, peak_flops=False)


def measure_config(
    cfg: GPTConfig,
    batch_size: int,
    device: str,
    *,
    fast: FastPaths = REFERENCE,
    warmup: int,
    steps: int,
    accumulation_steps: int = 1,
    warm: bool = True,
    peak_flops: bool = True,
    model: str | None = None,
) -> dict[str, Any]:
    """Build, warm up, time ``steps`` train_steps -> step times and peak memory (bytes).

    ``cfg`` is the model's config with the model-side paths applied (``fast.apply``); the
    step-side ones (``fast.dtype`` autocast, ``optimizer``, ``compile``, ``tf32``) come from
    ``fast``. ``model`` ("module:callable", called with the GPTConfig) times another model of
    the same shape (e.g. ``benchmarks.nanogpt_style:NanoGPT``) in place of GPTModel.

    Memory counts from a baseline taken before the model is built, after a kernel warm-up
    and ``malloc_trim``: parameters + buffers + AdamW state + the step's transient peak, what
    ``estimate_training_memory`` predicts. CUDA: ``max_memory_allocated`` over the timed steps.
    CPU: the highest resident set over the timed steps. With glibc's default settings that
    also holds freed blocks malloc keeps for reuse (its mmap threshold rises to 32 MiB as
    blocks are freed); ``run_bench`` measures memory in a process started with
    ``MALLOC_MMAP_THRESHOLD_=65536``, where every tensor's pages return to the kernel when it
    is freed: the memory the tensors occupy, the estimate's quantity.
    """
    if warm:
        _warm_kernels(cfg, fast, device)
    if device == "cuda":
        torch.cuda.empty_cache()
    release_freed_memory()
    base = torch.cuda.memory_allocated() if device == "cuda" else _rss() if _PROC else 0
    torch.manual_seed(123)
    net = model_factory(model)(cfg).to(device).train()
    run, adamw = fast.build(net, 4e-4, 0.1)
    x, y = _batch(cfg, batch_size, device)

    def step() -> None:
        train_step(run, adamw, x, y, device, accumulation_steps=accumulation_steps,
                   autocast_dtype=fast.autocast_dtype, loss_chunk=fast.loss_chunk_rows)  # fmt: skip

    for _ in range(warmup):
        step()
    release_freed_memory(collect=False)  # a step leaves no reference cycles behind
    _reset_peak(device)
    times = []
    cpu0 = time.process_time()
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    # other work on the machine shows here first: the CPU time the step's threads got
    cpu_share = (time.process_time() - cpu0) / (sum(times) * torch.get_num_threads())
    if device == "cuda":
        mode = "cuda-max-memory-allocated"
    elif os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        mode = f"rss, MALLOC_MMAP_THRESHOLD_={os.environ['MALLOC_MMAP_THRESHOLD_']}"
    else:
        mode = "rss, default malloc"
    peak = _peak(device, base)
    result = {"times": times, "peak_bytes": peak, "memory_mode": mode, "cpu_share": cpu_share}
    # the matmul peak for MFU, right after the steps: under the same load (once per process)
    result["device_peak_flops"] = device_peak_flops(device, fast.dtype) if peak_flops else None
    if device == "cpu":
        result["peak_rss_default_malloc"] = None if "MALLOC" in mode else peak
    return result


def model_factory(spec: str | None):
    if spec is None:
        return GPTModel
    import importlib

    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(
            f"bench: model {spec!r} is not an importable 'module:callable' ({e})"
        ) from None


# every block of 64 KiB or more is mmapped, so freeing a tensor returns its pages at once
EXACT_RSS_ENV = {"MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}


def _child() -> None:
    """Entry point of an isolated configuration: JSON spec on argv, JSON result on stdout."""
    spec = json.loads(sys.argv[1])
    cfg = GPTConfig.from_dict(spec.pop("config"))
    fast = FastPaths.from_dict(spec.pop("fast"))
    try:
        result = measure_config(cfg, fast=fast, **spec)
    except torch.OutOfMemoryError as err:
        result = {"oom": str(err).splitlines()[0]}
    print("\n" + json.dumps(result))


def run_isolated(
    cfg: GPTConfig, fast: FastPaths, env: Mapping[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    """``measure_config(cfg, fast=fast, **spec)`` in a fresh Python process (with ``env``
    added to the environment) -> its result; ``{"oom": ...}`` when it ran out of memory."""
    payload = json.dumps({"config": cfg.to_dict(), "fast": dataclasses.asdict(fast), **spec})
    code = "from gptref.bench.measure import _child; _child()"
    proc = subprocess.run(
        [sys.executable, "-c", code, payload],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if proc.returncode != 0:
        killed = proc.returncode in (-9, 137) or "MemoryError" in proc.stderr
        if killed:
            return {"oom": f"process killed or out of memory (exit {proc.returncode})"}
        raise RuntimeError(f"bench: configuration {payload} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_memory(
    config: str | GPTConfig | Mapping[str, Any],
    batch_size: int,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    accumulation_steps: int = 1,
    loss_chunk: int | None = None,
    recompute: int | None = None,
) -> int | None:
    """-> peak bytes of a steady-state ``train_step``, measured in a process of its own as
    ``estimate_training_memory`` predicts them (see ``measure_config``); None when it ran out
    of memory. One warm-up step (AdamW's state), then the measured step. The levers as
    ``estimate_training_memory`` takes them: ``loss_chunk`` (None: the full logits),
    ``recompute`` (None: ``config``'s)."""
    cfg = resolve_config(config)
    spec = {"batch_size": batch_size, "device": device, "warmup": 1, "steps": 1}
    env = EXACT_RSS_ENV if device == "cpu" else None
    fast = REFERENCE.replace(
        dtype=dtype, attn=cfg.attn_impl, loss="full" if loss_chunk is None else "chunked",
        loss_chunk=loss_chunk or REFERENCE.loss_chunk,
        recompute=cfg.recompute if recompute is None else recompute,
        vocab_pad=cfg.vocab_pad_multiple, fused_layers=cfg.fused_layers,
    )  # fmt: skip
    cfg = fast.apply(cfg)
    result = run_isolated(cfg, fast, env=env, accumulation_steps=accumulation_steps,
                          peak_flops=False, **spec)  # fmt: skip
    return result.get("peak_bytes")
