"""nanoGPT's training formulas (karpathy/nanoGPT's ``train.py`` and ``model.py``), restated
as plain functions from what they compute, and exposed to gptref's conformance suite:

    gptref conformance examples.nanogpt_formulas

The formulas (no code of nanoGPT's is copied; the names are its):

- split: the first 90% of the token ids for training, ``data[:int(n * 0.9)]``;
- ``get_batch``: ``batch_size`` random offsets ``i`` below ``len(data) - block_size``, the
  inputs ``data[i : i + block_size]`` and targets ``data[i + 1 : i + 1 + block_size]``;
- the loss: ``F.cross_entropy(logits.view(-1, V), targets.view(-1), ignore_index=-1)``;
- ``estimate_loss``: in eval mode, ``eval_iters`` batch losses stored in a float32
  ``torch.zeros(eval_iters)``, their mean; back to train mode;
- one iteration: the lr on every param group; for each of ``gradient_accumulation_steps``
  micro-batches, ``(loss / gradient_accumulation_steps).backward()``; clip the total norm to
  ``grad_clip`` unless it is 0.0; ``optimizer.step()``; ``zero_grad(set_to_none=True)``;
- ``get_lr(it)``: ``learning_rate * (it + 1) / (warmup_iters + 1)`` while ``it <
  warmup_iters``; ``min_lr`` once ``it > lr_decay_iters``; else ``min_lr + coeff *
  (learning_rate - min_lr)``, ``coeff = 0.5 * (1 + cos(pi * (it - warmup_iters) /
  (lr_decay_iters - warmup_iters)))``;
- ``generate``: crop to the last ``block_size`` tokens, the last position's logits divided by
  ``temperature``, then (top-k) every logit below the k-th largest set to -inf, softmax and
  ``torch.multinomial``; no greedy mode, no end-of-text stop.

What the suite sees, and what the module declares about it: ``IGNORE_INDEX = -1``;
``WARMUP = "nanogpt"`` and ``LR_SCHEDULE = "exact"`` (``lr_at`` is ``get_lr`` with
``lr_decay_iters = total_steps - 1``, whose cosine ends at exactly ``min_lr``);
``ACCUMULATION_WEIGHTING = "batch"`` (each micro-batch's mean divided by k);
``UNSUPPORTED = {"greedy", "eos_id"}``. nanoGPT samples batches with replacement and has no
epochs, no sharded sampler and no padding: ``batch_order`` and ``collate`` are not provided,
and neither are the book's own names (``GPTDatasetV1``, ``train_model_simple``, ...).
``chunk`` is the set of windows ``get_batch`` can return: the window at every offset it can
draw (every ``stride``-th). The model is not nanoGPT's (its forward returns only the last
position's logits at inference): the suite's fixture models stand in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__version__ = "nanoGPT formulas 1.0"

IGNORE_INDEX = -1  # nanoGPT's cross_entropy(..., ignore_index=-1)
WARMUP = "nanogpt"
LR_SCHEDULE = "exact"
ACCUMULATION_WEIGHTING = "batch"
UNSUPPORTED = {"greedy", "eos_id"}


# ---------------------------------------------------------------- data


def train_val_split(data, train_fraction=0.9):
    n = len(data)
    return data[: int(n * train_fraction)], data[int(n * train_fraction) :]


def batch_offsets(n_tokens, block_size):
    """Every offset get_batch can draw: torch.randint(n_tokens - block_size, ...)'s range."""
    return range(n_tokens - block_size)


def windows_at(data, offsets, block_size):
    """get_batch's (x, y) for the given offsets: int64 (len(offsets), block_size) each."""
    x = torch.stack([data[i : i + block_size].to(torch.int64) for i in offsets])
    y = torch.stack([data[i + 1 : i + 1 + block_size].to(torch.int64) for i in offsets])
    return x, y


def get_batch(data, block_size, batch_size, generator=None):
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    return windows_at(data, ix.tolist(), block_size)


# ---------------------------------------------------------------- loss


def loss_of(logits, targets):
    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)


def mean_batch_loss(model, batches, eval_iters):
    """estimate_loss's inner loop: eval_iters batch losses in a float32 tensor, their mean."""
    losses = torch.zeros(eval_iters)
    for k, (X, Y) in zip(range(eval_iters), batches, strict=False):  # the first eval_iters
        losses[k] = loss_of(model(X), Y).item()
    return losses.mean()


@torch.no_grad()
def estimate_loss(model, batches_of_split, eval_iters):
    """{split: mean loss}: eval mode for the estimate, train mode after."""
    model.eval()
    out = {split: mean_batch_loss(model, b, eval_iters) for split, b in batches_of_split.items()}
    model.train()
    return out


# ---------------------------------------------------------------- schedule and iteration


def get_lr(it, *, learning_rate, warmup_iters, lr_decay_iters, min_lr):
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (learning_rate - min_lr)


def iteration(model, optimizer, micro_batches, lr, grad_clip):
    """One optimizer step over the micro-batches -> (loss: the mean of the micro-batch means,
    total grad norm before clipping)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    k = len(micro_batches)
    total = 0.0
    for X, Y in micro_batches:
        loss = loss_of(model(X), Y) / k
        loss.backward()
        total += loss.item()
    max_norm = grad_clip if grad_clip != 0.0 else float("inf")  # inf: measure, do not clip
    norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total, norm


# ---------------------------------------------------------------- generation


@torch.no_grad()
def sample(model, idx, max_new_tokens, block_size, temperature=1.0, top_k=None):
    for _ in range(max_new_tokens):
        idx_cond = idx if idx.size(1) <= block_size else idx[:, -block_size:]
        logits = model(idx_cond)[:, -1, :] / temperature
        if top_k is not None:
            v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
            logits[logits < v[:, [-1]]] = -float("inf")
        probs = F.softmax(logits, dim=-1)
        idx = torch.cat((idx, torch.multinomial(probs, num_samples=1)), dim=1)
    return idx


# ---------------------------------------------------------------- gptref's function protocol


def split(data, train_ratio=0.9):
    return train_val_split(data, train_ratio)


def num_chunks(n_tokens, max_length, stride):
    return len(batch_offsets(n_tokens, max_length)[::stride])


def chunk(ids, max_length, stride):
    offsets = batch_offsets(len(ids), max_length)[::stride]
    if len(offsets) == 0:
        empty = torch.zeros((0, max_length), dtype=torch.int64)
        return empty, empty.clone()
    return windows_at(ids, offsets, max_length)


def calc_loss_batch(input_batch, target_batch, model, device):
    return loss_of(model(input_batch.to(device)), target_batch.to(device))


def calc_loss_loader(data_loader, model, device, num_batches=None):
    eval_iters = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    batches = ((x.to(device), y.to(device)) for x, y in data_loader)
    with torch.no_grad():
        return float(mean_batch_loss(model, batches, eval_iters))


@dataclass
class Step:
    loss: float
    grad_norm: float
    tokens: int
    target_tokens: int
    lr: float


def train_step(
    model, optimizer, input_batch, target_batch, device, *, lr=None, grad_clip=None,
    accumulation_steps=1,
):  # fmt: skip
    x, y = input_batch.to(device), target_batch.to(device)
    xs, ys = torch.tensor_split(x, accumulation_steps), torch.tensor_split(y, accumulation_steps)
    micro = list(zip(xs, ys, strict=True))
    lr = optimizer.param_groups[0]["lr"] if lr is None else lr
    loss, norm = iteration(model, optimizer, micro, lr, 0.0 if grad_clip is None else grad_clip)
    return Step(loss, norm, x.numel(), int((y != IGNORE_INDEX).sum()), lr)


def lr_at(step, *, peak_lr, total_steps, warmup_steps, initial_lr, min_lr):
    if initial_lr != 0:
        raise NotImplementedError("nanoGPT's warmup starts at lr / (warmup_iters + 1)")
    return get_lr(
        step,
        learning_rate=peak_lr,
        warmup_iters=warmup_steps,
        lr_decay_iters=total_steps - 1,
        min_lr=min_lr,
    )


def generate(model, idx, max_new_tokens, context_size, temperature=0.0, top_k=None, eos_id=None):
    if temperature == 0.0:
        raise NotImplementedError("nanoGPT's generate always samples (temperature > 0)")
    if eos_id is not None:
        raise NotImplementedError("nanoGPT's generate has no eos_id")
    return sample(model, idx, max_new_tokens, context_size, temperature, top_k)
