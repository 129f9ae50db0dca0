"""The batch-size sweep behind ``gptref bench``: ``run_bench`` times ``train_step`` for every
(device, dtype, attention, batch size) and records throughput, step-time spread, MFU and
peak memory, measured beside ``estimate_training_memory``'s prediction.

``dtype`` is ``train_step``'s autocast, as in ``gptref train --dtype``: "float32" (none) or
"bfloat16" (autocast; parameters, gradients and AdamW state stay float32). Each
configuration runs in its own Python process by default (``isolate=True``).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, get_args

import torch

from gptref._check import FieldError, check_choice, check_int
from gptref.bench.flops import flops_per_token
from gptref.bench.measure import (
    EXACT_RSS_ENV,
    measure_config,
    model_factory,
    run_isolated,
)
from gptref.bench.report import write_results
from gptref.fast.paths import REFERENCE, Dtype, FastPaths
from gptref.gpt_config import GPTConfig, resolve_config
from gptref.plan.memory import available_memory, estimate_training_memory, format_bytes
from gptref.plan.planner import parse_bytes

DTYPES: tuple[str, ...] = get_args(Dtype)


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
    fast: FastPaths = REFERENCE,
    model: str | None = None,
    exact_memory: bool = True,
    overwrite: bool = False,
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
    ``out_dir``, writes bench.md, bench.json and bench.png (``write_results``; earlier ones
    replaced with ``overwrite``).

    ``fast``: the other fast paths (``gptref.fast.FastPaths``; its ``dtype`` and ``attn``
    are the sweep's axes), recorded in every row: ``optimizer`` (AdamW implementation),
    ``compile`` (torch.compile; warm-up steps include the compilation), ``tf32`` (CUDA),
    ``vocab_pad`` (out_head rows rounded up), ``fused_layers``, and the memory levers ``loss``
    / ``loss_chunk`` (the chunked loss) and ``recompute`` (activation checkpointing), which
    the prediction takes too. ``model`` times another model
    class of the same shape ("module:callable"), for comparisons.
    """
    where = "run_bench"
    check_int(where, "steps", steps, low=1)
    check_int(where, "accumulation_steps", accumulation_steps, low=1)
    check_int(where, "warmup", warmup, low=1, hint=" (AdamW's state is made in the first step)")
    for dtype in dtypes:
        check_choice(where, "dtype", dtype, DTYPES)
    for device in devices:
        if device not in ("cpu", "cuda"):
            raise FieldError(where, "device", f"must be 'cpu' or 'cuda', got {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                "run_bench: device 'cuda' asked for, but torch sees no CUDA device; use 'cpu'"
            )
    for b in batch_sizes:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise FieldError(where, "batch sizes", f"must be ints >= 1, got {b!r}")
    variants = {(dt, at): fast.replace(dtype=dt, attn=at) for dt in dtypes for at in attns}
    # an unknown preset, attn or context fails here, before anything runs
    cfgs = {key: paths.apply(resolve_config(preset, context_length=context))
            for key, paths in variants.items()}  # fmt: skip
    model_factory(model)
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
        cfg, paths = cfgs[dtype, attn], variants[dtype, attn]
        micro = math.ceil(b / accumulation_steps)
        estimate = estimate_training_memory(
            cfg,
            micro,
            autocast="bfloat16" if dtype == "bfloat16" else None,
            device=device,
            accumulation_steps=accumulation_steps,
            loss_chunk=paths.loss_chunk_rows,
        )
        row: dict[str, Any] = {
            "preset": name, "device": device, "dtype": dtype, "attn": attn, "batch_size": b,
            "accumulation_steps": accumulation_steps, "context": cfg.context_length, "steps": steps,
            "peak_bytes_predicted": estimate.total, "peak_phase": estimate.peak_phase,
            "optimizer": fast.optimizer, "compile": fast.compile, "tf32": fast.tf32,
            "vocab_pad": fast.vocab_pad, "fused_layers": fast.fused_layers,
            "loss": fast.loss, "loss_chunk": fast.loss_chunk_rows, "recompute": fast.recompute,
            "model": model or "gptref",
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
        spec = {"batch_size": b, "device": device, "warmup": warmup, "steps": steps,
                "accumulation_steps": accumulation_steps, "model": model}  # fmt: skip
        if isolate:
            result = run_isolated(cfg, paths, **spec)
            if device == "cpu" and exact_memory and "oom" not in result:  # one more process
                memory_only = {**spec, "warmup": 1, "steps": 1, "peak_flops": False}
                exact = run_isolated(cfg, paths, env=EXACT_RSS_ENV, **memory_only)
                if "oom" not in exact:
                    result.update(peak_bytes=exact["peak_bytes"], memory_mode=exact["memory_mode"])
        else:
            try:  # the first configuration loads the kernels for all
                result = measure_config(cfg, fast=paths, **spec, warm=not rows)
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
        write_results(rows, out_dir, overwrite=overwrite)
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
