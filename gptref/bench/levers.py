"""The memory levers measured: the memory model's accuracy for every lever combination
(``memory_accuracy``) and the levers side by side, tokens/s and peak memory (``compare_levers``).

The levers are the chunked loss (``FastPaths.loss="chunked"``) and activation checkpointing
(``FastPaths.recompute``); ``LEVERS`` names the four combinations the README's table shows.
Memory is measured as ``gptref.bench.measure_memory`` measures it (a process per
configuration, glibc's mmap threshold fixed: the estimate's quantity).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from gptref.bench.measure import measure_memory
from gptref.bench.report import markdown_table
from gptref.bench.sweep import run_bench
from gptref.fast.paths import REFERENCE, FastPaths
from gptref.gpt_config import GPTConfig, resolve_config
from gptref.plan.memory import estimate_training_memory, format_bytes

# name -> the levers, on top of whatever other fast paths a caller sets
LEVERS: dict[str, dict[str, Any]] = {
    "reference": {"loss": "full", "recompute": 0},
    "chunked loss": {"loss": "chunked"},
    "recompute every block": {"recompute": 1},
    "chunked loss + recompute": {"loss": "chunked", "recompute": 1},
}


def memory_accuracy(
    config: str | GPTConfig | Mapping[str, Any],
    batch_sizes: Sequence[int],
    *,
    context: int | None = None,
    dtypes: Sequence[str] = ("float32", "bfloat16"),
    losses: Sequence[int | None] = (None, 1024),
    recomputes: Sequence[int] = (0, 1, 2),
    name: str | None = None,
    progress: bool = True,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """-> one row per (dtype, loss_chunk, recompute, batch size): ``estimate_training_memory``'s
    total beside the peak ``measure_memory`` measures (each in a process of its own) and their
    ratio. ``losses``: chunk sizes of the chunked loss, None for the full logits. ``on_row``
    is called with each row as it is measured (to save partial results)."""
    cfg = resolve_config(config, context_length=context)
    label = name or (config if isinstance(config, str) else "custom")
    cases = [(d, c, k, b) for d in dtypes for c in losses for k in recomputes for b in batch_sizes]
    from tqdm.auto import tqdm

    rows = []
    for dtype, chunk, k, b in tqdm(cases, desc="memory accuracy", disable=not progress):
        autocast = dtype if dtype != "float32" else None
        est = estimate_training_memory(cfg, b, autocast=autocast, loss_chunk=chunk, recompute=k)
        measured = measure_memory(cfg, b, dtype=dtype, loss_chunk=chunk, recompute=k)
        rows.append({
            "preset": label, "context": cfg.context_length, "dtype": dtype, "attn": cfg.attn_impl,
            "loss_chunk": chunk, "recompute": k, "batch_size": b, "predicted_bytes": est.total,
            "measured_bytes": measured, "peak_phase": est.peak_phase,
            "ratio": est.total / measured if measured else None,
        })  # fmt: skip
        if on_row is not None:
            on_row(rows[-1])
    return rows


def repredict(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ``memory_accuracy`` row with its prediction made again by the current model (the
    measured bytes are the model's input, not its output)."""
    from gptref.gpt_config import preset as preset_config

    cfg = preset_config(row["preset"], context_length=row["context"], attn_impl=row["attn"])
    autocast = row["dtype"] if row["dtype"] != "float32" else None
    est = estimate_training_memory(cfg, row["batch_size"], autocast=autocast,
                                   loss_chunk=row["loss_chunk"], recompute=row["recompute"])  # fmt: skip
    measured = row["measured_bytes"]
    return {**row, "predicted_bytes": est.total, "peak_phase": est.peak_phase,
            "ratio": est.total / measured if measured else None}  # fmt: skip


def format_accuracy(rows: Sequence[Mapping[str, Any]]) -> str:
    """``memory_accuracy`` rows -> a summary line (min / median / max of predicted / measured,
    overall and per lever combination) and a markdown table."""
    lines = [f"Predicted / measured over all {len(rows)} rows: {_spread(rows)}.", ""]
    for chunk, k in sorted({(r["loss_chunk"] or 0, r["recompute"]) for r in rows}):
        mine = [r for r in rows if (r["loss_chunk"] or 0, r["recompute"]) == (chunk, k)]
        lines.append(f"- {_levers(chunk or None, k)}: {len(mine)} rows, {_spread(mine)}")
    head = ["preset", "context", "dtype", "loss", "recompute", "batch", "predicted",
            "measured", "predicted/measured", "peak phase"]  # fmt: skip
    cells = [
        [r["preset"], str(r["context"]), r["dtype"],
         f"chunked:{r['loss_chunk']}" if r["loss_chunk"] else "full", str(r["recompute"]),
         str(r["batch_size"]), format_bytes(r["predicted_bytes"]),
         format_bytes(r["measured_bytes"]) if r["measured_bytes"] else "OOM",
         f"{r['ratio']:.3f}" if r["ratio"] else "", r["peak_phase"]]
        for r in rows
    ]  # fmt: skip
    return "\n".join([*lines, "", markdown_table(head, cells)])


def _spread(rows: Iterable[Mapping[str, Any]]) -> str:
    ratios = sorted(r["ratio"] for r in rows if r["ratio"])
    if not ratios:
        return "no measurement"
    return f"min {ratios[0]:.3f}, median {statistics.median(ratios):.3f}, max {ratios[-1]:.3f}"


def _levers(chunk: int | None, k: int) -> str:
    loss = f"chunked loss ({chunk} rows)" if chunk else "full loss"
    return f"{loss}, " + ("no recomputation" if not k else f"--recompute {k}")


def compare_levers(
    preset: str | GPTConfig | Mapping[str, Any] = "124M",
    context: int | None = 256,
    batch_sizes: Sequence[int] = (4,),
    *,
    levers: Mapping[str, Mapping[str, Any]] | None = None,
    base: FastPaths = REFERENCE,
    device: str = "cpu",
    steps: int = 3,
    warmup: int = 1,
    progress: bool = True,
    isolate: bool = True,
    exact_memory: bool = True,
) -> list[dict[str, Any]]:
    """Each lever combination (``LEVERS`` by default, set on ``base``) at each batch size on
    ``device`` ->
    ``run_bench`` rows (tokens/s, peak memory measured in a process of its own, predicted;
    ``isolate=False``: all in this process, glibc's default RSS; ``exact_memory=False``: no
    memory process, the timing process's RSS under glibc's defaults),
    with ``variant`` and ``tokens_per_s_ratio``: tokens/s over the first variant's at the same
    batch size (None where that one did not run)."""
    levers = LEVERS if levers is None else levers
    rows = []
    for name, changes in levers.items():
        paths = base.replace(**changes)
        for row in run_bench(
            preset, context, batch_sizes, [device], [paths.dtype], [paths.attn], steps,
            progress=progress, warmup=warmup, fast=paths, isolate=isolate,
            exact_memory=exact_memory,
        ):  # fmt: skip
            rows.append({**row, "variant": name})
    first = next(iter(levers))
    base_rate = {r["batch_size"]: r.get("tokens_per_s") for r in rows if r["variant"] == first}
    for r in rows:
        ref = base_rate.get(r["batch_size"])
        rate = r.get("tokens_per_s")
        r["tokens_per_s_ratio"] = rate / ref if rate and ref else None
    return rows


def format_levers(rows: Sequence[Mapping[str, Any]]) -> str:
    """``compare_levers`` rows -> a markdown table: tokens/s, its ratio to the reference's,
    peak memory measured and predicted, and the CPU share the row got."""
    head = ["variant", "context", "dtype", "batch", "tokens/s", "vs reference", "peak measured",
            "peak predicted", "predicted/measured", "CPU share"]  # fmt: skip
    cells = []
    for r in rows:
        ok = r["status"] == "ok"
        measured = r.get("peak_bytes_measured")
        cells.append([
            r["variant"], str(r["context"]), r["dtype"], str(r["batch_size"]),
            f"{r['tokens_per_s']:,.1f}" if ok else f"{r['status']}: {r.get('note', '')}",
            f"{r['tokens_per_s_ratio']:.3f}" if r.get("tokens_per_s_ratio") else "",
            format_bytes(measured) if ok and measured else "",
            format_bytes(r["peak_bytes_predicted"]),
            f"{r['peak_bytes_predicted'] / measured:.3f}" if ok and measured else "",
            f"{r['cpu_share']:.2f}" if ok else "",
        ])  # fmt: skip
    return markdown_table(head, cells)
