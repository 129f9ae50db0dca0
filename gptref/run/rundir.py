"""A run directory, as ``gptref train`` writes it and ``eval`` / ``generate`` / ``weights``
read it::

    config.json     the run's record: {"run": RunConfig.to_dict(), "model": GPTConfig.to_dict(),
                    "data": the corpus's record (name, fingerprint, where it is), "world_size"}
    metrics.jsonl   one JSON record per evaluation (step, epoch, epochs_seen, tokens_seen,
                    train_loss, val_loss, lr), rewritten atomically as it grows
    loss.png        the book's loss figure
    summary.json    the run's end: final losses, tokens, wall and training time, tokens/s
    checkpoint/     the checkpoints (``gptref.run.checkpoint``'s format, ``gptref.run.snapshots``' layout)
    .lock           held by the process writing the run

A new run goes only into a new or empty directory (``claim``); a running one is locked.
None of these entries may be a symbolic link (``check_parts``): gptref writes only inside
the run directory it was given (``gptref._owned``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gptref._io import atomic_write_json, atomic_write_text, exclusive
from gptref._owned import Exists, Kind, claim_dir, is_folder, no_links, read_marker, remove
from gptref.model import GPTConfig, GPTModel
from gptref.plan.memory import check_fits_memory, parameter_count
from gptref.run import snapshots
from gptref.run.checkpoint import MANIFEST, is_checkpoint, load_checkpoint, load_config, snapshot
from gptref.run.config import RunConfig
from gptref.state import History

CHECKPOINT, CONFIG, METRICS, PLOT = "checkpoint", "config.json", "metrics.jsonl", "loss.png"
LOCK, SUMMARY, TENSORBOARD = ".lock", "summary.json", "tensorboard"
PARTS = (CONFIG, METRICS, PLOT, SUMMARY, CHECKPOINT, LOCK, TENSORBOARD)  # what a run writes


@dataclass(frozen=True)
class RunRecord:
    """What a run directory's config.json holds."""

    run: RunConfig
    model: dict[str, Any]  # GPTConfig.to_dict()
    data: dict[str, Any]  # the corpus's record(): name, sha256, texts / prepared
    world_size: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run.to_dict(), "model": self.model, "data": self.data,
                "world_size": self.world_size}  # fmt: skip

    def write(self, directory: Path) -> Path:
        return atomic_write_json(directory / CONFIG, self.to_dict())

    @classmethod
    def read(cls, directory: Path) -> RunRecord:
        """The record in ``directory``/config.json; ValueError naming the file and what is wrong."""
        file = directory / CONFIG
        try:
            saved = json.loads(file.read_text(encoding="utf-8"))
            return cls(RunConfig.from_dict(saved["run"]), dict(saved["model"]),
                       dict(saved["data"]), int(saved.get("world_size", 1)))  # fmt: skip
        except FileNotFoundError:
            raise ValueError(f"{directory}: not a gptref run directory (no {CONFIG})") from None
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise ValueError(f"{file}: not a gptref run record ({type(e).__name__}: {e})") from None


def is_run(directory: Path) -> bool:
    """Whether ``directory`` holds a gptref run: a run record (config.json, a regular file
    that reads as one whole: settings, a model config, the data's SHA-256), or a gptref
    checkpoint in checkpoint/ (a folder, not a link)."""
    if read_marker(directory / CONFIG) is not None:
        with contextlib.suppress(ValueError, TypeError):
            record = RunRecord.read(directory)
            GPTConfig.from_dict(record.model)
            if re.fullmatch(r"[0-9a-f]{64}", str(record.data.get("sha256"))):
                return True
    return is_folder(directory / CHECKPOINT) and is_checkpoint(directory / CHECKPOINT)


# what a run directory is, to the ownership rule (gptref._owned)
RUN = Kind("a gptref run", is_run, lambda name: name == LOCK)


def check_parts(directory: Path) -> None:
    """Refuse (one line) a run directory where an entry gptref writes, locks or deletes is a
    symbolic link: its writes would land outside ``directory``."""
    if is_folder(directory) or directory.is_dir():
        no_links(directory, PARTS)
        if is_folder(directory / CHECKPOINT):
            no_links(directory / CHECKPOINT, [snapshots.LATEST, snapshots.LOCK])


def claim(directory: Path, *, overwrite: bool = False) -> None:
    """Make ``directory`` ready for a new run: it may be new or empty; an earlier run there is
    refused unless ``overwrite`` (then its files are removed, and only those); anything else
    is refused."""
    check_parts(directory)
    try:
        earlier = claim_dir(directory, RUN, overwrite=overwrite)
    except Exists:
        raise ValueError(
            f"{directory} holds a gptref run already; continue it with --resume {directory}, "
            "or start it over with --overwrite"
        ) from None
    if earlier:
        others = snapshots.foreign(directory / CHECKPOINT, is_checkpoint)
        if others:
            raise ValueError(
                f"{directory / CHECKPOINT} holds files gptref did not write ({', '.join(others[:3])}"
                f"{', ...' if len(others) > 3 else ''}); move them out before --overwrite"
            )
        remove(directory, (CONFIG, METRICS, PLOT, SUMMARY))
        snapshots.clear(directory / CHECKPOINT, is_checkpoint)


def locked(directory: Path) -> contextlib.AbstractContextManager:
    """Hold ``directory/.lock`` while a process writes the run: a second writer (another
    ``train`` or ``--resume`` of the same run) is refused, naming the first one's pid."""
    return exclusive(
        directory / LOCK,
        lambda owner: ValueError(f"{directory} is in use by {owner}; wait for it or stop it"),
    )


def find_checkpoint(path: str | Path) -> Path:
    """A run directory, a checkpoint directory or one snapshot of it -> the checkpoint
    directory (or that snapshot), where a save committed; ``snapshot`` of it then picks the
    newest snapshot that verifies."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"no checkpoint directory at {path}: no such directory")
    if path.is_dir():
        no_links(path, [CHECKPOINT])
    for candidate in (path / CHECKPOINT, path):
        if snapshots.has_saves(candidate):
            return candidate
    raise ValueError(
        f"{path}: no complete checkpoint there (no {MANIFEST}); it is missing, partial (an "
        "interrupted save) or not a gptref checkpoint"
    )


def load_model(path: str | Path, device: torch.device) -> tuple[GPTModel, RunRecord | None]:
    """A run directory, its checkpoint directory or one of its snapshots -> (its model in eval
    mode on ``device``, the run's record; None for a checkpoint that belongs to no run)."""
    ckpt = find_checkpoint(path)
    snap = snapshot(ckpt)
    try:
        cfg = GPTConfig.from_dict(load_config(snap))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{snap / CONFIG}: not a gptref model config ({e})") from None
    weights = 4 * parameter_count(cfg) + 4 * cfg.n_layers * cfg.context_length**2  # + masks
    check_fits_memory(2 * weights, f"{ckpt}: its model ({parameter_count(cfg):,} parameters)",
                      "is its config.json right?")  # fmt: skip
    model = GPTModel(cfg)
    load_checkpoint(snap, model)
    run_dir = run_of(ckpt)
    record = RunRecord.read(run_dir) if run_dir is not None else None
    return model.to(device).eval(), record


def run_of(checkpoint: Path) -> Path | None:
    """The run directory a checkpoint directory (``RUN/checkpoint``) or one of its snapshots
    (``RUN/checkpoint/save-*``) belongs to: the one with a run record there; else None."""
    folder = Path(os.path.abspath(checkpoint))  # "." too; symlinks as they are
    for run in (folder.parent, folder.parent.parent):
        if run / CHECKPOINT in (folder, folder.parent) and (run / CONFIG).is_file():
            return run
    return None


class MetricsLog:
    """``metrics.jsonl``: one JSON record per evaluation, rewritten atomically as it grows."""

    def __init__(self, path: Path, steps_per_epoch: int, tensorboard: Path | None = None) -> None:
        """``tensorboard``: also write each new record's losses and lr there as TensorBoard
        scalars (``pip install 'gptref[tensorboard]'``), at the step they were taken."""
        self.path, self.steps_per_epoch, self.count = path, steps_per_epoch, -1
        self.tensorboard, self.writer, self.logged = tensorboard, None, 0

    def records(self, history: History) -> list[dict[str, Any]]:
        return [
            {
                "step": step,
                "epoch": epoch,
                "epochs_seen": (step + 1) / self.steps_per_epoch,
                "tokens_seen": tokens,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "lr": history.lrs[step],
            }
            for step, epoch, tokens, train_loss, val_loss in zip(
                history.steps, history.epochs, history.tokens_seen,
                history.train_losses, history.val_losses, strict=True,
            )
        ]  # fmt: skip

    def update(self, history: History) -> bool:
        """Write the file if there are new evaluations -> whether there were."""
        if len(history.steps) == self.count:
            return False
        self.count = len(history.steps)
        records = self.records(history)
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in records))
        if self.tensorboard is not None:
            self._scalars(records)
        return True

    def _scalars(self, records: list[dict[str, Any]]) -> None:
        if self.writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ValueError(
                    "--tensorboard needs the tensorboard package: pip install 'gptref[tensorboard]'"
                ) from None
            # a resumed run rewrites its history: events past its first record are replaced
            first = records[0]["step"] if records else 0
            self.writer = SummaryWriter(str(self.tensorboard), purge_step=first)
        for record in records[self.logged :]:
            for name in ("train_loss", "val_loss", "lr", "tokens_seen"):
                self.writer.add_scalar(name, record[name], record["step"])
        self.logged = len(records)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
