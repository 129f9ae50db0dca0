"""Model benchmarks: GPTModel forward and calc_loss_batch, reference vs sdpa attention.

``python -m pytest benchmarks/test_bench_model.py``. Configs: GPT_CONFIG_TINY and
GPT_CONFIG_124M, both at context 256, batch 1/2/4 of full-length rows, eval mode under
``torch.no_grad()`` (the evaluation path of ``calc_loss_loader``). ``extra_info`` records
tokens/s from the median round; CUDA cases skip without a GPU. GPT-124M runs 3 timed rounds
after 1 warm-up (a few seconds per round on 2 CPU cores).
"""

from __future__ import annotations

import pytest
import torch

from gptref.loss import calc_loss_batch
from gptref.model import GPT_CONFIG_124M, GPT_CONFIG_TINY, GPTModel

CONTEXT = 256
CONFIGS = {
    "tiny": {**GPT_CONFIG_TINY, "context_length": CONTEXT},
    "124m": {**GPT_CONFIG_124M, "context_length": CONTEXT},
}
ROUNDS = {"tiny": (20, 2), "124m": (3, 1)}  # (timed rounds, warm-up rounds)
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    ),
]

_models: dict[tuple[str, str, str], GPTModel] = {}


def model_on(config: str, attn_impl: str, device: str) -> GPTModel:
    """One model per case key, built after torch.manual_seed(123) (so reference and sdpa
    share weights) and reused across batch sizes: building GPT-124M takes seconds."""
    key = (config, attn_impl, device)
    if key not in _models:
        torch.manual_seed(123)
        _models[key] = GPTModel({**CONFIGS[config], "attn_impl": attn_impl}).to(device).eval()
    return _models[key]


def run_timed(benchmark, fn, config: str, device: str, n_tokens: int) -> None:
    def step():
        with torch.no_grad():
            fn()
        if device == "cuda":
            torch.cuda.synchronize()

    rounds, warmup = ROUNDS[config]
    benchmark.pedantic(step, rounds=rounds, warmup_rounds=warmup)
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(tokens=n_tokens, tokens_per_s=n_tokens / median)


def inputs(batch: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, 50257, (batch, CONTEXT + 1), generator=torch.Generator().manual_seed(0))
    return ids[:, :-1].to(device), ids[:, 1:].to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch", [1, 2, 4])
@pytest.mark.parametrize("attn_impl", ["reference", "sdpa"])
@pytest.mark.parametrize("config", ["tiny", "124m"])
def test_bench_forward(benchmark, config, attn_impl, batch, device):
    """model(ids): int64 (batch, 256) -> logits (batch, 256, 50257)."""
    model = model_on(config, attn_impl, device)
    x, _ = inputs(batch, device)
    benchmark.extra_info.update(config=config, attn_impl=attn_impl, batch=batch, device=device)
    run_timed(benchmark, lambda: model(x), config, device, x.numel())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch", [1, 2, 4])
@pytest.mark.parametrize("attn_impl", ["reference", "sdpa"])
@pytest.mark.parametrize("config", ["tiny", "124m"])
def test_bench_calc_loss_batch(benchmark, config, attn_impl, batch, device):
    """calc_loss_batch(x, y, model, device): forward plus the mean cross-entropy over 50257 classes."""
    model = model_on(config, attn_impl, device)
    x, y = inputs(batch, device)
    benchmark.extra_info.update(config=config, attn_impl=attn_impl, batch=batch, device=device)
    run_timed(benchmark, lambda: calc_loss_batch(x, y, model, device), config, device, x.numel())
