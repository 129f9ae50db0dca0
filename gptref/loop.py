"""The book's training loop, ``train``: steps, evaluations, tokens seen, samples, and a
callback after every step; saving and resuming are ``TrainState``'s.

``train`` is the book's ``train_model_simple`` (chapter 5) by default and appendix D's
``train_model`` through arguments (``schedule``, ``grad_clip``, ``clip_from_step``). With
book-mode loaders it consumes the global RNG exactly as the book's loop does, so the book's
numbers reproduce; with seeded loaders nothing in training depends on how often or how
long you evaluate. The loop knows nothing of run directories, metrics files or progress
bars: ``callback`` is where a caller adds them (``gptref.commands.train`` does).
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gptref._check import check_int
from gptref.distributed import DistContext, all_reduce_sum, rank_and_size
from gptref.generation import sample_text
from gptref.loader import is_seeded
from gptref.rng import isolated_rng
from gptref.state import History, TrainState
from gptref.step import evaluate, train_step


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
    eval_weighting: str = "batch",
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    checkpoint_seconds: float | None = None,
    resume_from: str | Path | None = None,
    callback: Callable[[dict[str, Any]], bool | None] | None = None,
    log: Callable[[str], None] | None = print,
    group: DistContext | None = None,
) -> History:
    """Mutates ``model`` and ``optimizer``: the book's training loop -> ``History``.

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

    ``checkpoint_dir``: save at the end (and when stopped); with ``checkpoint_every`` also
    every that many steps, with ``checkpoint_seconds`` also at an evaluation when that many
    seconds passed since the last save. Saving draws no random numbers, so a run resumed
    from any of its checkpoints ends as the uninterrupted run does, bitwise.
    ``resume_from`` continues a run (model, optimizer, RNG, position in the epoch); a run
    that already reached ``max_steps`` takes no further step.
    ``callback(info)`` runs after every step with ``info = {"step", "epoch", "result",
    "history", "state", "step_seconds"}`` (the update alone, evaluation excluded); returning True stops training (after a checkpoint when
    ``checkpoint_dir`` is set). ``group``: the process group (``gptref.distributed``), None
    for one process; rank 0 alone logs and writes.
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
    if checkpoint_every is not None and (checkpoint_every < 1 or checkpoint_dir is None):
        raise ValueError(
            f"train: checkpoint_every={checkpoint_every} needs checkpoint_dir and a value >= 1"
        )
    seeded = is_seeded(train_loader)
    quiet = isolated_rng if seeded else contextlib.nullcontext
    rank, world_size = rank_and_size(group)
    say = log if log is not None and rank == 0 else (lambda _msg: None)
    if resume_from is not None:
        state = TrainState.resume(resume_from, model, optimizer, group)
    else:
        state = TrainState()
    history = state.history

    last_save = [time.monotonic()]

    def save() -> None:
        if checkpoint_dir is not None:
            state.save(checkpoint_dir, model, optimizer, group)
            last_save[0] = time.monotonic()

    def due(step: int, evaluated: bool) -> bool:
        """Whether to save after ``step`` (the same answer on every rank)."""
        if checkpoint_dir is None:
            return False
        if checkpoint_every is not None and (step + 1) % checkpoint_every == 0:
            return True
        if checkpoint_seconds is None or not evaluated:
            return False
        late = time.monotonic() - last_save[0] >= checkpoint_seconds
        return all_reduce_sum([late], group)[0] > 0 if world_size > 1 else late

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
                group=group,
            )
            step_seconds = time.perf_counter() - started
            state.step_done(result.tokens * world_size)  # every rank's batch
            history.lrs.append(result.lr)
            history.step_losses.append(result.loss)
            if step % eval_freq == 0:
                with quiet():
                    train_loss, val_loss = evaluate(
                        model, train_loader, val_loader, device, eval_iter,
                        weighting=eval_weighting, group=group,
                    )  # fmt: skip
                history.record_evaluation(step, epoch + 1, state.tokens_seen, train_loss, val_loss)
                say(
                    f"Ep {epoch + 1} (Step {step:06d}): "
                    f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}"
                )
            info = {"step": step, "epoch": epoch, "result": result, "history": history,
                    "state": state, "step_seconds": step_seconds}  # fmt: skip
            stop = bool(callback(info)) if callback is not None else False
            if world_size > 1:  # one rank's Ctrl-C stops all of them at the same step
                stop = all_reduce_sum([stop], group)[0] > 0
            if stop or (max_steps is not None and step + 1 >= max_steps):
                save()
                return history
            if due(step, evaluated=step % eval_freq == 0):
                save()
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
    save()
    return history
