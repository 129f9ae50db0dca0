"""lr_at's contract: a warmup, then a cosine. Which cosine is declared by ``LR_SCHEDULE``:
"appendix_d" (level book: the book's formula as printed, which never quite reaches min_lr)
or "exact" (level exact-schedule: exactly min_lr on the last step, and after). Which warmup
is declared by ``WARMUP``: "book" (a line from initial_lr) or "nanogpt" (peak_lr * (step + 1)
/ (warmup_steps + 1); the suite then passes initial_lr=0).

One tolerance policy for every schedule and every property: ``LR_ULPS`` (default 4) ulps of
peak_lr, for equality with the oracle, the bounds, monotonicity and the end points.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, example, given

from gptref.conformance.oracles import oracle_appendix_d_lrs, oracle_lr
from gptref.conformance.repro import Call
from gptref.conformance.strategies import lr_schedules

uses = pytest.mark.uses
APPENDIX_D = dict(LR_SCHEDULE="appendix_d")
EXACT = dict(LR_SCHEDULE="exact")
# both variants of each property: the book's at level book, "exact" at level exact-schedule
variants = pytest.mark.parametrize(
    "variant",
    [
        pytest.param(
            "appendix_d", marks=[pytest.mark.level("book"), pytest.mark.semantics(**APPENDIX_D)]
        ),  # fmt: skip
        pytest.param(
            "exact", marks=[pytest.mark.level("exact-schedule"), pytest.mark.semantics(**EXACT)]
        ),  # fmt: skip
    ],
)

# min_lr + (peak_lr - min_lr) rounds to 0.30000000000000004, not peak_lr: pins the exact peak
ROUNDING = dict(peak_lr=0.3, total_steps=10, warmup_steps=3, initial_lr=0.1, min_lr=0.1)


def tolerance(impl, sched: dict) -> float:
    return impl.conventions["LR_ULPS"] * math.ulp(sched["peak_lr"])


def fit(impl, sched: dict) -> tuple[dict, range]:
    """-> (the schedule, the steps to check) for the declared variant: the book's formula needs
    a warmup and is defined on its loop's steps only; "exact" is checked 3 steps past the end.
    nanoGPT's warmup has no initial_lr: the suite passes 0."""
    if impl.conventions["WARMUP"] == "nanogpt":
        sched = {**sched, "initial_lr": 0.0}
    if impl.lr_schedule == "appendix_d":
        return {**sched, "warmup_steps": max(1, sched["warmup_steps"])}, range(sched["total_steps"])
    return sched, range(sched["total_steps"] + 3)


def expected(impl, sched: dict, steps: range) -> list[float]:
    warmup = impl.conventions["WARMUP"]
    if impl.lr_schedule == "appendix_d":
        return oracle_appendix_d_lrs(**sched, warmup=warmup)
    return [oracle_lr(s, **sched, warmup=warmup) for s in steps]


def lr_calls(impl, sched: dict, steps) -> tuple[list[Call], list[float]]:
    calls = [Call(impl, "lr_at", s, **sched) for s in steps]
    return calls, [float(c()) for c in calls]


@uses("lr_at")
@variants
@given(sched=lr_schedules())
@example(sched=ROUNDING)
def test_lr_at_equals_the_declared_schedule(impl, variant, sched):
    """lr_at(s) is the declared schedule's definition at every step, to LR_ULPS ulps of peak_lr:
    "appendix_d", the lr the book's train_model sets at global_step s; "exact", the warmup,
    then half a cosine whose last point, total_steps - 1, is min_lr, then min_lr."""
    sched, steps = fit(impl, sched)
    calls, got = lr_calls(impl, sched, steps)
    tol = tolerance(impl, sched)
    for call, g, w in zip(calls, got, expected(impl, sched, steps), strict=True):
        call.close(g, w, f"{impl.lr_schedule} schedule, {impl.conventions['WARMUP']} warmup", rtol=0, atol=tol)  # fmt: skip


@uses("lr_at")
@variants
@given(sched=lr_schedules())
def test_lr_at_warmup_is_non_decreasing(impl, variant, sched):
    """lr_at(s) <= lr_at(s + 1) + tolerance for every s < warmup_steps."""
    sched, _ = fit(impl, sched)
    calls, values = lr_calls(impl, sched, range(sched["warmup_steps"] + 1))
    tol = tolerance(impl, sched)
    for s in range(len(values) - 1):
        calls[s + 1].check(values[s] <= values[s + 1] + tol, f"lr fell during warmup, from step {s}", f">= {values[s]}", values[s + 1])  # fmt: skip


@uses("lr_at")
@variants
@given(sched=lr_schedules())
@example(sched=ROUNDING)
def test_lr_at_is_non_increasing_after_warmup(impl, variant, sched):
    """lr_at(s) + tolerance >= lr_at(s + 1) for every s >= warmup_steps (past the end too, for
    "exact")."""
    sched, steps = fit(impl, sched)
    steps = range(sched["warmup_steps"], steps.stop)
    calls, values = lr_calls(impl, sched, steps)
    tol = tolerance(impl, sched)
    for i in range(len(values) - 1):
        calls[i + 1].check(values[i] + tol >= values[i + 1], f"lr rose after warmup, from step {steps[i]}", f"<= {values[i]}", values[i + 1])  # fmt: skip


@uses("lr_at")
@variants
@given(sched=lr_schedules())
def test_lr_at_stays_within_min_initial_and_peak(impl, variant, sched):
    """min(initial_lr, min_lr) - tolerance <= lr_at(s) <= peak_lr + tolerance at every step
    (appendix D's arithmetic lands a few ulps above peak_lr at the first cosine step; nanoGPT's
    one ulp above it in about one schedule in ten)."""
    sched, steps = fit(impl, sched)
    tol = tolerance(impl, sched)
    low, high = min(sched["initial_lr"], sched["min_lr"]) - tol, sched["peak_lr"] + tol
    calls, values = lr_calls(impl, sched, steps)
    for call, v in zip(calls, values, strict=True):
        call.check(low <= v <= high, "lr outside [min(initial_lr, min_lr), peak_lr]", f"in [{low}, {high}]", v)  # fmt: skip


@pytest.mark.level("exact-schedule")
@uses("lr_at")
@pytest.mark.semantics(**EXACT)
@given(sched=lr_schedules())
@example(sched=ROUNDING)
def test_exact_schedule_end_points_are_peak_then_min_lr(impl, sched):
    """ "exact": lr_at(warmup_steps) == peak_lr and lr_at(s) == min_lr for s >= total_steps - 1
    (to LR_ULPS ulps of peak_lr); warmup_steps=0 is valid and starts at peak_lr."""
    sched, _ = fit(impl, sched)
    w, last = sched["warmup_steps"], sched["total_steps"] - 1
    tol = tolerance(impl, sched)
    for step, want in [(w, sched["peak_lr"]), (last, sched["min_lr"]), (last + 2, sched["min_lr"])]:  # fmt: skip
        call = Call(impl, "lr_at", step, **sched)
        call.close(float(call()), want, "end point", rtol=0, atol=tol)


@pytest.mark.level("exact-schedule")
@uses("lr_at")
@pytest.mark.semantics(**EXACT)
@given(sched=lr_schedules())
def test_exact_schedule_first_cosine_step_drops_at_most_the_cosines_first_step(impl, sched):
    """ "exact": the first cosine step drops at most (peak_lr - min_lr) * (pi / n)**2 / 4 below
    peak_lr, n = total_steps - 1 - warmup_steps (no jump at the warmup's end)."""
    sched, _ = fit(impl, sched)
    w, peak = sched["warmup_steps"], sched["peak_lr"]
    n = sched["total_steps"] - 1 - w
    call = Call(impl, "lr_at", w + 1, **sched)
    drop, bound = peak - call(), (peak - sched["min_lr"]) * (math.pi / n) ** 2 / 4
    tol = tolerance(impl, sched)
    call.check(-tol <= drop <= bound + tol, "the first cosine step drops too far", f"peak_lr - lr in [0, {bound}]", drop)  # fmt: skip


@pytest.mark.level("book")
@uses("lr_at")
@pytest.mark.semantics(**APPENDIX_D)
@given(sched=lr_schedules(min_warmup=1, max_min_ratio=0.5))
def test_appendix_d_schedule_never_reaches_min_lr(impl, sched):
    """ "appendix_d": at the last step the book's cosine is still above min_lr (its progress stops
    at 1 - 1 / (total_steps - warmup_steps)); shown for min_lr <= peak_lr / 2 and peak_lr > 0,
    where the gap is far above float rounding."""
    assume(sched["peak_lr"] > 0)
    sched, _ = fit(impl, sched)
    call = Call(impl, "lr_at", sched["total_steps"] - 1, **sched)
    got = float(call())
    call.check(got > sched["min_lr"], "the book's schedule ends above min_lr", f"> {sched['min_lr']}", got)  # fmt: skip
