"""The main job behind ``gptref train``, as a function: ``train_run(RunConfig(...), out=DIR)``.

Corpus -> loaders -> model -> ``gptref.run.resume.train_checkpointed`` -> metrics.jsonl, loss.png, checkpoints,
summary.json, in a run directory (``gptref.run.rundir``). It has the CLI's semantics, so its
errors speak of ``gptref train``'s flags.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gptref.run.config import RunConfig
from gptref.run.loaders import resolve_device

# default checkpoint interval: a save of the small preset takes ~0.3 s (55 MB of weights,
# 110 MB of AdamW state), of GPT-124M ~3 s (1.5 GB); at most one a minute keeps that under
# 5 % of a run while a kill loses at most a minute plus one evaluation interval
CHECKPOINT_SECONDS = 60.0


class StopOnInterrupt:
    """Ctrl-C, SIGTERM (a scheduler's preemption) or SIGHUP (a closed terminal): finish the
    current step, checkpoint, stop; ``requested`` is the signal's name. A second one aborts."""

    SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")

    def __init__(self, say: Callable[[str], None]) -> None:
        self.requested, self.say, self.previous = None, say, {}

    def __enter__(self) -> StopOnInterrupt:
        for name in self.SIGNALS:
            number = getattr(signal, name, None)
            if number is not None:
                self.previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        self.say(
            f"{self.requested}: finishing this step, then saving a checkpoint "
            "(a second signal aborts)"
        )


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
    overwrite: bool = False,
    checkpoint_every: int | None = None,
    verify: bool = True,
    sample_every: int | None = 1,
    tensorboard: bool = False,
) -> dict[str, Any]:
    """Train as ``run`` says, writing the run directory ``out`` -> the summary dict.

    With ``resume``, the run in that directory continues with its saved settings; the
    settings named in ``given`` (the flags a user typed) that differ from them are named in
    one line. Under torchrun (``WORLD_SIZE > 1``) every process runs this: each trains on its
    shard with DDP (``run.batch_size`` per process, so the global batch is ``batch_size *
    world_size``) and rank 0 alone prints, writes the run directory and checkpoints.

    A new run needs a new or empty ``out`` (``overwrite`` starts an earlier run there over);
    the run directory is locked while this runs. Checkpoints: every ``checkpoint_every``
    steps, or by default at an evaluation when a minute passed since the last one; always
    at the end and when a signal stops the run. ``sample_every``: epochs between the
    per-epoch samples (None: none). Writes ``summary.json`` beside ``metrics.jsonl``.
    """
    from gptref.fast import distributed

    group = distributed.init(device) if distributed.launched() else None
    try:
        options = {"overwrite": overwrite, "checkpoint_every": checkpoint_every, "verify": verify,
                   "sample_every": sample_every, "tensorboard": tensorboard}  # fmt: skip
        summary = _train_run(run, group, texts, data, Path(out), device, prompt, resume, progress,
                             say, given, options)  # fmt: skip
    except BaseException:
        distributed.shutdown()  # at once: the other ranks' collectives fail and they exit too
        raise
    distributed.shutdown(wait=True)
    return summary


def _resumed(
    path: Path, run: RunConfig, corpus, given: frozenset[str], say
) -> tuple[RunConfig, Path | None]:
    """The saved settings of the run at ``path``, checked against the data, and the snapshot
    to continue from: the newest that verifies (None: a run killed before its first save
    starts over with its settings; one whose snapshots are all damaged is refused); a flag
    given now that differs from them is named (the saved value wins)."""
    from gptref.run import snapshots
    from gptref.run.checkpoint import snapshot
    from gptref.run.rundir import CHECKPOINT, CONFIG, RunRecord

    if not (path / CONFIG).is_file():
        raise ValueError(
            f"--resume {path}: not a gptref run directory (no {path / CONFIG}); start a run "
            "with --out"
        )
    checkpointed = None
    if snapshots.has_saves(path / CHECKPOINT):
        try:
            checkpointed = snapshot(path / CHECKPOINT)  # the newest that verifies; damaged: named
        except ValueError as e:
            raise ValueError(
                f"--resume {path}: {str(e).removeprefix('load_checkpoint: ')}; nothing to "
                f"continue from (start it over with --out {path} --overwrite)"
            ) from None
    else:
        say(f"--resume {path}: no checkpoint was completed yet; starting the run over")
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
    return record.run, checkpointed


def _train_run(run, group, texts, data, out, device, prompt, resume, progress, say, given, options):
    from gptref.run.rundir import check_parts, claim, locked

    out = Path(resume) if resume is not None else out
    if group is not None and group.rank != 0:  # rank 0 owns the directory for all
        return _train(run, group, texts, data, out, device, prompt, resume, progress, say, given,
                      options)  # fmt: skip
    check_parts(out)  # before the lock: .lock itself may be the link
    created = [f for f in (out, *out.parents) if not f.exists()]  # the folders this run makes
    try:
        with locked(out):
            if resume is None:
                claim(out, overwrite=options["overwrite"])
            return _train(run, group, texts, data, out, device, prompt, resume, progress, say,
                          given, options)  # fmt: skip
    except BaseException:
        _remove_empty(created)  # a run that could not start leaves no folder behind
        raise


def _remove_empty(folders: Sequence[Path]) -> None:
    """Remove each of ``folders`` (innermost first) that is empty; stop at the first that is not."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (the run had started), or gone already
            return


def _check_schedule(run: RunConfig, total: int) -> None:
    """--warmup and --min-lr against the run's length, in flags (``lr_at`` checks them too)."""
    if not (run.warmup or run.min_lr is not None):
        return
    flat = run.min_lr is not None and run.min_lr == run.lr
    if run.warmup > total - (1 if flat else 2):
        raise ValueError(
            f"--warmup {run.warmup} leaves no step to decay over in a run of {total} steps; "
            f"use --warmup {max(0, total - 2)} at most, or more steps (--epochs, --max-steps)"
        )


def _train(run, group, texts, data, out, device, prompt, resume, progress, say, given, options):
    import torch
    from tqdm.auto import tqdm

    from gptref._io import atomic_write_json
    from gptref.corpus.tokens import TextCorpus, open_corpus
    from gptref.data import GOLDEN
    from gptref.fast import distributed
    from gptref.generation import generate
    from gptref.loss import perplexity
    from gptref.model import GPTModel
    from gptref.plan.memory import check_fits_memory, estimate_training_memory
    from gptref.rng import isolated_rng
    from gptref.run.checkpoint import saved_step
    from gptref.run.loaders import run_loaders
    from gptref.run.plot import plot_losses
    from gptref.run.resume import train_checkpointed
    from gptref.run.rundir import CHECKPOINT, SUMMARY, MetricsLog, RunRecord
    from gptref.schedule import lr_at
    from gptref.step import NonFiniteError, evaluate
    from gptref.tokenizer import text_to_token_ids, token_ids_to_text

    rank, world_size = (group.rank, group.world_size) if group else (0, 1)
    main_rank = rank == 0
    # bars only on a terminal: redirected, their redraws would fill the log (and turn a
    # one-line error into three); lines instead
    progress = progress and sys.stderr.isatty()
    if not main_rank:
        say, progress = (lambda _msg: None), False
    dev = group.device if group else resolve_device(device)
    corpus = open_corpus(texts, data, run.train_ratio, verify=options["verify"],
                         progress=progress)  # fmt: skip
    say(f"gptref: training on {corpus.name}")
    continuing = None  # the snapshot to continue from
    if resume is not None:
        run, continuing = _resumed(out, run, corpus, given, say)
        if isinstance(corpus, TextCorpus):  # the run's own split
            corpus = dataclasses.replace(corpus, train_ratio=run.train_ratio)
    mcfg = run.model_config()
    train_loader, val_loader = run_loaders(
        run, corpus, mcfg.context_length, group, pin_memory=run.fast.pins(dev)
    )
    steps_per_epoch = len(train_loader)
    total = run.total_steps(steps_per_epoch)
    _check_schedule(run, total)
    if continuing and saved_step(continuing) >= total:
        return {"complete": True, "steps": total, "run_dir": str(out), "rank": rank}

    micro = -(-run.batch_size // run.accumulation_steps)
    need = estimate_training_memory(
        mcfg, micro, accumulation_steps=run.accumulation_steps, device=dev.type,
        autocast=run.fast.dtype if run.fast.dtype != "float32" else None,
        loss_chunk=run.fast.loss_chunk_rows,
    ).total  # fmt: skip
    check_fits_memory(need, f"training {run.preset} at --batch-size {run.batch_size}, --context "
                      f"{mcfg.context_length}", "use a smaller --batch-size or --context (gptref "
                      "plan finds the largest that fits)", device=dev.type)  # fmt: skip
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
    if main_rank:  # the run starts: from here on its folder holds its record
        out.mkdir(parents=True, exist_ok=True)
        RunRecord(run, mcfg.to_dict(), corpus.record(), world_size).write(out)
    tensorboard = out / "tensorboard" if options["tensorboard"] and main_rank else None
    metrics = MetricsLog(out / "metrics.jsonl", steps_per_epoch, tensorboard)
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
    start, first_step, stepping = time.perf_counter(), [], [0.0]

    def callback(info: dict[str, Any]) -> bool:
        if not first_step:  # after a resume, the bar starts where the run stood
            first_step.append(info["step"])
            bar.update(info["step"])
        bar.update(1)
        stepping[0] += info["step_seconds"]
        done = info["step"] - first_step[0] + 1
        rate = done * tokens_per_step / stepping[0] if stepping[0] else float("nan")
        bar.set_postfix(loss=f"{info['result'].loss:.3f}", tok_s=f"{rate:,.0f}")
        if main_rank:
            metrics.update(info["history"])
        history = info["history"]
        if history.steps and history.steps[-1] == info["step"]:
            losses = (history.train_losses[-1], history.val_losses[-1])
            if not all(math.isfinite(x) for x in losses):  # before this step could be saved
                raise NonFiniteError(
                    f"training diverged: the evaluation at step {info['step']} gave train loss "
                    f"{losses[0]}, val loss {losses[1]}; no checkpoint of it is saved (the last "
                    "one is kept): lower --lr or --weight-decay, or set --grad-clip"
                )
        return stopper.requested

    with StopOnInterrupt(write) as stopper:
        history = train_checkpointed(
            model, train_loader, val_loader, optimizer, dev,
            num_epochs=run.num_epochs, eval_freq=run.eval_freq, eval_iter=run.eval_iter,
            start_context=prompt if options["sample_every"] else None,
            sample_every=options["sample_every"] or 1, sample_label=True,
            schedule=schedule, grad_clip=run.grad_clip,
            accumulation_steps=run.accumulation_steps,
            max_steps=run.max_steps, autocast_dtype=run.fast.autocast_dtype,
            loss_chunk=run.fast.loss_chunk_rows,
            checkpoint_dir=out / CHECKPOINT, checkpoint_every=options["checkpoint_every"],
            checkpoint_seconds=None if options["checkpoint_every"] else CHECKPOINT_SECONDS,
            resume_from=continuing,
            callback=callback, log=write, group=group,
        )  # fmt: skip
    bar.close()
    wall = time.perf_counter() - start
    last = len(history.step_losses) - 1
    if history.steps and history.steps[-1] == last:
        final = (history.train_losses[-1], history.val_losses[-1])
    else:  # the last step was not evaluated: evaluate the final weights, and record them
        with isolated_rng():
            final = evaluate(model, train_loader, val_loader, dev, run.eval_iter,
                             loss_chunk=run.fast.loss_chunk_rows, group=group)  # fmt: skip
        if last >= 0:
            epoch = last // steps_per_epoch + 1
            history.record_evaluation(last, epoch, len(history.step_losses) * tokens_per_step, *final)  # fmt: skip
    plot = None
    if main_rank:
        metrics.update(history)
        metrics.close()
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
    summary = {
        "run_dir": str(out),
        "interrupted": stopper.requested,
        "steps": steps,
        "train_loss": final[0],
        "val_loss": final[1],
        "val_perplexity": perplexity(final[1]),
        "tokens_seen": steps * tokens_per_step,  # drop_last: full batches
        "eval_batches": run.eval_iter,  # each loss: the mean of this many batch means
        "wall_seconds": wall,
        "train_seconds": stepping[0],  # the updates alone: no evaluation, sampling or saving
        "tokens_per_second": steps_now * tokens_per_step / stepping[0]
        if stepping[0]
        else float("nan"),
        "sample": token_ids_to_text(ids.cpu()),
        "plot": str(plot) if plot else None,
        "checkpoint": str(out / CHECKPOINT),
        "rank": rank,
        "world_size": world_size,
    }
    if main_rank:
        finite = {k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                  for k, v in summary.items()}  # fmt: skip
        atomic_write_json(out / SUMMARY, finite)
    return summary
