"""gptref/schedule.py beyond lr_at's contract: the book's appendix-D schedule (appendix_d_lr),
how it relates to lr_at, and the argument errors.

lr_at's properties (declared LR_SCHEDULE = "exact": end points, monotonicity, bounds, the
oracle) are the conformance suite's: gptref/conformance/test_schedule.py."""

from __future__ import annotations

import math

import pytest
from hypothesis import given

from gptref.schedule import appendix_d_lr, lr_at
from tests.oracles import oracle_appendix_d_lrs
from tests.strategies import lr_schedules

# min_lr + (peak_lr - min_lr) rounds to 0.30000000000000004, not peak_lr: pins the exact peak
ROUNDING = dict(peak_lr=0.3, total_steps=10, warmup_steps=3, initial_lr=0.1, min_lr=0.1)


def lrs(sched: dict, steps) -> list[float]:
    return [lr_at(s, **sched) for s in steps]


@given(sched=lr_schedules(min_warmup=1))
def test_appendix_d_lr_equals_the_books_loop(sched):
    """appendix_d_lr(s) is exactly the lr the book's train_model sets at global_step s."""
    book = oracle_appendix_d_lrs(**sched)
    ours = [appendix_d_lr(s, **sched) for s in range(sched["total_steps"])]
    assert ours == book, sched


@given(sched=lr_schedules(min_warmup=1))
def test_schedules_agree_exactly_during_warmup(sched):
    """lr_at(s) == appendix_d_lr(s) bit for bit for every s < warmup_steps."""
    for s in range(sched["warmup_steps"]):
        assert lr_at(s, **sched) == appendix_d_lr(s, **sched), (sched, s)


@given(sched=lr_schedules(min_warmup=1, max_min_ratio=0.5))
def test_appendix_d_lr_never_reaches_min_lr(sched):
    """At the last step the book's cosine is still above min_lr (its progress stops at
    1 - 1 / (total_steps - warmup_steps)), where lr_at is exactly min_lr; shown for
    min_lr <= peak_lr / 2 and peak_lr > 0, where the gap is far above float rounding."""
    if sched["peak_lr"] == 0:
        return
    last = sched["total_steps"] - 1
    assert lr_at(last, **sched) == sched["min_lr"]
    assert appendix_d_lr(last, **sched) > sched["min_lr"], sched


@given(sched=lr_schedules(min_warmup=1))
def test_appendix_d_cosine_lags_lr_at(sched):
    """After warmup the book's cosine is never below lr_at's (its progress is divided by one
    more step), to a few ulps of peak_lr."""
    slack = 4 * math.ulp(sched["peak_lr"])
    for s in range(sched["warmup_steps"], sched["total_steps"]):
        book, ours = appendix_d_lr(s, **sched), lr_at(s, **sched)
        assert book >= ours - slack, (sched, s, book, ours)


def test_warmup_zero_is_valid_for_lr_at_and_a_clear_error_for_appendix_d():
    """warmup_steps=0: lr_at starts at peak_lr; appendix_d_lr raises the ValueError that
    stands for the book's ZeroDivisionError."""
    kw = dict(peak_lr=1e-3, total_steps=10, warmup_steps=0, initial_lr=1e-5, min_lr=1e-5)
    assert lr_at(0, **kw) == 1e-3
    with pytest.raises(ValueError, match="warmup_steps=0 divides by zero"):
        appendix_d_lr(0, **kw)


def test_lr_at_flat_tail_allows_warmup_to_end_on_the_last_step():
    """With min_lr == peak_lr, warmup_steps == total_steps - 1 is allowed: the warmup ends
    on the last step (which is both peak_lr and min_lr); total_steps=1 is then one step at
    peak_lr."""
    kw = dict(peak_lr=0.5, total_steps=5, warmup_steps=4, initial_lr=0.1, min_lr=0.5)
    assert lrs(kw, range(7)) == [0.1, 0.2, 0.30000000000000004, 0.4, 0.5, 0.5, 0.5]
    assert lr_at(0, peak_lr=0.5, total_steps=1, min_lr=0.5) == 0.5


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(step=-1), ValueError, "step must be >= 0, got -1"),
        (dict(step=1.0), TypeError, "step must be an int, got 1.0"),
        (dict(total_steps=0), ValueError, "total_steps must be >= 1, got 0"),
        (dict(warmup_steps=-2), ValueError, "warmup_steps must be >= 0, got -2"),
        (dict(peak_lr=-1e-3), ValueError, "peak_lr must be a finite number >= 0, got -0.001"),
        (dict(min_lr=float("nan")), ValueError, "min_lr must be a finite number >= 0, got nan"),
        (dict(initial_lr="1e-5"), TypeError, "initial_lr must be a float"),
        (dict(min_lr=2e-3), ValueError, r"min_lr \(0.002\) must be <= peak_lr \(0.001\)"),
        (dict(initial_lr=2e-3), ValueError, r"initial_lr \(0.002\) must be <= peak_lr"),
        (dict(warmup_steps=10), ValueError, r"warmup_steps \(10\) must be < total_steps \(10\)"),
        (dict(warmup_steps=9), ValueError, "use total_steps >= 11, or min_lr == peak_lr"),
        (
            dict(total_steps=1, warmup_steps=0),
            ValueError,
            "use total_steps >= 2, or min_lr == peak_lr",
        ),
    ],
)
def test_lr_at_rejects_bad_arguments_naming_value_and_fix(kwargs, error, match):
    """Each invalid argument is a ValueError/TypeError whose message names the value."""
    args = dict(step=0, peak_lr=1e-3, total_steps=10, warmup_steps=2, initial_lr=0.0, min_lr=0.0)
    args.update(kwargs)
    step = args.pop("step")
    with pytest.raises(error, match=match):
        lr_at(step, **args)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(step=10), "step must be < total_steps=10, got 10"),
        (dict(warmup_steps=0), "warmup_steps=0 divides by zero"),
        (dict(min_lr=-1.0), "min_lr must be a finite number >= 0, got -1.0"),
    ],
)
def test_appendix_d_lr_rejects_bad_arguments(kwargs, match):
    """appendix_d_lr raises ValueError for steps its loop never reaches, warmup 0, negative lrs."""
    args = dict(step=0, peak_lr=1e-3, total_steps=10, warmup_steps=2, initial_lr=0.0, min_lr=0.0)
    args.update(kwargs)
    step = args.pop("step")
    with pytest.raises(ValueError, match=match):
        appendix_d_lr(step, **args)


def test_appendix_d_lr_accepts_a_warmup_that_never_ends():
    """As in the book, warmup_steps >= total_steps just warms up on every step."""
    kw = dict(peak_lr=1.0, total_steps=3, warmup_steps=4, initial_lr=0.0, min_lr=0.0)
    assert [appendix_d_lr(s, **kw) for s in range(3)] == [0.0, 0.25, 0.5]
