"""A training run on disk: corpus -> loaders -> model -> ``train`` -> metrics, plot, checkpoint.

This is what ``gptref train`` / ``eval`` / ``generate`` do; ``cli.py`` only parses flags.
A run directory holds ``config.json`` (the run's settings and data fingerprint),
``metrics.jsonl`` (one record per evaluation), ``loss.png`` and ``checkpoint/``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from gptref.corpus import Corpus, load_corpus
from gptref.data import create_dataloader, split, tokenize
from gptref.fast import OPTIMIZER_IMPLS, compile_model, make_optimizer, set_tf32
from gptref.model import (
    GPT_CONFIG_124M,
    GPT_CONFIG_SMALL,
    GPT_CONFIG_TINY,
    GPTConfig,
    GPTModel,
)

PRESETS = {"tiny": GPT_CONFIG_TINY, "small": GPT_CONFIG_SMALL, "124M": GPT_CONFIG_124M}
CHECKPOINT = "checkpoint"


@dataclasses.dataclass
class RunConfig:
    """Everything that decides a training run's numbers (``gptref train``'s flags)."""

    preset: str = "small"
    context: int | None = None  # None: the preset's context_length
    stride: int | None = None  # None: the context (non-overlapping windows, as the book)
    batch_size: int = 8
    epochs: int = 1
    max_steps: int | None = None
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 0
    min_lr: float | None = None  # set (or warmup > 0): warmup + cosine to min_lr
    grad_clip: float | None = None
    eval_freq: int = 10
    eval_iter: int = 5
    train_ratio: float = 0.9
    seed: int = 123
    dtype: str = "float32"
    attn: str = "reference"
    book_mode_loaders: bool = False  # the book's global-RNG loaders instead of seeded ones
    # fast paths (gptref.fast): each computes the reference's function, up to float rounding
    optimizer: str = "default"  # AdamW implementation: default, for-loop, foreach, fused
    compile: bool = False  # torch.compile the model
    tf32: bool = False  # TF32 matmuls on CUDA
    vocab_pad: int = 1  # out_head rows rounded up to a multiple of this (64 for GPUs)
    fused_layers: bool = False  # LayerNorm and GELU as one kernel each

    def validate(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        positive = {
            "--batch-size": self.batch_size,
            "--epochs": self.epochs,
            "--eval-freq": self.eval_freq,
            "--eval-iter": self.eval_iter,
        }
        optional = {
            "--context": self.context,
            "--stride": self.stride,
            "--max-steps": self.max_steps,
        }
        for flag, value in {
            **positive,
            **{k: v for k, v in optional.items() if v is not None},
        }.items():
            if value < 1:
                raise ValueError(f"{flag} must be >= 1, got {value}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"--lr must be > 0, got {self.lr}; the book uses 4e-4")
        if not self.weight_decay >= 0:
            raise ValueError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if self.warmup < 0:
            raise ValueError(f"--warmup must be >= 0, got {self.warmup}")
        if self.min_lr is not None and not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"--min-lr must be in [0, --lr={self.lr}], got {self.min_lr}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"--grad-clip must be > 0, got {self.grad_clip}")
        if not 0 < self.train_ratio < 1:
            raise ValueError(f"--train-ratio must be in (0, 1), got {self.train_ratio}; e.g. 0.9")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"--seed must be in [0, 2**32), got {self.seed}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"--dtype must be float32 or bfloat16, got {self.dtype!r}")
        if self.attn not in ("reference", "sdpa"):
            raise ValueError(f"--attn must be reference or sdpa, got {self.attn!r}")
        if self.optimizer not in OPTIMIZER_IMPLS:
            raise ValueError(
                f"--optimizer must be one of {OPTIMIZER_IMPLS}, got {self.optimizer!r}"
            )
        if self.vocab_pad < 1:
            raise ValueError(f"--vocab-pad must be >= 1, got {self.vocab_pad}; e.g. 64")

    def model_config(self) -> GPTConfig:
        cfg = dict(
            PRESETS[self.preset],
            attn_impl=self.attn,
            vocab_pad_multiple=self.vocab_pad,
            fused_layers=self.fused_layers,
        )
        if self.context is not None:
            cfg["context_length"] = self.context
        return GPTConfig.from_dict(cfg)


BOOK = RunConfig(
    preset="124M", context=256, stride=256, batch_size=2, epochs=10, max_steps=None,
    lr=4e-4, weight_decay=0.1, eval_freq=5, eval_iter=5, seed=123, book_mode_loaders=True,
)  # fmt: skip


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available, else cpu; cuda without CUDA is a ValueError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: this torch build or machine has no CUDA; use --device cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def build_loaders(
    run: RunConfig,
    corpus: Corpus,
    context: int,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
):
    """The book's recipe: split characters, tokenize each part, slide windows. With
    ``world_size > 1``: this rank's shard of each epoch (``batch_order``)."""
    if isinstance(corpus, Corpus):
        train_text, val_text = split(corpus.text, run.train_ratio)
        train_ids, val_ids = tokenize(train_text), tokenize(val_text)
    else:  # gptref prepare split and tokenized it: memory-mapped token files
        train_ids, val_ids = corpus.tokens("train"), corpus.tokens("val")
    stride = run.stride or context
    for part, ids, need in (
        ("training", train_ids, context + 1),
        ("validation", val_ids, context + 1),
    ):
        if len(ids) < need:
            raise ValueError(
                f"the {part} split has {len(ids)} tokens but --context {context} needs at "
                f"least {need}; use a smaller --context (or more text"
                + (", or a smaller --train-ratio)" if part == "validation" else ")")
            )
    seed = None if run.book_mode_loaders else run.seed
    if seed is None:
        if world_size > 1:
            raise ValueError(
                "the book's loaders (--book) draw from each process's global RNG and cannot be "
                "sharded; under torchrun give the flags without --book (seeded loaders)"
            )
        torch.manual_seed(run.seed)  # the book seeds before building its loaders
    shard = {"seed": seed, "rank": rank, "world_size": world_size, "pin_memory": pin_memory}
    train_loader = create_dataloader(
        train_ids, run.batch_size, context, stride, shuffle=True, drop_last=True, **shard
    )
    val_loader = create_dataloader(
        val_ids, run.batch_size, context, stride, shuffle=False, drop_last=False, **shard
    )
    return train_loader, val_loader


class MetricsLog:
    """``metrics.jsonl``: one JSON record per evaluation, rewritten atomically as it grows."""

    def __init__(self, path: Path, steps_per_epoch: int) -> None:
        self.path, self.steps_per_epoch, self.count = path, steps_per_epoch, -1

    def records(self, history) -> list[dict[str, Any]]:
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

    def update(self, history) -> bool:
        """Write the file if there are new evaluations -> whether there were."""
        if len(history.steps) == self.count:
            return False
        self.count = len(history.steps)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in self.records(history)))
        tmp.replace(self.path)
        return True


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
) -> dict[str, Any]:
    """Train as ``run`` says, writing the run directory ``out`` -> the summary dict.

    Under torchrun (``WORLD_SIZE > 1``) every process runs this: each trains on its shard
    with DDP (``--batch-size`` per process, so the global batch is ``batch_size *
    world_size``) and rank 0 alone prints, writes the run directory and checkpoints.
    """
    from gptref import distributed

    run.validate()
    ctx = distributed.init(device) if distributed.launched() else None
    try:
        summary = _train_run(
            run, ctx, texts, data, Path(out), device, prompt, resume, progress, say
        )
    except BaseException:
        distributed.shutdown()  # at once: the other ranks' collectives fail and they exit too
        raise
    distributed.shutdown(wait=True)
    return summary


def _train_run(run, ctx, texts, data, out, device, prompt, resume, progress, say) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from gptref import distributed
    from gptref.generate import generate
    from gptref.loss import perplexity
    from gptref.plot import plot_losses
    from gptref.schedule import lr_at
    from gptref.tokenizer import text_to_token_ids, token_ids_to_text
    from gptref.train import evaluate, isolated_rng, train

    rank, world_size = (ctx.rank, ctx.world_size) if ctx else (0, 1)
    main = rank == 0
    if not main:
        say, progress = (lambda _msg: None), False
    dev = ctx.device if ctx else resolve_device(device)
    set_tf32(run.tf32)
    corpus = open_corpus(texts, data)
    say(f"gptref: training on {corpus.name}")
    if resume is not None:
        saved = _resume_check(Path(resume), run, corpus)
        out = Path(resume)
        run = saved
    mcfg = run.model_config()
    train_loader, val_loader = build_loaders(
        run, corpus, mcfg.context_length, rank, world_size, pin_memory=dev.type == "cuda"
    )
    steps_per_epoch = len(train_loader)
    total = steps_per_epoch * run.epochs
    if run.max_steps is not None:
        total = min(total, run.max_steps)
    meta = {"run": dataclasses.asdict(run), "model": mcfg.to_dict(), "data": data_record(corpus, texts), "world_size": world_size}  # fmt: skip
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(meta, indent=2) + "\n")

    torch.manual_seed(run.seed)
    base_model = GPTModel(mcfg).to(dev)
    if world_size > 1:  # same initial weights everywhere, a dropout stream per rank
        torch.manual_seed((run.seed + 0x9E3779B1 * rank) % 2**63)  # seeds CUDA too
    optimizer = make_optimizer(base_model, run.lr, run.weight_decay, run.optimizer)
    model = compile_model(base_model, run.compile)
    if ctx is not None:
        model = distributed.wrap(model, ctx)
    schedule = None
    if run.warmup or run.min_lr is not None:
        min_lr = run.min_lr if run.min_lr is not None else 0.0
        schedule = functools.partial(
            lr_at, peak_lr=run.lr, total_steps=total, warmup_steps=run.warmup, min_lr=min_lr
        )
    metrics = MetricsLog(out / "metrics.jsonl", steps_per_epoch)
    n_params = sum(p.numel() for p in base_model.parameters())
    say(
        f"model: {run.preset} ({n_params / 1e6:.1f}M parameters, context {mcfg.context_length}), "
        f"{steps_per_epoch} batches of {run.batch_size} per epoch, {total} steps on {dev.type}"
        + (
            f", {world_size} processes (global batch {run.batch_size * world_size})"
            if world_size > 1
            else ""
        )
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
        if main:
            metrics.update(info["history"])
        return stopper.requested

    with StopOnInterrupt(write) as stopper:
        history = train(
            model, train_loader, val_loader, optimizer, dev,
            num_epochs=run.epochs, eval_freq=run.eval_freq, eval_iter=run.eval_iter,
            start_context=prompt, schedule=schedule, grad_clip=run.grad_clip,
            max_steps=run.max_steps,
            autocast_dtype=torch.bfloat16 if run.dtype == "bfloat16" else None,
            checkpoint_dir=out / CHECKPOINT, config=meta,
            resume_from=out / CHECKPOINT if resume is not None else None,
            callback=callback, log=write,
        )  # fmt: skip
    bar.close()
    wall = time.perf_counter() - start
    if history.steps and history.steps[-1] == len(history.step_losses) - 1:
        final = (history.train_losses[-1], history.val_losses[-1])
    else:  # the last step was not evaluated: evaluate the final weights for the summary
        with isolated_rng():
            final = evaluate(model, train_loader, val_loader, dev, run.eval_iter)
    plot = None
    if main:
        metrics.update(history)
        epochs_seen = [r["epochs_seen"] for r in metrics.records(history)]
        plot = plot_losses(out / "loss.png", epochs_seen, history.tokens_seen, history.train_losses, history.val_losses)  # fmt: skip
    base_model.eval()
    # the summary samples (top-k 25, temperature 1, seeded) rather than the per-epoch greedy
    # sample, which on a small model often repeats one token
    generator = torch.Generator(device=dev).manual_seed(run.seed)
    ids = generate(
        base_model, text_to_token_ids(prompt).to(dev), 50, mcfg.context_length,
        temperature=1.0, top_k=25, generator=generator,
    )  # fmt: skip
    steps_now = len(history.step_losses) - (
        first_step[0] if first_step else len(history.step_losses)
    )
    summary = {
        "run_dir": str(out),
        "interrupted": stopper.requested,
        "steps": len(history.step_losses),
        "train_loss": final[0],
        "val_loss": final[1],
        "val_perplexity": perplexity(final[1]),
        "tokens_seen": len(history.step_losses) * tokens_per_step,  # drop_last: full batches
        "wall_seconds": wall,
        "tokens_per_second": steps_now * tokens_per_step / wall if wall > 0 else float("nan"),
        "sample": token_ids_to_text(ids.cpu()),
        "plot": str(plot) if plot else None,
        "checkpoint": str(out / CHECKPOINT),
        "rank": rank,
        "world_size": world_size,
    }
    return summary


def open_corpus(texts: Sequence[str | Path] | None, data: str | Path | None):
    """-> the --text files' ``Corpus`` (no files: the built-in one), or with ``data`` the
    ``PreparedCorpus`` that ``gptref prepare`` wrote there."""
    from gptref.prepare import PreparedCorpus

    if data is None:
        return load_corpus(texts)
    if texts:
        raise ValueError(
            "--data and --text exclude each other: --data DIR holds text files that "
            "`gptref prepare` already tokenized; give one of them"
        )
    return PreparedCorpus.open(data)


def data_record(corpus, texts: Sequence[str | Path] | None) -> dict[str, Any]:
    """config.json's "data": the corpus's name and fingerprint, and where to find it again."""
    record = {"name": corpus.name, "sha256": corpus.sha256,
              "texts": [str(Path(t).resolve()) for t in texts or []]}  # fmt: skip
    if not isinstance(corpus, Corpus):  # a prepared corpus: its split is fixed in its manifest
        record.update(prepared=str(corpus.path.resolve()), split=corpus.manifest["split"])
    return record


def _resume_check(path: Path, run: RunConfig, corpus: Corpus) -> RunConfig:
    """The run directory at ``path`` must hold a checkpoint of a run on the same data."""
    config_file, ckpt = path / "config.json", path / CHECKPOINT
    if not config_file.is_file() or not (ckpt / "manifest.json").is_file():
        raise ValueError(
            f"--resume {path}: not a gptref run directory with a complete checkpoint "
            f"(expected {config_file} and {ckpt}/manifest.json)"
        )
    saved = json.loads(config_file.read_text())
    if saved["data"]["sha256"] != corpus.sha256:
        prepared = saved["data"].get("prepared")
        raise ValueError(
            f"--resume {path}: that run trained on different data ({saved['data']['name']}); "
            + (f"pass --data {prepared} (unchanged)" if prepared else "pass the same --text files")
        )
    return RunConfig(**saved["run"])


def find_checkpoint(path: str | Path) -> Path:
    """A run directory or a checkpoint directory -> the checkpoint directory."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"--checkpoint {path}: no such directory")
    for candidate in (path / CHECKPOINT, path):
        if (candidate / "manifest.json").is_file():
            return candidate
    raise ValueError(
        f"--checkpoint {path}: no complete checkpoint there (no manifest.json); it is missing, "
        "partial (an interrupted save) or not a gptref checkpoint"
    )


def load_model(
    path: str | Path, device: str = "auto"
) -> tuple[GPTModel, dict[str, Any], torch.device]:
    """-> (model in eval mode with the checkpoint's weights, saved config, device)."""
    from gptref.checkpoint import load_checkpoint, load_config

    ckpt = find_checkpoint(path)
    dev = resolve_device(device)
    saved = load_config(ckpt)
    model_cfg = saved.get("model", saved)  # a training run's config, or a bare model config
    try:
        cfg = GPTConfig.from_dict(model_cfg)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"--checkpoint {ckpt}: its config.json is not a gptref model config ({e})"
        ) from None
    model = GPTModel(cfg)
    load_checkpoint(ckpt, model)
    return model.to(dev).eval(), saved, dev


def eval_run(checkpoint: str | Path, *, texts: Sequence[str | Path] | None = None, device: str = "auto",
             batch_size: int = 8) -> dict[str, Any]:  # fmt: skip
    """Loss (batch- and token-weighted) and perplexity of a checkpoint: on ``texts`` (every
    window, stride = context), or else on the training and validation splits of its run."""
    from gptref.loss import calc_loss_loader, perplexity

    model, saved, dev = load_model(checkpoint, device)
    context = model.cfg.context_length
    if texts:
        corpus = load_corpus(texts)
        ids = tokenize(corpus.text)
        if ids.numel() < context + 1:
            raise ValueError(
                f"the text has {ids.numel()} tokens but the model's context {context} needs at "
                f"least {context + 1}; give more text"
            )
        loader = create_dataloader(ids, batch_size, context, context, shuffle=False, drop_last=False, seed=0)  # fmt: skip
        parts = {corpus.name: loader}
    elif "run" in saved:
        run = RunConfig(**saved["run"])
        train_loader, val_loader = build_loaders(run, load_corpus_for(saved), context)
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


def load_corpus_for(saved: dict[str, Any]) -> Corpus:
    """The corpus a saved run trained on, checked against its fingerprint."""
    texts = saved["data"].get("texts") or None
    corpus = open_corpus(texts, saved["data"].get("prepared"))
    if corpus.sha256 != saved["data"]["sha256"]:
        raise ValueError(
            f"the run's data ({saved['data']['name']}) has changed since training; pass --text FILE"
        )
    return corpus


def generate_run(checkpoint: str | Path, prompt: str, *, max_new_tokens: int = 50,
                 temperature: float = 0.0, top_k: int | None = None, seed: int = 123,
                 device: str = "auto") -> str:  # fmt: skip
    """-> prompt followed by up to ``max_new_tokens`` tokens from the checkpoint's model."""
    from gptref.generate import generate
    from gptref.tokenizer import ENDOFTEXT_ID, text_to_token_ids, token_ids_to_text

    model, _, dev = load_model(checkpoint, device)
    generator = torch.Generator(device=dev).manual_seed(seed)
    ids = generate(
        model, text_to_token_ids(prompt).to(dev), max_new_tokens, model.cfg.context_length,
        temperature=temperature, top_k=top_k, eos_id=ENDOFTEXT_ID, generator=generator,
    )  # fmt: skip
    return token_ids_to_text(ids.cpu())
