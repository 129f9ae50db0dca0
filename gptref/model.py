"""The GPT of chapter 4, exactly: GPTConfig, the presets, and GPTModel with the book's parameter names.

Parameters are created in the book's order with the book's names (``tok_emb``, ``pos_emb``,
``trf_blocks.{i}.att.W_query`` ...), so ``torch.manual_seed(123); GPTModel(cfg)`` draws the
book's initial weights and the book's saved ``model.pth`` state dicts load unchanged. The
forward pass repeats the book's floating-point operations in the book's order (its own
LayerNorm and tanh-GELU, the masked-softmax attention), and its dropout layers draw from the
global RNG in the book's order, so training reproduces the book's loss log.

Presets are plain dicts with the book's keys, as the book writes ``GPT_CONFIG_124M``:
``GPTModel(GPT_CONFIG_124M)`` and ``GPTConfig.from_dict(GPT_CONFIG_124M)`` both work. Derive a
variant with ``{**GPT_CONFIG_124M, "context_length": 256}`` rather than mutating a preset.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

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


# the presets of `gptref train --preset` (gptref.config.Preset names them)
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


def check_token_batch(where: str, name: str, ids: Any, *, nonempty: bool = False) -> torch.Tensor:
    """``ids``: int (b, T) -> ids; TypeError / ValueError naming ``where`` and ``name`` otherwise
    (``nonempty``: b, T >= 1 too)."""
    if not isinstance(ids, torch.Tensor):
        raise TypeError(
            f"{where}: {name} must be a tensor of token ids, got {type(ids).__name__}; "
            "e.g. gptref.text_to_token_ids(text)"
        )
    dtype = ids.dtype
    if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
        raise TypeError(
            f"{where}: {name} must be an integer tensor, got dtype {dtype}; pass int64 ids "
            "(e.g. from gptref.text_to_token_ids)"
        )
    if ids.dim() != 2 or (nonempty and 0 in ids.shape):
        raise ValueError(
            f"{where}: {name} must have shape (batch, T){' with batch, T >= 1' if nonempty else ''}"
            f", got {tuple(ids.shape)}; add a batch dimension with ids.unsqueeze(0)"
        )
    return ids


class LayerNorm(nn.Module):
    """The book's LayerNorm: (..., emb_dim) -> same; biased variance, eps 1e-5, ``scale``/``shift``.

    ``fused=True`` computes the same function with ``F.layer_norm`` (one kernel)."""

    def __init__(self, emb_dim: int, fused: bool = False) -> None:
        super().__init__()
        self.eps = 1e-5
        self.fused = fused
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return F.layer_norm(x, self.scale.shape, self.scale, self.shift, self.eps)
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        norm_x = (x - mean) / torch.sqrt(var + self.eps)
        return self.scale * norm_x + self.shift


class GELU(nn.Module):
    """The tanh approximation of GELU, elementwise, with the book's float32 constant;
    ``fused=True``: ``F.gelu(x, approximate="tanh")``, the same formula in one kernel."""

    def __init__(self, fused: bool = False) -> None:
        super().__init__()
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return F.gelu(x, approximate="tanh")
        # sqrt(2/pi) is rounded as the book rounds it: a float32 sqrt, not a Python float
        c = torch.sqrt(torch.tensor(2.0 / torch.pi))
        return 0.5 * x * (1 + torch.tanh(c * (x + 0.044715 * torch.pow(x, 3))))


class FeedForward(nn.Module):
    """(b, T, emb_dim) -> same: Linear to 4 * emb_dim, GELU, Linear back (``layers.0``, ``layers.2``)."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg.emb_dim, 4 * cfg.emb_dim),
            GELU(cfg.fused_layers),
            nn.Linear(4 * cfg.emb_dim, cfg.emb_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class MultiHeadAttention(nn.Module):
    """Causal multi-head self-attention: (b, T, d_in) -> (b, T, d_out), T <= context_length.

    ``attn_impl="reference"`` repeats the book's operations; ``"sdpa"`` computes the same
    function with ``F.scaled_dot_product_attention`` (equal up to float rounding in eval
    mode; its attention dropout draws different random numbers). Both keep the book's
    ``mask`` buffer so state dicts are interchangeable.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        context_length: int,
        dropout: float,
        num_heads: int,
        qkv_bias: bool = False,
        attn_impl: AttnImpl = "reference",
    ) -> None:
        super().__init__()
        if d_out % num_heads:
            raise ValueError(
                f"MultiHeadAttention: d_out ({d_out}) must be a multiple of num_heads ({num_heads})"
            )
        check_choice("MultiHeadAttention", "attn_impl", attn_impl, ATTN_IMPLS)
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.attn_impl = attn_impl
        # creation order is the book's: it fixes which random numbers each weight draws
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        # persistent, as in the book: its state dicts carry trf_blocks.{i}.att.mask
        self.register_buffer(
            "mask", torch.triu(torch.ones(context_length, context_length), diagonal=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, T, _ = x.shape
        keys = self.W_key(x)  # (b, T, d_out)
        queries = self.W_query(x)
        values = self.W_value(x)
        keys = keys.view(b, T, self.num_heads, self.head_dim).transpose(1, 2)  # (b, h, T, hd)
        queries = queries.view(b, T, self.num_heads, self.head_dim).transpose(1, 2)
        values = values.view(b, T, self.num_heads, self.head_dim).transpose(1, 2)
        if self.attn_impl == "sdpa":
            context = F.scaled_dot_product_attention(
                queries,
                keys,
                values,
                dropout_p=self.dropout.p if self.training else 0.0,
                is_causal=True,
            )  # (b, h, T, hd)
        else:
            attn_scores = queries @ keys.transpose(2, 3)  # (b, h, T, T)
            attn_scores.masked_fill_(self.mask.bool()[:T, :T], -torch.inf)
            # the book scales after masking: -inf / sqrt(hd) is still -inf
            attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
            attn_weights = self.dropout(attn_weights)
            context = attn_weights @ values  # (b, h, T, hd)
        context = context.transpose(1, 2).contiguous().view(b, T, self.d_out)
        return self.out_proj(context)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: (b, T, emb_dim) -> same; x + drop(att(norm1(x))), then the same with ff."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.att = MultiHeadAttention(
            d_in=cfg.emb_dim,
            d_out=cfg.emb_dim,
            context_length=cfg.context_length,
            dropout=cfg.drop_rate,
            num_heads=cfg.n_heads,
            qkv_bias=cfg.qkv_bias,
            attn_impl=cfg.attn_impl,
        )
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg.emb_dim, cfg.fused_layers)
        self.norm2 = LayerNorm(cfg.emb_dim, cfg.fused_layers)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        x = self.att(x)
        x = self.drop_shortcut(x)
        x = x + shortcut

        shortcut = x
        x = self.norm2(x)
        x = self.ff(x)
        x = self.drop_shortcut(x)
        return x + shortcut


class GPTModel(nn.Module):
    """The book's GPT: token ids int (b, T) -> logits float32 (b, T, vocab_size), T <= context_length.

    ``cfg`` is a GPTConfig or the book's dict. Learned positions, ``n_layers`` pre-LayerNorm
    blocks, a final LayerNorm and an ``out_head`` without bias, untied from ``tok_emb``.
    """

    def __init__(self, cfg: GPTConfig | Mapping[str, Any]) -> None:
        super().__init__()
        cfg = as_config(cfg)
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.Sequential(*[TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = LayerNorm(cfg.emb_dim, cfg.fused_layers)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        if cfg.padded_vocab_size != cfg.vocab_size:
            # pad after the book's initialisation: the real rows and the RNG stream are the
            # book's; the zero rows only ever see zero gradients (their logits are sliced off)
            pad = cfg.padded_vocab_size - cfg.vocab_size
            weight = self.out_head.weight.data
            self.out_head.weight = nn.Parameter(
                torch.cat([weight, weight.new_zeros(pad, cfg.emb_dim)])
            )
            self.out_head.out_features = cfg.padded_vocab_size

    def forward(self, in_idx: torch.Tensor, *, head: bool = True) -> torch.Tensor:
        """ids (b, T) -> logits (b, T, vocab_size); ``head=False``: the final LayerNorm's
        output (b, T, emb_dim), ``out_head``'s input, for a loss that applies the head itself
        in chunks (``gptref.chunked_loss``; the head's weight is ``head_weight()``). A keyword
        of ``forward`` rather than a method, so DDP and torch.compile wrappers pass it on."""
        in_idx = self._check_ids(in_idx)
        _, T = in_idx.shape
        tok_embeds = self.tok_emb(in_idx)  # (b, T, emb_dim)
        pos_embeds = self.pos_emb(torch.arange(T, device=in_idx.device))  # (T, emb_dim)
        x = tok_embeds + pos_embeds
        x = self.drop_emb(x)
        if self.cfg.recompute and self.training and torch.is_grad_enabled():
            x = self._checkpointed_blocks(x)
        else:
            x = self.trf_blocks(x)
        x = self.final_norm(x)
        if not head:
            return x  # (b, T, emb_dim)
        logits = self.out_head(x)  # (b, T, padded_vocab_size)
        if logits.shape[-1] != self.cfg.vocab_size:
            logits = logits[..., : self.cfg.vocab_size]  # a view: no copy here
        return logits  # (b, T, vocab_size)

    def head_weight(self) -> torch.Tensor:
        """``out_head``'s weight on the real vocabulary: (vocab_size, emb_dim); the parameter
        itself when unpadded (a slice's backward would copy the gradient)."""
        weight = self.out_head.weight
        return weight if weight.shape[0] == self.cfg.vocab_size else weight[: self.cfg.vocab_size]

    def _checkpointed_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """The blocks, with ``cfg.recomputes(i)`` ones under ``torch.utils.checkpoint``: they
        keep their input alone and run again in the backward, with the RNG state they first
        ran with (``preserve_rng_state``), so their dropout masks are the same ones."""
        from torch.utils.checkpoint import checkpoint

        for i, block in enumerate(self.trf_blocks):
            if self.cfg.recomputes(i):
                x = checkpoint(block, x, use_reentrant=False, preserve_rng_state=True)
            else:
                x = block(x)
        return x  # (b, T, emb_dim)

    def _check_ids(self, in_idx: torch.Tensor) -> torch.Tensor:
        check_token_batch("GPTModel", "input", in_idx)
        dtype = in_idx.dtype
        T, ctx = in_idx.shape[1], self.cfg.context_length
        if T > ctx:
            raise ValueError(
                f"GPTModel: sequence length {T} exceeds context_length {ctx}; "
                f"keep the last {ctx} tokens (ids[:, -{ctx}:]) or use a larger context_length"
            )
        if dtype not in (torch.int64, torch.int32):
            in_idx = in_idx.long()  # nn.Embedding takes only int32/int64 indices
        if in_idx.numel() and not torch.compiler.is_compiling():
            # one reduction and one transfer; a bad id would otherwise be a device-side assert
            # (skipped inside torch.compile: reading the values would split the graph)
            low, high = (int(v) for v in torch.aminmax(in_idx))
            bad = low if low < 0 else high if high >= self.cfg.vocab_size else None
            if bad is not None:
                raise ValueError(
                    f"GPTModel: token id {bad} is outside [0, vocab_size={self.cfg.vocab_size}); "
                    "check the tokenizer matches the model's vocab_size"
                )
        return in_idx
