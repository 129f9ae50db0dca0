"""Fixture models: what the suite feeds the loss, train_step and generate functions.

The contract under test is the functions, not the model: any callable ``ids int64 (b, T) ->
logits float32 (b, T, vocab)`` will do. ``gpt`` builds a tiny GPT: the adapter's
``make_model(config)`` (or its ``GPTModel`` class, which takes the book's config dict) when it
has one, else gptref's ``GPTModel`` (the book's architecture).
Every model here knows the code that rebuilds it, so failure messages can show it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from gptref.conformance.repro import source, tagged


class FixedLogits(nn.Module):
    """Returns the given logits (b, T, V) for any ids of shape (b, T)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits
        tagged(self, f"models.FixedLogits({source(logits)})")

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.shape != self.logits.shape[:2]:
            raise ValueError(
                f"FixedLogits: ids {tuple(ids.shape)}, logits {tuple(self.logits.shape)}"
            )
        return self.logits


class ConstantLogits(nn.Module):
    """The same logit vector (V,) at every position of any ids (b, T)."""

    def __init__(self, row: torch.Tensor) -> None:
        super().__init__()
        self.row = row
        tagged(self, f"models.ConstantLogits({source(row)})")

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.row.expand(*ids.shape, -1)


class BagOfTokens(nn.Module):
    """ids int (b, T) -> logits float32 (b, T, vocab): position t scores the mean of a fixed
    random table's rows for tokens 0..t, so every token in the window moves the logits, and
    rows never interact. Records each call's input and last-position logits."""

    def __init__(self, vocab_size: int = 11, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("table", 3 * torch.randn(vocab_size, vocab_size, generator=g))
        self.inputs: list[torch.Tensor] = []
        self.last_logits: list[torch.Tensor] = []
        tagged(self, f"models.BagOfTokens(vocab_size={vocab_size}, seed={seed})")

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.table[ids]  # (b, T, vocab)
        counts = torch.arange(1, ids.shape[1] + 1, dtype=rows.dtype)[:, None]  # (T, 1)
        logits = rows.cumsum(1) / counts
        self.inputs.append(ids.clone())
        self.last_logits.append(logits[:, -1].clone())
        return logits


class ProbeGPT(nn.Module):
    """ids int64 (b, T <= context_length) -> logits float32 (b, T, vocab): token plus position
    embeddings, dropout, a linear head; ``scale`` multiplies the head's initial weights (large
    gradients, so that clipping shows). It has the book model's ``pos_emb`` (the book's
    per-epoch sample reads the context length off it) and records, per forward call,
    ``(model.training, torch.is_grad_enabled(), ids.shape)`` in ``calls`` and an ``Event`` in
    ``events`` (with the ids and ``phase``, a label its caller may set: what the call is for)."""

    def __init__(
        self, vocab_size: int = 13, context_length: int = 6, emb_dim: int = 8,
        drop_rate: float = 0.5, seed: int = 0, scale: float = 1.0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, emb_dim)
        self.pos_emb = nn.Embedding(context_length, emb_dim)
        self.drop = nn.Dropout(drop_rate)
        self.out_head = nn.Linear(emb_dim, vocab_size, bias=False)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
            self.out_head.weight.mul_(scale)
        self.calls: list[tuple[bool, bool, tuple[int, ...]]] = []
        self.events: list[Event] = []
        self.phase = ""
        args = f"vocab_size={vocab_size}, context_length={context_length}, emb_dim={emb_dim}, drop_rate={drop_rate}, seed={seed}, scale={scale}"  # fmt: skip
        tagged(self, f"models.ProbeGPT({args})")

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        call = (self.training, torch.is_grad_enabled(), tuple(ids.shape))
        self.calls.append(call)
        self.events.append(Event("forward", call, ids.detach().tolist(), self.phase))
        positions = torch.arange(ids.shape[1], device=ids.device)
        return self.out_head(self.drop(self.tok_emb(ids) + self.pos_emb(positions)))

    def record_steps(self, optimizer: torch.optim.Optimizer) -> None:
        """Record an Event for each ``optimizer.step()``: every param group's lr and the total
        gradient norm (float64) the step applies, i.e. after any clipping."""

        def before_step(opt, args, kwargs) -> None:
            grads = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]  # fmt: skip
            norm = float(sum(float((g.double() ** 2).sum()) for g in grads) ** 0.5)
            lrs = tuple(float(group["lr"]) for group in opt.param_groups)
            self.events.append(Event("step", lrs, norm, self.phase))

        optimizer.register_step_pre_hook(before_step)


@dataclass(frozen=True)
class Event:
    """One thing a training loop did to a ProbeGPT: a forward call (``what``: (training, grad
    enabled, shape); ``data``: the ids) or an optimizer step (``what``: the lrs; ``data``: the
    gradient norm it applied); ``phase``: what the caller said it was for."""

    kind: str
    what: Any
    data: Any
    phase: str = ""


def book_loaders(
    seed: int, n_train: int, n_val: int, length: int, batch_size: int, vocab_size: int
) -> tuple[DataLoader, DataLoader, list[str]]:
    """The book's loaders over random (inputs, targets) pairs of ``length`` ids drawn from
    ``seed``: (train_loader (shuffled, drop_last), val_loader, the setup lines that rebuild
    them). The training loader's shuffle draws the global RNG, as the book's does."""
    g = torch.Generator().manual_seed(seed)

    def pairs(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        ids = torch.randint(0, vocab_size, (n, length + 1), generator=g)
        return [(row[:-1].clone(), row[1:].clone()) for row in ids]

    train, val = pairs(n_train), pairs(n_val)
    b = batch_size
    setup = [
        f"train_loader = torch.utils.data.DataLoader({source(train)}, batch_size={b}, shuffle=True, drop_last=True)",  # fmt: skip
        f"val_loader = torch.utils.data.DataLoader({source(val)}, batch_size={b}, shuffle=False, drop_last=False)",  # fmt: skip
    ]
    train_loader = DataLoader(train, batch_size=b, shuffle=True, drop_last=True)
    return train_loader, DataLoader(val, batch_size=b, shuffle=False, drop_last=False), setup


def gpt(
    config: Mapping[str, Any],
    seed: int = 123,
    make_model: Callable[[dict[str, Any]], nn.Module] | None = None,
) -> nn.Module:
    """A GPT seeded with ``torch.manual_seed(seed)``, in eval mode. ``config``: the book's dict
    (gptref's ``GPTConfig.to_dict()`` keys are accepted too). ``make_model``: the adapter's."""
    torch.manual_seed(seed)
    if make_model is not None:
        book_keys = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "drop_rate", "qkv_bias")  # fmt: skip
        model = make_model({k: config[k] for k in book_keys})
        name = getattr(make_model, "__name__", "make_model")  # make_model, or the GPTModel class
        code = f"models.gpt({dict(config)!r}, seed={seed}, make_model=impl.{name})"
    else:
        from gptref.model import GPTModel

        model = GPTModel(dict(config))
        code = f"models.gpt({dict(config)!r}, seed={seed})"
    return tagged(model.eval(), code)
