"""The fast paths side by side (``gptref bench --compare``, ``benchmarks/test_bench_fast.py``):
each variant timed in a process of its own, in interleaved rounds, with its speed-up over
the first (the fp32 reference)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gptref.bench.sweep import run_bench
from gptref.fast.paths import FAST, REFERENCE, FastPaths
from gptref.gpt_config import GPTConfig

Variant = FastPaths | Mapping[str, Any]  # a FastPaths, or its fields (+ "model": "module:fn")


def standard_variants(
    device: str, *, vocab_pad: int = 1, compile: bool = False
) -> dict[str, FastPaths]:
    """The comparison ``gptref bench --compare`` makes: the fp32 reference, ``FAST`` in fp32,
    ``FAST`` (bf16), on CUDA ``FAST`` with TF32 instead of bf16, and with ``compile`` ``FAST``
    compiled; ``vocab_pad`` for the fast variants."""
    fast = FAST.replace(vocab_pad=vocab_pad)
    variants = {
        "fp32 reference": REFERENCE,
        "fp32 fast (sdpa, fused AdamW and layers)": fast.replace(dtype="float32"),
        "bf16 fast": fast,
    }
    if device == "cuda":
        variants["tf32 fast"] = fast.replace(dtype="float32", tf32=True)
    if compile:
        variants["bf16 fast + compile"] = fast.replace(compile=True)
    return variants


def compare_paths(
    variants: Mapping[str, Variant],
    preset: str | GPTConfig | Mapping[str, Any] = "124M",
    context: int | None = 256,
    batch_size: int = 4,
    device: str = "cpu",
    *,
    steps: int = 5,
    warmup: int = 2,
    rounds: int = 1,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Time each variant (name -> FastPaths, or a dict of its fields, missing ones the
    reference's, plus an optional ``"model"``) side by side -> one row per variant with
    ``speedup``: its tokens/s over the first variant's. Each variant runs in a process of its
    own; with ``rounds > 1`` the variants run in turn that many times and each keeps its
    median round, so a slow spell of the machine does not land on one variant only."""
    if not variants:
        raise ValueError("compare_paths: give at least one variant")
    resolved = {name: _resolve(name, v) for name, v in variants.items()}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    from tqdm.auto import tqdm

    bar = tqdm(total=rounds * len(variants), desc="gptref compare", disable=not progress)
    for _ in range(rounds):
        for name, (paths, model) in resolved.items():
            (row,) = run_bench(
                preset, context, [batch_size], [device], [paths.dtype], [paths.attn], steps,
                progress=False, warmup=warmup, exact_memory=False, fast=paths, model=model,
            )  # fmt: skip
            runs[name].append(row)
            bar.update(1)
    bar.close()
    rows = []
    for name, results in runs.items():
        ok = [r for r in results if r["status"] == "ok"]
        if not ok:
            rows.append({**results[0], "variant": name})
            continue
        ok.sort(key=lambda r: r["tokens_per_s"])
        rows.append({**ok[(len(ok) - 1) // 2], "variant": name, "rounds": len(ok)})
    base = rows[0].get("tokens_per_s")
    for r in rows:
        r["speedup"] = r["tokens_per_s"] / base if base and r.get("tokens_per_s") else None
    return rows


def _resolve(name: str, variant: Variant) -> tuple[FastPaths, str | None]:
    if isinstance(variant, FastPaths):
        return variant, None
    settings = dict(variant)
    model = settings.pop("model", None)
    try:
        return FastPaths.from_dict(settings), model
    except ValueError as e:
        raise ValueError(f"compare_paths: variant {name!r}: {e}") from None
