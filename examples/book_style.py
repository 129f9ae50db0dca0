"""A book-style implementation of the GPT data path and training step, checked by gptref's
conformance suite:

    GPTREF_IMPL=examples.book_style python -m pytest --pyargs gptref.conformance
    gptref conformance examples.book_style

It is written the way the book teaches the pieces, for reading, not speed: a dataset that
loops over window starts and copies every window into its own tensor, the chapter-5 loss
functions and ``generate``, appendix D's warmup-plus-cosine formula, and a plain training
step. It imports nothing from gptref. Where gptref offers a choice, this module declares the
book's (which are also the suite's defaults).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__version__ = "book-style example 1.0"

LOADER_LOSS_WEIGHTING = "batch"  # calc_loss_loader averages the per-batch mean losses
LR_SCHEDULE = "appendix_d"  # lr_at is appendix D's formula, as printed


# ---------------------------------------------------------------- chapter 2: data


def split(data, train_ratio=0.9):
    """The first train_ratio of the data for training, the rest for validation."""
    split_idx = int(train_ratio * len(data))
    return data[:split_idx], data[split_idx:]


def window_starts(n_tokens, max_length, stride):
    """Where the windows start: each needs max_length inputs plus one more token for its last
    target, hence the strict bound."""
    return range(0, n_tokens - max_length, stride)


class SlidingWindows:
    """The book's dataset: one input tensor and one target tensor (shifted by one) per window."""

    def __init__(self, token_ids, max_length, stride):
        self.input_ids, self.target_ids = [], []
        for i in window_starts(len(token_ids), max_length, stride):
            self.input_ids.append(torch.tensor(token_ids[i : i + max_length]))
            self.target_ids.append(torch.tensor(token_ids[i + 1 : i + max_length + 1]))

    def __len__(self):
        return len(self.input_ids)

    def __getitem__(self, idx):
        return self.input_ids[idx], self.target_ids[idx]


def num_chunks(n_tokens, max_length, stride):
    return len(window_starts(n_tokens, max_length, stride))


def chunk(ids, max_length, stride):
    dataset = SlidingWindows(ids.tolist(), max_length, stride)
    if len(dataset) == 0:
        empty = torch.zeros((0, max_length), dtype=torch.int64)
        return empty, empty.clone()
    return torch.stack(dataset.input_ids), torch.stack(dataset.target_ids)


def batch_order(
    n_samples, batch_size, *, shuffle=False, drop_last=False, seed=0, epoch=0, rank=0, world_size=1
):
    """One epoch's index batches for one rank, like a DataLoader over a DistributedSampler."""
    if shuffle:
        generator = torch.Generator()
        generator.manual_seed(seed * 1_000_003 + epoch)  # a different order for each epoch
        order = torch.randperm(n_samples, generator=generator).tolist()
    else:
        order = list(range(n_samples))
    per_rank = n_samples // world_size
    mine = order[: per_rank * world_size][rank::world_size]
    batches = []
    for start in range(0, len(mine), batch_size):
        batch = mine[start : start + batch_size]
        if len(batch) < batch_size and drop_last:
            break
        batches.append(torch.tensor(batch, dtype=torch.int64))
    return batches


def collate(samples, *, pad_token_id=50256, ignore_index=-100, max_length=None):
    """Pad every (input, target) pair to the longest one: inputs with the pad token, targets
    with ignore_index, which the loss skips."""
    pairs = [(list(map(int, x)), list(map(int, y))) for x, y in samples]
    if max_length is not None:
        pairs = [(x[:max_length], y[:max_length]) for x, y in pairs]
    longest = max(len(x) for x, _ in pairs)
    inputs, targets = [], []
    for x, y in pairs:
        missing = longest - len(x)
        inputs.append(torch.tensor(x + [pad_token_id] * missing))
        targets.append(torch.tensor(y + [ignore_index] * missing))
    return torch.stack(inputs), torch.stack(targets)


# ---------------------------------------------------------------- chapter 5: loss


def calc_loss_batch(input_batch, target_batch, model, device):
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)
    return F.cross_entropy(logits.flatten(0, 1), target_batch.flatten())


def calc_loss_loader(data_loader, model, device, num_batches=None):
    """The mean of the per-batch mean losses over the first num_batches batches (all if None)."""
    if len(data_loader) == 0:
        return float("nan")
    n = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    total = 0.0
    for input_batch, target_batch in itertools.islice(data_loader, n):
        total += calc_loss_batch(input_batch, target_batch, model, device).item()
    return total / n


# ---------------------------------------------------------------- training step and schedule


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
    """One update. With accumulation, each micro-batch's mean loss is weighted by its share of
    the counted targets, so the summed gradient is the whole batch's."""
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    optimizer.zero_grad()
    counted = int((target_batch != -100).sum())
    total = 0.0
    rows = input_batch.shape[0]
    bounds = [round(j * rows / accumulation_steps) for j in range(accumulation_steps + 1)]
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        x, y = input_batch[start:stop], target_batch[start:stop]
        share = int((y != -100).sum())
        if share == 0:
            continue
        loss = calc_loss_batch(x, y, model, device) * (share / counted)
        loss.backward()
        total += loss.item()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    grad_norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=grad_clip)
    optimizer.step()
    return Step(total, grad_norm, input_batch.numel(), counted, optimizer.param_groups[0]["lr"])


def lr_at(step, *, peak_lr, total_steps, warmup_steps, initial_lr, min_lr):
    """Appendix D: a linear warmup from initial_lr, then a cosine from peak_lr towards min_lr."""
    lr_increment = (peak_lr - initial_lr) / warmup_steps
    if step < warmup_steps:
        return initial_lr + step * lr_increment
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + (peak_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


# ---------------------------------------------------------------- chapter 5: generation


def generate(model, idx, max_new_tokens, context_size, temperature=0.0, top_k=None, eos_id=None):
    """Append up to max_new_tokens tokens to idx (b, T), each from the model's last position."""
    for _ in range(max_new_tokens):
        with torch.no_grad():
            last = model(idx[:, -context_size:])[:, -1, :]  # the model sees its context only
        next_id = pick_token(last, temperature, top_k)
        if eos_id is not None and next_id == eos_id:
            break  # one sequence: stop at the end-of-text token, without appending it
        idx = torch.cat((idx, next_id), dim=1)
    return idx


def pick_token(logits, temperature, top_k):
    """Keep the top_k logits (ties included), then sample at temperature, or take the argmax."""
    if top_k is not None:
        kth_largest = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if temperature > 0.0:
        return torch.multinomial(torch.softmax(logits / temperature, dim=-1), num_samples=1)
    return logits.argmax(dim=-1, keepdim=True)
