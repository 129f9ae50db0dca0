"""``gptref train``: corpus -> loaders -> model -> ``train`` -> metrics, plot, checkpoint, summary.

``train_run(RunConfig(...), out=DIR)`` is the same run from Python. The run directory's
layout is ``gptref.rundir``'s.
"""

from __future__ import annotations

import dataclasses
import functools
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gptref._setting import nested, setting
from gptref.commands.common import Device, device_flag, no_progress_flag, resolve_device
from gptref.config import RunConfig, book
from gptref.fast import FAST

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
        False, "the tested fast paths: --attn sdpa --dtype bfloat16 --optimizer fused "
        "--fused-layers (explicit flags win)", flag="--fast",
    )  # fmt: skip
    device: Device = device_flag()
    out: str | None = setting(None, "run directory (default runs/<timestamp>)", metavar="DIR")
    resume: str | None = setting(
        None, "continue the run in DIR exactly (its saved settings win)", metavar="DIR"
    )
    prompt: str = setting("Every effort moves you", "start context for samples")
    no_progress: bool = no_progress_flag()
    given: frozenset[str] = frozenset()  # the RunConfig settings given as flags (not a flag)

    @classmethod
    def from_flags(cls, given: Mapping[str, Any]) -> Args:
        """The flags given -> Args: the run is ``book()`` or ``RunConfig()``, then ``FAST``
        with ``--fast``, then every setting given explicitly."""
        keys = set(RunConfig().to_dict())
        settings = {k: v for k, v in given.items() if k in keys}
        if "max_steps" in settings:  # --max-steps alone: as many epochs as it needs
            settings.setdefault("epochs", None)
        if "epochs" in settings:
            settings.setdefault("max_steps", None)
        base = book() if given.get("book") else RunConfig()
        if given.get("use_fast"):
            base = dataclasses.replace(base, fast=FAST)
        own = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items() if k not in keys}
        return cls(run=base.replace(**settings), given=frozenset(settings), **own)


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
    summary = train_run(
        args.run, texts=args.text, data=args.data, out=out, device=args.device,
        prompt=args.prompt, resume=args.resume, progress=not args.no_progress,
        given=args.given,
    )  # fmt: skip
    s = summary
    if s["rank"] != 0:  # under torchrun, rank 0 reports for all
        return 0
    steps = f"{s['steps']} step{'s' if s['steps'] != 1 else ''}"
    print(
        f"\n{'stopped early (Ctrl-C): ' if s['interrupted'] else ''}"
        f"{steps}, {s['tokens_seen']:,} tokens seen in {s['wall_seconds']:.0f} s "
        f"({s['tokens_per_second']:,.0f} tokens/s)\n"
        f"final train loss {s['train_loss']:.3f}, val loss {s['val_loss']:.3f} "
        f"(val perplexity {s['val_perplexity']:,.1f})\n"
        f"sample: {s['sample']!r}\n"
        f"wrote {s['run_dir']}/: metrics.jsonl, {'loss.png, ' if s['plot'] else ''}"
        "config.json, checkpoint/"
    )
    if not s["plot"]:
        print("(no loss.png: install matplotlib, e.g. pip install 'gptref[plot]')")
    return 0


class StopOnInterrupt:
    """First Ctrl-C: finish the current step, checkpoint, stop. Second: abort at once."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.requested, self.say, self.previous = False, say, None

    def __enter__(self) -> StopOnInterrupt:
        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self.previous)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.say("interrupted: finishing this step, then saving a checkpoint (Ctrl-C again aborts)")


def train_run(
    run: RunConfig,
    *,
    texts: Sequence[str | Path] | None = None,
    data: str | Path | None = None,
    out: str | Path,
    device: str = "auto",
    prompt: str = "Every effort moves you",
    resume: str | Path | None = None,
    progress: bool = True,
    say: Callable[[str], None] = print,
    given: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Train as ``run`` says, writing the run directory ``out`` -> the summary dict.

    With ``resume``, the run in that directory continues with its saved settings; the
    settings named in ``given`` (the flags a user typed) that differ from them are named in
    one line. Under torchrun (``WORLD_SIZE > 1``) every process runs this: each trains on its
    shard with DDP (``run.batch_size`` per process, so the global batch is ``batch_size *
    world_size``) and rank 0 alone prints, writes the run directory and checkpoints.
    """
    from gptref import distributed

    group = distributed.init(device) if distributed.launched() else None
    try:
        summary = _train_run(run, group, texts, data, Path(out), device, prompt, resume, progress,
                             say, given)  # fmt: skip
    except BaseException:
        distributed.shutdown()  # at once: the other ranks' collectives fail and they exit too
        raise
    distributed.shutdown(wait=True)
    return summary


def _resumed(path: Path, run: RunConfig, corpus, given: frozenset[str], say) -> RunConfig:
    """The saved settings of the run at ``path``, checked against the data; a flag given now
    that differs from them is named (the saved value wins: the run continues exactly)."""
    from gptref.rundir import CHECKPOINT, CONFIG, RunRecord, find_checkpoint

    try:
        complete = (path / CONFIG).is_file() and find_checkpoint(path) == path / CHECKPOINT
    except ValueError:
        complete = False
    if not complete:
        raise ValueError(
            f"--resume {path}: not a gptref run directory with a complete checkpoint "
            f"(expected {path / CONFIG} and a checkpoint in {path / CHECKPOINT})"
        )
    record = RunRecord.read(path)
    if record.data["sha256"] != corpus.sha256:
        prepared = record.data.get("prepared")
        raise ValueError(
            f"--resume {path}: that run trained on different data ({record.data['name']}); "
            + (f"pass --data {prepared} (unchanged)" if prepared else "pass the same --text files")
        )
    now, saved = run.to_dict(), record.run.to_dict()
    ignored = [f"--{k.replace('_', '-')} {now[k]} (saved: {saved[k]})"
               for k in sorted(given) if now[k] != saved[k]]  # fmt: skip
    if ignored:
        say(f"--resume {path}: the saved settings win; ignoring {', '.join(ignored)}")
    return record.run


def _train_run(run, group, texts, data, out, device, prompt, resume, progress, say, given):
    import torch
    from tqdm.auto import tqdm

    from gptref import distributed
    from gptref.commands.common import run_loaders
    from gptref.data import GOLDEN
    from gptref.generation import generate
    from gptref.loop import train
    from gptref.loss import perplexity
    from gptref.model import GPTModel
    from gptref.plot import plot_losses
    from gptref.rng import isolated_rng
    from gptref.rundir import CHECKPOINT, MetricsLog, RunRecord
    from gptref.schedule import lr_at
    from gptref.step import evaluate
    from gptref.tokenizer import text_to_token_ids, token_ids_to_text
    from gptref.tokens import TextCorpus, open_corpus

    rank, world_size = (group.rank, group.world_size) if group else (0, 1)
    main_rank = rank == 0
    if not main_rank:
        say, progress = (lambda _msg: None), False
    dev = group.device if group else resolve_device(device)
    corpus = open_corpus(texts, data, run.train_ratio)
    say(f"gptref: training on {corpus.name}")
    if resume is not None:
        out = Path(resume)
        run = _resumed(out, run, corpus, given, say)
        if isinstance(corpus, TextCorpus):  # the run's own split
            corpus = dataclasses.replace(corpus, train_ratio=run.train_ratio)
    mcfg = run.model_config()
    train_loader, val_loader = run_loaders(
        run, corpus, mcfg.context_length, group, pin_memory=run.fast.pins(dev)
    )
    steps_per_epoch = len(train_loader)
    total = run.total_steps(steps_per_epoch)
    if main_rank:
        out.mkdir(parents=True, exist_ok=True)
        RunRecord(run, mcfg.to_dict(), corpus.record(), world_size).write(out)

    torch.manual_seed(run.seed)
    base_model = GPTModel(mcfg).to(dev)
    if world_size > 1:  # same initial weights everywhere, a dropout stream per rank
        torch.manual_seed((run.seed + GOLDEN * rank) % 2**63)  # seeds CUDA too
    model, optimizer = run.fast.build(base_model, run.lr, run.weight_decay)
    if group is not None:
        model = distributed.wrap(model, group)
    schedule = None
    if run.warmup or run.min_lr is not None:
        schedule = functools.partial(
            lr_at, peak_lr=run.lr, total_steps=total, warmup_steps=run.warmup,
            min_lr=run.min_lr if run.min_lr is not None else 0.0,
        )  # fmt: skip
    metrics = MetricsLog(out / "metrics.jsonl", steps_per_epoch)
    n_params = sum(p.numel() for p in base_model.parameters())
    processes = f", {world_size} processes (global batch {run.batch_size * world_size})"
    say(
        f"model: {run.preset} ({n_params / 1e6:.1f}M parameters, context {mcfg.context_length}), "
        f"{steps_per_epoch} batches of {run.batch_size} per epoch, {total} steps on {dev.type}"
        + (processes if world_size > 1 else "")
    )
    bar = tqdm(total=total, unit="step", disable=not progress, dynamic_ncols=True)
    write = bar.write if progress else say
    tokens_per_step = run.batch_size * mcfg.context_length * world_size
    start, first_step = time.perf_counter(), []

    def callback(info: dict[str, Any]) -> bool:
        if not first_step:  # after a resume, the bar starts where the run stood
            first_step.append(info["step"])
            bar.update(info["step"])
        bar.update(1)
        done = info["step"] - first_step[0] + 1
        rate = done * tokens_per_step / (time.perf_counter() - start)
        bar.set_postfix(loss=f"{info['result'].loss:.3f}", tok_s=f"{rate:,.0f}")
        if main_rank:
            metrics.update(info["history"])
        return stopper.requested

    with StopOnInterrupt(write) as stopper:
        history = train(
            model, train_loader, val_loader, optimizer, dev,
            num_epochs=run.num_epochs, eval_freq=run.eval_freq, eval_iter=run.eval_iter,
            start_context=prompt, schedule=schedule, grad_clip=run.grad_clip,
            max_steps=run.max_steps, autocast_dtype=run.fast.autocast_dtype,
            checkpoint_dir=out / CHECKPOINT,
            resume_from=out / CHECKPOINT if resume is not None else None,
            callback=callback, log=write, group=group,
        )  # fmt: skip
    bar.close()
    wall = time.perf_counter() - start
    if history.steps and history.steps[-1] == len(history.step_losses) - 1:
        final = (history.train_losses[-1], history.val_losses[-1])
    else:  # the last step was not evaluated: evaluate the final weights for the summary
        with isolated_rng():
            final = evaluate(model, train_loader, val_loader, dev, run.eval_iter, group=group)
    plot = None
    if main_rank:
        metrics.update(history)
        epochs_seen = [r["epochs_seen"] for r in metrics.records(history)]
        plot = plot_losses(out / "loss.png", epochs_seen, history.tokens_seen,
                           history.train_losses, history.val_losses)  # fmt: skip
    base_model.eval()
    # the summary samples (top-k 25, temperature 1, seeded) rather than the per-epoch greedy
    # sample, which on a small model often repeats one token
    generator = torch.Generator(device=dev).manual_seed(run.seed)
    ids = generate(
        base_model, text_to_token_ids(prompt).to(dev), 50, mcfg.context_length,
        temperature=1.0, top_k=25, generator=generator,
    )  # fmt: skip
    steps = len(history.step_losses)
    steps_now = steps - (first_step[0] if first_step else steps)
    return {
        "run_dir": str(out),
        "interrupted": stopper.requested,
        "steps": steps,
        "train_loss": final[0],
        "val_loss": final[1],
        "val_perplexity": perplexity(final[1]),
        "tokens_seen": steps * tokens_per_step,  # drop_last: full batches
        "wall_seconds": wall,
        "tokens_per_second": steps_now * tokens_per_step / wall if wall > 0 else float("nan"),
        "sample": token_ids_to_text(ids.cpu()),
        "plot": str(plot) if plot else None,
        "checkpoint": str(out / CHECKPOINT),
        "rank": rank,
        "world_size": world_size,
    }
