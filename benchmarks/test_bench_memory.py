"""Memory-model accuracy: estimate_training_memory against the measured peak of a train_step.

``python -m pytest benchmarks/test_bench_memory.py``. Each case measures one steady-state
``train_step`` (after a warm-up step, so AdamW's state exists) in a Python process of its own
(``gptref.bench.measure_memory``: peak RSS over the bare process with glibc's mmap threshold
fixed at 64 KiB on CPU; ``max_memory_allocated`` on CUDA). ``extra_info`` records predicted
and measured bytes and ``predicted_over_measured``, the number to track: the issue asks for
it within [0.9, 1.1]. The timing is the measurement's own, meaningless. GPT-124M runs at
context 256 (the book's chapter 5); its batch 8 step needs ~6.5 GiB. ~6 minutes on 2 cores.
"""

from __future__ import annotations

import pytest
import torch

from gptref.bench import measure_memory
from gptref.model import GPT_CONFIG_124M, GPT_CONFIG_SMALL, GPT_CONFIG_TINY
from gptref.plan.memory import estimate_training_memory

CONFIGS = {
    "tiny": GPT_CONFIG_TINY,
    "small": GPT_CONFIG_SMALL,
    "124m": {**GPT_CONFIG_124M, "context_length": 256},
}
CASES = [(c, b) for c in ("tiny", "small") for b in (1, 4, 16)] + [("124m", b) for b in (1, 4, 8)]
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    ),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("attn", ["reference", "sdpa"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize(("config", "batch"), CASES)
def test_bench_memory_model(benchmark, config, batch, dtype, attn, device):
    """predicted / measured peak bytes of one train_step at (batch, the config's context)."""
    cfg = {**CONFIGS[config], "attn_impl": attn}
    measured = benchmark.pedantic(
        measure_memory, (cfg, batch), {"dtype": dtype, "device": device}, rounds=1
    )
    est = estimate_training_memory(
        cfg, batch, autocast=dtype if dtype == "bfloat16" else None, device=device
    )
    benchmark.extra_info.update(
        config=config,
        batch=batch,
        dtype=dtype,
        attn=attn,
        device=device,
        context=est.context,
        predicted_bytes=est.total,
        measured_bytes=measured,
        predicted_over_measured=est.total / measured if measured else None,
        peak_phase=est.peak_phase,
    )
