"""Training: ``train_step`` (one optimizer update), ``evaluate`` and the ``train`` loop.

``train`` is the book's ``train_model_simple`` (chapter 5) by default and appendix D's
``train_model`` through arguments (``schedule``, ``grad_clip``, ``clip_from_step``). With
book-mode loaders it consumes the global RNG exactly as the book's loop does, so the
book's numbers reproduce; with seeded loaders nothing in training depends on how often
or how long you evaluate.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gptref.distributed import all_reduce_sum, barrier, gather_objects, world
from gptref.fast import unwrap
from gptref.loss import calc_loss_batch, calc_loss_loader


class NonFiniteError(FloatingPointError):
    """The loss or gradient norm of a step is nan/inf; the parameters were not updated."""


@dataclass(frozen=True)
class StepResult:
    loss: float  # mean loss over the batch's counted target tokens
    grad_norm: float  # total L2 norm of the gradients, before clipping
    tokens: int  # input tokens in the batch (the book's tokens_seen increment)
    target_tokens: int  # targets that count (not ignore_index)
    lr: float  # learning rate of the first param group during the update


@dataclass
class History:
    """What ``train`` records; one entry per evaluation unless noted."""

    train_losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    tokens_seen: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)  # global step of each evaluation
    epochs: list[int] = field(default_factory=list)  # 1-based epoch of each evaluation
    lrs: list[float] = field(default_factory=list)  # one per optimizer step
    step_losses: list[float] = field(default_factory=list)  # one per optimizer step
    samples: list[str] = field(default_factory=list)  # one per epoch, with a start context

    def to_dict(self) -> dict[str, list]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, list]) -> History:
        return cls(**{k: list(v) for k, v in d.items()})


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
) -> StepResult:
    """Mutates ``model`` and ``optimizer``: one update from (inputs, targets): int64 (b, T).

    ``lr`` (if given) is set on every param group first. With ``accumulation_steps = k``
    the batch is cut into k micro-batches (``torch.tensor_split`` along rows) whose mean
    losses are weighted by their share of counted target tokens, so the summed gradient
    is the full batch's (up to float rounding; dropout masks differ). ``grad_clip``
    clips the total gradient norm (``clip_grad_norm_``). A non-finite loss or gradient
    norm raises ``NonFiniteError`` before ``optimizer.step()``: parameters untouched.

    Inside a process group (``gptref.distributed``; ``model`` wrapped in DDP) the batch is
    this rank's part of the global batch: each rank's loss is its sum of per-token losses
    over the global number of counted targets (all-reduced first), so the averaged gradient
    is the global batch's token mean, and ``loss`` is the global mean; gradients are
    all-reduced once per step (``no_sync`` on all micro-batches but the last).
    """
    if accumulation_steps < 1 or accumulation_steps > max(1, input_batch.shape[0]):
        raise ValueError(
            f"train_step: accumulation_steps must be in [1, batch size {input_batch.shape[0]}], "
            f"got {accumulation_steps}"
        )
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"train_step: grad_clip must be > 0 or None, got {grad_clip}")
    if lr is not None:
        if not lr >= 0:
            raise ValueError(f"train_step: lr must be >= 0, got {lr}")
        for group in optimizer.param_groups:
            group["lr"] = lr
    optimizer.zero_grad()
    device_type = torch.device(device).type
    autocast = (
        torch.autocast(device_type=device_type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    counted = int((target_batch != ignore_index).sum())
    _, world_size = world()
    if world_size > 1:
        total = _distributed_backward(
            model, input_batch, target_batch, device, counted, world_size,
            accumulation_steps, autocast, ignore_index,
        )  # fmt: skip
    elif accumulation_steps == 1:
        with autocast:
            loss = calc_loss_batch(
                input_batch, target_batch, model, device, ignore_index=ignore_index
            )
        loss.backward()
        total = loss.item()
    else:
        total = 0.0
        for x, y in zip(
            torch.tensor_split(input_batch, accumulation_steps),
            torch.tensor_split(target_batch, accumulation_steps),
            strict=True,
        ):
            share = int((y != ignore_index).sum())
            if share == 0:
                continue
            with autocast:
                micro = calc_loss_batch(x, y, model, device, ignore_index=ignore_index)
            weighted = micro * (share / counted)
            weighted.backward()
            total += weighted.item()
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


def _distributed_backward(
    model, input_batch, target_batch, device, counted, world_size, accumulation_steps,
    autocast, ignore_index,
) -> float:  # fmt: skip
    """One rank's share of a data-parallel step's backward pass -> the global mean loss."""
    global_counted = all_reduce_sum([counted])[0]
    scale = world_size / global_counted if global_counted else 0.0
    micros = list(
        zip(
            torch.tensor_split(input_batch, accumulation_steps),
            torch.tensor_split(target_batch, accumulation_steps),
            strict=True,
        )
    )
    total = 0.0
    for i, (x, y) in enumerate(micros):
        last = i == len(micros) - 1
        no_sync = getattr(model, "no_sync", None)
        sync = contextlib.nullcontext() if last or no_sync is None else no_sync()
        with sync:
            with autocast:
                logits = model(x.to(device, non_blocking=True))
                loss_sum = F.cross_entropy(
                    logits.flatten(0, 1),
                    y.to(device, non_blocking=True).flatten(),
                    ignore_index=ignore_index,
                    reduction="sum",
                )
            weighted = loss_sum * scale  # DDP averages over ranks: sum / global count
            weighted.backward()
        total += weighted.item()
    if not global_counted:
        return math.nan
    return all_reduce_sum([total])[0] / world_size


def evaluate(
    model: nn.Module,
    train_loader,
    val_loader,
    device: torch.device | str,
    eval_iter: int,
    *,
    weighting: str = "batch",
) -> tuple[float, float]:
    """-> (train loss, val loss) over ``eval_iter`` batches each: the book's ``evaluate_model``.

    Runs in eval mode under ``no_grad`` and restores the mode the model was in. Inside a
    process group each rank evaluates its own loaders (its shards) and the losses are
    all-reduced: the mean over all ranks' batches ("batch") or targets ("token").
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            train_loss, val_loss = (
                _reduced_loss(loader, model, device, eval_iter, weighting)
                for loader in (train_loader, val_loader)
            )
    finally:
        model.train(was_training)
    return train_loss, val_loss


def _reduced_loss(loader, model, device, eval_iter: int, weighting: str) -> float:
    loss = calc_loss_loader(loader, model, device, num_batches=eval_iter, weighting=weighting)
    _, world_size = world()
    if world_size == 1:
        return loss
    if weighting == "batch":  # calc_loss_loader's own count: the loader is sized
        weight = float(min(eval_iter, len(loader)))
    else:  # the targets alone: no forward pass
        batches = itertools.islice(loader, eval_iter)
        weight = float(sum(int((y != -100).sum()) for _, y in batches))
    total, weight = all_reduce_sum([loss * weight if weight else 0.0, weight])
    return total / weight if weight else math.nan


def is_seeded(loader) -> bool:
    """Whether ``loader`` orders its batches by ``batch_order`` (``create_dataloader(seed=...)``)."""
    return hasattr(getattr(loader, "batch_sampler", None), "set_epoch")


@contextlib.contextmanager
def isolated_rng() -> Iterator[None]:
    """Restore the torch CPU (and CUDA) RNG states on exit: the block cannot perturb them."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def train(
    model: nn.Module,
    train_loader,
    val_loader,
    optimizer: torch.optim.Optimizer,
    device: torch.device | str,
    *,
    num_epochs: int,
    eval_freq: int,
    eval_iter: int,
    start_context: str | None = None,
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
    config: Any = None,
    resume_from: str | Path | None = None,
    callback: Callable[[dict[str, Any]], bool | None] | None = None,
    log: Callable[[str], None] | None = print,
) -> History:
    """Mutates ``model`` and ``optimizer``: the book's training loop -> ``History``.

    Per batch: ``lr = schedule(global_step)`` if a schedule is given (appendix D sets it
    before the forward pass), one ``train_step`` (clipping to ``grad_clip`` once
    ``global_step >= clip_from_step``), ``tokens_seen += input_batch.numel()``, and an
    evaluation after the update when ``global_step % eval_freq == 0``. After each epoch,
    a greedy 50-token sample from ``start_context`` (eval mode, then back to train).

    RNG: with book-mode loaders the global RNG is drawn from exactly where the book's
    loop draws (each loader pass, dropout), so the book's numbers reproduce. With a
    seeded training loader, ``train`` calls ``set_epoch(epoch)`` on it and runs every
    evaluation and sample under ``isolated_rng()``: batches and dropout masks no longer
    depend on ``eval_freq`` / ``eval_iter``.

    ``checkpoint_dir`` + ``checkpoint_every``: save every that many steps and at the end;
    ``resume_from`` continues a run bitwise (model, optimizer, RNG, position in the epoch).
    ``callback(info)`` runs after every step; returning True stops training (after a
    checkpoint when ``checkpoint_dir`` is set).
    """
    for name, value in (
        ("num_epochs", num_epochs),
        ("eval_freq", eval_freq),
        ("eval_iter", eval_iter),
    ):
        if value < 1:
            raise ValueError(f"train: {name} must be >= 1, got {value}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"train: max_steps must be >= 1 or None, got {max_steps}")
    if checkpoint_every is not None and (checkpoint_every < 1 or checkpoint_dir is None):
        raise ValueError(
            f"train: checkpoint_every={checkpoint_every} needs checkpoint_dir and a value >= 1"
        )
    seeded = is_seeded(train_loader)
    quiet = isolated_rng if seeded else contextlib.nullcontext
    rank, world_size = world()
    say = log if log is not None and rank == 0 else (lambda _msg: None)

    history = History()
    position = _Position()
    if resume_from is not None:
        history, position = _resume(resume_from, model, optimizer)

    def save() -> None:
        if checkpoint_dir is not None:
            _save(checkpoint_dir, model, optimizer, config, history, position)

    for epoch in range(position.epoch, num_epochs):
        if seeded:
            train_loader.batch_sampler.set_epoch(epoch)
        model.train()
        if position.batch_in_epoch == 0:
            position.epoch_rng = torch.get_rng_state()
        position.epoch = epoch
        for input_batch, target_batch in _epoch_batches(train_loader, position):
            step = position.global_step + 1
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
            )
            position.global_step = step
            position.batch_in_epoch += 1
            position.tokens_seen += result.tokens * world_size  # every rank's batch
            history.lrs.append(result.lr)
            history.step_losses.append(result.loss)
            if step % eval_freq == 0:
                with quiet():
                    train_loss, val_loss = evaluate(
                        model, train_loader, val_loader, device, eval_iter, weighting=eval_weighting
                    )
                history.train_losses.append(train_loss)
                history.val_losses.append(val_loss)
                history.tokens_seen.append(position.tokens_seen)
                history.steps.append(step)
                history.epochs.append(epoch + 1)
                say(
                    f"Ep {epoch + 1} (Step {step:06d}): "
                    f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}"
                )
            info = {"step": step, "epoch": epoch, "result": result, "history": history}
            stop = bool(callback(info)) if callback is not None else False
            if world_size > 1:  # one rank's Ctrl-C stops all of them at the same step
                stop = all_reduce_sum([stop])[0] > 0
            if stop or (max_steps is not None and step + 1 >= max_steps):
                save()
                return history
            if checkpoint_every is not None and (step + 1) % checkpoint_every == 0:
                save()
        position.epoch, position.batch_in_epoch = epoch + 1, 0
        if start_context is not None and rank == 0:
            with quiet():
                history.samples.append(_sample(model, start_context, tokenizer, device))
            say(history.samples[-1].replace("\n", " "))
    save()
    return history


@dataclass
class _Position:
    """Where a run stands: enough to continue it exactly."""

    global_step: int = -1  # the book counts from -1: the first update is step 0
    epoch: int = 0
    batch_in_epoch: int = 0  # updates already done in ``epoch``
    tokens_seen: int = 0
    epoch_rng: torch.Tensor | None = None  # global RNG state when the epoch's pass began


def _epoch_batches(loader, position: _Position) -> Iterator:
    """Start the epoch's pass over ``loader``; when resuming mid-epoch, replay the pass from
    the RNG state it began with (so a book-mode loader draws the same order), skip the
    batches already trained on, and put the RNG back where the run stood."""
    if position.batch_in_epoch == 0:
        return iter(loader)
    now = torch.get_rng_state()
    torch.set_rng_state(position.epoch_rng)
    it = iter(loader)
    for _ in range(position.batch_in_epoch):
        next(it)
    torch.set_rng_state(now)
    return it


def _sample(model: nn.Module, start_context: str, tokenizer, device) -> str:
    """The book's ``generate_and_print_sample``: 50 greedy tokens, eval mode, back to train."""
    from gptref.generate import generate_text_simple
    from gptref.tokenizer import text_to_token_ids, token_ids_to_text

    was_training = model.training
    model.eval()
    model = unwrap(model)
    context_size = model.pos_emb.weight.shape[0]
    encoded = text_to_token_ids(start_context, tokenizer).to(device)
    with torch.no_grad():
        ids = generate_text_simple(model, encoded, max_new_tokens=50, context_size=context_size)
    model.train(was_training)
    return token_ids_to_text(ids, tokenizer)


def _save(directory, model, optimizer, config, history: History, position: _Position) -> None:
    """Every rank calls this; rank 0 writes (with every rank's RNG state in a process group)."""
    from gptref.checkpoint import capture_rng, save_checkpoint

    epoch_rng = position.epoch_rng if position.epoch_rng is not None else torch.get_rng_state()
    extra: dict[str, Any] = {"tokens_seen": position.tokens_seen, "epoch_rng": epoch_rng}
    rank, world_size = world()
    if world_size > 1:
        ranks = gather_objects({"rng": capture_rng(), "epoch_rng": epoch_rng})
        extra.update(world_size=world_size, ranks=ranks)
    if rank == 0:
        model = unwrap(model)
        save_checkpoint(
            directory,
            model,
            optimizer,
            step=position.global_step + 1,  # updates done
            epoch=position.epoch,
            batch_in_epoch=position.batch_in_epoch,
            config=config if config is not None else getattr(model, "cfg", {}),
            history=history.to_dict(),
            extra=extra,
        )
    barrier()  # no rank goes on (or exits) before the checkpoint is complete


def _resume(path, model, optimizer) -> tuple[History, _Position]:
    from gptref.checkpoint import load_checkpoint, restore_rng

    state = load_checkpoint(path, unwrap(model), optimizer)
    extra = state["extra"]
    rank, world_size = world()
    saved = extra.get("world_size", 1)
    if saved != world_size:
        raise ValueError(
            f"resume: {path} was written by a run of {saved} process(es), this one has "
            f"{world_size}; resume it with torchrun --nproc_per_node={saved} (batches and RNG "
            "streams are per rank)"
        )
    mine = (
        extra["ranks"][rank] if world_size > 1 else {"rng": state, "epoch_rng": extra["epoch_rng"]}
    )
    restore_rng(mine["rng"])
    position = _Position(
        global_step=state["step"] - 1,
        epoch=state["epoch"],
        batch_in_epoch=state["batch_in_epoch"],
        tokens_seen=extra["tokens_seen"],
        epoch_rng=mine["epoch_rng"],
    )
    return History.from_dict(state["history"]), position
