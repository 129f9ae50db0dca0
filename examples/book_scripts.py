"""The book's chapter-5 scripts and appendix D (``ch05/01_main-chapter-code/gpt_train.py``,
``gpt_generate.py``, ``appendix-D/01_main-chapter-code/previous_chapters.py`` and its
notebook's ``train_model``), restated as plain functions from what they compute, and exposed
to gptref's conformance suite by the book's own names:

    gptref conformance examples.book_scripts

The formulas (no code of the book's repository is copied; the names and signatures are its):

- chapter 2: the windows ``ids[i : i + max_length]`` / ``ids[i + 1 : i + max_length + 1]`` for
  ``i in range(0, len(ids) - max_length, stride)``, ``ids = tokenizer.encode(txt,
  allowed_special={"<|endoftext|>"})``, in a ``DataLoader(batch_size=4, shuffle=True,
  drop_last=True)`` by default, with ``max_length=256, stride=128``;
- ``text_to_token_ids``: ``tokenizer.encode(text)`` with a batch dimension, and nothing allowed:
  these scripts' helper refuses ``<|endoftext|>`` in the text (tiktoken's ValueError), where
  chapter 5's notebook and the book's package allow it;
- ``calc_loss_batch``: the cross-entropy of the flattened logits and targets (its mean);
  ``calc_loss_loader``: the mean of the first ``num_batches`` batch means (all if None, at most
  ``len(loader)``), ``nan`` for an empty loader;
- ``evaluate_model``: both loader losses over ``eval_iter`` batches in eval mode under
  ``no_grad``, then train mode;
- ``generate_text_simple`` (chapter 4): the argmax of the last position's logits over the last
  ``context_size`` tokens, ``max_new_tokens`` times, under ``no_grad``;
  ``generate_and_print_sample``: 50 such tokens after ``start_context`` in eval mode (the
  context size read off ``pos_emb``), printed with newlines as spaces, then train mode;
- ``train_model_simple``: per batch ``zero_grad``, loss, ``backward``, ``step``,
  ``tokens_seen += inputs.numel()``, ``global_step += 1`` (from -1); an evaluation when
  ``global_step % eval_freq == 0``; one sample after each epoch;
- ``generate`` (``gpt_generate.py``): the last ``context_size`` tokens, the last position's
  logits, those below the ``top_k``-th largest set to -inf, then at ``temperature > 0`` softmax
  of ``logits / temperature`` and ``torch.multinomial``, else the argmax; stop (without
  appending) when the token is ``eos_id``;
- appendix D's ``train_model``: before each forward pass ``global_step += 1`` and the lr
  ``initial_lr + global_step * (peak_lr - initial_lr) / warmup_steps`` during the warmup, else
  ``min_lr + (peak_lr - min_lr) * 0.5 * (1 + cos(pi * (global_step - warmup_steps) /
  (total_steps - warmup_steps)))`` with ``total_steps = len(train_loader) * n_epochs`` and
  ``peak_lr`` the optimizer's lr at the start, set on every param group and recorded;
  ``clip_grad_norm_(max_norm=1.0)`` after the backward pass once ``global_step >=
  warmup_steps``; otherwise ``train_model_simple``'s loop.

The two conventions these scripts have, declared: ``TEXT_TO_TOKEN_IDS = "encode"`` (the plain
``tokenizer.encode``) and ``EPOCH_SAMPLE = "epoch"`` (one sample after every epoch, the book's
default, stated for the reader). The book's ``GPTModel`` is not restated: the suite's fixture
models stand in.
"""

from __future__ import annotations

import math

import tiktoken
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

__version__ = "the book's chapter-5 scripts and appendix D, restated 1.0"

TEXT_TO_TOKEN_IDS = "encode"
EPOCH_SAMPLE = "epoch"


# ---------------------------------------------------------------- chapter 2


class GPTDatasetV1(Dataset):
    """Every window of max_length token ids (stride apart) and its next-token targets."""

    def __init__(self, txt, tokenizer, max_length, stride):
        ids = tokenizer.encode(txt, allowed_special={"<|endoftext|>"})
        starts = range(0, len(ids) - max_length, stride)  # the last target needs one more id
        self.input_ids = [torch.tensor(ids[i : i + max_length]) for i in starts]
        self.target_ids = [torch.tensor(ids[i + 1 : i + 1 + max_length]) for i in starts]

    def __len__(self):
        return len(self.input_ids)

    def __getitem__(self, idx):
        return self.input_ids[idx], self.target_ids[idx]


def create_dataloader_v1(
    txt, batch_size=4, max_length=256, stride=128, shuffle=True, drop_last=True, num_workers=0
):
    dataset = GPTDatasetV1(txt, tiktoken.get_encoding("gpt2"), max_length, stride)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      num_workers=num_workers)  # fmt: skip


# ---------------------------------------------------------------- chapter 5: text and loss


def text_to_token_ids(text, tokenizer):
    return torch.tensor(tokenizer.encode(text))[None, :]  # (1, T): the batch dimension


def token_ids_to_text(token_ids, tokenizer):
    return tokenizer.decode(token_ids.squeeze(0).tolist())


def calc_loss_batch(input_batch, target_batch, model, device):
    logits = model(input_batch.to(device))  # (b, T, vocab)
    return F.cross_entropy(logits.flatten(0, 1), target_batch.to(device).flatten())


def calc_loss_loader(data_loader, model, device, num_batches=None):
    if len(data_loader) == 0:
        return float("nan")
    used = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    batch_means = []
    for input_batch, target_batch in data_loader:
        if len(batch_means) == used:
            break
        batch_means.append(calc_loss_batch(input_batch, target_batch, model, device).item())
    return sum(batch_means) / used


def evaluate_model(model, train_loader, val_loader, device, eval_iter):
    model.eval()
    with torch.no_grad():
        losses = tuple(
            calc_loss_loader(loader, model, device, num_batches=eval_iter)
            for loader in (train_loader, val_loader)
        )
    model.train()
    return losses


# ---------------------------------------------------------------- generation


def generate_text_simple(model, idx, max_new_tokens, context_size):
    for _ in range(max_new_tokens):
        with torch.no_grad():
            last = model(idx[:, -context_size:])[:, -1, :]  # (b, vocab)
        idx = torch.cat([idx, last.argmax(dim=-1, keepdim=True)], dim=1)
    return idx


def generate_and_print_sample(model, tokenizer, device, start_context):
    model.eval()
    context_size = model.pos_emb.weight.shape[0]
    idx = text_to_token_ids(start_context, tokenizer).to(device)
    with torch.no_grad():
        out = generate_text_simple(model, idx, max_new_tokens=50, context_size=context_size)
    print(token_ids_to_text(out, tokenizer).replace("\n", " "))
    model.train()


def generate(model, idx, max_new_tokens, context_size, temperature=0.0, top_k=None, eos_id=None):
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(idx[:, -context_size:])[:, -1, :]
        if top_k is not None:
            kth = torch.topk(logits, top_k).values[:, -1]  # the k-th largest of each row
            logits = torch.where(logits < kth, torch.tensor(-math.inf), logits)
        if temperature > 0.0:
            probs = torch.softmax(logits / temperature, dim=-1)
            next_id = torch.multinomial(probs, num_samples=1)
        else:
            next_id = torch.argmax(logits, dim=-1, keepdim=True)
        if next_id == eos_id:
            break
        idx = torch.cat([idx, next_id], dim=1)
    return idx


# ---------------------------------------------------------------- the training loops


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
            calc_loss_batch(input_batch, target_batch, model, device).backward()
            optimizer.step()
            tokens_seen += input_batch.numel()
            global_step += 1
            if global_step % eval_freq == 0:
                losses = evaluate_model(model, train_loader, val_loader, device, eval_iter)
                train_losses.append(losses[0])
                val_losses.append(losses[1])
                track_tokens_seen.append(tokens_seen)
                print(f"Ep {epoch + 1} (Step {global_step:06d}): {losses[0]:.3f} {losses[1]:.3f}")
        generate_and_print_sample(model, tokenizer, device, start_context)
    return train_losses, val_losses, track_tokens_seen


def warmup_cosine_lr(global_step, peak_lr, total_steps, warmup_steps, initial_lr, min_lr):
    """Appendix D's lr at global_step: a line up from initial_lr, then half a cosine."""
    if global_step < warmup_steps:
        return initial_lr + global_step * (peak_lr - initial_lr) / warmup_steps
    progress = (global_step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + (peak_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def train_model(
    model, train_loader, val_loader, optimizer, device, n_epochs, eval_freq, eval_iter,
    start_context, tokenizer, warmup_steps, initial_lr=3e-05, min_lr=1e-6,
):  # fmt: skip
    train_losses, val_losses, track_tokens_seen, track_lrs = [], [], [], []
    tokens_seen, global_step = 0, -1
    peak_lr = optimizer.param_groups[0]["lr"]
    total_steps = len(train_loader) * n_epochs
    for epoch in range(n_epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            global_step += 1
            lr = warmup_cosine_lr(global_step, peak_lr, total_steps, warmup_steps, initial_lr, min_lr)  # fmt: skip
            for group in optimizer.param_groups:
                group["lr"] = lr
            track_lrs.append(lr)
            calc_loss_batch(input_batch, target_batch, model, device).backward()
            if global_step >= warmup_steps:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
            optimizer.step()
            tokens_seen += input_batch.numel()
            if global_step % eval_freq == 0:
                losses = evaluate_model(model, train_loader, val_loader, device, eval_iter)
                train_losses.append(losses[0])
                val_losses.append(losses[1])
                track_tokens_seen.append(tokens_seen)
                print(f"Ep {epoch + 1} (Iter {global_step:06d}): {losses[0]:.3f} {losses[1]:.3f}")
        generate_and_print_sample(model, tokenizer, device, start_context)
    return train_losses, val_losses, track_tokens_seen, track_lrs
