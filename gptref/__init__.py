"""gptref: the reference GPT pretraining data path and training step of "Build a Large
Language Model (From Scratch)" (chapters 2 and 5, appendix D).

The book is the top folder, read in this order (the data flows this way); it imports nothing
of gptref outside itself::

    tokenizer.py    offline GPT-2 BPE (tiktoken), text <-> ids
    data.py         pure functions: split, tokenize, num_chunks, chunk, batch_order, collate, batches
    loader.py       GPTDataset, BatchOrderSampler, create_dataloader (torch plumbing)
    gpt_config.py   GPTConfig and the book's config dicts (torch-free)
    model.py        GPTModel with the book's names; unwrap
    loss.py         calc_loss_batch, calc_loss_loader, perplexity (the one home of the loss)
    chunked_loss.py the head and cross-entropy in row chunks, without the (b*T, V) logits
    schedule.py     lr_at (warmup + cosine), the book's appendix-D formula
    step.py         train_step, evaluate (a process group comes in as an argument)
    state.py        TrainState, History: where a run stands and what it recorded
    rng.py          capture, restore and isolate the global RNGs
    generation.py   generate (greedy, temperature, top-k, eos), the loop's per-epoch sample
    loop.py         train: the book's loop, with a callback after every step
    _check.py       argument checks and one-line errors

Around it, each folder a layer that may import only the layers listed before it::

    fast/           FastPaths (every opt-in speed and memory switch); choose_fast (--fast: the
                    fastest tested bundle for the device, by a measured bf16 probe on CPU);
                    distributed (torchrun/DDP)
    corpus/         token files, text and prepared corpora, and their writer (gptref prepare)
    plan/           the analytic training-memory model and the batch/lever planner
    run/            RunConfig, checkpoints and snapshots, resuming, run directories, train_run,
                    load_model (a trained model from any folder of a run)
    weights/        Hugging Face GPT-2 safetensors and the book's model.pth
    bench/          measure, FLOPs, sweeps, fast-path and lever comparisons (gptref bench)
    track/          regression tracking across commits and torch versions (gptref track)
    cli/            the command line: argparse built from dataclasses, one module per subcommand
    conformance/    the specification as a pytest suite, runnable against any implementation

``_io.py`` (atomic writes, locks), ``_owned.py`` (what gptref may replace or delete: only
what it wrote) and ``_setting.py`` (a dataclass field that is a flag) are helpers any layer
may use. ``tests/test_architecture.py`` holds the layers to this order.

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

# the module that defines each public name
_EXPORTS = {
    name: module
    for module, names in {
        "gptref.tokenizer": "gpt2_tokenizer text_to_token_ids token_ids_to_text",
        "gptref.data": "batch_order batches chunk collate num_chunks split tokenize",
        "gptref.loader": "BatchOrderSampler GPTDataset create_dataloader",
        "gptref.gpt_config": "GPT_CONFIG_124M GPT_CONFIG_355M GPT_CONFIG_774M GPT_CONFIG_1558M "
        "GPT_CONFIG_SMALL GPT_CONFIG_TINY GPTConfig",
        "gptref.model": "GPTModel unwrap",
        "gptref.loss": "calc_loss_batch calc_loss_loader perplexity",
        "gptref.chunked_loss": "chunked_cross_entropy",
        "gptref.schedule": "appendix_d_lr lr_at",
        "gptref.step": "NonFiniteError StepResult evaluate train_step",
        "gptref.state": "History TrainState",
        "gptref.rng": "capture_rng isolated_rng restore_rng",
        "gptref.generation": "generate generate_text_simple",
        "gptref.loop": "train",
        "gptref.fast.paths": "FAST_BF16 FAST_FP32 FastPaths compile_model make_optimizer set_tf32",
        "gptref.fast.choice": "FAST choose_fast",
        "gptref.corpus.tokens": "PreparedCorpus TextCorpus TokenFile",
        "gptref.run.config": "RunConfig",
        "gptref.run.checkpoint": "load_checkpoint load_config save_checkpoint",
        "gptref.run.job": "train_run",
        "gptref.run.pretrained": "load_model",
        "gptref.weights.pth": "load_state_dict save_state_dict",
        "gptref.weights.hf": "config_from_hf export_hf gptref_to_hf hf_to_gptref import_hf "
        "load_hf_safetensors",
    }.items()
    for name in names.split()
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
