"""``gptref eval``: loss (batch- and token-weighted) and perplexity of a checkpoint."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gptref._setting import setting
from gptref.commands.common import Device, checkpoint_flag, device_flag

NAME = "eval"
HELP = "loss and perplexity of a checkpoint"
DESCRIPTION = (
    "Loss (batch- and token-weighted) and perplexity of a checkpoint, on --text files or on "
    "its run's own splits."
)


@dataclasses.dataclass(frozen=True)
class Args:
    checkpoint: str = checkpoint_flag()
    text: tuple[str, ...] | None = setting(None, "evaluate on these files instead", metavar="FILE")
    device: Device = device_flag()
    json: bool = setting(False, "print JSON")


def main(args: Args) -> int:
    results = eval_run(args.checkpoint, texts=args.text, device=args.device)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for name, r in results.items():
        print(
            f"{name}: loss {r['loss_token_weighted']:.4f} (token-weighted), "
            f"{r['loss_batch_weighted']:.4f} (batch-weighted, the book's), "
            f"perplexity {r['perplexity']:,.2f}, {r['batches']} batches"
        )
    return 0


def eval_run(
    checkpoint: str | Path, *, texts: Sequence[str | Path] | None = None, device: str = "auto"
) -> dict[str, Any]:
    """Loss (batch- and token-weighted) and perplexity of a checkpoint: on ``texts`` (every
    window, stride = context), or else on the training and validation splits of its run, in
    batches of the run's ``batch_size`` (``RunConfig``'s default for ``texts``)."""
    import torch

    from gptref.commands.common import resolve_device, run_loaders
    from gptref.config import RunConfig
    from gptref.data import tokenize
    from gptref.loader import create_dataloader
    from gptref.loss import calc_loss_loader, perplexity
    from gptref.rundir import load_model
    from gptref.tokens import reopen, text_corpus

    model, record = load_model(checkpoint, resolve_device(device))
    dev = next(model.parameters()).device
    context = model.cfg.context_length
    if texts:
        corpus = text_corpus(texts)
        ids = tokenize(corpus.text)
        if ids.numel() < context + 1:
            raise ValueError(
                f"the text has {ids.numel()} tokens but the model's context {context} needs at "
                f"least {context + 1}; give more text"
            )
        batch_size = RunConfig().batch_size
        loader = create_dataloader(ids, batch_size, context, context, shuffle=False,
                                   drop_last=False, seed=0)  # fmt: skip
        parts = {corpus.name: loader}
    elif record is not None:
        corpus = reopen(record.data, record.run.train_ratio)
        train_loader, val_loader = run_loaders(record.run, corpus, context)
        parts = {"train": train_loader, "val": val_loader}
    else:
        raise ValueError(
            f"--checkpoint {checkpoint} has no training run to take data from; pass --text FILE"
        )
    results = {}
    with torch.no_grad():
        for name, loader in parts.items():
            batch = calc_loss_loader(loader, model, dev, weighting="batch")
            token = calc_loss_loader(loader, model, dev, weighting="token")
            results[name] = {"loss_batch_weighted": batch, "loss_token_weighted": token,
                             "perplexity": perplexity(token), "batches": len(loader)}  # fmt: skip
    return results
