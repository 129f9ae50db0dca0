"""``gptref eval``: loss (batch- and token-weighted) and perplexity of a checkpoint."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gptref._check import check_int
from gptref._setting import setting
from gptref.cli.common import Device, checkpoint_flag, device_flag, no_progress_flag

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
    batch_size: int | None = setting(
        None, "sequences per batch (default: the run's --batch-size; with --text, RunConfig's 8)",
        metavar="N",
    )  # fmt: skip
    max_batches: int | None = setting(
        None, "evaluate at most N batches of each split (default: all; `gptref train` "
        "evaluates --eval-iter of them)", metavar="N",
    )  # fmt: skip
    device: Device = device_flag()
    json: bool = setting(False, "print JSON (non-finite values as null)")
    no_progress: bool = no_progress_flag()

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_batches"):
            if getattr(self, name) is not None:
                check_int("eval", name, getattr(self, name), low=1)


def main(args: Args) -> int:
    results = eval_run(
        args.checkpoint, texts=args.text, device=args.device, batch_size=args.batch_size,
        max_batches=args.max_batches, progress=not args.no_progress and sys.stderr.isatty(),
    )  # fmt: skip
    numbers = ("loss_batch_weighted", "loss_token_weighted", "perplexity")
    finite = all(math.isfinite(r[k]) for r in results.values() for k in numbers)
    if args.json:  # JSON has no nan or inf: a non-finite value is null, "finite" says which
        for r in results.values():
            r["finite"] = all(math.isfinite(r[k]) for k in numbers)
            r.update({k: r[k] if math.isfinite(r[k]) else None for k in numbers})
        print(json.dumps(results, indent=2, allow_nan=False))
        return 0
    if not finite:
        bad = ", ".join(f"{name} {r['loss_token_weighted']}" for name, r in results.items())
        raise FloatingPointError(
            f"--checkpoint {args.checkpoint}: the loss is not finite ({bad}): the model's "
            "weights are not; use an earlier checkpoint (--json prints the values)"
        )
    for name, r in results.items():
        print(
            f"{name}: loss {r['loss_token_weighted']:.4f} (token-weighted, over "
            f"{r['tokens']:,} target tokens), {r['loss_batch_weighted']:.4f} (batch-weighted, "
            f"the book's: the mean of {r['batches']} batch means of {r['batch_size']}), "
            f"perplexity {r['perplexity']:,.2f}"
        )
    return 0


def eval_run(
    checkpoint: str | Path,
    *,
    texts: Sequence[str | Path] | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    max_batches: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Loss (batch- and token-weighted, one pass: ``loader_loss``) and perplexity of a
    checkpoint: on ``texts`` (every window, stride = context), or else on the training and
    validation splits of its run, in batches of ``batch_size`` (default the run's, or
    ``RunConfig``'s for ``texts``), at most ``max_batches`` of each. With the run's batch
    size and ``max_batches = eval_iter``, the val figure is the one ``train`` logged for the
    same weights (the val loader is not shuffled), and in a seeded run's first epoch the
    train figure too (later epochs evaluate other batches of the shuffled training split)."""
    import torch
    from tqdm.auto import tqdm

    from gptref.corpus.tokens import reopen, text_corpus
    from gptref.data import tokenize
    from gptref.loader import create_dataloader
    from gptref.loss import loader_loss, perplexity
    from gptref.run.config import RunConfig
    from gptref.run.loaders import resolve_device, run_loaders
    from gptref.run.rundir import load_model

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
        batch_size = batch_size or RunConfig().batch_size
        loader = create_dataloader(ids, batch_size, context, context, shuffle=False,
                                   drop_last=False, seed=0)  # fmt: skip
        parts = {corpus.name: loader}
    elif record is not None:
        run = record.run if batch_size is None else record.run.replace(batch_size=batch_size)
        batch_size = run.batch_size
        corpus = reopen(record.data, run.train_ratio)
        train_loader, val_loader = run_loaders(run, corpus, context)
        parts = {"train": train_loader, "val": val_loader}
    else:
        raise ValueError(
            f"--checkpoint {checkpoint} has no training run to take data from; pass --text FILE"
        )
    results = {}
    with torch.no_grad():
        for name, loader in parts.items():
            total = len(loader) if max_batches is None else min(len(loader), max_batches)
            batches = tqdm(loader, total=total, unit="batch", disable=not progress, leave=False)
            got = loader_loss(batches, model, dev, max_batches)
            results[name] = {
                "loss_batch_weighted": got.batch_weighted,
                "loss_token_weighted": got.token_weighted,
                "perplexity": perplexity(got.token_weighted),
                "batches": got.batches,
                "tokens": got.tokens,
                "batch_size": batch_size,
            }
    return results
