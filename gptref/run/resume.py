"""``train`` with checkpoints: a ``TrainState`` saved to a checkpoint directory and resumed
from it exactly (``save_state``, ``resume_state``), and ``train_checkpointed``, the core's
loop with saving and resuming around it (the core's ``train`` knows nothing of files).

The checkpoint on disk is ``gptref.run.checkpoint``'s format; every rank's RNG is kept, so a
data-parallel run resumes at the same world size. Saving draws no random numbers, so a run
resumed from any of its checkpoints ends as the uninterrupted run does, bitwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gptref._check import check_int
from gptref.fast.distributed import DistContext
from gptref.loop import train
from gptref.model import unwrap
from gptref.rng import capture_rng, restore_rng
from gptref.run.checkpoint import load_checkpoint, save_checkpoint
from gptref.state import History, TrainState
from gptref.step import NonFiniteError


def check_finite_weights(model: nn.Module, when: str) -> None:
    """Raise ``NonFiniteError`` when a parameter of ``model`` holds nan or inf."""
    bad = [name for name, p in unwrap(model).named_parameters() if not bool(p.isfinite().all())]
    if bad:
        raise NonFiniteError(
            f"the weights are not finite {when} ({len(bad)} tensors, e.g. {bad[0]}): training "
            "diverged; the last checkpoint is kept: lower the lr (or the weight decay), or "
            "clip the gradients"
        )


def save_state(
    state: TrainState,
    directory: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    group: DistContext | None = None,
) -> None:
    """Checkpoint the run to ``directory``. Every rank calls this; rank 0 writes, with every
    rank's RNG state; no rank goes on before the checkpoint is complete. Weights that are
    not finite are never saved: ``NonFiniteError``, the last checkpoint stays."""
    check_finite_weights(model, f"after step {state.global_step}")
    epoch_rng = state.epoch_rng if state.epoch_rng is not None else torch.get_rng_state()
    extra: dict[str, Any] = {"tokens_seen": state.tokens_seen, "epoch_rng": epoch_rng}
    rank, world_size = (0, 1) if group is None else (group.rank, group.world_size)
    if world_size > 1:
        extra.update(world_size=world_size,
                     ranks=group.gather({"rng": capture_rng(), "epoch_rng": epoch_rng}))  # fmt: skip
    if rank == 0:
        model = unwrap(model)
        save_checkpoint(
            directory,
            model,
            optimizer,
            step=state.global_step + 1,  # updates done
            epoch=state.epoch,
            batch_in_epoch=state.batch_in_epoch,
            config=getattr(model, "cfg", {}),  # the model config: what rebuilds the model
            history=state.history.to_dict(),
            extra=extra,
        )
    if group is not None:
        group.barrier()


def resume_state(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    group: DistContext | None = None,
) -> TrainState:
    """Load the checkpoint at ``path`` into ``model`` and ``optimizer``, restore this rank's
    RNG -> the state to continue from. Another world size than the run's is refused."""
    saved_state = load_checkpoint(path, unwrap(model), optimizer)
    extra = saved_state["extra"]
    rank, world_size = (0, 1) if group is None else (group.rank, group.world_size)
    saved = extra.get("world_size", 1)
    if saved != world_size:
        raise ValueError(
            f"resume: {path} was written by a run of {saved} process(es), this one has "
            f"{world_size}; resume it with torchrun --nproc_per_node={saved} (batches and "
            "RNG streams are per rank)"
        )
    if world_size > 1:
        mine = extra["ranks"][rank]
    else:
        mine = {"rng": saved_state, "epoch_rng": extra["epoch_rng"]}
    restore_rng(mine["rng"])
    return TrainState(
        history=History.from_dict(saved_state["history"]),
        global_step=saved_state["step"] - 1,
        epoch=saved_state["epoch"],
        batch_in_epoch=saved_state["batch_in_epoch"],
        tokens_seen=extra["tokens_seen"],
        epoch_rng=mine["epoch_rng"],
    )


def train_checkpointed(
    model: nn.Module,
    train_loader,
    val_loader,
    optimizer: torch.optim.Optimizer,
    device: torch.device | str,
    *,
    checkpoint_dir: str | Path | None,
    checkpoint_every: int | None = None,
    checkpoint_seconds: float | None = None,
    resume_from: str | Path | None = None,
    callback: Callable[[dict[str, Any]], bool | None] | None = None,
    group: DistContext | None = None,
    **train_args: Any,
) -> History:
    """Mutates ``model`` and ``optimizer``: ``gptref.train`` (``train_args`` are its own), with
    a checkpoint in ``checkpoint_dir`` at the end and when the run stops (``callback``
    returned True, or ``max_steps``); with ``checkpoint_every`` also every that many steps,
    with ``checkpoint_seconds`` also at an evaluation when that many seconds passed since
    the last save. ``resume_from`` continues a run (model, optimizer, RNG, position in the
    epoch) from a checkpoint ``save_state`` wrote. Nothing is saved when training raises
    (a diverged run keeps its last good checkpoint); ``checkpoint_dir=None`` saves nothing
    (a resumed run that is not saved again)."""
    if checkpoint_every is not None:
        check_int("train", "checkpoint_every", checkpoint_every, low=1, hint=" or None")
        if checkpoint_dir is None:
            raise ValueError("train: checkpoint_every needs a checkpoint_dir")
    state = TrainState() if resume_from is None else resume_state(resume_from, model, optimizer,
                                                                  group)  # fmt: skip
    world_size = 1 if group is None else group.world_size
    last_save = [time.monotonic()]

    def save() -> None:
        if checkpoint_dir is not None:
            save_state(state, checkpoint_dir, model, optimizer, group)
            last_save[0] = time.monotonic()

    def any_rank(flag: bool) -> bool:
        """The same answer on every rank: whether any rank's ``flag`` is set."""
        if world_size == 1:
            return flag
        return bool(group.all_reduce_sum(torch.tensor([float(flag)]))[0] > 0)

    def due(step: int, evaluated: bool) -> bool:
        if checkpoint_dir is None:
            return False
        if checkpoint_every is not None and (step + 1) % checkpoint_every == 0:
            return True
        if checkpoint_seconds is None or not evaluated:
            return False
        return any_rank(time.monotonic() - last_save[0] >= checkpoint_seconds)

    def on_step(info: dict[str, Any]) -> bool:
        stop = any_rank(bool(callback(info)) if callback is not None else False)
        if not stop and not info["last"] and due(info["step"], info["evaluated"]):
            save()
        return stop

    before = state.global_step
    history = train(model, train_loader, val_loader, optimizer, device, state=state,
                    callback=on_step, group=group, **train_args)  # fmt: skip
    if resume_from is None or state.global_step != before:  # a finished run resumed: as saved
        save()
    return history
