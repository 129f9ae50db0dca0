"""User errors of the core functions, word for word, and the defaults the docs promise.

An error message is part of gptref's interface: it names the function, the argument and
the bad value, and where there is one, the fix (STYLE: "ValueError with the value"). The
table below freezes every message of ``data``, ``loss``, ``schedule`` and ``step``, as
``tests/cli/test_options.py`` freezes the CLI's flags: a changed message is a deliberate
edit of this table. (Other tests match the part of a message their property needs; mutmut
found that nothing pinned the rest: the function prefix, the field name, the hint.)

The second half pins documented defaults and edge cases that every other test passes
explicitly or never reaches (also found by mutmut: ``benchmarks/results/mutmut.md``).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import default_collate

from gptref import data, loss, schedule
from gptref.step import train_step
from tests.helpers import adamw, micro_model, token_stream

NAN, INF = float("nan"), float("inf")
LR = dict(peak_lr=0.1, total_steps=10)
BOOK_LR = dict(peak_lr=0.1, total_steps=10, warmup_steps=2, initial_lr=0.0, min_lr=0.0)
IDS = torch.arange(10)


def _train_step(**kwargs):
    model = micro_model(0)
    x = token_stream(17)[:16].view(2, 8)
    return train_step(model, adamw(model), x, x, "cpu", **kwargs)


# (call, exception type, the whole message)
MESSAGES = {
    "split ratio 1.0": (
        lambda: data.split([1, 2, 3], 1.0),
        ValueError, "split: train_ratio must be in (0, 1), got 1.0; e.g. 0.9"),
    "split of a 2-D tensor": (
        lambda: data.split(torch.zeros(2, 2), 0.5),
        ValueError, "split: a tensor must be 1-D, got shape (2, 2)"),
    "num_chunks max_length 0": (
        lambda: data.num_chunks(10, 0, 1),
        ValueError, "num_chunks: max_length must be >= 1, got 0"),
    "num_chunks stride 0": (
        lambda: data.num_chunks(10, 4, 0),
        ValueError, "num_chunks: stride must be >= 1, got 0"),
    "num_chunks n_tokens -1": (
        lambda: data.num_chunks(-1, 4, 1),
        ValueError, "num_chunks: n_tokens must be >= 0, got -1"),
    "chunk max_length 0": (
        lambda: data.chunk(IDS, 0, 1),
        ValueError, "chunk: max_length must be >= 1, got 0"),
    "chunk stride 0": (
        lambda: data.chunk(IDS, 4, 0),
        ValueError, "chunk: stride must be >= 1, got 0"),
    "chunk of a 2-D tensor": (
        lambda: data.chunk(torch.zeros(2, 5, dtype=torch.int64), 2, 1),
        ValueError, "chunk: token_ids must be 1-D, got shape (2, 5)"),
    "chunk of a negative id": (
        lambda: data.chunk(torch.tensor([1, -1, 2]), 1, 1),
        ValueError, "chunk: token ids must be >= 0, got -1"),
    "chunk of float ids": (
        lambda: data.chunk(torch.tensor([1.0, 2.0]), 1, 1),
        TypeError, "chunk: token_ids must be an integer tensor, got dtype torch.float32"),
    "batch_order batch_size 0": (
        lambda: data.batch_order(10, 0),
        ValueError, "batch_order: batch_size must be >= 1, got 0"),
    "batch_order n_samples -1": (
        lambda: data.batch_order(-1, 2),
        ValueError, "batch_order: n_samples must be >= 0, got -1"),
    "batch_order world_size 0": (
        lambda: data.batch_order(10, 2, world_size=0),
        ValueError, "batch_order: world_size must be >= 1, got 0"),
    "batch_order rank 2 of 2": (
        lambda: data.batch_order(10, 2, rank=2, world_size=2),
        ValueError, "batch_order: rank must be in [0, world_size=2), got 2"),
    "batch_order seed -1": (
        lambda: data.batch_order(10, 2, seed=-1),
        ValueError, "batch_order: seed must be in [0, 2**32), got -1"),
    "batch_order epoch -1": (
        lambda: data.batch_order(10, 2, epoch=-1),
        ValueError, "batch_order: epoch must be in [0, 2**32), got -1"),
    "batch_order epoch 2**32": (
        lambda: data.batch_order(10, 2, epoch=2**32),
        ValueError, "batch_order: epoch must be in [0, 2**32), got 4294967296"),
    "collate of nothing": (
        lambda: data.collate([]),
        ValueError, "collate: got no samples; pass at least one (input, target) pair"),
    "collate max_length 0": (
        lambda: data.collate([(torch.tensor([1]), torch.tensor([2]))], max_length=0),
        ValueError, "collate: max_length must be >= 1, got 0"),
    "collate of a pair of unequal length": (
        lambda: data.collate([(torch.tensor([1, 2]), torch.tensor([2]))]),
        ValueError, "collate: sample 0 must be a pair of equal-length 1-D sequences, got shapes (2,) and (1,)"),
    "batches of unequal rows": (
        lambda: list(data.batches(torch.zeros(3, 4, dtype=torch.int64),
                                  torch.zeros(2, 4, dtype=torch.int64), 1)),
        ValueError, "batches: inputs and targets must have the same number of rows, got 3 and 2"),
    "calc_loss_loader weighting": (
        lambda: loss.calc_loss_loader([], None, "cpu", weighting="tokens"),
        ValueError, "calc_loss_loader: weighting must be one of 'batch', 'token', got 'tokens'"),
    "calc_loss_loader num_batches 0": (
        lambda: loss.calc_loss_loader([], None, "cpu", num_batches=0),
        ValueError, "calc_loss_loader: num_batches must be >= 1, got 0; pass None for all batches"),
    "lr_at min_lr above peak_lr": (
        lambda: schedule.lr_at(0, **LR, min_lr=0.2),
        ValueError, "lr_at: min_lr (0.2) must be <= peak_lr (0.1); the cosine decays from peak_lr down to min_lr"),
    "lr_at initial_lr above peak_lr": (
        lambda: schedule.lr_at(0, **LR, initial_lr=0.2),
        ValueError, "lr_at: initial_lr (0.2) must be <= peak_lr (0.1); the warmup rises from initial_lr up to peak_lr"),
    "lr_at warmup as long as the run": (
        lambda: schedule.lr_at(0, **LR, warmup_steps=10),
        ValueError, "lr_at: warmup_steps (10) must be < total_steps (10); the warmup would never reach peak_lr"),
    "lr_at no step left to decay": (
        lambda: schedule.lr_at(0, **LR, warmup_steps=9),
        ValueError, "lr_at: total_steps=10 with warmup_steps=9 leaves no step to decay over (step 9 would have to be both peak_lr and min_lr); use total_steps >= 11, or min_lr == peak_lr for a flat tail"),
    "lr_at peak_lr nan": (
        lambda: schedule.lr_at(0, peak_lr=NAN, total_steps=10),
        ValueError, "lr_at: peak_lr must be a finite number >= 0, got nan"),
    "lr_at peak_lr -1": (
        lambda: schedule.lr_at(0, peak_lr=-1.0, total_steps=10),
        ValueError, "lr_at: peak_lr must be a finite number >= 0, got -1.0"),
    "lr_at total_steps 0": (
        lambda: schedule.lr_at(0, peak_lr=0.1, total_steps=0),
        ValueError, "lr_at: total_steps must be >= 1, got 0"),
    "lr_at warmup_steps -1": (
        lambda: schedule.lr_at(0, **LR, warmup_steps=-1),
        ValueError, "lr_at: warmup_steps must be >= 0, got -1"),
    "lr_at step -1": (
        lambda: schedule.lr_at(-1, **LR),
        ValueError, "lr_at: step must be >= 0, got -1"),
    "appendix_d_lr warmup_steps 0": (
        lambda: schedule.appendix_d_lr(0, **{**BOOK_LR, "warmup_steps": 0}),
        ValueError, "appendix_d_lr: warmup_steps=0 divides by zero in the book's formula (lr_increment = (peak_lr - initial_lr) / warmup_steps raises ZeroDivisionError); use warmup_steps >= 1, or lr_at, which accepts warmup_steps=0"),
    "appendix_d_lr step past the run": (
        lambda: schedule.appendix_d_lr(10, **BOOK_LR),
        ValueError, "appendix_d_lr: step must be < total_steps=10, got 10; the book's loop runs steps 0 .. total_steps - 1 (past them its cosine rises again); use lr_at, which stays at min_lr"),
    "appendix_d_lr peak_lr inf": (
        lambda: schedule.appendix_d_lr(0, **{**BOOK_LR, "peak_lr": INF}),
        ValueError, "appendix_d_lr: peak_lr must be a finite number >= 0, got inf"),
    "appendix_d_lr initial_lr -1": (
        lambda: schedule.appendix_d_lr(0, **{**BOOK_LR, "initial_lr": -1.0}),
        ValueError, "appendix_d_lr: initial_lr must be a finite number >= 0, got -1.0"),
    "appendix_d_lr min_lr -1": (
        lambda: schedule.appendix_d_lr(0, **{**BOOK_LR, "min_lr": -1.0}),
        ValueError, "appendix_d_lr: min_lr must be a finite number >= 0, got -1.0"),
    "appendix_d_lr total_steps 0": (
        lambda: schedule.appendix_d_lr(0, **{**BOOK_LR, "total_steps": 0}),
        ValueError, "appendix_d_lr: total_steps must be >= 1, got 0"),
    "appendix_d_lr warmup_steps -1": (
        lambda: schedule.appendix_d_lr(0, **{**BOOK_LR, "warmup_steps": -1}),
        ValueError, "appendix_d_lr: warmup_steps must be >= 0, got -1"),
    "appendix_d_lr step -1": (
        lambda: schedule.appendix_d_lr(-1, **BOOK_LR),
        ValueError, "appendix_d_lr: step must be >= 0, got -1"),
    "train_step accumulation_steps 0": (
        lambda: _train_step(accumulation_steps=0),
        ValueError, "train_step: accumulation_steps must be in [1, batch size 2], got 0"),
    "train_step accumulation_steps 1.5": (
        lambda: _train_step(accumulation_steps=1.5),
        TypeError, "train_step: accumulation_steps must be an int, got 1.5"),
    "train_step grad_clip 0": (
        lambda: _train_step(grad_clip=0.0),
        ValueError, "train_step: grad_clip must be > 0 or None, got 0.0"),
    "train_step grad_clip '1'": (
        lambda: _train_step(grad_clip="1"),
        TypeError, "train_step: grad_clip must be a float, got '1'"),
    "train_step lr -1": (
        lambda: _train_step(lr=-1.0),
        ValueError, "train_step: lr must be >= 0, got -1.0"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(MESSAGES))
def test_each_user_error_is_one_line_naming_the_function_the_value_and_the_fix(case):
    call, kind, message = MESSAGES[case]
    with pytest.raises(kind) as raised:
        call()
    assert str(raised.value) == message
    assert "\n" not in message


# ---------------------------------------------------------------- documented defaults


def test_split_defaults_to_the_books_ninety_percent():
    """split(data) is split(data, 0.9): 9 of 10 items go to training."""
    items = list(range(10))
    assert data.split(items) == data.split(items, 0.9) == (items[:9], items[9:])


def test_batch_order_defaults_to_sequential_keep_last_seed_0_epoch_0():
    """batch_order(n, b) keeps the order and the short last batch; shuffling defaults to
    seed 0, epoch 0, and the default is unshuffled."""
    plain = [b.tolist() for b in data.batch_order(7, 3)]
    assert plain == [[0, 1, 2], [3, 4, 5], [6]]
    default = [b.tolist() for b in data.batch_order(7, 3, shuffle=True)]
    explicit = [b.tolist() for b in data.batch_order(7, 3, shuffle=True, seed=0, epoch=0)]
    assert default == explicit
    assert [b.tolist() for b in data.batch_order(7, 3, shuffle=True, seed=1)] != default
    assert [b.tolist() for b in data.batch_order(7, 3, shuffle=True, epoch=1)] != default


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int16, torch.uint8])
@pytest.mark.parametrize("lengths", [(4, 4, 4), (4, 2, 3)])
def test_collate_gives_int64_ids_for_any_integer_dtype_padded_or_not(dtype, lengths):
    """The contract: integer ids of any dtype -> int64 (b, T), whether the pairs need padding
    or not; equal-length int64 pairs are default_collate's batch."""
    pairs = [(torch.arange(n, dtype=dtype), torch.arange(1, n + 1, dtype=dtype)) for n in lengths]
    inputs, targets = data.collate(pairs)
    assert inputs.dtype == targets.dtype == torch.int64
    assert inputs.shape == targets.shape == (len(lengths), max(lengths))
    for row, n in enumerate(lengths):
        assert inputs[row, :n].tolist() == list(range(n))
        assert targets[row, :n].tolist() == list(range(1, n + 1))
    if len(set(lengths)) == 1:
        want = default_collate([(x.long(), y.long()) for x, y in pairs])
        assert torch.equal(inputs, want[0]) and torch.equal(targets, want[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool, torch.complex64])
def test_collate_refuses_samples_that_are_not_integer_ids(dtype):
    pairs = [(torch.zeros(3, dtype=dtype), torch.zeros(3, dtype=dtype))]
    with pytest.raises(TypeError, match=f"sample 0 must hold integer token ids, got dtype {dtype}"):
        data.collate(pairs)


def test_token_weighted_loss_of_only_ignored_targets_is_nan():
    """weighting="token" over batches with no counted target: nan (nothing to average),
    not a ZeroDivisionError."""
    model = micro_model(0).eval()
    x = token_stream(16).view(2, 8)
    ignored = torch.full_like(x, -100)
    got = loss.calc_loss_loader([(x, ignored), (x, ignored)], model, "cpu", weighting="token")
    assert math.isnan(got)
