"""The batch planner behind ``gptref plan``: the largest micro-batch that fits a memory budget
and the gradient accumulation that reaches a target batch, from ``gptref.memory``'s model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from gptref._check import check_choice, check_int
from gptref.memory import estimate_training_memory, format_bytes
from gptref.model import GPTConfig, resolve_config


class BatchPlan(NamedTuple):
    micro_batch: int  # rows per forward pass
    accumulation_steps: int  # forward/backward passes per optimizer step
    predicted_peak: int  # bytes, estimate_training_memory(...).total for the micro-batch

    @property
    def effective_batch(self) -> int:
        return self.micro_batch * self.accumulation_steps


def max_batch_size(
    config: GPTConfig | Mapping[str, Any],
    budget_bytes: int,
    *,
    limit: int = 1 << 20,
    **kwargs: Any,
) -> int:
    """-> the largest b <= limit whose estimate fits ``budget_bytes`` (0 when b = 1 does not).

    ``kwargs`` go to ``estimate_training_memory`` (context, dtype, autocast, ...). The estimate
    grows with b, so an exponential then a binary search finds it in O(log b) estimates.
    """
    if budget_bytes < 0:
        raise ValueError(f"max_batch_size: budget_bytes must be >= 0, got {budget_bytes}")

    def fits(batch: int) -> bool:
        return estimate_training_memory(config, batch, **kwargs).total <= budget_bytes

    if not fits(1):
        return 0
    lo, hi = 1, 2
    while hi <= limit and fits(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, limit + 1)  # lo fits, hi does not (or is past the limit)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def plan_batches(
    config: GPTConfig | Mapping[str, Any],
    budget_bytes: int,
    target_batch_size: int = 1024,
    **kwargs: Any,
) -> BatchPlan:
    """-> BatchPlan(micro_batch, accumulation_steps, predicted_peak) reaching an effective batch
    of at least ``target_batch_size`` rows within ``budget_bytes``.

    One pass if the whole target fits; otherwise the largest micro-batch that fits with the
    gradients live through accumulation, then ``accumulation_steps = ceil(target / micro)``
    and the micro-batch evened out to ``ceil(target / accumulation_steps)`` (less padding).
    Raises ValueError when not even one row fits.
    """
    check_int("plan_batches", "target_batch_size", target_batch_size, low=1)
    if "accumulation_steps" in kwargs:
        raise ValueError("plan_batches: accumulation_steps is what it chooses; leave it out")
    one_pass = max_batch_size(config, budget_bytes, limit=target_batch_size, **kwargs)
    if one_pass >= target_batch_size:
        micro, steps = target_batch_size, 1
    else:
        largest = max_batch_size(
            config, budget_bytes, limit=target_batch_size, accumulation_steps=2, **kwargs
        )
        if largest == 0:
            need = estimate_training_memory(config, 1, accumulation_steps=2, **kwargs).total
            raise ValueError(
                f"plan_batches: even a micro-batch of 1 row needs {format_bytes(need)}, over the "
                f"budget {format_bytes(budget_bytes)}; use a shorter context, autocast, or more memory"
            )
        steps = math.ceil(target_batch_size / largest)
        micro = math.ceil(target_batch_size / steps)
        # more passes hold a larger input batch: step on until the evened-out plan fits
        while (
            estimate_training_memory(config, micro, accumulation_steps=steps, **kwargs).total
            > budget_bytes
        ):
            if micro == 1:
                raise ValueError(
                    f"plan_batches: {target_batch_size} rows of 1 do not fit in "
                    f"{format_bytes(budget_bytes)}; lower the target or use more memory"
                )
            steps += 1
            micro = math.ceil(target_batch_size / steps)
    peak = estimate_training_memory(config, micro, accumulation_steps=steps, **kwargs).total
    return BatchPlan(micro, steps, peak)


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
    check_choice("plan", "dtype", dtype, ("float32", "bfloat16"))
    cfg = resolve_config(preset, context_length=context, attn_impl=attn)
    autocast = "bfloat16" if dtype == "bfloat16" else None
    return plan_batches(cfg, parse_bytes(memory), target_batch, autocast=autocast, device=device)


def format_plan(
    preset: str | GPTConfig | Mapping[str, Any] = "124M",
    memory: str | int = "24GiB",
    target_batch: int = 1024,
    **options: Any,
) -> str:
    """``plan(...)`` as the lines ``gptref plan`` prints: the plan and the peak's breakdown
    (``options``: plan's context, dtype, attn, device)."""
    result = plan(preset, memory, target_batch, **options)
    context, dtype = options.get("context"), options.get("dtype", "float32")
    attn, device = options.get("attn"), options.get("device", "cpu")
    cfg = resolve_config(preset, context_length=context, attn_impl=attn)
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
    lines = [
        f"{name}: context {cfg.context_length}, {dtype}, {cfg.attn_impl} attention, {device}; budget {format_bytes(parse_bytes(memory))}",
        f"micro-batch {result.micro_batch} x {result.accumulation_steps} accumulation steps = {result.effective_batch} rows per update (target {target_batch})",
        f"predicted peak {format_bytes(result.predicted_peak)} ({est.peak_phase}): {parts}",
    ]  # fmt: skip
    if isinstance(preset, str):
        lines.append(f"run it: {train_command(preset, result, context=context, dtype=dtype)}")
    return "\n".join(lines)


def train_command(
    preset: str, result: BatchPlan, *, context: int | None = None, dtype: str = "float32"
) -> str:
    """The ``gptref train`` command line that trains with this plan."""
    flags = [f"--preset {preset}"] + ([f"--context {context}"] if context else [])
    flags += [f"--batch-size {result.effective_batch}"]
    if result.accumulation_steps > 1:
        flags.append(f"--accumulation-steps {result.accumulation_steps}")
    if dtype != "float32":
        flags.append(f"--dtype {dtype}")
    return "gptref train " + " ".join(flags)
