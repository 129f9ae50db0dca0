"""A run directory, as ``gptref train`` writes it and ``eval`` / ``generate`` / ``weights``
read it::

    config.json     the run's record: {"run": RunConfig.to_dict(), "model": GPTConfig.to_dict(),
                    "data": the corpus's record (name, fingerprint, where it is), "world_size"}
    metrics.jsonl   one JSON record per evaluation (step, epoch, epochs_seen, tokens_seen,
                    train_loss, val_loss, lr), rewritten atomically as it grows
    loss.png        the book's loss figure
    checkpoint/     the latest checkpoint (``gptref.checkpoint``'s format)
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gptref._io import atomic_write_json, atomic_write_text
from gptref.checkpoint import MANIFEST, is_complete, load_checkpoint, load_config, snapshot
from gptref.config import RunConfig
from gptref.model import GPTConfig, GPTModel
from gptref.state import History

CHECKPOINT, CONFIG, METRICS, PLOT = "checkpoint", "config.json", "metrics.jsonl", "loss.png"


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


def find_checkpoint(path: str | Path) -> Path:
    """A run directory or a checkpoint directory -> the checkpoint directory."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"no checkpoint directory at {path}: no such directory")
    for candidate in (path / CHECKPOINT, path):
        with contextlib.suppress(ValueError):
            if is_complete(snapshot(candidate)):
                return candidate
    raise ValueError(
        f"{path}: no complete checkpoint there (no {MANIFEST}); it is missing, partial (an "
        "interrupted save) or not a gptref checkpoint"
    )


def load_model(path: str | Path, device: torch.device) -> tuple[GPTModel, RunRecord | None]:
    """A run or checkpoint directory -> (its model in eval mode on ``device``, the run's record
    when ``path`` is a run directory, else None)."""
    ckpt = find_checkpoint(path)
    try:
        cfg = GPTConfig.from_dict(load_config(ckpt))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{ckpt}: its config.json is not a gptref model config ({e})") from None
    model = GPTModel(cfg)
    load_checkpoint(ckpt, model)
    run_dir = ckpt.parent if ckpt.name == CHECKPOINT else None
    record = RunRecord.read(run_dir) if run_dir and (run_dir / CONFIG).is_file() else None
    return model.to(device).eval(), record


class MetricsLog:
    """``metrics.jsonl``: one JSON record per evaluation, rewritten atomically as it grows."""

    def __init__(self, path: Path, steps_per_epoch: int) -> None:
        self.path, self.steps_per_epoch, self.count = path, steps_per_epoch, -1

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
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records(history)))
        return True
