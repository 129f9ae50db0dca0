"""``gptref train``: corpus -> loaders -> model -> ``train`` -> metrics, plot, checkpoint, summary.

``train_run(RunConfig(...), out=DIR)`` is the same run from Python. The run directory's
layout is ``gptref.run.rundir``'s.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gptref._check import FieldError, check_int
from gptref._setting import nested, setting
from gptref.cli.common import Device, device_flag, no_progress_flag
from gptref.run.config import RunConfig, book, book_text_mismatch

NAME = "train"
HELP = "train a GPT and evaluate it (default: a small model on the built-in corpus)"
DESCRIPTION = (
    "Train a GPT on text files, or with no --text on the built-in corpus (Python's "
    "documentation topics, ~0.5 MB, shipped with every CPython). Writes --out DIR: "
    "metrics.jsonl, loss.png, config.json and checkpoint/. Ctrl-C saves a checkpoint; "
    "--resume DIR continues it exactly."
)


@dataclasses.dataclass(frozen=True)
class Args:
    text: tuple[str, ...] | None = setting(
        None, "UTF-8 text files (several are joined by <|endoftext|>)", metavar="FILE"
    )
    data: str | None = setting(
        None, "train on a corpus `gptref prepare` wrote to DIR, memory-mapped (instead of --text)",
        metavar="DIR",
    )  # fmt: skip
    book: bool = setting(
        False, "the book's chapter-5 settings: GPT-124M, context 256, batch 2, AdamW 4e-4/0.1, "
        "10 epochs, eval 5/5, seed 123, book-mode loaders",
    )  # fmt: skip
    run: RunConfig = nested(RunConfig)
    use_fast: bool = setting(
        False, "the fastest tested paths for this device, chosen by a measured probe and "
        "printed: --attn sdpa --optimizer fused --fused-layers, on CPU --loss chunked, and "
        "--dtype bfloat16 where bf16 matmuls are native (explicit flags win)", flag="--fast",
    )  # fmt: skip
    device: Device = device_flag()
    out: str | None = setting(None, "run directory (default runs/<timestamp>)", metavar="DIR")
    resume: str | None = setting(
        None, "continue the run in DIR exactly (its saved settings win)", metavar="DIR"
    )
    overwrite: bool = setting(False, "start over in --out DIR even if it holds a run")
    checkpoint_every: int | None = setting(
        None, "save a checkpoint every N steps (default: at an evaluation, at most once a "
        "minute; always at the end and when stopped)", metavar="N",
    )  # fmt: skip
    no_verify: bool = setting(False, "with --data: skip the SHA-256 check of the token files")
    prompt: str = setting("Every effort moves you", "start context for samples")
    sample_every: int = setting(1, "print a greedy sample after every N-th epoch", metavar="N")
    no_sample: bool = setting(False, "no per-epoch samples")
    json: bool = setting(False, "print the summary as JSON on stdout (the log goes to stderr)")
    tensorboard: bool = setting(
        False, "also log metrics.jsonl's scalars to DIR/tensorboard (needs gptref[tensorboard])"
    )
    no_progress: bool = no_progress_flag()
    given: frozenset[str] = frozenset()  # the RunConfig settings given as flags (not a flag)
    fast_line: str | None = None  # what --fast chose and why, in one line (not a flag)

    def __post_init__(self) -> None:
        if not self.prompt:
            raise FieldError("train", "prompt", "must not be empty; the samples continue it")
        if self.checkpoint_every is not None:
            check_int("train", "checkpoint_every", self.checkpoint_every, low=1)
        check_int("train", "sample_every", self.sample_every, low=1)

    @classmethod
    def from_flags(cls, given: Mapping[str, Any]) -> Args:
        """The flags given -> Args: the run is ``book()`` or ``RunConfig()``, then with
        ``--fast`` the bundle ``choose_fast`` picks for the device, then every setting given
        explicitly."""
        keys = set(RunConfig().to_dict())
        settings = {k: v for k, v in given.items() if k in keys}
        if "max_steps" in settings:  # --max-steps alone: as many epochs as it needs
            settings.setdefault("epochs", None)
        if "epochs" in settings:
            settings.setdefault("max_steps", None)
        base = book() if given.get("book") else RunConfig()
        choice = None
        if given.get("use_fast"):
            from gptref.fast.choice import choose_fast
            from gptref.run.loaders import resolve_device

            choice = choose_fast(resolve_device(given.get("device", "auto")).type)
            base = dataclasses.replace(base, fast=choice.paths)
        own = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items() if k not in keys}
        run = base.replace(**settings)
        line = None if choice is None else choice.line(run.fast)
        return cls(run=run, given=frozenset(settings), fast_line=line, **own)


def main(args: Args) -> int:
    out = args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    if args.data is not None and "train_ratio" in args.given:
        raise ValueError(
            f"--train-ratio: --data {args.data} was split when it was prepared; run "
            "`gptref prepare --train-ratio X` again to change the split"
        )
    if args.data is not None and args.text:
        raise ValueError(
            "--data and --text exclude each other: --data DIR holds text files that "
            "`gptref prepare` already tokenized; give one of them"
        )
    from gptref.run.job import train_run

    log = functools.partial(print, file=sys.stderr) if args.json else print
    if args.fast_line and args.resume is None:  # a resumed run keeps its saved paths
        log(args.fast_line)
    mismatch = book_text_mismatch(args.text) if args.book and args.resume is None else None
    if mismatch:  # the run goes on: the book's settings are worth having on any text
        print(f"gptref train: warning: {mismatch}", file=sys.stderr)
    summary = train_run(
        args.run, texts=args.text, data=args.data, out=out, device=args.device,
        prompt=args.prompt, resume=args.resume, progress=not args.no_progress,
        given=args.given, overwrite=args.overwrite, checkpoint_every=args.checkpoint_every,
        verify=not args.no_verify, sample_every=None if args.no_sample else args.sample_every,
        say=log, tensorboard=args.tensorboard,
    )  # fmt: skip
    s = summary
    if s["rank"] != 0:  # under torchrun, rank 0 reports for all
        return 0
    if args.json:
        print(json.dumps({k: v if not isinstance(v, float) or math.isfinite(v) else None
                          for k, v in s.items()}, indent=2))  # fmt: skip
        return 128 + getattr(signal, s["interrupted"]) if s.get("interrupted") else 0
    if s.get("complete"):
        print(f"{s['run_dir']} is complete ({s['steps']} steps); nothing to do")
        return 0
    steps = f"{s['steps']} step{'s' if s['steps'] != 1 else ''}"
    stopped = f"stopped early ({s['interrupted']}): " if s["interrupted"] else ""
    print(
        f"\n{stopped}"
        f"{steps}, {s['tokens_seen']:,} tokens seen in {s['wall_seconds']:.0f} s "
        f"({s['tokens_per_second']:,.0f} tokens/s in the {s['train_seconds']:.0f} s of updates)\n"
        f"final train loss {s['train_loss']:.3f}, val loss {s['val_loss']:.3f} "
        f"(val perplexity {s['val_perplexity']:,.1f}; each the mean of {s['eval_batches']} "
        "batch means, --eval-iter; `gptref eval` averages all batches)\n"
        f"sample (top-k 25, temperature 1): {s['sample']!r}\n"
        f"wrote {s['run_dir']}/: metrics.jsonl, {'loss.png, ' if s['plot'] else ''}"
        "config.json, summary.json, checkpoint/"
    )
    if not s["plot"]:
        print("(no loss.png: install matplotlib, e.g. pip install 'gptref[plot]')")
    if s["interrupted"]:  # saved and resumable, but not finished: say so to the shell
        return 128 + getattr(signal, s["interrupted"])
    return 0
