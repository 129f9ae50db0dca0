"""FLOP counts and peak FLOP/s: the two halves of MFU (model FLOPs utilization).

``flops_per_token`` is the model's training FLOPs per token (PaLM's count, nanoGPT's
estimate_mfu); ``device_peak_flops`` the matmul peak to divide by: measured on a CPU,
the datasheet's on a known CUDA card.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from typing import Any

import torch

from gptref.fast_probe import matmul_flops
from gptref.memory import parameter_count
from gptref.model import GPTConfig, as_config

# published dense (no sparsity) peaks, FLOP/s: NVIDIA H100/H200 and A100 datasheets;
# float32 is the plain FP32 rate: PyTorch leaves TF32 matmuls off unless asked
CUDA_PEAK_FLOPS = {
    "H100 PCIe": {"bfloat16": 756e12, "float32": 51.2e12, "tf32": 378e12},
    "H100": {"bfloat16": 989e12, "float32": 67e12, "tf32": 495e12},  # SXM
    "H200": {"bfloat16": 989e12, "float32": 67e12, "tf32": 495e12},
    "A100": {"bfloat16": 312e12, "float32": 19.5e12, "tf32": 156e12},
}


def flops_per_token(config: GPTConfig | Mapping[str, Any], context: int | None = None) -> int:
    """Training FLOPs per token, ``6*N + 12*L*H*Q*T`` (PaLM, Chowdhery et al. 2022, app. B;
    nanoGPT's estimate_mfu). N leaves out tok_emb and pos_emb, which are lookups, and keeps
    out_head, a real (E, V) matmul (without a vocabulary pad's rows); nanoGPT's N is the same
    count (its wte is tied to lm_head)."""
    cfg = as_config(config)
    T = cfg.context_length if context is None else context
    pad = (cfg.padded_vocab_size - cfg.vocab_size) * cfg.emb_dim  # padding is not useful work
    return 6 * (parameter_count(cfg, embeddings=False) - pad) + 12 * cfg.n_layers * cfg.emb_dim * T


@functools.cache
def cpu_peak_flops(dtype: str = "float32", size: int = 2048, seconds: float = 0.5) -> float:
    """The best FLOP/s of ``size``-square matmuls in ``dtype`` on this CPU (all torch
    threads) over ~``seconds`` by wall clock (measured once per process and remembered)."""
    return matmul_flops(dtype, size, seconds=seconds, clock=time.perf_counter)


def device_peak_flops(device: str, dtype: str) -> float | None:
    """Peak dense FLOP/s: measured on CPU, the datasheet's for known CUDA cards, else None."""
    if device == "cpu":
        return cpu_peak_flops(dtype)
    name = torch.cuda.get_device_name(0)
    key = "tf32" if dtype == "float32" and torch.backends.cuda.matmul.allow_tf32 else dtype
    for card, peaks in CUDA_PEAK_FLOPS.items():  # "H100 PCIe" before "H100"
        if all(word in name for word in card.split()):
            return peaks[key]
    return None
