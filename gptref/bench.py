"""The batch-size sweep behind ``gptref bench`` and the planner behind ``gptref plan``.

``run_bench`` times ``train_step`` for every (device, dtype, attention, batch size) and
records throughput, step-time spread, MFU and peak memory, measured beside
``estimate_training_memory``'s prediction. ``dtype`` is ``train_step``'s autocast, as in
``gptref train --dtype``: "float32" (none) or "bfloat16" (autocast; parameters, gradients and
AdamW state stay float32). Each configuration runs in its own Python process by default
(``isolate=True``), so one configuration's memory never shows in the next one's peak.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from gptref.fast import OPTIMIZER_IMPLS, compile_model, make_optimizer, set_tf32
from gptref.memory import (
    BatchPlan,
    estimate_training_memory,
    format_bytes,
    parameter_count,
    plan_batches,
)
from gptref.model import GPTConfig, GPTModel, as_config
from gptref.run import PRESETS
from gptref.train import train_step

DTYPES = ("float32", "bfloat16")
# published dense (no sparsity) peaks, FLOP/s: NVIDIA H100/H200 and A100 datasheets;
# float32 is the plain FP32 rate: PyTorch leaves TF32 matmuls off unless asked
CUDA_PEAK_FLOPS = {
    "H100 PCIe": {"bfloat16": 756e12, "float32": 51.2e12, "tf32": 378e12},
    "H100": {"bfloat16": 989e12, "float32": 67e12, "tf32": 495e12},  # SXM
    "H200": {"bfloat16": 989e12, "float32": 67e12, "tf32": 495e12},
    "A100": {"bfloat16": 312e12, "float32": 19.5e12, "tf32": 156e12},
}


def parse_bytes(text: str | int) -> int:
    """'24GiB' -> 25769803776. Binary units: B, KiB/K, MiB/M, GiB/G, TiB/T; decimal: KB, MB, GB, TB."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"parse_bytes: a size must be >= 0, got {text}")
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(?:([kmgt])(i?)(b?)|(b?))\s*", str(text), re.I)
    if not match:
        raise ValueError(
            f"parse_bytes: expected a size like '24GiB', '512MB', '8G' or '1073741824', got {text!r}"
        )
    number, prefix, binary, unit_b, _ = match.groups()
    if prefix is None:
        scale = 1
    elif unit_b and not binary:  # KB, MB, GB, TB: decimal, as disk vendors write them
        scale = 1000 ** ("kmgt".index(prefix.lower()) + 1)
    else:  # KiB, K, Ki: binary, as free -h and docker --memory read them
        scale = 1024 ** ("kmgt".index(prefix.lower()) + 1)
    return int(float(number) * scale)


def model_config(
    config: str | GPTConfig | Mapping[str, Any], context: int | None = None, attn: str | None = None
) -> GPTConfig:
    """A preset name ('tiny', 'small', '124M'), GPTConfig or the book's dict -> GPTConfig, with
    ``context_length = context`` (the book trains GPT-124M at 256) and ``attn_impl = attn``."""
    if isinstance(config, str):
        if config not in PRESETS:
            raise ValueError(f"unknown preset {config!r}; the presets are {sorted(PRESETS)}")
        config = PRESETS[config]
    cfg = as_config(config).to_dict()
    if context is not None:
        cfg["context_length"] = context
    if attn is not None:
        cfg["attn_impl"] = attn
    return GPTConfig.from_dict(cfg)


def flops_per_token(config: GPTConfig | Mapping[str, Any], context: int | None = None) -> int:
    """Training FLOPs per token, ``6*N + 12*L*H*Q*T`` (PaLM, Chowdhery et al. 2022, app. B;
    nanoGPT's estimate_mfu). N leaves out tok_emb and pos_emb, which are lookups, and keeps
    out_head, a real (E, V) matmul (without a vocabulary pad's rows); nanoGPT's N is the same
    count (its wte is tied to lm_head)."""
    cfg = as_config(config)
    T = cfg.context_length if context is None else context
    pad = (cfg.padded_vocab_size - cfg.vocab_size) * cfg.emb_dim  # padding is not useful work
    return 6 * (parameter_count(cfg, embeddings=False) - pad) + 12 * cfg.n_layers * cfg.emb_dim * T


@functools.cache
def cpu_peak_flops(dtype: str = "float32", size: int = 2048, seconds: float = 0.5) -> float:
    """The best FLOP/s of ``size``-square matmuls in ``dtype`` on this CPU over ~``seconds``
    (measured once per process and remembered)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(size, size, generator=gen).to(getattr(torch, dtype))
    y = torch.randn(size, size, generator=gen).to(getattr(torch, dtype))
    x @ y  # first call loads the kernels
    best, start = math.inf, time.perf_counter()
    while time.perf_counter() - start < seconds or best == math.inf:
        t0 = time.perf_counter()
        x @ y
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best


def device_peak_flops(device: str, dtype: str) -> float | None:
    """Peak dense FLOP/s: measured on CPU, the datasheet's for known CUDA cards, else None."""
    if device == "cpu":
        return cpu_peak_flops(dtype)
    name = torch.cuda.get_device_name(0)
    key = "tf32" if dtype == "float32" and torch.backends.cuda.matmul.allow_tf32 else dtype
    for card, peaks in CUDA_PEAK_FLOPS.items():  # "H100 PCIe" before "H100"
        if all(word in name for word in card.split()):
            return peaks[key]
    return None


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = found.group(1).strip() if found else cpu
    return {
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes, None where there is none."""
    with contextlib.suppress(OSError):
        found = re.search(r"^MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        return int(found.group(1)) * 1024 if found else None
    return None


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


def _warm_kernels(cfg: GPTConfig, dtype: str, device: str) -> None:
    """Two steps of a 2-row, 8-token, 64-word model with the same ops: loads the kernels'
    code pages and thread pools before the baseline, so they do not count as training memory."""
    small = GPTConfig.from_dict(
        {
            **cfg.to_dict(),
            "vocab_size": 64,
            "context_length": min(8, cfg.context_length),
            "n_layers": 1,
        }
    )
    _measure_config(
        small,
        2,
        dtype,
        device,
        warmup=1,
        steps=1,
        accumulation_steps=1,
        warm=False,
        peak_flops=False,
    )


def _measure_config(
    cfg: GPTConfig,
    batch_size: int,
    dtype: str,
    device: str,
    *,
    warmup: int,
    steps: int,
    accumulation_steps: int,
    warm: bool = True,
    peak_flops: bool = True,
    optimizer: str = "default",
    compile: bool = False,
    tf32: bool = False,
    model: str | None = None,
) -> dict[str, Any]:
    """Build, warm up, time ``steps`` train_steps -> step times and peak memory (bytes).

    ``optimizer``, ``compile`` and ``tf32`` are the fast paths of ``gptref.fast``; ``model``
    ("module:callable", called with the GPTConfig) times another model of the same shape
    (e.g. ``benchmarks.nanogpt_style:NanoGPT``) in place of GPTModel.

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
        _warm_kernels(cfg, dtype, device)
    if device == "cuda":
        torch.cuda.empty_cache()
    release_freed_memory()
    base = torch.cuda.memory_allocated() if device == "cuda" else _rss() if _PROC else 0
    set_tf32(tf32)
    torch.manual_seed(123)
    net = _model_factory(model)(cfg).to(device).train()
    adamw = make_optimizer(net, 4e-4, 0.1, optimizer)
    run = compile_model(net, compile)
    x, y = _batch(cfg, batch_size, device)
    autocast = torch.bfloat16 if dtype == "bfloat16" else None

    def step() -> None:
        train_step(
            run,
            adamw,
            x,
            y,
            device,
            accumulation_steps=accumulation_steps,
            autocast_dtype=autocast,
        )

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
    result["device_peak_flops"] = device_peak_flops(device, dtype) if peak_flops else None
    if device == "cpu":
        result["peak_rss_default_malloc"] = None if "MALLOC" in mode else peak
    return result


def _model_factory(spec: str | None):
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
    try:
        result = _measure_config(cfg, **spec)
    except torch.OutOfMemoryError as err:
        result = {"oom": str(err).splitlines()[0]}
    print("\n" + json.dumps(result))


def _run_isolated(
    cfg: GPTConfig, env: Mapping[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    payload = json.dumps({"config": cfg.to_dict(), **spec})
    code = "from gptref.bench import _child; _child()"
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
    context: int | None = None,
    dtype: str = "float32",
    attn: str | None = None,
    device: str = "cpu",
    accumulation_steps: int = 1,
) -> int | None:
    """-> peak bytes of a steady-state ``train_step``, measured in a process of its own as
    ``estimate_training_memory`` predicts them (see ``_measure_config``); None when it ran out
    of memory. One warm-up step (AdamW's state), then the measured step."""
    cfg = model_config(config, context, attn)
    spec = {"batch_size": batch_size, "dtype": dtype, "device": device, "warmup": 1, "steps": 1}
    spec["peak_flops"] = False
    env = EXACT_RSS_ENV if device == "cpu" else None
    result = _run_isolated(cfg, env=env, accumulation_steps=accumulation_steps, **spec)
    return result.get("peak_bytes")


def memory_check(
    preset: str | GPTConfig | Mapping[str, Any],
    batch_sizes: Sequence[int],
    *,
    context: int | None = None,
    dtypes: Sequence[str] = ("float32",),
    attns: Sequence[str] = ("reference",),
    device: str = "cpu",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """-> one row per (dtype, attn, batch size): predicted and measured peak bytes and their ratio."""
    from tqdm.auto import tqdm

    rows = []
    configs = [(dt, at, b) for dt in dtypes for at in attns for b in batch_sizes]
    for dtype, attn, b in tqdm(configs, desc="memory check", disable=not progress):
        cfg = model_config(preset, context, attn)
        autocast = "bfloat16" if dtype == "bfloat16" else None
        est = estimate_training_memory(cfg, b, autocast=autocast, device=device)
        measured = measure_memory(cfg, b, dtype=dtype, device=device)
        rows.append({
            "preset": preset if isinstance(preset, str) else "custom", "context": cfg.context_length,
            "device": device, "dtype": dtype, "attn": attn, "batch_size": b,
            "predicted_bytes": est.total, "measured_bytes": measured, "peak_phase": est.peak_phase,
            "ratio": est.total / measured if measured else None,
        })  # fmt: skip
    return rows


def format_memory_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of ``memory_check`` -> a markdown table (MiB)."""
    head = "| preset | context | device | dtype | attn | batch | predicted (MiB) | measured (MiB) | predicted/measured | peak phase |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        measured = r["measured_bytes"]
        cells = [
            r["preset"], str(r["context"]), r["device"], r["dtype"], r["attn"], str(r["batch_size"]),
            f"{r['predicted_bytes'] / 2**20:,.1f}",
            f"{measured / 2**20:,.1f}" if measured else "OOM",
            f"{r['ratio']:.3f}" if r["ratio"] else "", r["peak_phase"],
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_bench(
    preset: str | GPTConfig | Mapping[str, Any] = "small",
    context: int | None = None,
    batch_sizes: Sequence[int] = (1, 2, 4, 8),
    devices: Sequence[str] = ("cpu",),
    dtypes: Sequence[str] = ("float32",),
    attns: Sequence[str] = ("reference",),
    steps: int = 3,
    out_dir: str | Path | None = None,
    progress: bool = True,
    *,
    warmup: int = 1,
    accumulation_steps: int = 1,
    memory_limit: int | str | None = None,
    isolate: bool = True,
    optimizer: str = "default",
    compile: bool = False,
    tf32: bool = False,
    vocab_pad: int = 1,
    fused_layers: bool = False,
    model: str | None = None,
    exact_memory: bool = True,
) -> list[dict[str, Any]]:
    """-> one row per (device, dtype, attn, batch size): tokens/s, step time, MFU, peak memory.

    A row's ``status`` is "ok", "OOM" (CUDA out of memory, or on CPU a prediction over
    ``memory_limit``, which defaults to 80 % of MemAvailable: the sweep never thrashes the
    machine) or "skipped" (batch smaller than ``accumulation_steps``). ``devices`` may hold
    "cuda" only where CUDA is available. ``batch_sizes`` count rows per optimizer step; with
    ``accumulation_steps = k`` each forward pass takes ``ceil(b / k)`` of them.

    ``isolate=True`` times each configuration in a Python process of its own and, on CPU,
    measures its memory in a second one started with ``MALLOC_MMAP_THRESHOLD_=65536`` (the
    estimate's quantity; ``peak_rss_default_malloc`` is the timing process's peak under
    glibc's defaults). ``isolate=False`` runs here, faster, with glibc's defaults only. With
    ``out_dir``, writes bench.md, bench.json and bench.png (``write_results``).

    Fast paths (``gptref.fast``), recorded in every row: ``optimizer`` (AdamW
    implementation), ``compile`` (torch.compile; warm-up steps include the compilation),
    ``tf32`` (CUDA), ``vocab_pad`` (out_head rows rounded up), ``fused_layers`` (LayerNorm
    and GELU in one kernel each); ``model`` times another model
    class of the same shape ("module:callable"), for comparisons.
    """
    if optimizer not in OPTIMIZER_IMPLS:
        raise ValueError(
            f"run_bench: optimizer must be one of {OPTIMIZER_IMPLS}, got {optimizer!r}"
        )
    if isinstance(vocab_pad, bool) or not isinstance(vocab_pad, int) or vocab_pad < 1:
        raise ValueError(f"run_bench: vocab_pad must be an int >= 1, got {vocab_pad!r}")
    for name, value in (("steps", steps), ("accumulation_steps", accumulation_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"run_bench: {name} must be an int >= 1, got {value!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
        raise ValueError(
            f"run_bench: warmup must be >= 1 (AdamW's state is made in the first step), got {warmup!r}"
        )
    for dtype in dtypes:
        if dtype not in DTYPES:
            raise ValueError(f"run_bench: dtype must be one of {DTYPES}, got {dtype!r}")
    for device in devices:
        if device not in ("cpu", "cuda"):
            raise ValueError(f"run_bench: device must be 'cpu' or 'cuda', got {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                "run_bench: device 'cuda' asked for, but torch sees no CUDA device; use --device cpu"
            )
    for b in batch_sizes:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise ValueError(f"run_bench: batch sizes must be ints >= 1, got {b!r}")
    for attn in attns:
        model_config(preset, context, attn)  # an unknown preset, attn or context fails here
    _model_factory(model)
    if memory_limit is None:
        available = available_memory()
        limit = int(0.8 * available) if available is not None else None
    else:
        limit = parse_bytes(memory_limit)
    configs = [
        (dev, dt, at, b) for dev in devices for dt in dtypes for at in attns for b in batch_sizes
    ]
    name = preset if isinstance(preset, str) else "custom"
    rows = []
    from tqdm.auto import tqdm

    for device, dtype, attn, b in tqdm(
        configs, desc="gptref bench", unit="config", disable=not progress
    ):
        cfg = model_config(preset, context, attn)
        if vocab_pad != 1 or fused_layers:
            cfg = GPTConfig.from_dict(
                {**cfg.to_dict(), "vocab_pad_multiple": vocab_pad, "fused_layers": fused_layers}
            )
        micro = math.ceil(b / accumulation_steps)
        estimate = estimate_training_memory(
            cfg,
            micro,
            autocast="bfloat16" if dtype == "bfloat16" else None,
            device=device,
            accumulation_steps=accumulation_steps,
        )
        row: dict[str, Any] = {
            "preset": name, "device": device, "dtype": dtype, "attn": attn, "batch_size": b,
            "accumulation_steps": accumulation_steps, "context": cfg.context_length, "steps": steps,
            "peak_bytes_predicted": estimate.total, "peak_phase": estimate.peak_phase,
            "optimizer": optimizer, "compile": compile, "tf32": tf32, "vocab_pad": vocab_pad,
            "fused_layers": fused_layers, "model": model or "gptref",
        }  # fmt: skip
        if b < accumulation_steps:
            rows.append(
                {
                    **row,
                    "status": "skipped",
                    "note": f"batch {b} < accumulation_steps {accumulation_steps}",
                }
            )
            continue
        if device == "cpu" and limit is not None and estimate.total > limit:
            note = f"predicted {format_bytes(estimate.total)} > memory limit {format_bytes(limit)}"
            rows.append({**row, "status": "OOM", "note": note})
            continue
        spec = {
            "batch_size": b,
            "dtype": dtype,
            "device": device,
            "warmup": warmup,
            "steps": steps,
            "accumulation_steps": accumulation_steps,
            "optimizer": optimizer,
            "compile": compile,
            "tf32": tf32,
            "model": model,
        }
        if isolate:
            result = _run_isolated(cfg, **spec)
            if device == "cpu" and exact_memory and "oom" not in result:  # one more process
                memory_only = {**spec, "warmup": 1, "steps": 1, "peak_flops": False}
                exact = _run_isolated(cfg, env=EXACT_RSS_ENV, **memory_only)
                if "oom" not in exact:
                    result.update(peak_bytes=exact["peak_bytes"], memory_mode=exact["memory_mode"])
        else:
            try:  # the first configuration loads the kernels for all
                result = _measure_config(cfg, **spec, warm=not rows)
            except torch.OutOfMemoryError as err:
                result = {"oom": str(err).splitlines()[0]}
            finally:
                if device == "cuda":
                    torch.cuda.empty_cache()
        if "oom" in result:
            rows.append({**row, "status": "OOM", "note": result["oom"]})
            continue
        rows.append({**row, "status": "ok", **_summarize(result, cfg, b)})
    if out_dir is not None:
        write_results(rows, out_dir)
    return rows


def _summarize(result: dict[str, Any], cfg: GPTConfig, b: int) -> dict[str, Any]:
    times = sorted(result["times"])
    q1, _, q3 = (
        statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else (times[0],) * 3
    )
    median = statistics.median(times)
    tokens = b * cfg.context_length
    peak_flops = result["device_peak_flops"]
    fpt = flops_per_token(cfg)
    return {
        "tokens_per_s": tokens / median,
        "step_s_median": median,
        "step_s_q1": q1,
        "step_s_q3": q3,
        "step_s_min": times[0],
        "step_s_max": times[-1],
        "peak_bytes_measured": result["peak_bytes"],
        "peak_rss_default_malloc": result.get("peak_rss_default_malloc"),
        "memory_mode": result["memory_mode"],
        "cpu_share": result["cpu_share"],
        "flops_per_token": fpt,
        "device_peak_flops": peak_flops,
        "mfu": tokens / median * fpt / peak_flops if peak_flops else None,
    }


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of ``run_bench`` -> a markdown table, one line per row. "peak measured" is the
    estimate's quantity (see ``_measure_config``); "RSS, glibc defaults" is what ``top`` shows;
    "CPU share" is the CPU time the timed steps got over wall time x threads: well below its
    usual value (~0.9 on an idle machine), other work slowed the row down."""
    head = "| device | dtype | attn | batch | accum | tokens/s | step median (s) | step IQR (s) | peak measured | peak predicted | predicted/measured | RSS, glibc defaults | MFU | CPU share | status |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        ok = r["status"] == "ok"
        measured = r.get("peak_bytes_measured")
        cells = [
            r["device"], r["dtype"], r["attn"], str(r["batch_size"]), str(r["accumulation_steps"]),
            f"{r['tokens_per_s']:,.0f}" if ok else "",
            f"{r['step_s_median']:.3f}" if ok else "",
            f"{r['step_s_q1']:.3f}-{r['step_s_q3']:.3f}" if ok else "",
            format_bytes(measured) if measured else "",
            format_bytes(r["peak_bytes_predicted"]),
            f"{r['peak_bytes_predicted'] / measured:.3f}" if measured else "",
            format_bytes(r["peak_rss_default_malloc"]) if r.get("peak_rss_default_malloc") else "",
            f"{100 * r['mfu']:.1f} %" if ok and r.get("mfu") else "",
            f"{r['cpu_share']:.2f}" if ok and r["device"] == "cpu" else "",
            r["status"] if ok else f"{r['status']}: {r.get('note', '')}",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(
    rows: Sequence[Mapping[str, Any]], out_dir: str | Path, name: str = "bench"
) -> dict[str, Path]:
    """-> paths of ``name``.md (the table: ``format_comparison`` for ``compare_paths`` rows,
    else ``format_table``), ``name``.json (machine info + rows) and, for a sweep, ``name``.png
    (left out when matplotlib is not installed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / f"{name}.md", "json": out / f"{name}.json"}
    comparison = bool(rows) and "variant" in rows[0]
    paths["md"].write_text((format_comparison if comparison else format_table)(rows) + "\n")
    paths["json"].write_text(
        json.dumps({"machine": machine_info(), "rows": list(rows)}, indent=1) + "\n"
    )
    if comparison:
        return paths
    png = plot_bench(rows, out / f"{name}.png")
    if png is not None:
        paths["png"] = png
    return paths


FAST_SETTINGS = (
    "dtype", "attn", "optimizer", "compile", "tf32", "vocab_pad", "fused_layers", "model",
)  # fmt: skip


def compare_paths(
    variants: Mapping[str, Mapping[str, Any]],
    preset: str | GPTConfig | Mapping[str, Any] = "124M",
    context: int | None = 256,
    batch_size: int = 4,
    device: str = "cpu",
    *,
    steps: int = 5,
    warmup: int = 2,
    rounds: int = 1,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Time each variant (a name -> settings among ``FAST_SETTINGS``; missing ones are the
    reference's) side by side -> one row per variant with ``speedup``: its tokens/s over
    the first variant's. Each variant runs in a process of its own; with ``rounds > 1`` the
    variants run in turn that many times and each keeps its median round, so a slow spell
    of the machine does not land on one variant only."""
    if not variants:
        raise ValueError("compare_paths: give at least one variant")
    for name, settings in variants.items():
        unknown = sorted(set(settings) - set(FAST_SETTINGS))
        if unknown:
            raise ValueError(
                f"compare_paths: variant {name!r} has unknown settings {unknown}; "
                f"the settings are {FAST_SETTINGS}"
            )
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    from tqdm.auto import tqdm

    bar = tqdm(total=rounds * len(variants), desc="gptref compare", disable=not progress)
    for _ in range(rounds):
        for name, settings in variants.items():
            kw = dict(settings)
            dtype, attn = kw.pop("dtype", "float32"), kw.pop("attn", "reference")
            (row,) = run_bench(
                preset, context, [batch_size], [device], [dtype], [attn], steps,
                progress=False, warmup=warmup, exact_memory=False, **kw,
            )  # fmt: skip
            runs[name].append(row)
            bar.update(1)
    bar.close()
    rows = []
    for name, results in runs.items():
        ok = [r for r in results if r["status"] == "ok"]
        if not ok:
            rows.append({**results[0], "variant": name})
            continue
        ok.sort(key=lambda r: r["tokens_per_s"])
        rows.append({**ok[(len(ok) - 1) // 2], "variant": name, "rounds": len(ok)})
    base = rows[0].get("tokens_per_s")
    for r in rows:
        r["speedup"] = r["tokens_per_s"] / base if base and r.get("tokens_per_s") else None
    return rows


def format_comparison(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of ``compare_paths`` -> a markdown table with the speed-up over the first row."""
    head = "| variant | dtype | attn | AdamW | fused layers | compile | vocab pad | model | tokens/s | step median (s) | speed-up | MFU | CPU share |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        ok = r["status"] == "ok"
        cells = [
            r["variant"], r["dtype"], r["attn"], r["optimizer"],
            "yes" if r.get("fused_layers") else "no", "yes" if r["compile"] else "no",
            str(r["vocab_pad"]), r["model"],
            f"{r['tokens_per_s']:,.0f}" if ok else r["status"],
            f"{r['step_s_median']:.3f}" if ok else "",
            f"{r['speedup']:.2f}x" if ok and r.get("speedup") else "",
            f"{100 * r['mfu']:.1f} %" if ok and r.get("mfu") else "",
            f"{r['cpu_share']:.2f}" if ok and r["device"] == "cpu" else "",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_bench(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path | None:
    """tokens/s and peak memory (measured solid, predicted dashed) against batch size, one line
    per device/dtype/attn -> ``path``; None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (speed, memory) = plt.subplots(1, 2, figsize=(11, 4))
    keys = sorted({(r["device"], r["dtype"], r["attn"]) for r in rows})
    for key in keys:
        mine = sorted(
            (r for r in rows if (r["device"], r["dtype"], r["attn"]) == key),
            key=lambda r: r["batch_size"],
        )
        ok = [r for r in mine if r["status"] == "ok"]
        label = "/".join(key)
        line = speed.plot(
            [r["batch_size"] for r in ok], [r["tokens_per_s"] for r in ok], "o-", label=label
        )[0]
        memory.plot(
            [r["batch_size"] for r in ok],
            [r["peak_bytes_measured"] / 2**30 for r in ok],
            "o-",
            color=line.get_color(),
            label=f"{label} measured",
        )
        memory.plot(
            [r["batch_size"] for r in mine],
            [r["peak_bytes_predicted"] / 2**30 for r in mine],
            "x--",
            color=line.get_color(),
            label=f"{label} predicted",
        )
    for ax, ylabel in ((speed, "tokens / s"), (memory, "peak memory (GiB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size (rows)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plan(
    preset: str | GPTConfig | Mapping[str, Any] = "124M",
    memory: str | int = "24GiB",
    target_batch: int = 1024,
    *,
    context: int | None = None,
    dtype: str = "float32",
    attn: str | None = None,
    device: str = "cpu",
) -> BatchPlan:
    """-> BatchPlan(micro_batch, accumulation_steps, predicted_peak) for an effective batch of
    ``target_batch`` rows in ``memory`` ('24GiB' or bytes); ``dtype`` as ``gptref train --dtype``."""
    if dtype not in DTYPES:
        raise ValueError(f"plan: dtype must be one of {DTYPES}, got {dtype!r}")
    cfg = model_config(preset, context, attn)
    autocast = "bfloat16" if dtype == "bfloat16" else None
    return plan_batches(cfg, parse_bytes(memory), target_batch, autocast=autocast, device=device)


def format_plan(
    preset: str | GPTConfig | Mapping[str, Any] = "124M",
    memory: str | int = "24GiB",
    target_batch: int = 1024,
    *,
    context: int | None = None,
    dtype: str = "float32",
    attn: str | None = None,
    device: str = "cpu",
) -> str:
    """``plan(...)`` as the lines ``gptref plan`` prints: the plan and the peak's breakdown."""
    result = plan(
        preset, memory, target_batch, context=context, dtype=dtype, attn=attn, device=device
    )
    cfg = model_config(preset, context, attn)
    autocast = "bfloat16" if dtype == "bfloat16" else None
    est = estimate_training_memory(
        cfg,
        result.micro_batch,
        autocast=autocast,
        device=device,
        accumulation_steps=result.accumulation_steps,
    )
    name = preset if isinstance(preset, str) else "custom config"
    parts = ", ".join(
        f"{k.replace('_', ' ')} {format_bytes(v)}" for k, v in est.breakdown.items() if v
    )
    return "\n".join([
        f"{name}: context {cfg.context_length}, {dtype}, {cfg.attn_impl} attention, {device}; budget {format_bytes(parse_bytes(memory))}",
        f"micro-batch {result.micro_batch} x {result.accumulation_steps} accumulation steps = {result.effective_batch} rows per update (target {target_batch})",
        f"predicted peak {format_bytes(result.predicted_peak)} ({est.peak_phase}): {parts}",
    ])  # fmt: skip
