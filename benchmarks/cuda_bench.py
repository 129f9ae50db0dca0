"""CUDA benchmarks for one lent GPU: matmul/copy ceilings, fast paths side by side, MFU.

Run by ``benchmarks/cuda_check.sh`` (``python benchmarks/cuda_bench.py OUT_DIR``). Every
result is appended to OUT_DIR/cuda_bench.jsonl as soon as it exists, so a run cut short
still leaves what it measured. GPT-124M at context 1024 (the issue's setting).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from gptref.bench import compare_paths, format_comparison, format_table, machine_info, run_bench
from gptref.fast.paths import REFERENCE
from gptref.model import GPT_CONFIG_124M


def ceilings() -> dict[str, float]:
    """Measured bf16 matmul FLOP/s (8192^3, random data) and device-to-device copy bytes/s."""
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(10):
        start.record()
        a @ b
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    times.sort()
    matmul = 2 * 8192**3 / times[len(times) // 2]
    x = torch.empty(2 * 1024**3, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    y.copy_(x)
    copies = []
    for _ in range(5):
        start.record()
        y.copy_(x)
        end.record()
        end.synchronize()
        copies.append(start.elapsed_time(end) / 1e3)
    copies.sort()
    return {"bf16_matmul_flops": matmul, "copy_bytes_per_s": 2 * x.numel() / copies[2]}


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    log = out / "cuda_bench.jsonl"

    def record(kind: str, payload) -> None:
        with log.open("a") as f:
            f.write(json.dumps({"kind": kind, "time": time.time(), **payload}) + "\n")

    record("machine", machine_info())
    record("ceilings", ceilings())
    print("ceilings:", log.read_text().splitlines()[-1], flush=True)

    # 1. fast paths side by side, GPT-124M, context 1024, batch 16
    fast = REFERENCE.replace(dtype="bfloat16", attn="sdpa", optimizer="fused")
    variants = {
        "fp32 reference": REFERENCE,
        "tf32 reference": REFERENCE.replace(tf32=True),
        "bf16 + sdpa + fused AdamW": fast,
        "... + vocab pad 64": fast.replace(vocab_pad=64),
        "... + compile + vocab pad 64": fast.replace(compile=True, vocab_pad=64),
        "nanoGPT-style, bf16 + fused + compile": {**asdict(fast), "compile": True, "model": "benchmarks.nanogpt_style:NanoGPT"},
    }  # fmt: skip
    rows = []
    for name, settings in variants.items():
        t0 = time.time()
        (row,) = compare_paths(
            {name: settings}, "124M", 1024, 16, "cuda", steps=10, warmup=3, progress=False
        )
        row["wall_s"] = time.time() - t0
        rows.append(row)
        record("compare", row)
        print(
            f"{name}: {row.get('tokens_per_s', 0):,.0f} tok/s, MFU {row.get('mfu') or 0:.3f}, {row['wall_s']:.0f} s",
            flush=True,
        )
    base = rows[0].get("tokens_per_s")
    for r in rows:
        r["speedup"] = r["tokens_per_s"] / base if base and r.get("tokens_per_s") else None
    (out / "cuda_fast.md").write_text(format_comparison(rows) + "\n")

    # 2. batch sweep of the fastest path (compile + pad), memory measured by the allocator
    sweep = run_bench(
        "124M", 1024, [32], ["cuda"], ["bfloat16"], ["sdpa"], 10, progress=False,
        warmup=3, fast=fast.replace(compile=True, vocab_pad=64),
    )  # fmt: skip
    for r in sweep:
        record("sweep", r)
    (out / "cuda_sweep.md").write_text(format_table(sweep) + "\n")
    print(format_comparison(rows))
    print(format_table(sweep))


def mfu(out: Path) -> None:
    """The fastest path at larger batches and without dropout (pretraining's usual setting;
    the book's 124M config has drop_rate 0.1): what MFU the model reaches on this card."""
    out.mkdir(parents=True, exist_ok=True)
    log = out / "cuda_mfu.jsonl"
    fast = REFERENCE.replace(
        dtype="bfloat16", attn="sdpa", optimizer="fused", compile=True, vocab_pad=64
    )
    rows = []
    for drop, batch in ((0.0, 32), (0.0, 64)):
        cfg = {**GPT_CONFIG_124M, "drop_rate": drop}
        t0 = time.time()
        (row,) = compare_paths(
            {f"drop {drop}, batch {batch}": fast},
            cfg,
            1024,
            batch,
            "cuda",
            steps=10,
            warmup=3,
            progress=False,
        )
        row["wall_s"], row["drop_rate"] = time.time() - t0, drop
        rows.append(row)
        with log.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(
            f"drop {drop} batch {batch}: {row.get('tokens_per_s', 0):,.0f} tok/s, MFU {row.get('mfu') or 0:.3f}, {row['wall_s']:.0f} s",
            flush=True,
        )
    (out / "cuda_mfu.md").write_text(format_comparison(rows) + "\n")


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "cuda-results")
    mfu(target) if "--mfu" in sys.argv else main(target)
