"""A straightforward nanoGPT-style GPT of the same shape as ``GPTModel``, for speed comparisons.

Written the way a from-scratch PyTorch GPT usually is: ``nn.LayerNorm``, one fused ``c_attn``
projection for q, k and v, ``F.scaled_dot_product_attention`` with ``is_causal``,
``nn.GELU(approximate="tanh")``. Same parameter count and FLOPs as ``GPTModel(cfg)`` (its
head is untied, like the book's), so ``gptref bench --model benchmarks.nanogpt_style:NanoGPT``
and ``compare_paths`` time the same arithmetic written the common way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gptref.model import GPTConfig, as_config


class Block(nn.Module):
    """(b, T, E) -> (b, T, E): x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        E = cfg.emb_dim
        self.n_head, self.drop = cfg.n_heads, cfg.drop_rate
        self.ln_1 = nn.LayerNorm(E)
        self.c_attn = nn.Linear(E, 3 * E, bias=cfg.qkv_bias)
        self.c_proj = nn.Linear(E, E)
        self.ln_2 = nn.LayerNorm(E)
        self.mlp = nn.Sequential(
            nn.Linear(E, 4 * E), nn.GELU(approximate="tanh"), nn.Linear(4 * E, E)
        )
        self.resid_drop = nn.Dropout(cfg.drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, T, E = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(E, dim=2)
        q, k, v = (t.view(b, T, self.n_head, E // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.drop if self.training else 0.0, is_causal=True
        )  # (b, h, T, hd)
        y = y.transpose(1, 2).contiguous().view(b, T, E)
        x = x + self.resid_drop(self.c_proj(y))
        return x + self.resid_drop(self.mlp(self.ln_2(x)))


class NanoGPT(nn.Module):
    """Token ids int64 (b, T) -> logits (b, T, vocab_size)."""

    def __init__(self, cfg) -> None:
        super().__init__()
        cfg = as_config(cfg)
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.wpe = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop = nn.Dropout(cfg.drop_rate)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.emb_dim)
        self.lm_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        x = self.drop(self.wte(idx) + self.wpe(torch.arange(T, device=idx.device)))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))
