"""The GPT of chapter 4, exactly: GPTModel with the book's parameter names, and ``unwrap``.

Parameters are created in the book's order with the book's names (``tok_emb``, ``pos_emb``,
``trf_blocks.{i}.att.W_query`` ...), so ``torch.manual_seed(123); GPTModel(cfg)`` draws the
book's initial weights and the book's saved ``model.pth`` state dicts load unchanged. The
forward pass repeats the book's floating-point operations in the book's order (its own
LayerNorm and tanh-GELU, the masked-softmax attention), and its dropout layers draw from the
global RNG in the book's order, so training reproduces the book's loss log.

The configs and presets are ``gptref.gpt_config``'s (re-exported here).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gptref._check import check_choice
from gptref.gpt_config import (  # noqa: F401  (re-exported: the model's names)
    ATTN_IMPLS,
    GPT_CONFIG_124M,
    GPT_CONFIG_355M,
    GPT_CONFIG_774M,
    GPT_CONFIG_1558M,
    GPT_CONFIG_SMALL,
    GPT_CONFIG_TINY,
    PRESETS,
    AttnImpl,
    GPTConfig,
    as_config,
    preset,
    resolve_config,
)


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
            # a bad id would be an index error deep in the embedding (on CUDA a device-side
            # assert): check the range here, without reading it back to the host (no sync
            # per forward; on the CPU the assert raises at once, and is explained below).
            # Skipped inside torch.compile, which traces the graph without it.
            low, high = torch.aminmax(in_idx)
            ok = (low >= 0) & (high < self.cfg.vocab_size)
            try:
                torch._assert_async(ok, "GPTModel: a token id is outside [0, vocab_size)")
            except RuntimeError:
                bad = int(low) if int(low) < 0 else int(high)
                raise ValueError(
                    f"GPTModel: token id {bad} is outside [0, vocab_size={self.cfg.vocab_size}); "
                    "check the tokenizer matches the model's vocab_size"
                ) from None
        return in_idx


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside ``DistributedDataParallel`` and ``torch.compile`` wrappers (any nesting):
    the module whose ``state_dict`` has the book's parameter names."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model
