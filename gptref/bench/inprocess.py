"""Fast-path variants timed in turn in one process, beside the float32 matmul ceiling measured
in the same rounds (``benchmarks/test_bench_auto.py``).

On a shared machine absolute rates say more about the other work than about gptref, so
every number here is kept two ways and compared within a round:

- per wall second: ``tokens_per_s``, the median over rounds of each round's median step;
- per CPU second: ``tokens_per_cpu_s``, tokens over the CPU time the step's threads got,
  divided by the thread count (what the step would reach with its cores to itself, as far
  as CPU time does not grow under contention);
- ``speedup`` / ``speedup_cpu``: the median over rounds of the round's ratio to the first
  variant (the two ran minutes apart at most, under much the same load);
- ``ceiling_share`` / ``ceiling_share_cpu``: tokens/s x FLOPs per token (PaLM's count,
  ``flops_per_token``) over the float32 ceiling, a 2048-square float32 matmul's FLOP/s on
  the same threads, measured at the start of every round (its median): the best repetition
  over ~0.5 s by wall clock, and all of them per CPU second.

Each round starts at the next variant (round r at variant r mod n), so no variant always
runs right after the same one. Every round records the 1-minute load average.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from gptref.bench.measure import measure_config
from gptref.fast.paths import FastPaths
from gptref.fast.probe import matmul_rates
from gptref.model import GPTConfig, resolve_config
from gptref.plan.compute import flops_per_token


def fp32_ceiling(size: int = 2048, seconds: float = 0.5) -> dict[str, float]:
    """-> {"wall": the best FLOP/s of a ``size``-square float32 matmul by wall clock,
    "cpu": the FLOPs of all repetitions per CPU second, times the threads} over ~``seconds``."""
    best, per_cpu = matmul_rates("float32", size, seconds=seconds, clock=time.perf_counter)
    return {"wall": best, "cpu": per_cpu * torch.get_num_threads()}


def interleaved_paths(
    variants: Mapping[str, FastPaths],
    preset: str | GPTConfig | Mapping[str, Any] = "124M",
    context: int | None = 256,
    batch_size: int = 4,
    *,
    rounds: int = 3,
    steps: int = 2,
    warmup: int = 1,
    ceiling_size: int = 2048,
    progress: bool = True,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Time every variant's ``train_step`` (CPU, a fresh model each round: ``warmup`` then
    ``steps`` timed steps) in turn for ``rounds`` rounds, in this process ->
    {"rows": one per variant (see the module docstring), "rounds": what each round measured,
    "flops_per_token"}. The ceiling is a ``ceiling_size``-square matmul's. ``on_round`` is
    called with each round's record as it ends."""
    if not variants:
        raise ValueError("interleaved_paths: give at least one variant")
    names = list(variants)
    base_cfg = resolve_config(preset, context_length=context)
    fpt = flops_per_token(base_cfg)
    tokens = batch_size * base_cfg.context_length
    from tqdm.auto import tqdm

    bar = tqdm(total=rounds * len(names), desc="interleaved", disable=not progress)
    records = []
    for r in range(rounds):
        record: dict[str, Any] = {"round": r, "load_1min": os.getloadavg()[0]}
        record["ceiling"] = fp32_ceiling(ceiling_size)
        record["variants"] = {}
        for name in names[r % len(names) :] + names[: r % len(names)]:
            paths = variants[name]
            result = measure_config(paths.apply(base_cfg), batch_size, "cpu", fast=paths,
                                    warmup=warmup, steps=steps, warm=False, peak_flops=False)  # fmt: skip
            times = result["times"]
            record["variants"][name] = {
                "tokens_per_s": tokens / statistics.median(times),
                "tokens_per_cpu_s": tokens * len(times) / (sum(times) * result["cpu_share"]),
                "cpu_share": result["cpu_share"],
                "step_s": times,
            }
            bar.update(1)
        record["load_1min_end"] = os.getloadavg()[0]
        records.append(record)
        if on_round is not None:
            on_round(record)
    bar.close()
    return {"rows": _rows(names, records, variants, fpt), "rounds": records,
            "flops_per_token": fpt}  # fmt: skip


def _rows(names, records, variants, fpt) -> list[dict[str, Any]]:
    median = statistics.median
    wall = median(r["ceiling"]["wall"] for r in records)
    cpu = median(r["ceiling"]["cpu"] for r in records)
    first = names[0]
    rows = []
    for name in names:
        got = [r["variants"][name] for r in records]
        rate, rate_cpu = median(g["tokens_per_s"] for g in got), median(g["tokens_per_cpu_s"] for g in got)  # fmt: skip
        paths = variants[name]
        rows.append({
            "variant": name, "dtype": paths.dtype, "attn": paths.attn,
            "optimizer": paths.optimizer, "fused_layers": paths.fused_layers,
            "loss": paths.loss, "compile": paths.compile,
            "tokens_per_s": rate, "tokens_per_cpu_s": rate_cpu,
            "speedup": median(r["variants"][name]["tokens_per_s"] / r["variants"][first]["tokens_per_s"] for r in records),
            "speedup_cpu": median(r["variants"][name]["tokens_per_cpu_s"] / r["variants"][first]["tokens_per_cpu_s"] for r in records),
            "ceiling_share": rate * fpt / wall, "ceiling_share_cpu": rate_cpu * fpt / cpu,
            "cpu_share": median(g["cpu_share"] for g in got), "rounds": len(got),
        })  # fmt: skip
    return rows


class _Stepper:
    """One variant's model (seeded), AdamW and the fixed batch: ``step()`` trains one step
    -> (wall seconds, CPU seconds / threads)."""

    def __init__(self, paths: FastPaths, cfg: GPTConfig, x: torch.Tensor, y: torch.Tensor):
        from gptref.model import GPTModel

        torch.manual_seed(123)
        self.paths, self.x, self.y = paths, x, y
        self.model, self.adamw = paths.build(GPTModel(paths.apply(cfg)).train(), 4e-4, 0.1)

    def step(self) -> tuple[float, float]:
        from gptref.step import train_step

        t0, c0 = time.perf_counter(), time.process_time()
        train_step(self.model, self.adamw, self.x, self.y, "cpu",
                   autocast_dtype=self.paths.autocast_dtype,
                   loss_chunk=self.paths.loss_chunk_rows)  # fmt: skip
        return time.perf_counter() - t0, (time.process_time() - c0) / torch.get_num_threads()


def _setting(preset, context, batch_size):
    from gptref.bench.measure import _batch

    cfg = resolve_config(preset, context_length=context)
    return cfg, *_batch(cfg, batch_size, "cpu")


def stepwise(
    variants: Mapping[str, FastPaths],
    preset: str | GPTConfig | Mapping[str, Any] = "124M",
    context: int | None = 256,
    batch_size: int = 4,
    *,
    rounds: int = 8,
) -> dict[str, Any]:
    """Every variant's model and AdamW built at once (memory: all of them), one warm-up step
    each, then ``rounds`` rounds of one step per variant in turn (round r from the variant r
    mod n on) -> {"rows": per variant the median step's tokens/s and ``ratio``, the median
    over rounds of its step time's ratio to the first variant's in the same round, by wall
    clock and per CPU second; "rounds": the step times}. Steps of one round run seconds
    apart, under the same load: the finest interleaving one process allows."""
    cfg, x, y = _setting(preset, context, batch_size)
    steppers = {name: _Stepper(paths, cfg, x, y) for name, paths in variants.items()}
    for stepper in steppers.values():
        stepper.step()
    names, records = list(steppers), []
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        records.append({"load_1min": os.getloadavg()[0],
                        "steps": {name: steppers[name].step() for name in order}})  # fmt: skip
    median, first = statistics.median, names[0]
    tokens = batch_size * cfg.context_length
    rows = []
    for name in names:
        rows.append({
            "variant": name, "dtype": variants[name].dtype, "loss": variants[name].loss,
            "tokens_per_s": tokens / median(r["steps"][name][0] for r in records),
            "ratio": median(r["steps"][first][0] / r["steps"][name][0] for r in records),
            "ratio_cpu": median(r["steps"][first][1] / r["steps"][name][1] for r in records),
            "wins": sum(r["steps"][name][0] < r["steps"][first][0] for r in records),
        })  # fmt: skip
    return {"rows": rows, "rounds": records, "preset": preset, "context": cfg.context_length,
            "batch_size": batch_size}  # fmt: skip


def compile_cost(
    paths: FastPaths,
    preset: str | GPTConfig | Mapping[str, Any],
    context: int | None,
    batch_size: int,
    *,
    rounds: int = 3,
) -> dict[str, Any]:
    """``paths`` eager and compiled (``torch.compile``, inductor; on CPU its C++ backend), in
    this process: two models from the same seed, one warm-up step of the eager one, two
    steps of the compiled one (the first compiles the forward and backward), then ``rounds``
    steps of each in turn -> compile time apart (``compile_s``: what the first two compiled
    steps took over two steady ones), tokens/s of each, the speed-up, and ``break_even_s``:
    the seconds of eager training from which compiling pays (None: it never does)."""
    import torch._dynamo

    cfg, x, y = _setting(preset, context, batch_size)
    torch._dynamo.reset()
    load = os.getloadavg()[0]
    eager, compiled = _Stepper(paths, cfg, x, y), _Stepper(paths.replace(compile=True), cfg, x, y)
    eager.step()
    first = [compiled.step(), compiled.step()]
    timed = [(eager.step(), compiled.step()) for _ in range(rounds)]
    median = statistics.median
    e, c = (median(t[i][0] for t in timed) for i in (0, 1))
    e_cpu, c_cpu = (median(t[i][1] for t in timed) for i in (0, 1))
    compile_s = sum(f[0] for f in first) - 2 * c
    tokens = batch_size * cfg.context_length
    return {
        "preset": preset, "context": cfg.context_length, "batch_size": batch_size,
        "dtype": paths.dtype, "loss": paths.loss, "compile_s": compile_s,
        "compile_cpu_s": sum(f[1] for f in first) - 2 * c_cpu,
        "eager_tokens_per_s": tokens / e, "compiled_tokens_per_s": tokens / c,
        "speedup": e / c, "speedup_cpu": e_cpu / c_cpu,
        "break_even_s": compile_s * e / (e - c) if c < e else None,
        "load_1min": [load, os.getloadavg()[0]], "rounds": rounds,
    }  # fmt: skip


def cold_compile_cost(
    paths: FastPaths, preset: str, context: int | None, batch_size: int, *, rounds: int = 3
) -> dict[str, Any]:
    """``compile_cost`` in a fresh Python process with an empty inductor cache
    (``TORCHINDUCTOR_CACHE_DIR``): the compile time of a first run, which a second run on the
    same machine partly saves (inductor keeps compiled kernels on disk)."""
    import dataclasses
    import json
    import subprocess
    import sys
    import tempfile

    spec = json.dumps({"paths": dataclasses.asdict(paths), "preset": preset, "context": context,
                       "batch_size": batch_size, "rounds": rounds})  # fmt: skip
    code = ("import json, sys; from gptref.bench.inprocess import compile_cost; "
            "from gptref.fast.paths import FastPaths; a = json.loads(sys.argv[1]); "
            "p = FastPaths.from_dict(a.pop('paths')); print(json.dumps(compile_cost(p, **a)))")  # fmt: skip
    with tempfile.TemporaryDirectory() as cache:
        proc = subprocess.run([sys.executable, "-c", code, spec], capture_output=True, text=True,
                              env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"cold_compile_cost: {spec} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def format_paths(record: Mapping[str, Any]) -> str:
    """``interleaved_paths``' record (with ``machine``, ``auto``) -> the machine, the ceiling
    and load in a few lines, and a markdown table of the variants."""
    from gptref.bench.report import markdown_table

    m, rounds = record["machine"], record["rounds"]
    loads = [x for r in rounds for x in (r["load_1min"], r["load_1min_end"])]
    wall = statistics.median(r["ceiling"]["wall"] for r in rounds) / 1e9
    cpu = statistics.median(r["ceiling"]["cpu"] for r in rounds) / 1e9
    lines = [
        f"CPU {m['cpu_model']}, capability {m['cpu_capability']} "
        f"({', '.join(m['cpu_flags']) or 'no flags read'}), torch {m['torch_version']}, "
        f"{m['torch_threads']} threads; 1-minute load {min(loads):.1f}-{max(loads):.1f}",
        f"{record.get('choice', '')}",
        f"float32 matmul ceiling (2048^3): {wall:.0f} GFLOP/s by wall clock, {cpu:.0f} per CPU "
        f"second; FLOPs per token {record['flops_per_token']:,} (6N + 12LHQT, PaLM); "
        f"{len(rounds)} rounds; --fast here: {record.get('auto')}",
        "",
    ]
    head = ["variant", "dtype", "tokens/s", "speed-up", "% of fp32 ceiling",
            "tokens/CPU-s", "speed-up per CPU-s", "% of ceiling per CPU-s", "CPU share"]  # fmt: skip
    cells = [
        [r["variant"], r["dtype"], f"{r['tokens_per_s']:,.1f}", f"{r['speedup']:.2f}x",
         f"{100 * r['ceiling_share']:.0f} %", f"{r['tokens_per_cpu_s']:,.1f}",
         f"{r['speedup_cpu']:.2f}x", f"{100 * r['ceiling_share_cpu']:.0f} %",
         f"{r['cpu_share']:.2f}"]
        for r in record["rows"]
    ]  # fmt: skip
    return "\n".join(lines) + "\n" + markdown_table(head, cells)


def format_compile(record: Mapping[str, Any]) -> str:
    """``compile_cost`` rows (with ``machine``) -> a markdown table."""
    from gptref.bench.report import markdown_table

    m = record["machine"]
    head = ["setting", "variant", "dtype", "compile (s)", "eager tokens/s", "compiled tokens/s",
            "speed-up", "per CPU-s", "pays after (s of eager training)", "load"]  # fmt: skip
    cells = [
        [f"{r['preset']} ctx {r['context']} b {r['batch_size']}", r["variant"], r["dtype"],
         f"{r['compile_s']:.0f}", f"{r['eager_tokens_per_s']:,.1f}",
         f"{r['compiled_tokens_per_s']:,.1f}", f"{r['speedup']:.2f}x", f"{r['speedup_cpu']:.2f}x",
         "never" if r["break_even_s"] is None else f"{r['break_even_s']:,.0f}",
         "-".join(f"{x:.1f}" for x in r["load_1min"])]
        for r in record["rows"]
    ]  # fmt: skip
    where = f"CPU {m['cpu_model']}, capability {m['cpu_capability']}, torch {m['torch_version']}"
    return f"{where}, {m['torch_threads']} threads\n\n" + markdown_table(head, cells)
