"""Learning-rate schedules: ``lr_at`` (linear warmup + cosine to exactly ``min_lr``) and the
book's appendix-D formula as printed (``appendix_d_lr``).

Both are pure functions of the step: ``step`` is the book's ``global_step``, 0 for the first
optimizer update, and the value is the learning rate *that* update uses.

Appendix D's ``train_model`` (facts about the book; the loop itself is ``gptref.train``):
``total_training_steps = len(train_loader) * n_epochs`` and ``peak_lr`` is the optimizer's
``lr``. It clips gradients (``max_norm=1.0``) only after the warmup, and where that starts
is the known defect: the print edition tests ``global_step > warmup_steps``, so the first
post-warmup step (``global_step == warmup_steps``, the first one on the cosine, at
``peak_lr``) goes unclipped; the book's repository corrected the test to ``global_step >=
warmup_steps`` and keeps the printed ``>`` behind a flag (``ORIG_BOOK_VERSION``).
"""

from __future__ import annotations

import math

from gptref._check import check_int, check_number


def lr_at(
    step: int,
    *,
    peak_lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    initial_lr: float = 0.0,
    min_lr: float = 0.0,
) -> float:
    """step: int >= 0 -> float: linear warmup, then half a cosine ending at exactly ``min_lr``.

    - ``step < warmup_steps``: ``initial_lr + step * (peak_lr - initial_lr) / warmup_steps``
      (the book's arithmetic, so it equals ``appendix_d_lr`` here);
    - ``step == warmup_steps``: exactly ``peak_lr``;
    - ``warmup_steps <= step <= total_steps - 1``: ``min_lr + (peak_lr - min_lr) *
      0.5 * (1 + cos(pi * (step - warmup_steps) / (total_steps - 1 - warmup_steps)))``,
      so the last step, ``total_steps - 1``, is exactly ``min_lr``;
    - ``step >= total_steps``: ``min_lr`` (training past the schedule is not an error).

    ``warmup_steps=0`` starts at ``peak_lr``. Requires ``0 <= min_lr <= peak_lr``,
    ``0 <= initial_lr <= peak_lr`` and ``warmup_steps <= total_steps - 2``: both end
    points must be distinct steps. The one exception is a flat tail (``min_lr ==
    peak_lr``), where ``warmup_steps == total_steps - 1`` is allowed (the last step is
    then both the end of the warmup and the end of the decay). Hence ``total_steps == 1``
    works only with ``min_lr == peak_lr``: a one-step run at ``peak_lr``.
    """
    _check("lr_at", step, total_steps, warmup_steps, peak_lr=peak_lr, initial_lr=initial_lr,
           min_lr=min_lr)  # fmt: skip
    if min_lr > peak_lr:
        raise ValueError(
            f"lr_at: min_lr ({min_lr}) must be <= peak_lr ({peak_lr}); the cosine decays "
            "from peak_lr down to min_lr"
        )
    if initial_lr > peak_lr:
        raise ValueError(
            f"lr_at: initial_lr ({initial_lr}) must be <= peak_lr ({peak_lr}); the warmup "
            "rises from initial_lr up to peak_lr"
        )
    last = total_steps - 1
    if warmup_steps >= total_steps:
        raise ValueError(
            f"lr_at: warmup_steps ({warmup_steps}) must be < total_steps ({total_steps}); "
            "the warmup would never reach peak_lr"
        )
    if warmup_steps == last and min_lr != peak_lr:
        raise ValueError(
            f"lr_at: total_steps={total_steps} with warmup_steps={warmup_steps} leaves no step "
            f"to decay over (step {last} would have to be both peak_lr and min_lr); use "
            f"total_steps >= {warmup_steps + 2}, or min_lr == peak_lr for a flat tail"
        )
    if step < warmup_steps:
        lr = initial_lr + step * ((peak_lr - initial_lr) / warmup_steps)
        # rounding must not carry the ramp past the peak it is heading for
        return float(min(lr, peak_lr))
    if step == warmup_steps:
        return float(peak_lr)  # exact, whatever (peak_lr - min_lr) rounds to
    if step >= last:
        return float(min_lr)  # exact end point, and flat after it
    progress = (step - warmup_steps) / (last - warmup_steps)  # in (0, 1)
    lr = min_lr + (peak_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
    return float(min(max(lr, min_lr), peak_lr))


def appendix_d_lr(
    step: int,
    *,
    peak_lr: float,
    total_steps: int,
    warmup_steps: int,
    initial_lr: float,
    min_lr: float,
) -> float:
    """step: int in [0, total_steps) -> float: the book's appendix-D schedule, as printed.

    ``total_steps`` is the book's ``total_training_steps = len(train_loader) * n_epochs``.
    With ``lr_increment = (peak_lr - initial_lr) / warmup_steps``: ``initial_lr + step *
    lr_increment`` while ``step < warmup_steps``, else ``min_lr + (peak_lr - min_lr) * 0.5 *
    (1 + cos(pi * progress))`` with ``progress = (step - warmup_steps) / (total_steps -
    warmup_steps)``.

    Two differences from ``lr_at``, both the book's:

    1. ``warmup_steps=0`` divides by zero in the book (``ZeroDivisionError`` computing
       ``lr_increment``); here it is a ValueError saying so. ``lr_at`` accepts it.
    2. The cosine never reaches ``min_lr``: its progress is divided by ``total_steps -
       warmup_steps``, so at the last step, ``total_steps - 1``, progress is ``1 - 1 /
       (total_steps - warmup_steps) < 1`` and the rate is still above ``min_lr`` (when
       ``peak_lr > min_lr``). ``lr_at`` divides by ``total_steps - 1 - warmup_steps`` and
       ends at exactly ``min_lr``.

    During the warmup (``step < warmup_steps``) the two agree exactly. As in the book,
    ``warmup_steps >= total_steps`` (warmup never ends) and any order of the three rates
    are accepted; only steps the book's loop reaches, ``0 .. total_steps - 1``, are.
    """
    _check("appendix_d_lr", step, total_steps, warmup_steps, peak_lr=peak_lr,
           initial_lr=initial_lr, min_lr=min_lr)  # fmt: skip
    if warmup_steps == 0:
        raise ValueError(
            "appendix_d_lr: warmup_steps=0 divides by zero in the book's formula "
            "(lr_increment = (peak_lr - initial_lr) / warmup_steps raises ZeroDivisionError); "
            "use warmup_steps >= 1, or lr_at, which accepts warmup_steps=0"
        )
    if step >= total_steps:
        raise ValueError(
            f"appendix_d_lr: step must be < total_steps={total_steps}, got {step}; the book's "
            "loop runs steps 0 .. total_steps - 1 (past them its cosine rises again); use "
            "lr_at, which stays at min_lr"
        )
    lr_increment = (peak_lr - initial_lr) / warmup_steps
    if step < warmup_steps:
        return initial_lr + step * lr_increment
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + (peak_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def _check(where: str, step: int, total_steps: int, warmup_steps: int, **lrs: float) -> None:
    """The arguments both schedules share: rates finite and >= 0, counts ints in range."""
    for name, value in lrs.items():
        check_number(where, name, value, low=0, what="a finite number")
    check_int(where, "total_steps", total_steps, low=1)
    check_int(where, "warmup_steps", warmup_steps, low=0)
    check_int(where, "step", step, low=0)
