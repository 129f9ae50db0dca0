"""The book's ``.pth`` files: ``torch.save(model.state_dict(), "model.pth")`` and chapter 5's
``{"model_state_dict": ..., "optimizer_state_dict": ...}``, read and written in both
directions (``torch.load(weights_only=True)`` on the way in)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gptref._check import one_line
from gptref._io import atomic_write
from gptref.run.checkpoint import check_fits


def save_state_dict(
    path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> Path:
    """Write the book's ``.pth`` atomically -> Path: ``model.state_dict()``, or with an
    optimizer chapter 5's ``{"model_state_dict": ..., "optimizer_state_dict": ...}``.

    The book loads it with ``model.load_state_dict(torch.load(path, weights_only=True))``
    (resp. ``checkpoint["model_state_dict"]``)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"save_state_dict: {path} is a directory; give a file name like model.pth")
    obj: Any = model.state_dict()
    if optimizer is not None:
        obj = {"model_state_dict": obj, "optimizer_state_dict": optimizer.state_dict()}
    return atomic_write(path, lambda file: torch.save(obj, file))


def load_state_dict(
    path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> None:
    """Load a book-format ``.pth`` (a state dict, or chapter 5's ``{"model_state_dict",
    "optimizer_state_dict"}``) into ``model`` (and ``optimizer``), with ``weights_only=True``."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(
            f"load_state_dict: {path} is a directory; for a gptref checkpoint use load_checkpoint"
        )
    if not path.is_file():
        raise ValueError(f"load_state_dict: no file at {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"load_state_dict: {path} is not a weights-only torch file: {one_line(e, kind=True)}"
        ) from e
    optim_state = None
    if isinstance(obj, Mapping) and "model_state_dict" in obj:
        obj, optim_state = obj["model_state_dict"], obj.get("optimizer_state_dict")
    if not isinstance(obj, Mapping):
        raise ValueError(f"load_state_dict: {path} holds a {type(obj).__name__}, not a state dict")
    if optimizer is not None and optim_state is None:
        raise ValueError(
            f"load_state_dict: {path} has no optimizer_state_dict; load without an optimizer"
        )
    check_fits(f"load_state_dict: {path}", model, obj)
    if optimizer is not None:
        optimizer.load_state_dict(optim_state)
    model.load_state_dict(obj)
