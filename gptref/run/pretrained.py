"""``load_model(path)``: the trained model of a run, from whichever of its folders a user has.

``gptref train`` writes ``RUN/checkpoint/save-SSSSSSSS-NNNN/model.safetensors``; a user may
hold the run directory, its ``checkpoint/`` or that snapshot folder (the one with the
weights, often the first a file browser shows). All three load, the way Hugging Face's
``from_pretrained`` takes a folder: ``gptref.load_model("runs/NAME")``.
"""

from __future__ import annotations

import os

import torch

from gptref.model import GPTModel


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> GPTModel:
    """A run directory, its ``checkpoint/`` or a ``checkpoint/save-*`` snapshot -> the model
    (``GPTModel``, float32 weights) in eval mode on ``device`` ("cpu", "cuda", "auto": cuda
    when available). The run and checkpoint folders give the newest complete snapshot, a
    snapshot folder that snapshot; every file is verified against its manifest first.
    (``gptref.run.rundir.load_model`` also returns the run's record.)"""
    from gptref.run.rundir import load_model as load

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model, _ = load(path, torch.device(device))
    return model
