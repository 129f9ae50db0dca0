"""One optimizer update (``train_step``) and one evaluation (``evaluate``): the training step,
apart from the loop around it (``gptref.loop``).

Both take the process group as an argument (``group``: anything with ``rank``,
``world_size`` and ``all_reduce_sum``, such as ``gptref.fast.distributed.DistContext``;
``None`` is one process): inside a group each rank computes on its part of the global batch
and the numbers they return are the global ones.

The step reads one value back from the device: the loss, gradient norm and target count,
together, once, before ``optimizer.step()`` (the non-finite check needs them). Nothing else
in it waits for the device (``tests/core/test_host_reads.py`` counts).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from gptref._check import FieldError, check_int, check_number
from gptref.loss import Weighting, calc_loss_batch, loader_loss


class ProcessGroup(Protocol):
    """What the core needs of a process group (``gptref.fast.distributed.DistContext``)."""

    rank: int
    world_size: int

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """float64 (n,) -> its sum over the ranks, elementwise (on the group's device)."""
        ...


class NonFiniteError(FloatingPointError):
    """The loss or gradient norm of a step is nan/inf; the parameters were not updated."""


@dataclass(frozen=True)
class StepResult:
    loss: float  # mean loss over the batch's counted target tokens
    grad_norm: float  # total L2 norm of the gradients, before clipping
    tokens: int  # input tokens in the batch (the book's tokens_seen increment)
    target_tokens: int  # targets that count (not ignore_index)
    lr: float  # learning rate of the first param group during the update


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    input_batch: torch.Tensor,
    target_batch: torch.Tensor,
    device: torch.device | str,
    *,
    lr: float | None = None,
    grad_clip: float | None = None,
    accumulation_steps: int = 1,
    autocast_dtype: torch.dtype | None = None,
    ignore_index: int = -100,
    loss_chunk: int | None = None,
    group: ProcessGroup | None = None,
) -> StepResult:
    """Mutates ``model`` and ``optimizer``: one update from (inputs, targets): int64 (b, T).

    ``lr`` (if given) is set on every param group first. With ``accumulation_steps = k``
    the batch is cut into k micro-batches (``torch.tensor_split`` along rows) whose summed
    losses are divided by the batch's count of counted targets, so the summed gradient is
    the full batch's mean (up to float rounding; dropout masks differ). ``grad_clip``
    clips the total gradient norm (``clip_grad_norm_``). A non-finite loss or gradient
    norm raises ``NonFiniteError`` before ``optimizer.step()``: parameters untouched. A batch
    whose targets are all ``ignore_index`` has no mean loss (nan, as the book's
    ``calc_loss_batch`` gives), so it raises ``NonFiniteError`` too, whatever ``k``.

    With a ``group`` of several ranks (``model`` wrapped in DDP) the batch is this rank's
    part of the global batch: each rank's loss is its sum of per-token losses over the
    global number of counted targets (all-reduced first), so the averaged gradient is the
    global batch's token mean, and ``loss`` is the global mean; gradients are all-reduced
    once per step (``no_sync`` on all micro-batches but the last).

    ``loss_chunk``: the head and cross-entropy in chunks of that many rows
    (``calc_loss_batch``'s; ``FastPaths.loss_chunk_rows``), None: the full logits.
    """
    rows = input_batch.shape[0]
    if not 1 <= check_int("train_step", "accumulation_steps", accumulation_steps) <= max(1, rows):
        raise FieldError(
            "train_step",
            "accumulation_steps",
            f"must be in [1, batch size {rows}], got {accumulation_steps}",
        )
    if grad_clip is not None and not check_number("train_step", "grad_clip", grad_clip) > 0:
        raise FieldError("train_step", "grad_clip", f"must be > 0 or None, got {grad_clip}")
    if lr is not None:
        check_number("train_step", "lr", lr, low=0)
        for param_group in optimizer.param_groups:
            param_group["lr"] = lr
    optimizer.zero_grad()
    autocast = (
        torch.autocast(device_type=torch.device(device).type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    world_size = 1 if group is None else group.world_size
    # a tensor: counting must not wait for the device (it is read with the loss, at the end)
    counted = (target_batch != ignore_index).sum().to(torch.float64)
    # every rank divides its loss sum by the global count; one process by its own
    if world_size > 1:
        counted = group.all_reduce_sum(counted.reshape(1))[0]
    plain = world_size == 1 and accumulation_steps == 1  # the book's step: its mean loss
    # DDP averages the ranks' gradients, hence world_size: each rank's sum / global count
    # (inf for no counted targets: the loss is then nan, as the mean over none is)
    scale = world_size / counted
    total = torch.zeros((), dtype=torch.float64)
    micros = zip(
        torch.tensor_split(input_batch, accumulation_steps),
        torch.tensor_split(target_batch, accumulation_steps),
        strict=True,
    )
    for i, (x, y) in enumerate(micros):
        with _sync(model, last=i == accumulation_steps - 1):
            with autocast:
                loss = calc_loss_batch(
                    x, y, model, device, ignore_index=ignore_index,
                    reduction="mean" if plain else "sum", loss_chunk=loss_chunk,
                )  # fmt: skip
            if not plain:
                loss = loss * scale.to(loss.device)
            loss.backward()
        # float64 on the host side of the sum, as the book's Python float sum of .item()s
        total = total.to(loss.device) + loss.detach().to(torch.float64)
    if world_size > 1:
        total = group.all_reduce_sum(total.reshape(1))[0] / world_size
    params = [p for p in model.parameters() if p.grad is not None]
    if grad_clip is not None:
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm=grad_clip)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    # the step's one read from the device
    stats = torch.stack([total, norm.to(total), counted.to(total)]).tolist()
    loss_value, grad_norm, target_tokens = stats[0], stats[1], int(stats[2])
    if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
        optimizer.zero_grad()
        why = (
            "the batch has no counted targets (all ignore_index)"
            if target_tokens == 0
            else "lower the lr, set grad_clip, or check the batch for bad targets"
        )
        raise NonFiniteError(
            f"train_step: non-finite loss {loss_value} or gradient norm {grad_norm}; the update "
            f"was skipped ({why})"
        )
    optimizer.step()
    return StepResult(
        loss=loss_value,
        grad_norm=grad_norm,
        tokens=input_batch.numel(),
        target_tokens=target_tokens,
        lr=float(optimizer.param_groups[0]["lr"]),
    )


def _sync(model: nn.Module, *, last: bool) -> contextlib.AbstractContextManager:
    """DDP's ``no_sync`` on every micro-batch but the last (gradients all-reduced once)."""
    no_sync = getattr(model, "no_sync", None)
    return contextlib.nullcontext() if last or no_sync is None else no_sync()


def evaluate(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable,
    device: torch.device | str,
    eval_iter: int,
    *,
    weighting: Weighting = "batch",
    ignore_index: int = -100,
    loss_chunk: int | None = None,
    group: ProcessGroup | None = None,
) -> tuple[float, float]:
    """-> (train loss, val loss) over ``eval_iter`` batches each: the book's ``evaluate_model``.

    Runs in eval mode under ``no_grad`` and restores the mode the model was in. With a
    ``group`` each rank evaluates its own loaders (its shards) and the losses are
    all-reduced: the mean over all ranks' batches ("batch") or targets ("token").
    ``loss_chunk``: as ``train_step``'s (evaluation must fit where training does).
    """
    was_training = model.training
    model.eval()
    try:
        losses = [
            _loader_loss(
                loader, model, device, eval_iter, weighting, ignore_index, loss_chunk, group
            )  # fmt: skip
            for loader in (train_loader, val_loader)
        ]
    finally:
        model.train(was_training)
    return losses[0], losses[1]


def _loader_loss(loader, model, device, eval_iter, weighting, ignore_index, loss_chunk,
                 group) -> float:  # fmt: skip
    """``calc_loss_loader``'s number; in a group, the ranks' numbers combined by their weight
    (batches or counted targets)."""
    if hasattr(loader, "__len__") and len(loader) == 0:
        loss, weight = math.nan, 0.0  # the book's early return: no pass (no RNG drawn)
    else:
        got = loader_loss(loader, model, device, eval_iter, ignore_index=ignore_index,
                          loss_chunk=loss_chunk, weightings=(weighting,))  # fmt: skip
        loss = got.batch_weighted if weighting == "batch" else got.token_weighted
        weight = float(got.batches if weighting == "batch" else got.tokens)
    if group is None or group.world_size == 1:
        return loss
    local = torch.tensor([loss * weight if weight else 0.0, weight], dtype=torch.float64)
    total, weight = group.all_reduce_sum(local).tolist()
    return total / weight if weight else math.nan
