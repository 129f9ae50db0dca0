"""The fast paths side by side (``gptref bench --compare``, ``benchmarks/test_bench_fast.py``):
each variant timed in a process of its own, in interleaved rounds, with its speed-up over
the first (the fp32 reference)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gptref.bench.sweep import run_bench
from gptref.fast.choice import FastChoice, choose_fast
from gptref.fast.paths import REFERENCE, FastPaths
from gptref.gpt_config import GPTConfig

Variant = FastPaths | Mapping[str, Any]  # a FastPaths, or its fields (+ "model": "module:fn")


def standard_variants(
    device: str, *, vocab_pad: int = 1, compile: bool = False, choice: FastChoice | None = None
) -> dict[str, FastPaths]:
    """The comparison ``gptref bench --compare`` makes: the fp32 reference, ``--fast`` (the
    bundle ``choose_fast(device)`` picks, or ``choice``), the same bundle in the other dtype
    unless the probe found its matmuls over ``SLOW_BF16``x slower (``left_out`` says so), on
    CUDA the fp32 bundle with TF32, and with ``compile`` ``--fast`` compiled; ``vocab_pad``
    for the fast variants."""
    choice = choose_fast(device) if choice is None else choice
    fast = choice.paths.replace(vocab_pad=vocab_pad)
    dtype = _SHORT[fast.dtype]
    variants = {"fp32 reference": REFERENCE, f"--fast ({dtype})": fast}
    other = "float32" if fast.dtype == "bfloat16" else "bfloat16"
    if left_out(choice) is None:
        variants[f"fast in {_SHORT[other]}"] = fast.replace(dtype=other)
    if device == "cuda":
        variants["tf32 fast"] = fast.replace(dtype="float32", tf32=True)
    if compile:
        variants[f"--fast ({dtype}) + compile"] = fast.replace(compile=True)
    return variants


_SHORT = {"float32": "fp32", "bfloat16": "bf16"}
SLOW_BF16 = 4  # a bf16 bundle whose matmuls are this many times slower is left out


def left_out(choice: FastChoice) -> str | None:
    """Why ``standard_variants`` leaves the bf16 bundle out (its matmuls too slow to time in
    reasonable time on this CPU), or None when it times it."""
    probe = choice.probe
    if choice.paths.dtype == "bfloat16" or probe is None or probe.bf16_speedup * SLOW_BF16 >= 1:
        return None
    return (
        f"bf16 left out: this CPU multiplies bf16 {1 / probe.bf16_speedup:.0f}x slower than "
        f"fp32 ({probe.describe()}); time it anyway with --dtype bfloat16 (without --compare)"
    )


def device_line(choice: FastChoice) -> str:
    """The device a comparison ran on, in one line: CPU model, PyTorch's capability, bf16
    units, torch, threads (or the CUDA card), and what ``--fast`` chose there."""
    import torch

    from gptref.fast.probe import cpu_description

    if choice.device == "cuda":
        where = f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    else:
        d = cpu_description()
        units = ", ".join(f for f in d["cpu_flags"] if "bf16" in f) or "no bf16 units"
        where = (f"CPU {d['cpu_model']}, capability {d['capability']} ({units}), torch "
                 f"{d['torch_version']}, {d['threads']} threads")  # fmt: skip
    return f"{where}; {choice.line()}"


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
