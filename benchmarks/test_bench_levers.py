"""The memory levers on this CPU: the memory model's accuracy for every lever combination, and
GPT-124M's tokens/s and peak memory with each lever (issue 14).

``python -m pytest benchmarks/test_bench_levers.py`` (~1 hour on 2 busy cores; ``-k`` picks
one). Levers: the chunked loss (``--loss chunked``, 1024-row chunks) and activation
checkpointing (``--recompute k``: every k-th block; 1 all of them). Every configuration runs
in a Python process of its own, memory as ``gptref.bench.measure_memory`` measures it (glibc's
mmap threshold fixed at 64 KiB: the estimate's quantity). Writes ``benchmarks/results/``:

- ``memory_levers_cpu.md`` / ``.json``: predicted / measured for tiny (context 64), small
  (128) and GPT-124M (256; a few rows at 1024), float32 and bf16 autocast, full and chunked
  loss, recompute 0 / 1 / 2, at batch sizes up to 16 (124M: up to 8);
- ``levers_cpu.md`` / ``.json``: GPT-124M, reference / chunked loss / recompute every block /
  both, tokens/s (each variant's median of ``ROUNDS`` rounds, variants taking turns) and
  peak memory, at context 256 batch 4 and context 1024 batch 2. The CPU share each row got
  is recorded: the machine is shared, a share well under 0.9 means other work slowed it.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from gptref.bench import machine_info, write_results
from gptref.bench.levers import compare_levers, format_accuracy, format_levers, memory_accuracy
from gptref.model import GPT_CONFIG_124M

RESULTS = Path(__file__).parent / "results"
ROUNDS = 2


def _write_accuracy(rows, name: str) -> None:
    record = {"machine": machine_info(), "rows": rows}
    (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    (RESULTS / f"{name}.md").write_text(
        "# Memory model accuracy with the levers, CPU\n\n"
        "`estimate_training_memory(..., loss_chunk=, recompute=).total` against the measured "
        "peak of one steady-state `train_step`, each configuration in a process of its own "
        "(`gptref.bench.measure_memory`; `benchmarks/test_bench_levers.py`).\n\n"
        + format_accuracy(rows)
        + "\n"
    )


def _extra(benchmark, rows) -> None:
    ratios = [r["ratio"] for r in rows if r["ratio"]]
    benchmark.extra_info.update(
        rows=len(rows), ratio_min=min(ratios), ratio_median=statistics.median(ratios),
        ratio_max=max(ratios),
    )  # fmt: skip


def test_bench_memory_levers_cpu_tiny_small(benchmark):
    """Every lever combination at batch 1, 4, 16 for tiny and small (72 processes)."""
    rows = benchmark.pedantic(
        lambda: [r for name in ("tiny", "small") for r in memory_accuracy(name, [1, 4, 16])],
        rounds=1, iterations=1,
    )  # fmt: skip
    _extra(benchmark, rows)
    _write_accuracy(rows, "memory_levers_cpu_tiny_small")


def test_bench_memory_levers_cpu_124m(benchmark):
    """GPT-124M: every lever combination at context 256, batch 1 and 4, and the four
    combinations with recompute 0 / 1 at context 1024, batch 1 (float32)."""

    def run():
        rows = memory_accuracy("124M", [1, 4], context=256, name="124M")
        rows += memory_accuracy(
            {**GPT_CONFIG_124M}, [1], dtypes=["float32"], recomputes=(0, 1), name="124M"
        )
        return rows

    rows = benchmark.pedantic(run, rounds=1, iterations=1)
    _extra(benchmark, rows)
    _write_accuracy(rows, "memory_levers_cpu_124m")


def test_bench_levers_cpu_124m(benchmark):
    """tokens/s and peak memory of the four lever combinations, GPT-124M, float32: context 256
    batch 4 (the fast paths' setting) and context 1024 batch 2."""

    def run():
        rows = []
        for context, batch in ((256, 4), (1024, 2)):
            rounds = [compare_levers("124M", context, [batch], steps=3, progress=False)
                      for _ in range(ROUNDS)]  # fmt: skip
            mine = []
            for i in range(len(rounds[0])):  # each variant's median round by tokens/s
                runs = sorted((rnd[i] for rnd in rounds), key=lambda r: r.get("tokens_per_s", 0))
                mine.append({**runs[(len(runs) - 1) // 2], "rounds": len(runs)})
            for r in mine:  # against the reference's median round
                ref, rate = mine[0].get("tokens_per_s"), r.get("tokens_per_s")
                r["tokens_per_s_ratio"] = rate / ref if rate and ref else None
            rows += mine
        return rows

    rows = benchmark.pedantic(run, rounds=1, iterations=1)
    assert all(r["status"] == "ok" for r in rows), rows
    benchmark.extra_info.update(
        tokens_per_s_ratio={
            f"{r['variant']}, context {r['context']}": r["tokens_per_s_ratio"] for r in rows
        }  # fmt: skip
    )
    write_results(rows, RESULTS, "levers_cpu")
    (RESULTS / "levers_cpu.md").write_text(format_levers(rows) + "\n")
