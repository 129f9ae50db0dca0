"""``RunConfig``: every setting that decides a training run's numbers, typed, documented and
validated once.

Each field carries its help text (``metadata["help"]``): ``gptref train``'s flags are built
from these fields (``--batch-size`` is ``batch_size``), so a setting and its default are
declared here and nowhere else. The fast paths are one nested value, ``fast: FastPaths``;
``to_dict`` flattens them, so a run's ``config.json`` has one key per flag. Named
constructors: ``RunConfig()`` (the CLI's quick run), ``book()`` (chapter 5's set-up).

Validation raises ``FieldError`` (a ``ValueError``) naming the field: ``RunConfig:
batch_size must be >= 1, got 0``; the CLI says the same about ``--batch-size``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from gptref._check import FieldError, check_choice, check_int, check_number
from gptref._setting import nested, setting
from gptref.fast.paths import FastPaths

if TYPE_CHECKING:
    from gptref.gpt_config import GPTConfig

Preset = Literal["tiny", "small", "124M"]  # gptref.model.PRESETS
FLOAT32_MAX = 3.4028234663852886e38


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The settings of one training run; the defaults are ``gptref train``'s quick run."""

    preset: Preset = setting("small", "model size: tiny (~3M parameters), small (~14M), 124M")
    context: int | None = setting(None, "context length (default: the preset's)", metavar="N")
    stride: int | None = setting(None, "window stride (default: the context)", metavar="N")
    batch_size: int = setting(8, "sequences per optimizer step", metavar="N")
    accumulation_steps: int = setting(
        1, "split each batch into K micro-batches (gradient accumulation): the same update "
        "in less memory; gptref plan suggests K", metavar="K",
    )  # fmt: skip
    epochs: int | None = setting(
        None, "passes over the training split (default 1, or as many as --max-steps needs)",
        metavar="N", group="length",
    )  # fmt: skip
    max_steps: int | None = setting(
        None, "stop after N optimizer steps (default: the epochs' steps)",
        metavar="N", group="length",
    )  # fmt: skip
    lr: float = setting(1e-3, "(peak) learning rate", metavar="X")
    weight_decay: float = setting(0.1, "AdamW weight decay", metavar="X")
    warmup: int = setting(0, "linear warmup steps, then cosine decay", metavar="N")
    min_lr: float | None = setting(
        None, "cosine decay ends exactly at X on the last step (default 0 with --warmup)",
        metavar="X",
    )  # fmt: skip
    grad_clip: float | None = setting(None, "clip the gradient norm to X", metavar="X")
    eval_freq: int = setting(10, "evaluate every N steps", metavar="N")
    eval_iter: int = setting(5, "batches per evaluation", metavar="N")
    train_ratio: float = setting(0.9, "share of characters for training", metavar="X")
    seed: int = setting(123, "seed for weights, batches and dropout", metavar="N")
    # the book's loaders draw their order from the global RNG (set by --book, not a flag)
    book_mode_loaders: bool = False
    fast: FastPaths = nested(FastPaths)

    def __post_init__(self) -> None:
        where = "RunConfig"
        check_choice(where, "preset", self.preset, get_args(Preset))
        for name in ("batch_size", "accumulation_steps", "eval_freq", "eval_iter"):
            check_int(where, name, getattr(self, name), low=1)
        if self.accumulation_steps > self.batch_size:
            raise FieldError(
                where, "accumulation_steps",
                f"must be <= batch_size ({self.batch_size}), got {self.accumulation_steps}",
            )  # fmt: skip
        for name in ("context", "stride", "epochs", "max_steps"):
            if getattr(self, name) is not None:
                check_int(where, name, getattr(self, name), low=1)
        check_int(where, "warmup", self.warmup, low=0)
        check_number(where, "lr", self.lr, low=0, open_low=True, hint="; the book uses 4e-4")
        check_number(where, "weight_decay", self.weight_decay, low=0, hint="; the book uses 0.1")
        for name in ("lr", "weight_decay"):  # AdamW computes with them in float32
            if getattr(self, name) > FLOAT32_MAX:
                raise FieldError(where, name, f"must be <= {FLOAT32_MAX:.4g} (float32), got {getattr(self, name)}")  # fmt: skip
        if self.min_lr is not None:
            check_number(where, "min_lr", self.min_lr, low=0, high=self.lr)
        if self.grad_clip is not None:
            check_number(where, "grad_clip", self.grad_clip, low=0, open_low=True)
        check_number(
            where, "train_ratio", self.train_ratio, low=0, high=1, open_low=True,
            open_high=True, hint="; e.g. 0.9",
        )  # fmt: skip
        if not 0 <= check_int(where, "seed", self.seed) < 2**32:
            raise FieldError(where, "seed", f"must be in [0, 2**32), got {self.seed}")
        if not isinstance(self.fast, FastPaths):
            raise TypeError(f"{where}: fast must be a FastPaths, got {type(self.fast).__name__}")

    @property
    def num_epochs(self) -> int | None:
        """Epochs to run: ``epochs``, else 1 without ``max_steps``, else None (until max_steps)."""
        if self.epochs is not None:
            return self.epochs
        return 1 if self.max_steps is None else None

    def total_steps(self, steps_per_epoch: int) -> int:
        """Optimizer steps the run takes with ``steps_per_epoch`` batches per epoch."""
        if self.num_epochs is None:
            return self.max_steps  # type: ignore[return-value]
        total = steps_per_epoch * self.num_epochs
        return total if self.max_steps is None else min(total, self.max_steps)

    def model_config(self) -> GPTConfig:
        """The preset at ``context`` with the model-side fast paths."""
        from gptref.gpt_config import preset

        cfg = preset(self.preset) if self.context is None else preset(self.preset, context_length=self.context)  # fmt: skip
        return self.fast.apply(cfg)

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with ``changes``; fast-path fields (``dtype``, ``attn``, ...) may be given flat."""
        return RunConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """-> one flat dict, a key per setting (the fast paths' beside the others)."""
        flat = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "fast"}
        return {**flat, **dataclasses.asdict(self.fast)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunConfig:
        """``to_dict``'s flat dict (or a run's saved ``config.json["run"]``) -> RunConfig."""
        own = {f.name for f in dataclasses.fields(cls)} - {"fast"}
        fast_keys = {f.name for f in dataclasses.fields(FastPaths)}
        unknown = sorted(set(d) - own - fast_keys - {"fast"})
        if unknown:
            raise ValueError(
                f"RunConfig: unknown settings {unknown}; the settings are {sorted(own | fast_keys)}"
            )
        fast = d.get("fast")
        if not isinstance(fast, FastPaths):
            fast = FastPaths.from_dict({k: v for k, v in d.items() if k in fast_keys})
        return cls(**{k: v for k, v in d.items() if k in own}, fast=fast)


def book() -> RunConfig:
    """Chapter 5's set-up: GPT-124M at context 256, stride 256, batch 2, AdamW lr 4e-4 /
    weight decay 0.1, 10 epochs, eval_freq 5, eval_iter 5, seed 123, the book's loaders."""
    return RunConfig(
        preset="124M", context=256, stride=256, batch_size=2, epochs=10, lr=4e-4,
        weight_decay=0.1, eval_freq=5, eval_iter=5, seed=123, book_mode_loaders=True,
    )  # fmt: skip


# the book's corpus, the-verdict.txt (Edith Wharton's short story), as the book's repository
# holds it: --book reproduces the book's printed numbers on this file, byte for byte, only
BOOK_TEXT_URL = (
    "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch02/01_main-chapter-code/"
    "the-verdict.txt"
)
BOOK_TEXT_SHA256 = "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f"


def book_text_mismatch(texts: Sequence[str | Path] | None) -> str | None:
    """The ``--text`` files of a ``--book`` run -> why its numbers will not be the book's (one
    line: the file, its SHA-256, where the book's copy is), or None for the book's copy of
    the-verdict.txt. A file that cannot be read is left to the run's own error."""
    where = f"the book's the-verdict.txt is {BOOK_TEXT_URL} (SHA-256 {BOOK_TEXT_SHA256[:16]}...)"
    if not texts or len(texts) != 1:
        given = "no --text (the built-in corpus)" if not texts else f"{len(texts)} --text files"
        return f"--book reproduces the book's numbers on one file, given {given}; {where}"
    try:
        digest = hashlib.sha256(Path(texts[0]).read_bytes()).hexdigest()
    except OSError:
        return None
    if digest == BOOK_TEXT_SHA256:
        return None
    return (f"{texts[0]} has SHA-256 {digest[:16]}..., so the numbers will not be the book's; "
            f"{where}")  # fmt: skip
