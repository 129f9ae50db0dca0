"""What gptref guarantees beyond the conformance suite's tolerance policy.

The suite compares every schedule to within ``LR_ULPS`` (4) ulps of peak_lr, one policy for
all implementations (nanoGPT's cosine overshoots the peak by one ulp). gptref's ``lr_at``
promises more: its end points are exact, bit for bit. That was the suite's check before it
had one policy; it stays pinned here, for gptref only."""

from __future__ import annotations

from hypothesis import example, given

from gptref import lr_at
from tests.strategies import lr_schedules

# min_lr + (peak_lr - min_lr) rounds to 0.30000000000000004, not peak_lr: pins the exact peak
ROUNDING = dict(peak_lr=0.3, total_steps=10, warmup_steps=3, initial_lr=0.1, min_lr=0.1)


@given(sched=lr_schedules())
@example(sched=ROUNDING)
def test_lr_at_end_points_are_exact_bit_for_bit(sched):
    """lr_at(0) == initial_lr (peak_lr without warmup), lr_at(warmup_steps) == peak_lr and
    lr_at(s) == min_lr for s >= total_steps - 1, with ==, not to a tolerance."""
    w, last = sched["warmup_steps"], sched["total_steps"] - 1
    first = sched["initial_lr"] if w > 0 else sched["peak_lr"]
    for step, want in [(0, first), (w, sched["peak_lr"]), (last, sched["min_lr"]), (last + 2, sched["min_lr"])]:  # fmt: skip
        got = lr_at(step, **sched)
        assert got == want, f"lr_at({step}, **{sched}) = {got!r}, expected exactly {want!r}"
