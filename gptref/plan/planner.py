"""The batch planner behind ``gptref plan``: the largest micro-batch that fits a memory budget
and the gradient accumulation that reaches a target batch, from ``gptref.plan.memory``'s model,
and the memory levers (chunked loss, activation checkpointing) that buy a larger one.

``plan_levers`` plans every lever combination and ranks them by predicted tokens/s, from a
stated model (``lever_cost``, ``batch_efficiency``): what a lever costs is the extra work
it adds to a step, and what a larger micro-batch buys is the efficiency of larger matmuls.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from gptref._check import check_choice, check_int
from gptref.fast.probe import device_class
from gptref.gpt_config import GPTConfig, as_config, resolve_config
from gptref.plan.compute import flops_per_token
from gptref.plan.memory import estimate_training_memory, format_bytes


class BatchPlan(NamedTuple):
    micro_batch: int  # rows per forward pass
    accumulation_steps: int  # forward/backward passes per optimizer step
    predicted_peak: int  # bytes, estimate_training_memory(...).total for the micro-batch
    loss_chunk: int | None = None  # the chunked loss's rows per chunk; None: full logits
    recompute: int = 0  # activation checkpointing of every k-th block; 0: none

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
            raise DoesNotFit(
                f"plan_batches: even a micro-batch of 1 row needs {format_bytes(need)}, over the "
                f"budget {format_bytes(budget_bytes)}; use a shorter context, autocast, or more memory",
                need,
            )
        steps = math.ceil(target_batch_size / largest)
        micro = math.ceil(target_batch_size / steps)
        # more passes hold a larger input batch: step on until the evened-out plan fits
        while (
            estimate_training_memory(config, micro, accumulation_steps=steps, **kwargs).total
            > budget_bytes
        ):
            if micro == 1:
                raise DoesNotFit(
                    f"plan_batches: {target_batch_size} rows of 1 do not fit in "
                    f"{format_bytes(budget_bytes)}; lower the target or use more memory"
                )
            steps += 1
            micro = math.ceil(target_batch_size / steps)
    peak = estimate_training_memory(config, micro, accumulation_steps=steps, **kwargs).total
    recompute = kwargs.get("recompute")
    recompute = as_config(config).recompute if recompute is None else recompute
    return BatchPlan(micro, steps, peak, kwargs.get("loss_chunk"), recompute)


class DoesNotFit(ValueError):
    """Not even the smallest plan fits the budget; ``need``: what one row needs (None: the
    rows fit, but not all of the target batch at 1 row per pass)."""

    def __init__(self, message: str, need: int | None = None) -> None:
        super().__init__(message)
        self.need = need


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


# Tokens per micro-batch at which a train_step runs at half its large-batch speed: the knee
# of batch_efficiency. CPU: GPT-124M at context 256 ran at 136 / 173 / 191 tokens/s at 256 /
# 512 / 1024 tokens, which n / (n + 100) follows to 3 %. CUDA: an H100 (fastest path, 286k
# tokens/s at 16k tokens, 327k at 32k) gives ~5,000.
HALF_SPEED_TOKENS = {"cpu": 100, "cuda": 5000}
# The chunked loss adds no FLOPs (its gradients are computed in its forward pass), but it
# moves less memory: its measured cost, the step time with it over the step time without it,
# minus 1 (negative: it is faster), per device class (gptref.fast.probe.device_class) and
# dtype, at GPT-124M, context 256, batch 4, the two timed side by side in one process.
CHUNKED_LOSS_COST: dict[tuple[str, str], float] = {
    # an AVX2 EPYC: the reference 102 tokens/s, with the chunked loss 111
    ("cpu AVX2", "float32"): -0.081,
    # an AVX512-BF16 EPYC without AMX, the median per-round ratio per CPU second: the
    # reference with the chunked loss 1.119x; the bf16 bundle with it 1.143x
    ("cpu AVX512 avx512_bf16", "float32"): -0.106,
    ("cpu AVX512 avx512_bf16", "bfloat16"): -0.125,
}
DEFAULT_LOSS_CHUNK = 1024  # gptref.chunked_loss.DEFAULT_CHUNK, FastPaths.loss_chunk's default


class LeverPlan(NamedTuple):
    batches: BatchPlan  # the micro-batch, accumulation and levers
    cost: float  # predicted extra time per token over no levers (lever_cost), a fraction
    speed: float  # predicted tokens/s relative to the ideal: batch_efficiency / (1 + cost)
    n_layers: int  # the model's blocks, to say how many are recomputed

    @property
    def levers(self) -> str:
        return describe_levers(self.batches.loss_chunk, self.batches.recompute, self.n_layers)


def describe_levers(loss_chunk: int | None, recompute: int, n_layers: int) -> str:
    """(None, 0, 12) -> 'no levers'; (1024, 2, 12) -> 'chunked loss, recompute 6/12 blocks
    (--recompute 2)'."""
    parts = [] if loss_chunk is None else ["chunked loss"]
    if recompute:
        blocks = -(-n_layers // recompute)
        parts.append(f"recompute {blocks}/{n_layers} blocks (--recompute {recompute})")
    return ", ".join(parts) or "no levers"


def lever_cost(
    config: GPTConfig | Mapping[str, Any],
    *,
    loss_chunk: int | None = None,
    recompute: int = 0,
    context: int | None = None,
    device: str = "cpu",
    dtype: str = "float32",
) -> float:
    """Predicted extra time per token of the levers, as a fraction of a plain step's
    (negative: a speed-up).

    Recomputation runs the forward of each checkpointed block again: ``ceil(L/k)`` blocks of
    ``24*E*E + 4*T*E`` FLOPs per token (a third of a block's ``72*E*E + 12*T*E`` training
    FLOPs), over ``flops_per_token`` (PaLM's count): +24 % for GPT-124M at context 1024 with
    every block recomputed. The chunked loss adds ``chunked_loss_cost(device, dtype)``."""
    cfg = as_config(config)
    T = cfg.context_length if context is None else context
    E, L = cfg.emb_dim, cfg.n_layers
    blocks = sum(1 for i in range(L) if recompute and i % recompute == 0)
    cost = blocks * (24 * E * E + 4 * T * E) / flops_per_token(cfg, T)
    return cost + (chunked_loss_cost(device, dtype) if loss_chunk is not None else 0.0)


def chunked_loss_source(device: str = "cpu", dtype: str = "float32") -> str:
    """Where ``chunked_loss_cost`` comes from, in words."""
    key = (device_class() if device == "cpu" else device, dtype)
    if key in CHUNKED_LOSS_COST:
        return f"the chunked loss measured on {key[0]} in {dtype}: {100 * CHUNKED_LOSS_COST[key]:+.1f} %"
    return f"the chunked loss not measured on {key[0]} in {dtype}: +0.0 %, its extra FLOPs"


def chunked_loss_cost(device: str = "cpu", dtype: str = "float32") -> float:
    """The chunked loss's measured cost (``CHUNKED_LOSS_COST``) on ``device`` ("cpu": this
    machine's CPU class) in ``dtype``; 0.0, its FLOPs' cost, where its class is not measured
    (CUDA)."""
    key = (device_class() if device == "cpu" else device, dtype)
    return CHUNKED_LOSS_COST.get(key, 0.0)


def batch_efficiency(tokens: int, device: str = "cpu") -> float:
    """Tokens per micro-batch -> the share of large-batch tokens/s a step reaches: ``n / (n +
    HALF_SPEED_TOKENS[device])`` (small matmuls and per-pass overheads)."""
    return tokens / (tokens + HALF_SPEED_TOKENS[device])


def lever_choices(n_layers: int, chunks: Sequence[int | None] = (None, DEFAULT_LOSS_CHUNK)):
    """-> every (loss_chunk, recompute) to plan: the full and the chunked loss, times no
    recomputation and every k in 1..n_layers (k's with as many recomputed blocks cost the
    same and save different amounts: whether the last block is one of them matters)."""
    return [(chunk, k) for chunk in chunks for k in range(n_layers + 1)]


def plan_levers(
    config: GPTConfig | Mapping[str, Any],
    budget_bytes: int,
    target_batch_size: int = 1024,
    *,
    device: str = "cpu",
    choices: Sequence[tuple[int | None, int]] | None = None,
    **kwargs: Any,
) -> list[LeverPlan]:
    """-> a LeverPlan for every lever combination (``lever_choices``) with which one row
    fits, best predicted tokens/s first (ties: the cheaper levers first). ``kwargs`` go to
    ``estimate_training_memory`` (context, autocast, attn_impl, ...). Raises ValueError when
    not even one row fits with every lever."""
    cfg = as_config(config)
    T = kwargs.get("context") or cfg.context_length
    plans, errors = [], []
    for chunk, k in choices or lever_choices(cfg.n_layers):
        try:
            batches = plan_batches(cfg, budget_bytes, target_batch_size, device=device,
                                   loss_chunk=chunk, recompute=k, **kwargs)  # fmt: skip
        except DoesNotFit as e:
            errors.append(e)
            continue
        cost = lever_cost(cfg, loss_chunk=chunk, recompute=k, context=T, device=device,
                          dtype=kwargs.get("autocast") or "float32")  # fmt: skip
        speed = batch_efficiency(batches.micro_batch * T, device) / (1 + cost)
        plans.append(LeverPlan(batches, cost, speed, cfg.n_layers))
    if not plans:
        last = errors[-1]
        raise DoesNotFit(str(last).replace("plan_batches", "plan_levers") + " (with every lever)",
                         last.need)  # fmt: skip
    return sorted(plans, key=lambda p: (-round(p.speed, 4), p.cost))


def frontier(plans: Sequence[LeverPlan]) -> list[LeverPlan]:
    """The plans worth their cost, cheapest first: no levers, then each plan whose micro-batch
    is larger than every cheaper plan's."""
    shown: list[LeverPlan] = []
    for p in sorted(plans, key=lambda p: (p.cost, -p.batches.micro_batch)):
        if not shown or p.batches.micro_batch > max(q.batches.micro_batch for q in shown):
            shown.append(p)
        elif p.batches.loss_chunk is None and not p.batches.recompute:
            shown.insert(0, p)  # no levers: always shown, the baseline
    return shown


def plan(
    preset: str | GPTConfig | Mapping[str, Any] = "124M",
    memory: str | int = "24GiB",
    target_batch: int = 1024,
    *,
    context: int | None = None,
    dtype: str = "float32",
    attn: str | None = None,
    device: str = "cpu",
    levers: str = "auto",
) -> BatchPlan:
    """-> BatchPlan(micro_batch, accumulation_steps, predicted_peak, loss_chunk, recompute) for
    an effective batch of ``target_batch`` rows in ``memory`` ('24GiB' or bytes); ``dtype`` as
    ``gptref train --dtype``. ``levers="auto"``: the levers ``plan_levers`` ranks first;
    ``"none"``: the micro-batch alone, without levers."""
    return _plans(preset, memory, target_batch, context, dtype, attn, device, levers)[0].batches


def _plans(preset, memory, target_batch, context, dtype, attn, device, levers) -> list[LeverPlan]:
    check_choice("plan", "dtype", dtype, ("float32", "bfloat16"))
    check_choice("plan", "levers", levers, ("auto", "none"))
    cfg = resolve_config(preset, context_length=context, attn_impl=attn)
    autocast = "bfloat16" if dtype == "bfloat16" else None
    choices = [(None, 0)] if levers == "none" else None
    return plan_levers(cfg, parse_bytes(memory), target_batch, device=device, choices=choices,
                       autocast=autocast)  # fmt: skip


def format_plan(
    preset: str | GPTConfig | Mapping[str, Any] = "124M",
    memory: str | int = "24GiB",
    target_batch: int = 1024,
    **options: Any,
) -> str:
    """``plan(...)`` as the lines ``gptref plan`` prints: every lever combination's plan and
    predicted cost, the chosen one and its peak's breakdown (``options``: plan's context,
    dtype, attn, device, levers)."""
    context, dtype = options.get("context"), options.get("dtype", "float32")
    attn, device = options.get("attn"), options.get("device", "cpu")
    plans = _plans(preset, memory, target_batch, context, dtype, attn, device,
                   options.get("levers", "auto"))  # fmt: skip
    result = plans[0].batches
    cfg = resolve_config(preset, context_length=context, attn_impl=attn)
    autocast = "bfloat16" if dtype == "bfloat16" else None
    est = estimate_training_memory(
        cfg,
        result.micro_batch,
        autocast=autocast,
        device=device,
        accumulation_steps=result.accumulation_steps,
        loss_chunk=result.loss_chunk,
        recompute=result.recompute,
    )
    name = preset if isinstance(preset, str) else "custom config"
    parts = ", ".join(
        f"{k.replace('_', ' ')} {format_bytes(v)}" for k, v in est.breakdown.items() if v
    )
    lines = [
        f"{name}: context {cfg.context_length}, {dtype}, {cfg.attn_impl} attention, {device}; budget {format_bytes(parse_bytes(memory))}",
    ]  # fmt: skip
    if len(plans) > 1:
        lines.append(
            "levers, each one that buys a larger micro-batch than the cheaper ones (cost: "
            "predicted extra time per token, negative: faster, gptref.plan.planner.lever_cost; "
            f"speed: predicted tokens/s, relative); {chunked_loss_source(device, dtype)}"
        )
        shown = frontier(plans)
        width = max(len(p.levers) for p in shown)
        for p in shown:
            b = p.batches
            lines.append(
                f"  {p.levers:<{width}}  micro-batch {b.micro_batch:>4} x {b.accumulation_steps:>4}"
                f"  peak {format_bytes(b.predicted_peak):>10}  cost {100 * p.cost:+5.1f} %"
                f"  speed {p.speed:.3f}"
            )
    lines += [
        f"chosen: {plans[0].levers}" if len(plans) > 1 else "levers: none (--levers none)",
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
    if result.loss_chunk is not None:
        flags.append("--loss chunked")
        if result.loss_chunk != DEFAULT_LOSS_CHUNK:
            flags.append(f"--loss-chunk {result.loss_chunk}")
    if result.recompute:
        flags.append(f"--recompute {result.recompute}")
    return "gptref train " + " ".join(flags)
