"""lr_at's contract: linear warmup, then a cosine; which cosine is declared by ``LR_SCHEDULE``:
"appendix_d" (the default: the book's formula as printed, which never quite reaches min_lr)
or "exact" (ends at exactly min_lr on the last step, and stays there)."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gptref.conformance.oracles import oracle_appendix_d_lrs, oracle_lr
from gptref.conformance.repro import Call
from gptref.conformance.strategies import lr_schedules

uses = pytest.mark.uses

# min_lr + (peak_lr - min_lr) rounds to 0.30000000000000004, not peak_lr: pins the exact peak
ROUNDING = dict(peak_lr=0.3, total_steps=10, warmup_steps=3, initial_lr=0.1, min_lr=0.1)


def fit(impl, sched: dict) -> tuple[dict, range]:
    """-> (the schedule, the steps to check) for the declared variant: the book's formula needs
    a warmup and is defined on its loop's steps only; "exact" is checked 3 steps past the end."""
    if impl.lr_schedule == "appendix_d":
        return {**sched, "warmup_steps": max(1, sched["warmup_steps"])}, range(sched["total_steps"])
    return sched, range(sched["total_steps"] + 3)


def lr_calls(impl, sched: dict, steps) -> tuple[list[Call], list[float]]:
    calls = [Call(impl, "lr_at", s, **sched) for s in steps]
    return calls, [float(c()) for c in calls]


@uses("lr_at")
@given(sched=lr_schedules(), extra=st.integers(0, 5))
def test_lr_at_equals_the_declared_schedule(impl, sched, extra):
    """lr_at(s) equals the declared schedule's definition at every step, to float rounding:
    "appendix_d", the lr the book's train_model sets at global_step s; "exact", a line, then half a
    cosine whose last point, total_steps - 1, is min_lr, then min_lr."""
    sched, steps = fit(impl, sched)
    if impl.lr_schedule == "appendix_d":
        want = oracle_appendix_d_lrs(**sched)
    else:
        want = [oracle_lr(s, **sched) for s in range(len(steps) + extra)]
        steps = range(len(want))
    calls, got = lr_calls(impl, sched, steps)
    tol = 1e-12 * sched["peak_lr"]
    for call, g, w in zip(calls, got, want, strict=True):
        call.close(g, w, f"{impl.lr_schedule} schedule", rtol=1e-12, atol=tol)


@uses("lr_at")
@given(sched=lr_schedules())
def test_lr_at_warmup_is_non_decreasing(impl, sched):
    """lr_at(s) <= lr_at(s + 1) for every s < warmup_steps."""
    sched, _ = fit(impl, sched)
    calls, values = lr_calls(impl, sched, range(sched["warmup_steps"] + 1))
    for s in range(len(values) - 1):
        calls[s + 1].check(values[s] <= values[s + 1], f"lr fell during warmup, from step {s}", f">= {values[s]}", values[s + 1])  # fmt: skip


@uses("lr_at")
@given(sched=lr_schedules())
@example(sched=ROUNDING)
def test_lr_at_is_non_increasing_after_warmup(impl, sched):
    """lr_at(s) >= lr_at(s + 1) for every s >= warmup_steps (past the end too, for "exact")."""
    sched, steps = fit(impl, sched)
    steps = range(sched["warmup_steps"], steps.stop)
    calls, values = lr_calls(impl, sched, steps)
    for i in range(len(values) - 1):
        calls[i + 1].check(values[i] >= values[i + 1], f"lr rose after warmup, from step {steps[i]}", f"<= {values[i]}", values[i + 1])  # fmt: skip


@uses("lr_at")
@given(sched=lr_schedules())
def test_lr_at_stays_within_min_initial_and_peak(impl, sched):
    """min(initial_lr, min_lr) <= lr_at(s) <= peak_lr at every step ("appendix_d": up to 4 ulps
    of peak_lr above it, the book's arithmetic at the first cosine step)."""
    sched, steps = fit(impl, sched)
    low, high = min(sched["initial_lr"], sched["min_lr"]), sched["peak_lr"]
    if impl.lr_schedule == "appendix_d":
        high += 4 * math.ulp(high)
    calls, values = lr_calls(impl, sched, steps)
    for call, v in zip(calls, values, strict=True):
        call.check(low <= v <= high, "lr outside [min(initial_lr, min_lr), peak_lr]", f"in [{low}, {high}]", v)  # fmt: skip


@uses("lr_at")
@pytest.mark.semantics(LR_SCHEDULE="exact")
@given(sched=lr_schedules())
@example(sched=ROUNDING)
def test_exact_schedule_end_points_are_exact(impl, sched):
    """ "exact": lr_at(0) == initial_lr (peak_lr without warmup), lr_at(warmup_steps) == peak_lr
    and lr_at(s) == min_lr for s >= total_steps - 1, bit for bit; warmup_steps=0 is valid."""
    w, last = sched["warmup_steps"], sched["total_steps"] - 1
    first = sched["initial_lr"] if w > 0 else sched["peak_lr"]
    for step, want in [(0, first), (w, sched["peak_lr"]), (last, sched["min_lr"]), (last + 2, sched["min_lr"])]:  # fmt: skip
        call = Call(impl, "lr_at", step, **sched)
        call.equal(float(call()), want, "end point")


@uses("lr_at")
@pytest.mark.semantics(LR_SCHEDULE="exact")
@given(sched=lr_schedules())
def test_exact_schedule_is_continuous_at_the_warmup_boundary(impl, sched):
    """ "exact": the last warmup step is one increment below peak_lr, and the first cosine step
    drops at most (peak_lr - min_lr) * (pi / n)**2 / 4, n = total_steps - 1 - warmup_steps."""
    w, peak = sched["warmup_steps"], sched["peak_lr"]
    n = sched["total_steps"] - 1 - w
    slack = 4 * math.ulp(peak)
    if w > 0:
        call = Call(impl, "lr_at", w - 1, **sched)
        increment = (peak - sched["initial_lr"]) / w
        call.close(peak - call(), increment, "peak_lr - lr at the last warmup step", rtol=1e-9, atol=slack)  # fmt: skip
    call = Call(impl, "lr_at", w + 1, **sched)
    drop, bound = peak - call(), (peak - sched["min_lr"]) * (math.pi / n) ** 2 / 4
    call.check(0 <= drop <= bound + slack, "the first cosine step drops too far", f"peak_lr - lr in [0, {bound}]", drop)  # fmt: skip


@uses("lr_at")
@pytest.mark.semantics(LR_SCHEDULE="appendix_d")
@given(sched=lr_schedules(min_warmup=1, max_min_ratio=0.5))
def test_appendix_d_schedule_never_reaches_min_lr(impl, sched):
    """ "appendix_d": at the last step the book's cosine is still above min_lr (its progress stops
    at 1 - 1 / (total_steps - warmup_steps)); shown for min_lr <= peak_lr / 2 and peak_lr > 0,
    where the gap is far above float rounding."""
    if sched["peak_lr"] == 0:
        return
    call = Call(impl, "lr_at", sched["total_steps"] - 1, **sched)
    got = float(call())
    call.check(got > sched["min_lr"], "the book's schedule ends above min_lr", f"> {sched['min_lr']}", got)  # fmt: skip
