"""The model's shape: ``GPTConfig``, the book's config dicts (``GPT_CONFIG_124M`` ...) and the
presets. No torch here: the command line reads these before torch is imported.

Presets are plain dicts with the book's keys, as the book writes ``GPT_CONFIG_124M``:
``GPTModel(GPT_CONFIG_124M)`` and ``GPTConfig.from_dict(GPT_CONFIG_124M)`` both work. Derive a
variant with ``{**GPT_CONFIG_124M, "context_length": 256}`` rather than mutating a preset.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal, get_args

from gptref._check import check_choice, check_int, check_number

AttnImpl = Literal["reference", "sdpa"]
ATTN_IMPLS = get_args(AttnImpl)

# the book's chapter-4 config (GPT-2 small); chapter 5 trains it with context_length 256
GPT_CONFIG_124M: dict[str, Any] = {
    "vocab_size": 50257,
    "context_length": 1024,
    "emb_dim": 768,
    "n_heads": 12,
    "n_layers": 12,
    "drop_rate": 0.1,
    "qkv_bias": False,
}
# the larger GPT-2 sizes of the book's chapter-4 exercise: only width, depth and heads change
GPT_CONFIG_355M: dict[str, Any] = {
    **GPT_CONFIG_124M,
    "emb_dim": 1024,
    "n_layers": 24,
    "n_heads": 16,
}
GPT_CONFIG_774M: dict[str, Any] = {
    **GPT_CONFIG_124M,
    "emb_dim": 1280,
    "n_layers": 36,
    "n_heads": 20,
}
GPT_CONFIG_1558M: dict[str, Any] = {
    **GPT_CONFIG_124M,
    "emb_dim": 1600,
    "n_layers": 48,
    "n_heads": 25,
}
# for tests and demos: GPT-2's vocabulary, so real tokenizer ids work, and ~3.3M parameters
# (almost all in tok_emb and out_head); a forward pass takes milliseconds
GPT_CONFIG_TINY: dict[str, Any] = {
    **GPT_CONFIG_124M,
    "context_length": 64,
    "emb_dim": 32,
    "n_heads": 4,
    "n_layers": 2,
}
# for the CLI's quick run: ~14M parameters; an epoch of the-verdict.txt (18 steps of batch 2)
# trains in ~6 s on one CPU core, so the book's ten epochs with evaluation take about 2 minutes
GPT_CONFIG_SMALL: dict[str, Any] = {
    **GPT_CONFIG_124M,
    "context_length": 128,
    "emb_dim": 128,
    "n_heads": 4,
    "n_layers": 4,
}


# the presets of `gptref train --preset` (gptref.run.config.Preset names them)
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": GPT_CONFIG_TINY,
    "small": GPT_CONFIG_SMALL,
    "124M": GPT_CONFIG_124M,
}


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """The model's hyperparameters; the book's dict keys, plus the attention implementation."""

    vocab_size: int = 50257  # GPT-2 BPE ids are 0..50256
    context_length: int = 1024  # longest sequence; rows of pos_emb and of the causal mask
    emb_dim: int = 768  # width of the residual stream
    n_heads: int = 12  # attention heads; each is emb_dim // n_heads wide
    n_layers: int = 12  # transformer blocks
    drop_rate: float = 0.1  # one rate for embedding, attention-weight and shortcut dropout
    qkv_bias: bool = False  # bias in W_query/W_key/W_value (the book: False; GPT-2 weights: True)
    attn_impl: AttnImpl = "reference"  # "reference": the book's ops; "sdpa": fused, faster
    # out_head rows rounded up to a multiple of this (GPU matmuls like 64); the extra rows
    # start at zero, draw no random numbers, and are sliced off the logits: same function
    vocab_pad_multiple: int = 1
    # LayerNorm and GELU as one kernel each (F.layer_norm, F.gelu(approximate="tanh")): the
    # book's functions, parameters and names, other rounding; False repeats the book's ops
    fused_layers: bool = False
    # activation checkpointing: in training, blocks i with i % recompute == 0 keep only their
    # input and recompute the rest in the backward (1: every block; 0: none, the book's)
    recompute: int = 0

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "context_length",
            "emb_dim",
            "n_heads",
            "n_layers",
            "vocab_pad_multiple",
        ):
            check_int("GPTConfig", name, getattr(self, name), low=1)
        check_int("GPTConfig", "recompute", self.recompute, low=0, hint=" (0: no recomputation)")
        if self.emb_dim % self.n_heads:
            raise ValueError(
                f"GPTConfig: emb_dim ({self.emb_dim}) must be a multiple of n_heads "
                f"({self.n_heads}); e.g. emb_dim={self.emb_dim // self.n_heads * self.n_heads or self.n_heads}"
            )
        check_number(
            "GPTConfig",
            "drop_rate",
            self.drop_rate,
            low=0,
            high=1,
            open_high=True,
            hint="; e.g. 0.1",
        )
        for flag in ("qkv_bias", "fused_layers"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(
                    f"GPTConfig: {flag} must be True or False, got {getattr(self, flag)!r}"
                )
        check_choice("GPTConfig", "attn_impl", self.attn_impl, ATTN_IMPLS)

    @property
    def head_dim(self) -> int:
        return self.emb_dim // self.n_heads

    def recomputes(self, block: int) -> bool:
        """Whether block ``block`` (0-based) is recomputed in the backward (checkpointed)."""
        return self.recompute > 0 and block % self.recompute == 0

    @property
    def padded_vocab_size(self) -> int:
        """Rows of ``out_head``: ``vocab_size`` rounded up to ``vocab_pad_multiple``."""
        return -(-self.vocab_size // self.vocab_pad_multiple) * self.vocab_pad_multiple

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GPTConfig:
        """The book's config dict (``vocab_size, context_length, emb_dim, n_heads, n_layers,
        drop_rate, qkv_bias``; ``attn_impl`` optional) -> GPTConfig. Missing keys take the
        defaults above (GPT-2 small); unknown keys are a ValueError."""
        if not isinstance(d, Mapping):
            raise TypeError(f"GPTConfig.from_dict: expected a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"GPTConfig.from_dict: unknown keys {unknown}; the keys are {sorted(known)}"
            )
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """-> the book's dict (all seven keys) plus ``attn_impl``, ``vocab_pad_multiple``,
        ``fused_layers`` and ``recompute``; ``from_dict`` inverts it."""
        return dataclasses.asdict(self)


def preset(name: str, **overrides: Any) -> GPTConfig:
    """A preset's name ('tiny', 'small', '124M') -> its GPTConfig, with ``overrides``
    (e.g. ``context_length=256``, as the book trains GPT-124M)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; the presets are {sorted(PRESETS)}")
    return GPTConfig.from_dict({**PRESETS[name], **overrides})


def resolve_config(config: str | GPTConfig | Mapping[str, Any], **overrides: Any) -> GPTConfig:
    """A preset's name, a GPTConfig or the book's dict -> GPTConfig with ``overrides`` (those
    given as None are left out: ``resolve_config("124M", context_length=None)`` is the preset)."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(config, str):
        return preset(config, **changes)
    return GPTConfig.from_dict({**as_config(config).to_dict(), **changes})


def as_config(cfg: GPTConfig | Mapping[str, Any]) -> GPTConfig:
    """A GPTConfig or the book's dict -> GPTConfig."""
    return cfg if isinstance(cfg, GPTConfig) else GPTConfig.from_dict(cfg)
