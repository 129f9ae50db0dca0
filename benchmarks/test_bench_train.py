"""Training-step benchmarks: train_step tokens/s by batch size, dtype and gradient accumulation.

``python -m pytest benchmarks/test_bench_train.py``. Configs: GPT_CONFIG_TINY and
GPT_CONFIG_124M at context 256, batch 1/2/4/8 of full-length rows, float32 and bfloat16
autocast, one pass or two accumulated micro-batches; AdamW (lr 4e-4, weight decay 0.1) as
the book trains. ``extra_info`` records tokens/s from the median round, the peak RSS growth
of one more step (``peak_rss_growth`` over the RSS before it, after ``malloc_trim``; glibc's
defaults, so it may differ from the prediction by what malloc keeps: ``gptref.bench``
measures the exact quantity), ``estimate_training_memory``'s total and the growth it
implies (prediction minus what the step starts with), and the in-run
ratios bfloat16 / float32 and accumulated / one pass (the numbers to track across commits).
GPT-124M runs 2 timed rounds after 1 warm-up; its 28 cases take ~10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.conftest import peak_rss_growth
from gptref.bench import release_freed_memory
from gptref.model import GPT_CONFIG_124M, GPT_CONFIG_TINY, GPTModel
from gptref.plan.memory import estimate_training_memory
from gptref.step import train_step

CONTEXT = 256
CONFIGS = {
    "tiny": {**GPT_CONFIG_TINY, "context_length": CONTEXT},
    "124m": {**GPT_CONFIG_124M, "context_length": CONTEXT},
}
ROUNDS = {"tiny": (10, 2), "124m": (2, 1)}  # (timed rounds, warm-up rounds)
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    ),
]
# median step seconds by case, so later cases can state their ratio to an earlier one
_medians: dict[tuple, float] = {}


def inputs(batch: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, 50257, (batch, CONTEXT + 1), generator=torch.Generator().manual_seed(0))
    return ids[:, :-1].contiguous().to(device), ids[:, 1:].contiguous().to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("accumulation", [1, 2])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("batch", [1, 2, 4, 8])
@pytest.mark.parametrize("config", ["tiny", "124m"])
def test_bench_train_step(benchmark, config, batch, dtype, accumulation, device):
    """train_step(model, AdamW, x, y): forward, backward, clip-free AdamW update of (batch, 256)."""
    if accumulation > batch:
        pytest.skip("a batch of 1 row cannot be split into 2 micro-batches")
    torch.manual_seed(123)
    model = GPTModel(CONFIGS[config]).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)
    x, y = inputs(batch, device)
    autocast = torch.bfloat16 if dtype == "bfloat16" else None

    def step():
        train_step(
            model,
            optimizer,
            x,
            y,
            device,
            accumulation_steps=accumulation,
            autocast_dtype=autocast,
        )
        if device == "cuda":
            torch.cuda.synchronize()

    rounds, warmup = ROUNDS[config]
    benchmark.pedantic(step, rounds=rounds, warmup_rounds=warmup)
    median = benchmark.stats.stats.median
    release_freed_memory()  # else the growth hides in what malloc kept from the timed rounds
    _, growth = peak_rss_growth(step) if device == "cpu" else (None, None)
    micro = -(-batch // accumulation)
    est = estimate_training_memory(
        CONFIGS[config],
        micro,
        autocast=dtype if autocast else None,
        device=device,
        accumulation_steps=accumulation,
    )
    held = est.parameters + est.buffers + est.optimizer_state + est.runtime + est.gradients
    key = (config, batch, device)
    _medians[(*key, dtype, accumulation)] = median
    info = {
        "config": config,
        "batch": batch,
        "dtype": dtype,
        "accumulation_steps": accumulation,
        "device": device,
        "tokens": x.numel(),
        "tokens_per_s": x.numel() / median,
        "peak_rss_growth_bytes": growth,
        "predicted_peak_bytes": est.total,
        # the step starts with last step's gradients, parameters and AdamW state resident
        "predicted_step_growth_bytes": est.total - held,
        "peak_phase": est.peak_phase,
    }
    fp32 = _medians.get((*key, "float32", accumulation))
    if dtype == "bfloat16" and fp32:
        info["bfloat16_speedup_over_float32"] = fp32 / median
    one_pass = _medians.get((*key, dtype, 1))
    if accumulation > 1 and one_pass:
        info["accumulated_over_one_pass_time"] = median / one_pass
    benchmark.extra_info.update(info)
