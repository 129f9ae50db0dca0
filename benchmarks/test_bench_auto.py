"""``--fast`` on this CPU: the reference, the chosen bundle and each path alone, GPT-124M,
context 256, batch 4, all in one process, interleaved; and ``torch.compile`` beside them.

``python -m pytest benchmarks/test_bench_auto.py -k each_path`` (~10 minutes on 2 quiet cores,
40+ on loaded ones): ``gptref.bench.inprocess.interleaved_paths`` over ``VARIANTS``, ``ROUNDS``
rounds of one warm-up and ``STEPS`` timed steps each, beside the float32 matmul ceiling of
every round. Writes ``benchmarks/results/auto_cpu_124m.json`` (the machine: CPU model,
PyTorch's capability, bf16 units; every round with its load) and ``.md``; ``extra_info``
holds the speed-ups and the chosen bundle's share of the ceiling.

``-k stepwise`` (~10 minutes): the bundles with and without the chunked loss, every model
built at once and one step of each in turn (``gptref.bench.inprocess.stepwise``: steps of a
round seconds apart), at GPT-124M context 256 batch 4 (6 rounds) and at the main job's
setting (20 rounds). Writes ``auto_stepwise_cpu_124m.json`` and ``auto_stepwise_cpu_small.json``.

``-k compile`` (~15 minutes): the reference and the chosen bundle, eager and compiled
(inductor's C++ backend), at GPT-124M context 256 batch 4 and at the main job's setting
(``gptref train``: the small preset, context 128, batch 8), each in a fresh process with an
empty inductor cache (a first run's compile time), compile time apart and the run length
from which compiling pays. Writes ``auto_compile_cpu.json`` / ``.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

from gptref.bench.inprocess import (
    cold_compile_cost,
    format_compile,
    format_paths,
    interleaved_paths,
    stepwise,
)
from gptref.bench.measure import machine_info
from gptref.fast import CPU_BUNDLE, FAST_BF16, FAST_FP32, REFERENCE, choose_fast

RESULTS = Path(__file__).parent / "results"
ROUNDS = 3
STEPS = 2
CHOICE = choose_fast("cpu", cache=False)
VARIANTS = {
    "fp32 reference": REFERENCE,
    "sdpa": REFERENCE.replace(attn="sdpa"),
    "fused LayerNorm/GELU": REFERENCE.replace(fused_layers=True),
    "AdamW fused": REFERENCE.replace(optimizer="fused"),
    "chunked loss": REFERENCE.replace(**CPU_BUNDLE),
    "bf16 autocast": REFERENCE.replace(dtype="bfloat16"),
    "bf16 bundle without the chunked loss (FAST_BF16)": FAST_BF16,
    "fp32 bundle (FAST_FP32 + chunked loss)": FAST_FP32.replace(**CPU_BUNDLE),
    "bf16 bundle (FAST_BF16 + chunked loss)": FAST_BF16.replace(**CPU_BUNDLE),
}
# --fast here is one of the two bundles: it is timed once, under its name
AUTO = next(name for name, paths in VARIANTS.items() if paths == CHOICE.paths)


def _write(name: str, record: dict, table: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    (RESULTS / f"{name}.md").write_text(table + "\n")


def test_bench_auto_and_each_path_cpu_124m(benchmark):
    head = {"machine": machine_info(), "choice": CHOICE.line(), "auto": AUTO,
            "setting": {"preset": "124M", "context": 256, "batch_size": 4, "rounds": ROUNDS,
                        "steps": STEPS, "warmup": 1}}  # fmt: skip
    done: list[dict] = []

    def keep(record: dict) -> None:  # a run cut short keeps its rounds
        done.append(record)
        _write("auto_cpu_124m", {**head, "rounds": done}, "(rounds so far in the .json)")

    result = benchmark.pedantic(
        lambda: interleaved_paths(VARIANTS, "124M", 256, 4, rounds=ROUNDS, steps=STEPS,
                                  on_round=keep),
        rounds=1, iterations=1,
    )  # fmt: skip
    rows = {r["variant"]: r for r in result["rows"]}
    record = {**head, **result}
    _write("auto_cpu_124m", record, format_paths(record))
    benchmark.extra_info.update(
        speedups={n: r["speedup"] for n, r in rows.items()},
        speedups_cpu={n: r["speedup_cpu"] for n, r in rows.items()},
        auto=AUTO,
        auto_ceiling_share=rows[AUTO]["ceiling_share"],
        auto_ceiling_share_cpu=rows[AUTO]["ceiling_share_cpu"],
    )


# (preset, context, batch): GPT-124M as the issue measures it, and the main job's setting
COMPILE_SETTINGS = [("124M", 256, 4), ("small", 128, 8)]


def test_bench_compile_cpu(benchmark):
    def run() -> list[dict]:
        rows = []
        for preset, context, batch in COMPILE_SETTINGS:
            for name, paths in (("fp32 reference", REFERENCE), ("--fast", CHOICE.paths)):
                row = cold_compile_cost(paths, preset, context, batch, rounds=3)
                rows.append({"variant": name, **row})
        return rows

    rows = benchmark.pedantic(run, rounds=1, iterations=1)
    record = {"machine": machine_info(), "choice": CHOICE.line(), "rows": rows}
    _write("auto_compile_cpu", record, format_compile(record))
    benchmark.extra_info.update(
        compile_speedups={f"{r['preset']} {r['variant']}": r["speedup"] for r in rows},
        compile_seconds={f"{r['preset']} {r['variant']}": r["compile_s"] for r in rows},
    )


STEPWISE = {
    "bf16+chunk": FAST_BF16.replace(**CPU_BUNDLE), "bf16": FAST_BF16,
    "fp32+chunk": FAST_FP32.replace(**CPU_BUNDLE), "fp32": FAST_FP32, "ref": REFERENCE,
    "ref+chunk": REFERENCE.replace(**CPU_BUNDLE),
}  # fmt: skip
# (preset, context, batch, rounds, variants): at GPT-124M three models fit beside the others'
STEPWISE_SETTINGS = [
    ("124M", 256, 4, 6, ["bf16+chunk", "bf16", "fp32+chunk"]),
    ("small", 128, 8, 20, ["ref", "ref+chunk", "fp32", "fp32+chunk", "bf16", "bf16+chunk"]),
]


def test_bench_bundles_stepwise_cpu(benchmark):
    def run() -> dict:
        got = {}
        for preset, context, batch, rounds, names in STEPWISE_SETTINGS:
            record = stepwise({n: STEPWISE[n] for n in names}, preset, context, batch,
                              rounds=rounds)  # fmt: skip
            record["machine"] = machine_info()
            name = f"auto_stepwise_cpu_{preset.lower()}"
            (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
            got[preset] = {r["variant"]: r["ratio"] for r in record["rows"]}
        return got

    benchmark.extra_info.update(ratios=benchmark.pedantic(run, rounds=1, iterations=1))
