"""The book's training loop, ``train``: steps, evaluations, tokens seen, samples, and a
callback after every step.

``train`` is the book's ``train_model_simple`` (chapter 5) by default and appendix D's
``train_model`` through arguments (``schedule``, ``grad_clip``, ``clip_from_step``). With
book-mode loaders it consumes the global RNG exactly as the book's loop does, so the book's
numbers reproduce; with seeded loaders nothing in training depends on how often or how
long you evaluate. The loop knows nothing of files: it starts from a ``TrainState`` (a
fresh one by default) and calls ``callback`` after every step; checkpoints and resuming
are ``gptref.run.resume``'s, progress bars and metrics files the caller's.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from gptref._check import check_int
from gptref.generation import sample_text
from gptref.rng import isolated_rng
from gptref.state import History, TrainState
from gptref.step import ProcessGroup, evaluate, train_step


def train(
    model: nn.Module,
    train_loader,
    val_loader,
    optimizer: torch.optim.Optimizer,
    device: torch.device | str,
    *,
    num_epochs: int | None,
    eval_freq: int,
    eval_iter: int,
    start_context: str | None = None,
    sample_every: int = 1,
    sample_label: bool = False,
    tokenizer=None,
    schedule: Callable[[int], float] | None = None,
    grad_clip: float | None = None,
    clip_from_step: int = 0,
    max_steps: int | None = None,
    accumulation_steps: int = 1,
    autocast_dtype: torch.dtype | None = None,
    loss_chunk: int | None = None,
    eval_weighting: str = "batch",
    state: TrainState | None = None,
    callback: Callable[[dict[str, Any]], bool | None] | None = None,
    log: Callable[[str], None] | None = print,
    group: ProcessGroup | None = None,
) -> History:
    """Mutates ``model``, ``optimizer`` and ``state``: the book's training loop -> ``History``.

    Per batch: ``lr = schedule(global_step)`` if a schedule is given (appendix D sets it
    before the forward pass), one ``train_step`` (clipping to ``grad_clip`` once
    ``global_step >= clip_from_step``), ``tokens_seen += input_batch.numel()``, and an
    evaluation after the update when ``global_step % eval_freq == 0``. After each epoch,
    a greedy 50-token sample from ``start_context`` (eval mode, then back to train); with
    ``sample_every = n`` after every n-th epoch, logged as ``sample after epoch e: '...'``
    with ``sample_label`` (bare, as the book prints it, without).
    ``num_epochs=None`` runs until ``max_steps``.

    RNG: with book-mode loaders the global RNG is drawn from exactly where the book's
    loop draws (each loader pass, dropout), so the book's numbers reproduce. With a
    seeded training loader, ``train`` calls ``set_epoch(epoch)`` on it and runs every
    evaluation and sample under ``isolated_rng()``: batches and dropout masks no longer
    depend on ``eval_freq`` / ``eval_iter``.

    ``state``: where to start (a ``TrainState`` that a resumed checkpoint gave, with the
    model, optimizer and RNG restored); ``train`` advances it. A run whose state already
    reached ``max_steps`` takes no further step. ``callback(info)`` runs after every step
    with ``info = {"step", "epoch", "result", "history", "state", "step_seconds",
    "evaluated", "last"}`` (``step_seconds``: the update alone; ``last``: this step ends
    the run at ``max_steps``); returning True stops training after that step. ``group``:
    the process group, None for one process; rank 0 alone logs, and one rank's stop stops
    all of them at the same step. ``loss_chunk``: ``train_step``'s and ``evaluate``'s.
    """
    for name, value in (("eval_freq", eval_freq), ("eval_iter", eval_iter),
                        ("sample_every", sample_every)):  # fmt: skip
        check_int("train", name, value, low=1)
    if num_epochs is not None:
        check_int("train", "num_epochs", num_epochs, low=1)
    if max_steps is not None:
        check_int("train", "max_steps", max_steps, low=1, hint=" or None")
    elif num_epochs is None:
        raise ValueError("train: num_epochs=None runs until max_steps; give one of them")
    seeded = is_seeded(train_loader)
    quiet = isolated_rng if seeded else contextlib.nullcontext
    rank, world_size = (0, 1) if group is None else (group.rank, group.world_size)
    say = log if log is not None and rank == 0 else (lambda _msg: None)
    state = TrainState() if state is None else state
    history = state.history
    if max_steps is not None and state.global_step + 1 >= max_steps:
        return history  # resumed after its last step: nothing left to do

    epochs = itertools.count(state.epoch) if num_epochs is None else range(state.epoch, num_epochs)
    for epoch in epochs:
        if seeded:
            train_loader.batch_sampler.set_epoch(epoch)
        model.train()
        fresh = state.batch_in_epoch == 0  # (resumed at an epoch's end: nothing left in it)
        state.begin_epoch(epoch)
        steps_before = state.global_step
        for input_batch, target_batch in state.epoch_batches(train_loader):
            step = state.global_step + 1
            started = time.perf_counter()
            result = train_step(
                model,
                optimizer,
                input_batch,
                target_batch,
                device,
                lr=schedule(step) if schedule is not None else None,
                grad_clip=grad_clip if step >= clip_from_step else None,
                accumulation_steps=accumulation_steps,
                autocast_dtype=autocast_dtype,
                loss_chunk=loss_chunk,
                group=group,
            )
            step_seconds = time.perf_counter() - started
            state.step_done(result.tokens * world_size)  # every rank's batch
            history.lrs.append(result.lr)
            history.step_losses.append(result.loss)
            evaluated = step % eval_freq == 0
            if evaluated:
                with quiet():
                    train_loss, val_loss = evaluate(
                        model, train_loader, val_loader, device, eval_iter,
                        weighting=eval_weighting, loss_chunk=loss_chunk, group=group,
                    )  # fmt: skip
                history.record_evaluation(step, epoch + 1, state.tokens_seen, train_loss, val_loss)
                say(
                    f"Ep {epoch + 1} (Step {step:06d}): "
                    f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}"
                )
            last = max_steps is not None and step + 1 >= max_steps
            info = {"step": step, "epoch": epoch, "result": result, "history": history,
                    "state": state, "step_seconds": step_seconds, "evaluated": evaluated,
                    "last": last}  # fmt: skip
            stop = bool(callback(info)) if callback is not None else False
            if world_size > 1:  # one rank's Ctrl-C stops all of them at the same step
                stop = bool(group.all_reduce_sum(torch.tensor([float(stop)]))[0] > 0)
            if stop or last:
                return history
        if num_epochs is None and fresh and state.global_step == steps_before:
            raise ValueError(
                "train: the training loader gave no batches; max_steps cannot be reached"
            )
        state.end_epoch()
        if start_context is not None and rank == 0 and (epoch + 1) % sample_every == 0:
            with quiet():
                history.samples.append(sample_text(model, start_context, device, tokenizer))
            text = history.samples[-1].replace("\n", " ")
            say(f"sample after epoch {epoch + 1}: {text!r}" if sample_label else text)
    return history


def is_seeded(loader) -> bool:
    """Whether ``loader`` orders its batches by ``batch_order`` (``create_dataloader(seed=...)``
    hands its batches out through a sampler with ``set_epoch``)."""
    return hasattr(getattr(loader, "batch_sampler", None), "set_epoch")
