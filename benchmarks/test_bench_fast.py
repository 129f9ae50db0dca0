"""The fast paths side by side on this CPU: GPT-124M, context 256, batch 4 (issue 7's setting).

``python -m pytest benchmarks/test_bench_fast.py`` (~15 minutes on 2 cores). Every variant
runs ``train_step`` (forward, backward, AdamW) in a Python process of its own, 2 warm-up and
5 timed steps, and the variants take turns for ``ROUNDS`` rounds, each keeping its median
round, so a slow spell of the machine does not land on one variant only. Writes
``benchmarks/results/fast_cpu.md`` / ``.json``; ``extra_info`` holds the speed-ups over the
fp32 reference (the numbers to track across commits). Variants:

- fp32 reference: the book's ops, PyTorch's default AdamW (the per-parameter loop on CPU);
- fp32 fast: sdpa, fused AdamW, fused LayerNorm/GELU (``FAST_FP32``);
- nanoGPT-style fp32: ``benchmarks/nanogpt_style.py``, the same shape written the common way
  (nn.LayerNorm, fused qkv, sdpa, nn.GELU), with the same fused AdamW;
- bf16 fast: ``FAST_BF16`` (``--fast`` as first defined; today's ``--fast`` on a CPU
  adds the chunked loss and picks the dtype by measurement: ``test_bench_auto.py``);
- bf16 fast + compile: with ``torch.compile`` as well.
"""

from __future__ import annotations

from pathlib import Path

from gptref.bench import compare_paths, write_results
from gptref.fast.paths import FAST_BF16, REFERENCE

RESULTS = Path(__file__).parent / "results"
ROUNDS = 2
VARIANTS = {
    "fp32 reference": REFERENCE,
    "fp32 fast": FAST_BF16.replace(dtype="float32"),
    "nanoGPT-style fp32": {
        "attn": "sdpa",
        "optimizer": "fused",
        "model": "benchmarks.nanogpt_style:NanoGPT",
    },
    "bf16 fast": FAST_BF16,
    "bf16 fast + compile": FAST_BF16.replace(compile=True),
}


def test_bench_fast_paths_cpu_124m(benchmark):
    rows = benchmark.pedantic(
        lambda: compare_paths(VARIANTS, "124M", 256, 4, "cpu", steps=5, warmup=2, rounds=ROUNDS),
        rounds=1,
        iterations=1,
    )
    assert all(r["status"] == "ok" for r in rows), rows
    speedups = {r["variant"]: r["speedup"] for r in rows}
    benchmark.extra_info.update(speedups=speedups)
    write_results(rows, RESULTS, "fast_cpu", overwrite=True)


# one path at a time against the reference, on the small preset (context 128, batch 8)
EACH = {
    "fp32 reference": REFERENCE,
    "sdpa": REFERENCE.replace(attn="sdpa"),
    "AdamW foreach": REFERENCE.replace(optimizer="foreach"),
    "AdamW fused": REFERENCE.replace(optimizer="fused"),
    "fused LayerNorm/GELU": REFERENCE.replace(fused_layers=True),
    "vocab pad 64": REFERENCE.replace(vocab_pad=64),
    "bf16 autocast": REFERENCE.replace(dtype="bfloat16"),
    "compile": REFERENCE.replace(compile=True),
}


def test_bench_each_fast_path_cpu_small(benchmark):
    rows = benchmark.pedantic(
        lambda: compare_paths(EACH, "small", 128, 8, "cpu", steps=5, warmup=2, rounds=ROUNDS),
        rounds=1,
        iterations=1,
    )
    assert all(r["status"] == "ok" for r in rows), rows
    benchmark.extra_info.update(speedups={r["variant"]: r["speedup"] for r in rows})
    write_results(rows, RESULTS, "fast_each_cpu_small", overwrite=True)
