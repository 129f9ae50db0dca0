"""A book-style implementation of the GPT data path and training step, checked by gptref's
conformance suite:

    GPTREF_IMPL=examples.book_style python -m pytest --pyargs gptref.conformance
    gptref conformance examples.book_style

It is written the way the book teaches the pieces, for reading, not speed: chapter 2's
``GPTDatasetV1`` (a loop over window starts that copies every window into its own tensor) and
``create_dataloader_v1``, the chapter-5 loss functions, ``generate`` and
``train_model_simple``, appendix D's ``train_model`` and its warmup-plus-cosine formula, and,
for gptref's function protocol, the same pieces as pure functions (``chunk``, ``batch_order``,
``train_step``, ``lr_at``, ...). It imports nothing from gptref. Where gptref offers a choice,
this module declares the book's (which are also the suite's defaults).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import tiktoken
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

__version__ = "book-style example 2.0"

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


def sliding_windows(token_ids, max_length, stride):
    """One input tensor and one target tensor (shifted by one) per window."""
    input_ids, target_ids = [], []
    for i in window_starts(len(token_ids), max_length, stride):
        input_ids.append(torch.tensor(token_ids[i : i + max_length]))
        target_ids.append(torch.tensor(token_ids[i + 1 : i + max_length + 1]))
    return input_ids, target_ids


class GPTDatasetV1(Dataset):
    """The book's dataset: the sliding windows over the tokens of a text."""

    def __init__(self, txt, tokenizer, max_length, stride):
        token_ids = tokenizer.encode(txt, allowed_special={"<|endoftext|>"})
        self.input_ids, self.target_ids = sliding_windows(token_ids, max_length, stride)

    def __len__(self):
        return len(self.input_ids)

    def __getitem__(self, idx):
        return self.input_ids[idx], self.target_ids[idx]


def create_dataloader_v1(
    txt, batch_size=4, max_length=256, stride=128, shuffle=True, drop_last=True, num_workers=0
):
    tokenizer = tiktoken.get_encoding("gpt2")
    dataset = GPTDatasetV1(txt, tokenizer, max_length, stride)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
        num_workers=num_workers,
    )  # fmt: skip


def text_to_token_ids(text, tokenizer):
    encoded = tokenizer.encode(text, allowed_special={"<|endoftext|>"})
    return torch.tensor(encoded).unsqueeze(0)  # add the batch dimension


def token_ids_to_text(token_ids, tokenizer):
    return tokenizer.decode(token_ids.squeeze(0).tolist())


def num_chunks(n_tokens, max_length, stride):
    return len(window_starts(n_tokens, max_length, stride))


def chunk(ids, max_length, stride):
    input_ids, target_ids = sliding_windows(ids.tolist(), max_length, stride)
    if len(input_ids) == 0:
        empty = torch.zeros((0, max_length), dtype=torch.int64)
        return empty, empty.clone()
    return torch.stack(input_ids), torch.stack(target_ids)


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


def generate_text_simple(model, idx, max_new_tokens, context_size):
    """Chapter 4's greedy decoding."""
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(idx[:, -context_size:])[:, -1, :]
        idx = torch.cat((idx, logits.argmax(dim=-1, keepdim=True)), dim=1)
    return idx


# ---------------------------------------------------------------- chapter 5 and appendix D: loops


def evaluate_model(model, train_loader, val_loader, device, eval_iter):
    model.eval()
    with torch.no_grad():
        train_loss = calc_loss_loader(train_loader, model, device, num_batches=eval_iter)
        val_loss = calc_loss_loader(val_loader, model, device, num_batches=eval_iter)
    model.train()
    return train_loss, val_loss


def generate_and_print_sample(model, tokenizer, device, start_context):
    model.eval()
    context_size = model.pos_emb.weight.shape[0]
    encoded = text_to_token_ids(start_context, tokenizer).to(device)
    token_ids = generate_text_simple(model, encoded, 50, context_size)
    print(token_ids_to_text(token_ids, tokenizer).replace("\n", " "))
    model.train()


def train_model_simple(
    model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
    start_context, tokenizer,
):  # fmt: skip
    train_losses, val_losses, track_tokens_seen = [], [], []
    tokens_seen, global_step = 0, -1
    for epoch in range(num_epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            loss = calc_loss_batch(input_batch, target_batch, model, device)
            loss.backward()
            optimizer.step()
            tokens_seen += input_batch.numel()
            global_step += 1
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(
                    model, train_loader, val_loader, device, eval_iter
                )
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                track_tokens_seen.append(tokens_seen)
                print(f"Ep {epoch + 1} (Step {global_step:06d}): {train_loss:.3f} {val_loss:.3f}")
        generate_and_print_sample(model, tokenizer, device, start_context)
    return train_losses, val_losses, track_tokens_seen


def train_model(
    model, train_loader, val_loader, optimizer, device, n_epochs, eval_freq, eval_iter,
    start_context, tokenizer, warmup_steps, initial_lr=3e-05, min_lr=1e-6,
):  # fmt: skip
    """Appendix D: train_model_simple with a warmup-plus-cosine lr and clipping after warmup."""
    train_losses, val_losses, track_tokens_seen, track_lrs = [], [], [], []
    tokens_seen, global_step = 0, -1
    peak_lr = optimizer.param_groups[0]["lr"]
    total_training_steps = len(train_loader) * n_epochs
    for epoch in range(n_epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            global_step += 1
            lr = lr_at(global_step, peak_lr=peak_lr, total_steps=total_training_steps,
                       warmup_steps=warmup_steps, initial_lr=initial_lr, min_lr=min_lr)  # fmt: skip
            for param_group in optimizer.param_groups:
                param_group["lr"] = lr
            track_lrs.append(lr)
            loss = calc_loss_batch(input_batch, target_batch, model, device)
            loss.backward()
            if global_step >= warmup_steps:  # the book's repository; the print edition has >
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
            optimizer.step()
            tokens_seen += input_batch.numel()
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(
                    model, train_loader, val_loader, device, eval_iter
                )
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                track_tokens_seen.append(tokens_seen)
                print(f"Ep {epoch + 1} (Iter {global_step:06d}): {train_loss:.3f} {val_loss:.3f}")
        generate_and_print_sample(model, tokenizer, device, start_context)
    return train_losses, val_losses, track_tokens_seen, track_lrs
