"""The losses of chapter 5: calc_loss_batch, calc_loss_loader, perplexity (the one home of the
loss: ``calc_loss_batch``; ``loader_loss`` is the one loop over a loader).

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
from gptref.chunked_loss import chunked_cross_entropy
from gptref.model import unwrap

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
    loss_chunk: int | None = None,
) -> torch.Tensor:
    """inputs, targets: int64 (b, T) -> float32 scalar: the book's loss, the mean cross-entropy
    over the targets that are not ``ignore_index`` (nan when none are); ``reduction="sum"``:
    their sum.

    The one place gptref computes a loss: ``calc_loss_loader`` and ``train_step`` (its
    accumulation and data-parallel forms use the sum) call it. Differentiable; moves both
    batches to ``device``. ``loss_chunk=c`` (a ``GPTModel``, possibly wrapped): the head and
    the cross-entropy ``c`` rows of ``b*T`` at a time (``gptref.chunked_loss``), the same
    loss without the (b, T, vocab) logits; None: the book's full logits."""
    return _losses(input_batch, target_batch, model, device, ignore_index, loss_chunk,
                   (reduction,))[0]  # fmt: skip


def _losses(input_batch, target_batch, model, device, ignore_index, loss_chunk, reductions):
    """The batch's loss in each of ``reductions`` ("mean", "sum"), from one forward pass."""
    # non_blocking: from a pinned batch the copy overlaps GPU work; otherwise a no-op
    input_batch = input_batch.to(device, non_blocking=True)
    target_batch = target_batch.to(device, non_blocking=True).flatten()  # (b*T,)
    if loss_chunk is None:
        logits = model(input_batch).flatten(0, 1)  # (b*T, vocab)
        return [F.cross_entropy(logits, target_batch, ignore_index=ignore_index, reduction=r)
                for r in reductions]  # fmt: skip
    base = unwrap(model)
    if not hasattr(base, "head_weight"):
        raise TypeError(
            f"calc_loss_batch: loss_chunk needs a gptref GPTModel (forward(ids, head=False) and "
            f"head_weight()), got {type(base).__name__}; pass loss_chunk=None"
        )
    # the head and the loss in chunks: ``model(x, head=False)`` gives out_head's input
    hidden = model(input_batch, head=False).flatten(0, 1)  # (b*T, emb_dim)
    both = len(reductions) > 1  # then one sum, and the mean from it, as the chunked mean is made
    loss = chunked_cross_entropy(hidden, base.head_weight(), target_batch, loss_chunk,
                                 ignore_index=ignore_index,
                                 reduction="sum" if both else reductions[0])  # fmt: skip
    if not both:
        return [loss]
    count = (target_batch != ignore_index).sum()
    return [loss / count if r == "mean" else loss for r in reductions]


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
    loss_chunk: int | None = None,
    weightings: tuple[Weighting, ...] = WEIGHTINGS,
) -> LoaderLoss:
    """(inputs, targets) batches -> both of ``calc_loss_loader``'s numbers over the first
    ``num_batches`` of them (all if None), in one pass: each batch's loss is reduced as each
    of ``weightings`` needs (a mean for "batch", a sum for "token"), so each number equals
    ``calc_loss_loader``'s to the bit. A weighting not asked for is nan. Under
    ``torch.no_grad()``; ``model.training`` untouched (call ``eval()``). For a progress bar,
    pass the loader wrapped in one (``tqdm(loader)`` keeps its length)."""
    for weighting in weightings:
        check_choice("loader_loss", "weighting", weighting, WEIGHTINGS)
    if num_batches is not None:
        check_int("loader_loss", "num_batches", num_batches, low=1,
                  hint="; pass None for all batches")  # fmt: skip
    reductions = tuple({"batch": "mean", "token": "sum"}[w] for w in weightings)
    means, sums, n_batches, n_tokens = 0.0, 0.0, 0, 0
    with torch.no_grad():
        # islice stops before fetching a batch that would not be used
        for input_batch, target_batch in itertools.islice(data_loader, num_batches):
            losses = _losses(input_batch, target_batch, model, device, ignore_index, loss_chunk,
                             reductions)  # fmt: skip
            for reduction, loss in zip(reductions, losses, strict=True):
                if reduction == "mean":
                    means += loss.item()
                else:
                    sums += loss.item()
            if "token" in weightings:
                n_tokens += int((target_batch != ignore_index).sum())
            n_batches += 1
    nan = float("nan")
    return LoaderLoss(
        batch_weighted=means / n_batches if n_batches and "batch" in weightings else nan,
        token_weighted=sums / n_tokens if n_tokens else nan,
        batches=n_batches,
        tokens=n_tokens,
    )


def calc_loss_loader(
    data_loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    model: nn.Module,
    device: torch.device | str,
    num_batches: int | None = None,
    *,
    weighting: Weighting = "batch",
    ignore_index: int = -100,
    loss_chunk: int | None = None,
) -> float:
    """(inputs, targets) batches -> the loss over the first ``num_batches`` of them (all if None).

    ``weighting="batch"`` is the book's: the mean of the per-batch means, summed in a Python
    float and divided by ``num_batches`` clamped to ``len(data_loader)``; ``"token"`` is
    (sum of per-token losses) / (number of counted targets). ``nan`` when there are no
    batches (or, for "token", no counted targets). Runs under ``torch.no_grad()`` and does not
    change ``model.training``: call ``model.eval()`` first for a deterministic number, as the
    book's ``evaluate_model`` does. ``data_loader`` needs no ``len`` when ``num_batches`` is
    given; a DataLoader is iterated once (so a shuffling one draws from the global RNG once).
    ``loss_chunk``: as ``calc_loss_batch``'s.
    """
    check_choice("calc_loss_loader", "weighting", weighting, WEIGHTINGS)
    if num_batches is not None:
        check_int("calc_loss_loader", "num_batches", num_batches, low=1,
                  hint="; pass None for all batches")  # fmt: skip
    if hasattr(data_loader, "__len__") and len(data_loader) == 0:
        return float("nan")  # the book's early return: no pass over the loader
    # the book divides by num_batches clamped to len(data_loader): the batches iterated
    got = loader_loss(data_loader, model, device, num_batches, ignore_index=ignore_index,
                      loss_chunk=loss_chunk, weightings=(weighting,))  # fmt: skip
    return got.batch_weighted if weighting == "batch" else got.token_weighted


def perplexity(loss: float | torch.Tensor) -> float:
    """A mean cross-entropy in nats (float or scalar tensor) -> exp(loss); inf when it overflows."""
    value = float(loss)
    try:
        return math.exp(value)
    except OverflowError:
        return math.inf
