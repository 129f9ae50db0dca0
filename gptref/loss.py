"""The losses of chapter 5: calc_loss_batch, calc_loss_loader, perplexity (the one home of
the loss: ``calc_loss_batch``).

``calc_loss_loader`` keeps the book's arithmetic by default (``weighting="batch"``): the
mean of per-batch mean losses, so a short last batch weighs as much as a full one;
``weighting="token"`` is the exact mean over every counted target token instead.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from gptref._check import check_choice, check_int

Weighting = Literal["batch", "token"]
WEIGHTINGS = get_args(Weighting)


def calc_loss_batch(
    input_batch: torch.Tensor,
    target_batch: torch.Tensor,
    model: nn.Module,
    device: torch.device | str,
    *,
    ignore_index: int = -100,
    reduction: Literal["mean", "sum"] = "mean",
) -> torch.Tensor:
    """inputs, targets: int64 (b, T) -> float32 scalar: the book's loss, the mean cross-entropy
    over the targets that are not ``ignore_index`` (nan when none are); ``reduction="sum"``:
    their sum.

    The one place gptref computes a loss: ``calc_loss_loader`` and ``train_step`` (its
    accumulation and data-parallel forms use the sum) call it. Differentiable; moves both
    batches to ``device``."""
    logits, targets = _flat_logits(input_batch, target_batch, model, device)
    return F.cross_entropy(logits, targets, ignore_index=ignore_index, reduction=reduction)


def _flat_logits(input_batch, target_batch, model, device) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (logits (b*T, vocab), targets (b*T,)) on ``device``."""
    # non_blocking: from a pinned batch the copy overlaps GPU work; otherwise no-op
    input_batch = input_batch.to(device, non_blocking=True)
    target_batch = target_batch.to(device, non_blocking=True)
    return model(input_batch).flatten(0, 1), target_batch.flatten()  # (b*T, vocab), (b*T,)


def counted_targets(target_batch: torch.Tensor, ignore_index: int = -100) -> int:
    """How many targets the loss counts: those that are not ``ignore_index``."""
    return int((target_batch != ignore_index).sum())


def calc_loss_loader(
    data_loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    model: nn.Module,
    device: torch.device | str,
    num_batches: int | None = None,
    *,
    weighting: Weighting = "batch",
    ignore_index: int = -100,
) -> float:
    """(inputs, targets) batches -> the loss over the first ``num_batches`` of them (all if None).

    ``weighting="batch"`` is the book's: the mean of the per-batch means, summed in a Python
    float and divided by ``num_batches`` clamped to ``len(data_loader)``; ``"token"`` is
    (sum of per-token losses) / (number of counted targets). ``nan`` when there are no
    batches (or, for "token", no counted targets). Runs under ``torch.no_grad()`` and does not
    change ``model.training``: call ``model.eval()`` first for a deterministic number, as the
    book's ``evaluate_model`` does. ``data_loader`` needs no ``len`` when ``num_batches`` is
    given; a DataLoader is iterated once (so a shuffling one draws from the global RNG once).
    """
    check_choice("calc_loss_loader", "weighting", weighting, WEIGHTINGS)
    if num_batches is not None:
        check_int(
            "calc_loss_loader",
            "num_batches",
            num_batches,
            low=1,
            hint="; pass None for all batches",
        )
    if hasattr(data_loader, "__len__"):
        if len(data_loader) == 0:
            return float("nan")
        num_batches = (
            len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
        )

    total_loss, n_batches, n_tokens = 0.0, 0, 0
    with torch.no_grad():
        # islice stops before fetching a batch that would not be used
        for input_batch, target_batch in itertools.islice(data_loader, num_batches):
            if weighting == "batch":
                loss = calc_loss_batch(
                    input_batch, target_batch, model, device, ignore_index=ignore_index
                )
                total_loss += loss.item()
            else:
                loss_sum = calc_loss_batch(
                    input_batch, target_batch, model, device,
                    ignore_index=ignore_index, reduction="sum",
                )  # fmt: skip
                total_loss += loss_sum.item()
                n_tokens += counted_targets(target_batch, ignore_index)
            n_batches += 1
    if n_batches == 0:
        return float("nan")
    if weighting == "batch":
        # the book divides by the clamped num_batches; for a sized loader that is n_batches
        return total_loss / n_batches
    return total_loss / n_tokens if n_tokens else float("nan")


@dataclass(frozen=True)
class LoaderLoss:
    """A loader's loss both ways, and what it was averaged over."""

    batch_weighted: float  # the book's: the mean of the per-batch mean losses
    token_weighted: float  # the mean over every counted target token
    batches: int
    tokens: int  # counted targets (not ignore_index)


def loader_loss(
    data_loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    model: nn.Module,
    device: torch.device | str,
    num_batches: int | None = None,
    *,
    ignore_index: int = -100,
    progress: bool = False,
) -> LoaderLoss:
    """Both of ``calc_loss_loader``'s weightings in one pass over the batches: each batch's
    logits are reduced twice (mean and sum), so each number equals ``calc_loss_loader``'s to
    the bit. Under ``torch.no_grad()``; ``model.training`` untouched (call ``eval()``)."""
    from tqdm.auto import tqdm

    if num_batches is not None:
        check_int("loader_loss", "num_batches", num_batches, low=1, hint="; pass None for all")
    total = len(data_loader) if hasattr(data_loader, "__len__") else None
    if total is not None and num_batches is not None:
        total = min(total, num_batches)
    means, sums, n_batches, n_tokens = 0.0, 0.0, 0, 0
    with torch.no_grad():
        batches = itertools.islice(data_loader, num_batches)
        for input_batch, target_batch in tqdm(batches, total=total, unit="batch",
                                              disable=not progress, leave=False):  # fmt: skip
            logits, targets = _flat_logits(input_batch, target_batch, model, device)
            means += F.cross_entropy(logits, targets, ignore_index=ignore_index).item()
            sums += F.cross_entropy(
                logits, targets, ignore_index=ignore_index, reduction="sum"
            ).item()
            n_batches += 1
            n_tokens += counted_targets(target_batch, ignore_index)
    nan = float("nan")
    return LoaderLoss(
        batch_weighted=means / n_batches if n_batches else nan,
        token_weighted=sums / n_tokens if n_tokens else nan,
        batches=n_batches,
        tokens=n_tokens,
    )


def perplexity(loss: float | torch.Tensor) -> float:
    """A mean cross-entropy in nats (float or scalar tensor) -> exp(loss); inf when it overflows."""
    value = float(loss)
    try:
        return math.exp(value)
    except OverflowError:
        return math.inf
