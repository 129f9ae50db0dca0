"""One optimizer update (``train_step``) and one evaluation (``evaluate``): the training step,
apart from the loop around it (``gptref.loop``).

Both take the process group as an argument (``group``, a ``gptref.distributed.DistContext``;
``None`` is one process): inside a group each rank computes on its part of the global batch
and the numbers they return are the global ones.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import dataclass

import torch
from torch import nn

from gptref._check import FieldError, check_int, check_number
from gptref.distributed import DistContext, all_reduce_sum
from gptref.loss import Weighting, calc_loss_batch, calc_loss_loader, counted_targets


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
    group: DistContext | None = None,
) -> StepResult:
    """Mutates ``model`` and ``optimizer``: one update from (inputs, targets): int64 (b, T).

    ``lr`` (if given) is set on every param group first. With ``accumulation_steps = k``
    the batch is cut into k micro-batches (``torch.tensor_split`` along rows) whose mean
    losses are weighted by their share of counted target tokens, so the summed gradient
    is the full batch's (up to float rounding; dropout masks differ). ``grad_clip``
    clips the total gradient norm (``clip_grad_norm_``). A non-finite loss or gradient
    norm raises ``NonFiniteError`` before ``optimizer.step()``: parameters untouched.

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
    counted = counted_targets(target_batch, ignore_index)
    world_size = 1 if group is None else group.world_size
    # every rank divides its loss sum by the global count; one process by its own
    global_counted = all_reduce_sum([counted], group)[0] if world_size > 1 else counted
    micros = zip(
        torch.tensor_split(input_batch, accumulation_steps),
        torch.tensor_split(target_batch, accumulation_steps),
        strict=True,
    )
    plain = world_size == 1 and accumulation_steps == 1  # the book's step: its mean loss
    # DDP averages the ranks' gradients, hence world_size: each rank's sum / global count
    scale = world_size / global_counted if global_counted else 0.0
    total = 0.0
    for i, (x, y) in enumerate(micros):
        if world_size == 1 and not plain and counted_targets(y, ignore_index) == 0:
            continue  # nothing to learn from (a rank must still join the all-reduce)
        with _sync(model, last=i == accumulation_steps - 1):
            with autocast:
                reduction = "mean" if plain else "sum"
                loss = calc_loss_batch(
                    x, y, model, device, ignore_index=ignore_index, reduction=reduction,
                    loss_chunk=loss_chunk,
                )  # fmt: skip
            if not plain:
                loss = loss * scale
            loss.backward()
        total += loss.item()
    if world_size > 1:
        total = all_reduce_sum([total], group)[0] / world_size if global_counted else math.nan
    params = [p for p in model.parameters() if p.grad is not None]
    if grad_clip is not None:
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm=grad_clip)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    grad_norm = float(norm)
    if not (math.isfinite(total) and math.isfinite(grad_norm)):
        optimizer.zero_grad()
        raise NonFiniteError(
            f"train_step: non-finite loss {total} or gradient norm {grad_norm}; the update was "
            "skipped (lower the lr, set grad_clip, or check the batch for bad targets)"
        )
    optimizer.step()
    return StepResult(
        loss=total,
        grad_norm=grad_norm,
        tokens=input_batch.numel(),
        target_tokens=counted,
        lr=float(optimizer.param_groups[0]["lr"]),
    )


def _sync(model: nn.Module, *, last: bool) -> contextlib.AbstractContextManager:
    """DDP's ``no_sync`` on every micro-batch but the last (gradients all-reduced once)."""
    no_sync = getattr(model, "no_sync", None)
    return contextlib.nullcontext() if last or no_sync is None else no_sync()


def evaluate(
    model: nn.Module,
    train_loader,
    val_loader,
    device: torch.device | str,
    eval_iter: int,
    *,
    weighting: Weighting = "batch",
    ignore_index: int = -100,
    loss_chunk: int | None = None,
    group: DistContext | None = None,
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
        with torch.no_grad():
            train_loss, val_loss = (
                _reduced_loss(
                    loader, model, device, eval_iter, weighting, ignore_index, loss_chunk, group
                )  # fmt: skip
                for loader in (train_loader, val_loader)
            )
    finally:
        model.train(was_training)
    return train_loss, val_loss


def _reduced_loss(loader, model, device, eval_iter, weighting, ignore_index, loss_chunk,
                  group) -> float:  # fmt: skip
    loss = calc_loss_loader(
        loader, model, device, num_batches=eval_iter, weighting=weighting,
        ignore_index=ignore_index, loss_chunk=loss_chunk,
    )  # fmt: skip
    if group is None or group.world_size == 1:
        return loss
    if weighting == "batch":  # calc_loss_loader's own count: the loader is sized
        weight = float(min(eval_iter, len(loader)))
    else:  # the targets alone: no forward pass
        batches = itertools.islice(loader, eval_iter)
        weight = float(sum(counted_targets(y, ignore_index) for _, y in batches))
    total, weight = all_reduce_sum([loss * weight if weight else 0.0, weight], group)
    return total / weight if weight else math.nan
