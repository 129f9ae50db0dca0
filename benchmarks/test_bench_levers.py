"""The memory levers on this CPU: the memory model's accuracy for every lever combination, and
GPT-124M's tokens/s and peak memory with each lever (issue 14).

``python -m pytest benchmarks/test_bench_levers.py`` (~1 hour on 2 busy cores; ``-k`` picks
one). Levers: the chunked loss (``--loss chunked``, 1024-row chunks) and activation
checkpointing (``--recompute k``: every k-th block; 1 all of them). Every configuration runs
in a Python process of its own, memory as ``gptref.bench.measure_memory`` measures it (glibc's
mmap threshold fixed at 64 KiB: the estimate's quantity). Writes ``benchmarks/results/``:

- ``memory_levers_cpu_tiny_small.md`` / ``.json``: predicted / measured for tiny (context
  64) and small (128), float32 and bf16 autocast, full and chunked loss, recompute 0 / 1 /
  2, batch 1, 4, 16 (every combination); ``memory_levers_cpu_124m``: GPT-124M at context
  256, the combinations at batch 1 and 4 (see the test);
- ``levers_cpu_ctx256.md`` / ``.json`` and ``levers_cpu_ctx1024``: GPT-124M, reference /
  chunked loss / recompute every block / both, tokens/s (at context 256 each variant's
  median of ``ROUNDS`` rounds, variants taking turns; at 1024 one round) and peak memory,
  at context 256 batch 4 and context 1024 batch 2. The CPU share each row got is recorded:
  the machine is shared, a share well under 0.9 means other work slowed it.

The README's lever table (GPT-124M at context 256 and 1024, up to the batches that fit) is
``python -m benchmarks.levers_table`` (a script, not a test: it appends each row to its JSON
as it finishes, so a long run on a shared machine keeps what it measured).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from gptref.bench import machine_info, write_results
from gptref.bench.levers import compare_levers, format_accuracy, format_levers, memory_accuracy

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


def _saving(name: str):
    """-> (rows, on_row): each measured row is appended and the results rewritten, so a run
    cut short keeps what it measured."""
    rows: list = []

    def on_row(row) -> None:
        rows.append(row)
        _write_accuracy(rows, name)

    return rows, on_row


def test_bench_memory_levers_cpu_tiny_small(benchmark):
    """Every lever combination at batch 1, 4, 16 for tiny and small (72 processes)."""
    rows, on_row = _saving("memory_levers_cpu_tiny_small")

    def run():
        for name in ("tiny", "small"):
            memory_accuracy(name, [1, 4, 16], on_row=on_row, progress=False)

    benchmark.pedantic(run, rounds=1, iterations=1)
    _extra(benchmark, rows)


def test_bench_memory_levers_cpu_124m(benchmark):
    """GPT-124M at context 256: the four combinations of full/chunked loss and recompute 0/1
    at batch 1 (float32) and 4 (bf16 autocast), recompute 2 at batch 4 (float32). The float32
    rows at batch 4 (context 256) and 2 (context 1024) come from the test_bench_levers_cpu_124m
    tests' memory processes (levers_cpu_ctx*.json); batch 16 at context 256 and batch 8 at
    context 1024 (recompute 1) are in test_bench_memory_levers_cpu_124m_large."""
    rows, on_row = _saving("memory_levers_cpu_124m")

    def run():
        for dtype, batch, ks in (("float32", 1, (0, 1)), ("bfloat16", 4, (0, 1)),
                                 ("float32", 4, (2,))):  # fmt: skip
            memory_accuracy("124M", [batch], context=256, dtypes=[dtype], recomputes=ks,
                            on_row=on_row, progress=False)  # fmt: skip

    benchmark.pedantic(run, rounds=1, iterations=1)
    _extra(benchmark, rows)


def test_bench_memory_levers_cpu_124m_large(benchmark):
    """GPT-124M, float32, where the levers matter: the four combinations at context 256 batch
    16 (reference 10.7 GiB predicted), and recompute 1 with either loss at context 1024 batch
    8 (the reference would need 29.7 GiB)."""
    rows, on_row = _saving("memory_levers_cpu_124m_large")

    def run():
        memory_accuracy("124M", [16], context=256, dtypes=["float32"], recomputes=(0, 1),
                        on_row=on_row, progress=False)  # fmt: skip
        memory_accuracy("124M", [8], context=1024, dtypes=["float32"], recomputes=(1,),
                        on_row=on_row, progress=False)  # fmt: skip

    benchmark.pedantic(run, rounds=1, iterations=1)
    _extra(benchmark, rows)


def _compare(context: int, batch: int, rounds: int) -> list:
    """The four lever combinations, ``rounds`` rounds in turn: each variant's median round's
    timing, memory from the first round's processes, tokens/s over the reference's."""
    results = [compare_levers("124M", context, [batch], steps=3, progress=False,
                              exact_memory=i == 0)
               for i in range(rounds)]  # fmt: skip
    rows = []
    for i, first in enumerate(results[0]):
        runs = sorted((rnd[i] for rnd in results), key=lambda r: r.get("tokens_per_s", 0))
        memory = {k: first.get(k) for k in ("peak_bytes_measured", "memory_mode")}
        rows.append({**runs[(len(runs) - 1) // 2], **memory, "rounds": len(runs),
                     "tokens_per_s_rounds": [r.get("tokens_per_s") for r in runs],
                     "cpu_share_rounds": [r.get("cpu_share") for r in runs]})  # fmt: skip
    for r in rows:  # against the reference's median round
        ref, rate = rows[0].get("tokens_per_s"), r.get("tokens_per_s")
        r["tokens_per_s_ratio"] = rate / ref if rate and ref else None
    return rows


def _record(benchmark, rows, name: str) -> None:
    assert all(r["status"] == "ok" for r in rows), rows
    benchmark.extra_info.update(
        tokens_per_s_ratio={r["variant"]: r["tokens_per_s_ratio"] for r in rows}
    )
    write_results(rows, RESULTS, name, overwrite=True)
    (RESULTS / f"{name}.md").write_text(format_levers(rows) + "\n")


def test_bench_levers_cpu_124m_context_256(benchmark):
    """tokens/s and peak memory of the four lever combinations, GPT-124M, float32, context
    256, batch 4 (the fast paths' setting), ``ROUNDS`` rounds."""
    rows = benchmark.pedantic(lambda: _compare(256, 4, ROUNDS), rounds=1, iterations=1)
    _record(benchmark, rows, "levers_cpu_ctx256")


def test_bench_levers_cpu_124m_context_1024(benchmark):
    """The same at context 1024, batch 2, one round (a step takes ~30 s on 2 busy cores)."""
    rows = benchmark.pedantic(lambda: _compare(1024, 2, 1), rounds=1, iterations=1)
    _record(benchmark, rows, "levers_cpu_ctx1024")
