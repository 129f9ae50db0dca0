"""Benchmarks of ``train_step``: what ``gptref bench`` and ``benchmarks/`` run.

- ``flops``: FLOPs per token and device peaks (MFU);
- ``measure``: one configuration measured, here or in a process of its own; machine info;
- ``sweep``: ``run_bench``, the batch-size sweep;
- ``compare``: ``compare_paths``, the fast paths side by side (``standard_variants``);
- ``inprocess``: ``interleaved_paths``, variants in turn in one process beside the float32
  matmul ceiling; ``compile_cost``, torch.compile's time and speed-up;
- ``report``: tables, JSON and the sweep's plot;
- regression tracking across commits is ``gptref.track``.

To add a benchmark: a pytest-benchmark suite in ``benchmarks/`` that calls these (see
``benchmarks/test_bench_fast.py``), recording its ratios in ``extra_info``.
"""

from gptref.bench.compare import compare_paths, standard_variants
from gptref.bench.flops import cpu_peak_flops, device_peak_flops, flops_per_token
from gptref.bench.measure import (
    machine_info,
    measure_config,
    measure_memory,
    release_freed_memory,
)
from gptref.bench.report import format_comparison, format_table, write_results
from gptref.bench.sweep import DTYPES, run_bench

__all__ = [
    "DTYPES",
    "compare_paths",
    "cpu_peak_flops",
    "device_peak_flops",
    "flops_per_token",
    "format_comparison",
    "format_table",
    "machine_info",
    "measure_config",
    "measure_memory",
    "release_freed_memory",
    "run_bench",
    "standard_variants",
    "write_results",
]
