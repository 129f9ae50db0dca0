"""What an implementation may declare, as module attributes: where it departs from the book on
purpose (conventions) and which optional features it lacks (``UNSUPPORTED``).

Every convention has a default, the book's (or, where the book has nothing to say, gptref's),
so a module that declares nothing is checked against the book. ``declared(modules)`` reads
them (the first module that defines an attribute wins) and validates each once, with a
``ValueError`` naming the value and the values allowed.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

# name -> (allowed values, default, what it means)
CHOICES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "LOADER_LOSS_WEIGHTING": (
        ("batch", "token"),
        "batch",
        "calc_loss_loader: the mean of per-batch means (the book's) or over all counted targets",
    ),
    "LR_SCHEDULE": (
        ("appendix_d", "exact"),
        "appendix_d",
        "lr_at's cosine: appendix D's formula as printed (never reaches min_lr) or one that is "
        "exactly at min_lr from step total_steps - 1 on",
    ),
    "WARMUP": (
        ("book", "nanogpt"),
        "book",
        "lr_at's warmup: initial_lr + step * (peak_lr - initial_lr) / warmup_steps (the book's) "
        "or nanoGPT's peak_lr * (step + 1) / (warmup_steps + 1) (initial_lr unused)",
    ),
    "SHARDING": (
        ("drop-remainder", "pad"),
        "drop-remainder",
        "batch_order with world_size > 1: drop the last n % world_size samples of the order "
        "(gptref's) or pad the order with its own first samples to a multiple of world_size "
        "(torch's DistributedSampler)",
    ),
    "CLIP_START": (
        (">=", ">"),
        ">=",
        "train_model clips once global_step >= warmup_steps (the book's repository) or > "
        "warmup_steps (the print edition: the first step after the warmup goes unclipped)",
    ),
    "TEXT_TO_TOKEN_IDS": (
        ("allow-endoftext", "encode"),
        "allow-endoftext",
        "text_to_token_ids: tokenizer.encode(text, allowed_special={'<|endoftext|>'}) (chapter "
        "5's notebook, the book's package) or tokenizer.encode(text) (the chapter-5 scripts "
        "gpt_train.py and gpt_generate.py, appendix D's previous_chapters.py), which refuses a "
        "text holding <|endoftext|> with tiktoken's ValueError",
    ),
    "EPOCH_SAMPLE": (
        ("epoch", "eval", "none"),
        "epoch",
        "train_model_simple / train_model: the greedy 50-token sample from start_context "
        "(generate_and_print_sample) after every epoch (the book's), after every evaluation "
        "instead, or none",
    ),
    "ACCUMULATION_WEIGHTING": (
        ("token", "batch"),
        "token",
        "train_step with accumulation_steps = k: micro-batch means weighted by their counted "
        "targets (the full batch's update) or each divided by k (nanoGPT's)",
    ),
}

# optional features an implementation may declare it lacks: UNSUPPORTED = {"greedy", ...}
FEATURES: dict[str, str] = {
    "greedy": "generate at temperature 0 (the argmax)",
    "top_k": "generate's top_k",
    "eos_id": "generate's eos_id (stop before the end-of-text token)",
    "grad_clip": "train_step's grad_clip",
}

DEFAULT_IGNORE_INDEX = -100  # F.cross_entropy's, which the book's calc_loss_batch relies on
DEFAULT_LR_ULPS = 4  # every schedule comparison is to within this many ulps of peak_lr


def _first(modules: Sequence[ModuleType], name: str, default: Any) -> Any:
    for module in modules:
        if hasattr(module, name):
            return getattr(module, name)
    return default


def declared(modules: Sequence[ModuleType], spec: str) -> dict[str, Any]:
    """The conventions ``modules`` declare (defaults filled in), validated: -> a dict with every
    key of CHOICES, plus LOADER_LOSS_WEIGHTINGS, IGNORE_INDEX, LR_ULPS and UNSUPPORTED."""
    out: dict[str, Any] = {}
    for name, (allowed, default, _) in CHOICES.items():
        value = _first(modules, name, default)
        if value not in allowed:
            raise ValueError(
                f"{spec}.{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}"
            )
        out[name] = value
    weightings = tuple(_first(modules, "LOADER_LOSS_WEIGHTINGS", ()))
    unknown = [w for w in weightings if w not in CHOICES["LOADER_LOSS_WEIGHTING"][0]]
    if unknown:
        raise ValueError(
            f"{spec}.LOADER_LOSS_WEIGHTINGS may hold only 'batch' and 'token', got {unknown}"
        )
    out["LOADER_LOSS_WEIGHTINGS"] = weightings
    ignore = _first(modules, "IGNORE_INDEX", DEFAULT_IGNORE_INDEX)
    if not isinstance(ignore, int) or isinstance(ignore, bool) or ignore >= 0:
        raise ValueError(
            f"{spec}.IGNORE_INDEX must be a negative int (a target no token id can take), "
            f"got {ignore!r}; the book's is -100"
        )
    out["IGNORE_INDEX"] = ignore
    ulps = _first(modules, "LR_ULPS", DEFAULT_LR_ULPS)
    if not isinstance(ulps, int) or isinstance(ulps, bool) or not 0 <= ulps <= 64:
        raise ValueError(f"{spec}.LR_ULPS must be an int in [0, 64], got {ulps!r}; default 4")
    out["LR_ULPS"] = ulps
    unsupported = frozenset(_first(modules, "UNSUPPORTED", ()))
    unknown = sorted(unsupported - FEATURES.keys())
    if unknown:
        raise ValueError(
            f"{spec}.UNSUPPORTED holds unknown features {unknown}; the features are "
            f"{', '.join(sorted(FEATURES))}"
        )
    out["UNSUPPORTED"] = unsupported
    return out


def describe(conventions: dict[str, Any]) -> str:
    """One line: the conventions that differ from the defaults, then the unsupported features."""
    parts = [f"{k}={conventions[k]!r}" for k, (_, d, _) in CHOICES.items() if conventions[k] != d]
    if conventions["LOADER_LOSS_WEIGHTINGS"]:
        parts.append(f"LOADER_LOSS_WEIGHTINGS={conventions['LOADER_LOSS_WEIGHTINGS']!r}")
    if conventions["IGNORE_INDEX"] != DEFAULT_IGNORE_INDEX:
        parts.append(f"IGNORE_INDEX={conventions['IGNORE_INDEX']}")
    if conventions["LR_ULPS"] != DEFAULT_LR_ULPS:
        parts.append(f"LR_ULPS={conventions['LR_ULPS']}")
    unsupported = ", ".join(sorted(conventions["UNSUPPORTED"])) or "none"
    text = ", ".join(parts) or "the book's"
    return f"conventions: {text}; unsupported: {unsupported}"
