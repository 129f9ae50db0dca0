"""The book's names over gptref's public API (``import gptref``), so that ``GPTREF_IMPL=gptref``
runs the book-level tests that call the book's signatures: chapter 2's ``GPTDatasetV1`` /
``create_dataloader_v1``, chapter 4's ``generate_text_simple``, chapter 5's ``evaluate_model``,
``generate_and_print_sample`` and ``train_model_simple``, and appendix D's ``train_model``.

Nothing here computes anything of its own: each name calls gptref's function with the
book's arguments (``train`` with appendix D's schedule, clipping and clip start for
``train_model``) and returns what the book returns. gptref's own functions (``chunk``,
``train_step``, ``lr_at``, ...) and declared conventions come from ``gptref`` itself, the
first module of the spec ``gptref``.
"""

from __future__ import annotations

import functools

import torch

from gptref.generation import generate_text_simple, sample_text
from gptref.loader import GPTDataset, create_dataloader
from gptref.loop import train
from gptref.schedule import appendix_d_lr
from gptref.step import evaluate

__all__ = ["GPTDatasetV1", "create_dataloader_v1", "evaluate_model", "generate_and_print_sample",
           "generate_text_simple", "train_model", "train_model_simple"]  # fmt: skip


def GPTDatasetV1(txt, tokenizer, max_length, stride):  # noqa: N802 - the book's name
    """The book's dataset: gptref's GPTDataset over ``tokenizer.encode(txt, allowed_special=
    {"<|endoftext|>"})``. (GPTDataset(txt, tokenizer) tokenizes with tiktoken's
    ``encode_to_numpy``, so it needs a tiktoken Encoding; the book's needs only ``encode``, so
    the adapter encodes and hands gptref the ids, which GPTDataset takes as a 1-D tensor.)"""
    ids = tokenizer.encode(txt, allowed_special={"<|endoftext|>"})
    return GPTDataset(torch.tensor(ids, dtype=torch.int64), None, max_length, stride)


def create_dataloader_v1(
    txt, batch_size=4, max_length=256, stride=128, shuffle=True, drop_last=True, num_workers=0
):
    """The book's loader: gptref's in book mode (seed=None: the global RNG shuffles)."""
    return create_dataloader(txt, batch_size, max_length, stride, shuffle, drop_last, num_workers)


def evaluate_model(model, train_loader, val_loader, device, eval_iter):
    """-> (train_loss, val_loss): gptref's evaluate (the book's mean of batch means). gptref
    restores the mode the model was in; the book's always ends in train mode."""
    losses = evaluate(model, train_loader, val_loader, device, eval_iter)
    model.train()
    return losses


def generate_and_print_sample(model, tokenizer, device, start_context):
    """Prints gptref's sample_text (50 greedy tokens, newlines as spaces); the book's ends in
    train mode."""
    print(sample_text(model, start_context, device, tokenizer).replace("\n", " "))
    model.train()


def train_model_simple(
    model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
    start_context, tokenizer,
):  # fmt: skip
    """-> (train_losses, val_losses, track_tokens_seen), as chapter 5's."""
    history = train(
        model, train_loader, val_loader, optimizer, device, num_epochs=num_epochs,
        eval_freq=eval_freq, eval_iter=eval_iter, start_context=start_context,
        tokenizer=tokenizer,
    )  # fmt: skip
    return history.train_losses, history.val_losses, history.tokens_seen


def train_model(
    model, train_loader, val_loader, optimizer, device, n_epochs, eval_freq, eval_iter,
    start_context, tokenizer, warmup_steps, initial_lr=3e-05, min_lr=1e-6,
    orig_book_version=False,
):  # fmt: skip
    """-> (train_losses, val_losses, track_tokens_seen, track_lrs), as appendix D's: gptref's
    train with the appendix-D schedule (peak_lr: the optimizer's lr), max_norm=1.0 clipping
    from global_step >= warmup_steps (> with orig_book_version, as printed)."""
    schedule = functools.partial(
        appendix_d_lr,
        peak_lr=optimizer.param_groups[0]["lr"],
        total_steps=len(train_loader) * n_epochs,
        warmup_steps=warmup_steps,
        initial_lr=initial_lr,
        min_lr=min_lr,
    )
    history = train(
        model, train_loader, val_loader, optimizer, device, num_epochs=n_epochs,
        eval_freq=eval_freq, eval_iter=eval_iter, start_context=start_context,
        tokenizer=tokenizer, schedule=schedule, grad_clip=1.0,
        clip_from_step=warmup_steps + 1 if orig_book_version else warmup_steps,
    )  # fmt: skip
    return history.train_losses, history.val_losses, history.tokens_seen, history.lrs
