"""gptref: the reference GPT pretraining data path and training step of "Build a Large
Language Model (From Scratch)" (chapters 2 and 5, appendix D).

The modules, one concept each, in the order the data flows::

    tokenizer.py    offline GPT-2 BPE (tiktoken), text <-> ids
    data.py         pure functions: split, tokenize, num_chunks, chunk, batch_order, collate, batches
    tokens.py       a corpus: TextCorpus / PreparedCorpus behind one protocol; TokenFile (memmap)
    prepare.py      the corpus writer (gptref prepare)
    loader.py       GPTDataset, BatchOrderSampler, create_dataloader (torch plumbing)
    model.py        GPTConfig, GPTModel, the presets (the book's architecture and names)
    loss.py         calc_loss_batch, calc_loss_loader, perplexity (the one home of the loss)
    chunked_loss.py the head and cross-entropy in row chunks, without the (b*T, V) logits
    schedule.py     lr_at (warmup + cosine), the book's appendix-D formula
    fast.py         FastPaths: every opt-in speed and memory path as one type; FAST,
                    choose_fast: the fastest tested bundle for this device
    fast_probe.py   the probe behind it: bf16 against float32 matmuls, cached per machine
    step.py         train_step, evaluate (the process group comes in as an argument)
    loop.py         train: the book's loop, with a callback after every step
    state.py        TrainState, History: position and record of a run, saved and resumed exactly
    rng.py          capture, restore and isolate the global RNGs
    checkpoint.py   one checkpoint's files and their verification
    snapshots.py    a checkpoint directory's snapshots, LATEST pointer and replace protocol
    pth.py          the book's model.pth files
    generation.py   generate (greedy, temperature, top-k, eos), the loop's per-epoch sample
    weights.py      import/export of Hugging Face GPT-2 weights; hf_layout.py: both layouts checked
    distributed.py  torchrun / DDP: the process group, its collectives
    memory.py       the analytic training-memory model
    planner.py      the batch and lever planner (gptref plan)
    config.py       RunConfig: every run setting once, typed, validated once; book()
    rundir.py       a run directory: its record, metrics.jsonl, the checkpoint in it
    plot.py         the book's loss figure
    bench/          measure, flops, sweep, compare, levers, report (gptref bench, benchmarks/)
    commands/       one module per CLI subcommand
    cli.py          argparse built from the commands' dataclasses: no logic of its own
    conformance/    the specification, runnable against any implementation
    _check.py       argument checks and one-line errors; _io.py: atomic writes

The names below load their modules on first use (PEP 562), so ``gptref --help`` starts
without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# the semantics this package declares to its conformance suite (gptref.conformance), where it
# departs from the book on purpose: calc_loss_loader's default is the book's mean of batch
# means and it takes weighting="batch" or "token"; lr_at ends at exactly min_lr (the book's
# appendix-D formula is appendix_d_lr)
LOADER_LOSS_WEIGHTING = "batch"
LOADER_LOSS_WEIGHTINGS = ("batch", "token")
LR_SCHEDULE = "exact"

# public name -> the module that defines it
_EXPORTS = {
    **dict.fromkeys(["capture_rng", "isolated_rng", "restore_rng"], "gptref.rng"),
    **dict.fromkeys(
        ["load_checkpoint", "load_config", "load_state_dict", "save_checkpoint", "save_state_dict"],
        "gptref.checkpoint",
    ),  # fmt: skip
    **dict.fromkeys(
        ["batch_order", "batches", "chunk", "collate", "num_chunks", "split", "tokenize"],
        "gptref.data",
    ),
    **dict.fromkeys(["load_state_dict", "save_state_dict"], "gptref.pth"),
    **dict.fromkeys(["BatchOrderSampler", "GPTDataset", "create_dataloader"], "gptref.loader"),
    **dict.fromkeys(["PreparedCorpus", "TextCorpus", "TokenFile"], "gptref.tokens"),
    **dict.fromkeys(
        [
            "FAST",
            "FAST_BF16",
            "FAST_FP32",
            "FastPaths",
            "choose_fast",
            "compile_model",
            "make_optimizer",
            "set_tf32",
            "unwrap",
        ],
        "gptref.fast",
    ),
    **dict.fromkeys(["generate", "generate_text_simple"], "gptref.generation"),
    **dict.fromkeys(["calc_loss_batch", "calc_loss_loader", "perplexity"], "gptref.loss"),
    "chunked_cross_entropy": "gptref.chunked_loss",
    **dict.fromkeys(
        [
            "GPT_CONFIG_124M",
            "GPT_CONFIG_355M",
            "GPT_CONFIG_774M",
            "GPT_CONFIG_1558M",
            "GPT_CONFIG_SMALL",
            "GPT_CONFIG_TINY",
            "GPTConfig",
            "GPTModel",
        ],
        "gptref.model",
    ),  # fmt: skip
    **dict.fromkeys(["appendix_d_lr", "lr_at"], "gptref.schedule"),
    **dict.fromkeys(
        ["gpt2_tokenizer", "text_to_token_ids", "token_ids_to_text"], "gptref.tokenizer"
    ),
    **dict.fromkeys(["NonFiniteError", "StepResult", "evaluate", "train_step"], "gptref.step"),
    "train": "gptref.loop",
    **dict.fromkeys(["History", "TrainState"], "gptref.state"),
    "RunConfig": "gptref.config",
    "train_run": "gptref.commands.train_job",
    **dict.fromkeys(
        [
            "config_from_hf",
            "export_hf",
            "gptref_to_hf",
            "hf_to_gptref",
            "import_hf",
            "load_hf_safetensors",
        ],
        "gptref.weights",
    ),  # fmt: skip
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gptref' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
