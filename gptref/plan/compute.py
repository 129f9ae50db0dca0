"""A step's compute, counted from the model's shape: ``flops_per_token`` (PaLM's count,
nanoGPT's estimate_mfu), the numerator of MFU and the planner's measure of a lever's cost."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gptref.gpt_config import GPTConfig, as_config
from gptref.plan.memory import parameter_count


def flops_per_token(config: GPTConfig | Mapping[str, Any], context: int | None = None) -> int:
    """Training FLOPs per token, ``6*N + 12*L*H*Q*T`` (PaLM, Chowdhery et al. 2022, app. B;
    nanoGPT's estimate_mfu). N leaves out tok_emb and pos_emb, which are lookups, and keeps
    out_head, a real (E, V) matmul (without a vocabulary pad's rows); nanoGPT's N is the same
    count (its wte is tied to lm_head)."""
    cfg = as_config(config)
    T = cfg.context_length if context is None else context
    pad = (cfg.padded_vocab_size - cfg.vocab_size) * cfg.emb_dim  # padding is not useful work
    return 6 * (parameter_count(cfg, embeddings=False) - pad) + 12 * cfg.n_layers * cfg.emb_dim * T
