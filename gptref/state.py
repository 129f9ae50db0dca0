"""``TrainState``: where a run stands and what it has recorded, saved and resumed exactly.

A run can stop after any step and continue bitwise: the state holds the position (global
step, epoch, batches done in the epoch, tokens seen), the ``History`` and the global RNG
state at the start of the epoch, from which a book-mode loader's shuffled order is drawn
again on resume. The checkpoint on disk is ``gptref.checkpoint``'s format; every rank's RNG
is kept, so a data-parallel run resumes at the same world size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gptref.checkpoint import load_checkpoint, save_checkpoint
from gptref.distributed import DistContext, barrier, gather_objects, rank_and_size
from gptref.fast import unwrap
from gptref.rng import capture_rng, restore_rng
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

    def record_evaluation(
        self, step: int, epoch: int, tokens_seen: int, train_loss: float, val_loss: float
    ) -> None:
        """Append one evaluation: after ``step`` (global), in ``epoch`` (1-based)."""
        self.train_losses.append(train_loss)
        self.val_losses.append(val_loss)
        self.tokens_seen.append(tokens_seen)
        self.steps.append(step)
        self.epochs.append(epoch)

    def to_dict(self) -> dict[str, list]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, list]) -> History:
        return cls(**{k: list(v) for k, v in d.items()})


@dataclass
class TrainState:
    """Where a run stands: enough, with the model and optimizer, to continue it exactly."""

    history: History = field(default_factory=History)
    global_step: int = -1  # the book counts from -1: the first update is step 0
    epoch: int = 0  # the epoch in progress, 0-based
    batch_in_epoch: int = 0  # updates already done in ``epoch``
    tokens_seen: int = 0
    epoch_rng: torch.Tensor | None = None  # global RNG state when the epoch's pass began

    def begin_epoch(self, epoch: int) -> None:
        """Enter ``epoch``; a fresh epoch records the RNG state its loader pass starts from."""
        if self.batch_in_epoch == 0:
            self.epoch_rng = torch.get_rng_state()
        self.epoch = epoch

    def end_epoch(self) -> None:
        self.epoch, self.batch_in_epoch = self.epoch + 1, 0

    def epoch_batches(self, loader) -> Iterator:
        """Start the epoch's pass over ``loader``; when resuming mid-epoch, replay the pass
        from the RNG state it began with (so a book-mode loader draws the same order), skip
        the batches already trained on, and put the RNG back where the run stood."""
        if self.batch_in_epoch == 0:
            return iter(loader)
        now = torch.get_rng_state()
        torch.set_rng_state(self.epoch_rng)
        it = iter(loader)
        for _ in range(self.batch_in_epoch):
            next(it)
        torch.set_rng_state(now)
        return it

    def step_done(self, tokens: int) -> int:
        """Count one update of ``tokens`` input tokens (every rank's) -> its global step."""
        self.global_step += 1
        self.batch_in_epoch += 1
        self.tokens_seen += tokens
        return self.global_step

    def save(
        self,
        directory: str | Path,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        group: DistContext | None = None,
    ) -> None:
        """Checkpoint the run to ``directory``. Every rank calls this; rank 0 writes, with
        every rank's RNG state; no rank goes on before the checkpoint is complete. Weights
        that are not finite are never saved: ``NonFiniteError``, the last checkpoint stays."""
        check_finite_weights(model, f"after step {self.global_step}")
        epoch_rng = self.epoch_rng if self.epoch_rng is not None else torch.get_rng_state()
        extra: dict[str, Any] = {"tokens_seen": self.tokens_seen, "epoch_rng": epoch_rng}
        rank, world_size = rank_and_size(group)
        if world_size > 1:
            ranks = gather_objects({"rng": capture_rng(), "epoch_rng": epoch_rng}, group)
            extra.update(world_size=world_size, ranks=ranks)
        if rank == 0:
            model = unwrap(model)
            save_checkpoint(
                directory,
                model,
                optimizer,
                step=self.global_step + 1,  # updates done
                epoch=self.epoch,
                batch_in_epoch=self.batch_in_epoch,
                config=getattr(model, "cfg", {}),  # the model config: what rebuilds the model
                history=self.history.to_dict(),
                extra=extra,
            )
        barrier(group)

    @classmethod
    def resume(
        cls,
        path: str | Path,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        group: DistContext | None = None,
    ) -> TrainState:
        """Load the checkpoint at ``path`` into ``model`` and ``optimizer``, restore this rank's
        RNG -> the state to continue from. Another world size than the run's is refused."""
        state = load_checkpoint(path, unwrap(model), optimizer)
        extra = state["extra"]
        rank, world_size = rank_and_size(group)
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
            mine = {"rng": state, "epoch_rng": extra["epoch_rng"]}
        restore_rng(mine["rng"])
        return cls(
            history=History.from_dict(state["history"]),
            global_step=state["step"] - 1,
            epoch=state["epoch"],
            batch_in_epoch=state["batch_in_epoch"],
            tokens_seen=extra["tokens_seen"],
            epoch_rng=mine["epoch_rng"],
        )
