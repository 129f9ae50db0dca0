"""``TrainState`` and ``History``: where a run of ``train`` stands and what it has recorded.

A run can stop after any step and continue bitwise: the state holds the position (global
step, epoch, batches done in the epoch, tokens seen), the ``History`` and the global RNG
state at the start of the epoch, from which a book-mode loader's shuffled order is drawn
again on resume. Writing it to disk and reading it back is ``gptref.run.resume``'s.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import torch


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
