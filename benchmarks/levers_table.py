"""The README's lever table, GPT-124M on this CPU: each (context, lever combination, batch) in
processes of its own, rows appended to a JSON file as they finish (a run cut short keeps them).

    python -m benchmarks.levers_table [--out benchmarks/results/levers_cpu_124m.json]
        [--only memory|timing|cost] [--limit 18GiB]
    python -m benchmarks.levers_table --report   # the .md beside the .json, from its rows

Three kinds of row (``kind``):

- ``memory``: peak memory of one steady-state ``train_step`` (``measure_memory``'s process:
  ``MALLOC_MMAP_THRESHOLD_=65536``, one warm-up step, one measured step) beside
  ``estimate_training_memory``; the measured step's time is recorded too (``step_s``), under
  that allocator setting;
- ``timing``: tokens/s of a process under glibc's defaults (one warm-up step, ``STEPS`` timed
  steps, median), the levers' cost;
- ``cost``: the chunked loss's cost at batch 4, context 256: reference and chunked timing
  processes taking turns (``ROUNDS`` each), so other work on the machine hits both alike.

Every row records the 1-minute load average before and after it. Configurations predicted
above ``--limit`` are not run (the machine has 23 GiB and is shared): their prediction is
the table's statement, validated by the measured rows below it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from gptref.bench.levers import LEVERS
from gptref.bench.measure import EXACT_RSS_ENV, machine_info, run_isolated
from gptref.bench.report import markdown_table
from gptref.fast.paths import REFERENCE
from gptref.model import resolve_config
from gptref.plan.memory import estimate_training_memory, format_bytes
from gptref.plan.planner import max_batch_size, parse_bytes

STEPS = 2
ROUNDS = 3

# (context, variant, batch): memory rows, the most telling first (a 124M step at context 1024
# takes 40-80 s on this shared 2-core machine: the list is what fits in about an hour)
MEMORY = [
    (1024, "reference", 1), (1024, "chunked loss", 1), (1024, "reference", 4),
    (1024, "chunked loss + recompute", 4), (1024, "recompute every block", 4),
    *[(256, v, 4) for v in LEVERS],
    (1024, "chunked loss + recompute", 8),
]  # fmt: skip
TIMING = [(1024, v, 1) for v in LEVERS]
COST = [(256, v, 4) for v in ("reference", "chunked loss")]


def _load() -> float:
    return os.getloadavg()[0]


def _setup(context: int, variant: str):
    paths = REFERENCE.replace(**LEVERS[variant])
    return paths, paths.apply(resolve_config("124M", context_length=context))


def _predicted(cfg, paths, batch: int) -> int:
    return estimate_training_memory(cfg, batch, loss_chunk=paths.loss_chunk_rows).total


def run_row(kind: str, context: int, variant: str, batch: int, limit: int) -> dict[str, Any]:
    """One row: its process(es) run, -> the row (``status`` "ok" or "not run")."""
    paths, cfg = _setup(context, variant)
    predicted = _predicted(cfg, paths, batch)
    row: dict[str, Any] = {
        "kind": kind, "preset": "124M", "context": context, "variant": variant,
        "batch_size": batch, "dtype": "float32", "attn": "reference", "loss": paths.loss,
        "loss_chunk": paths.loss_chunk_rows, "recompute": paths.recompute,
        "predicted_bytes": predicted, "load_before": _load(),
    }  # fmt: skip
    if predicted > limit:
        return {**row, "status": "not run", "note": f"predicted {format_bytes(predicted)}"}
    t0 = time.time()
    if kind == "memory":
        spec = {"batch_size": batch, "device": "cpu", "warmup": 1, "steps": 1}
        result = run_isolated(cfg, paths, env=EXACT_RSS_ENV, peak_flops=False, **spec)
    else:
        spec = {"batch_size": batch, "device": "cpu", "warmup": 1, "steps": STEPS}
        result = run_isolated(cfg, paths, peak_flops=False, **spec)
    row.update(load_after=_load(), wall_s=time.time() - t0)
    if "oom" in result:
        return {**row, "status": "OOM", "note": result["oom"]}
    times = sorted(result["times"])
    step = times[(len(times) - 1) // 2]
    row.update(status="ok", step_s=step, step_times=result["times"],
               tokens_per_s=batch * context / step, cpu_share=result["cpu_share"],
               memory_mode=result["memory_mode"])  # fmt: skip
    if kind == "memory":
        row.update(measured_bytes=result["peak_bytes"], ratio=predicted / result["peak_bytes"])
    return row


def largest_batches(context: int, budget: int = 24 << 30) -> dict[str, int]:
    """-> variant: the largest batch whose predicted peak fits ``budget`` at ``context``."""
    out = {}
    for variant in LEVERS:
        paths, cfg = _setup(context, variant)
        out[variant] = max_batch_size(cfg, budget, loss_chunk=paths.loss_chunk_rows)
    return out


def report(doc: dict[str, Any]) -> str:
    """The JSON's rows -> markdown: the memory rows (predicted, measured, tokens/s of the
    measured step), the timing rows, the chunked loss's cost, the largest batches in 24 GiB."""
    rows = [r for r in doc["rows"] if r["status"] == "ok"]
    m = doc["machine"]
    lines = [
        "# Memory levers, GPT-124M on this CPU", "",
        f"Machine: {m['cpu_model']}, {m['cpu_count']} cores, torch {m['torch_version']}, float32,"
        " reference attention, AdamW; shared with other work (load average: the 1-minute"
        " value before / after each row). `python -m benchmarks.levers_table`.", "",
        "## Peak memory, predicted and measured", "",
        "Each row a process of its own, `MALLOC_MMAP_THRESHOLD_=65536`, one warm-up step then"
        " the measured step; tokens/s is that step's, under this allocator setting and the"
        " load shown.", "",
    ]  # fmt: skip
    head = ["context", "variant", "batch", "predicted", "measured", "predicted/measured",
            "tokens/s", "CPU share", "load"]  # fmt: skip
    mem = sorted((r for r in rows if r["kind"] == "memory"),
                 key=lambda r: (r["context"], list(LEVERS).index(r["variant"]), r["batch_size"]))  # fmt: skip
    cells = [[str(r["context"]), r["variant"], str(r["batch_size"]),
              format_bytes(r["predicted_bytes"]), format_bytes(r["measured_bytes"]),
              f"{r['ratio']:.3f}", f"{r['tokens_per_s']:.1f}", f"{r['cpu_share']:.2f}",
              f"{r['load_before']:.1f} / {r['load_after']:.1f}"] for r in mem]  # fmt: skip
    lines += [markdown_table(head, cells), ""]
    if mem:
        ratios = sorted(r["ratio"] for r in mem)
        lines += [f"Predicted / measured over {len(mem)} rows: min {ratios[0]:.3f}, median "
                  f"{statistics.median(ratios):.3f}, max {ratios[-1]:.3f}.", ""]  # fmt: skip
    for kind, title in (("timing", "tokens/s, glibc defaults"),
                        ("cost", "The chunked loss's cost, batch 4, context 256")):  # fmt: skip
        mine = [r for r in rows if r["kind"] == kind]
        if not mine:
            continue
        lines += [f"## {title}", "",
                  f"One warm-up step, {STEPS} timed steps, the median; "
                  + ("variants in turn, round by round." if kind == "cost" else ""), ""]  # fmt: skip
        head = ["round", "context", "variant", "batch", "tokens/s", "CPU share", "load"]
        cells = [[str(r["round"]), str(r["context"]), r["variant"], str(r["batch_size"]),
                  f"{r['tokens_per_s']:.1f}", f"{r['cpu_share']:.2f}",
                  f"{r['load_before']:.1f} / {r['load_after']:.1f}"] for r in mine]  # fmt: skip
        lines += [markdown_table(head, cells), ""]
        if kind == "cost":
            by_round: dict[int, dict[str, float]] = {}
            for r in mine:
                by_round.setdefault(r["round"], {})[r["variant"]] = r["tokens_per_s"]
            ratios = [v["chunked loss"] / v["reference"] for v in by_round.values()
                      if {"chunked loss", "reference"} <= v.keys()]  # fmt: skip
            if ratios:
                lines += ["chunked / reference tokens/s per round: "
                          + ", ".join(f"{x:.3f}" for x in ratios)
                          + f"; median {statistics.median(ratios):.3f}.", ""]  # fmt: skip
    lines += ["## Largest batch in 24 GiB (predicted)", ""]
    head = ["context", *LEVERS]
    cells = []
    for context in sorted({r["context"] for r in doc["rows"]}):
        best = largest_batches(context)
        cells.append([str(context), *(str(best[v]) for v in LEVERS)])
    lines += [markdown_table(head, cells)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/levers_cpu_124m.json")
    parser.add_argument("--only", choices=["memory", "timing", "cost"], action="append")
    parser.add_argument("--limit", default="18GiB")
    parser.add_argument("--report", action="store_true", help="write the .md from the .json")
    args = parser.parse_args(argv)
    limit = parse_bytes(args.limit)
    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.exists() else {"machine": machine_info(), "rows": []}
    if args.report:
        out.with_suffix(".md").write_text(report(doc))
        return 0
    done = {(r["kind"], r["context"], r["variant"], r["batch_size"], r.get("round", 0))
            for r in doc["rows"]}  # fmt: skip
    plan = [("memory", *c, 0) for c in MEMORY[:-1]]
    plan += [("cost", *c, i) for i in range(ROUNDS) for c in COST]
    plan += [("memory", *MEMORY[-1], 0)]
    plan += [("timing", *c, 0) for c in TIMING]
    kinds = set(args.only or ["memory", "timing", "cost"])
    for kind, context, variant, batch, rnd in plan:
        if kind not in kinds or (kind, context, variant, batch, rnd) in done:
            continue
        row = run_row("timing" if kind == "cost" else kind, context, variant, batch, limit)
        row.update(kind=kind, round=rnd)
        doc["rows"].append(row)
        out.write_text(json.dumps(doc, indent=1) + "\n")
        shown = {k: row.get(k) for k in ("kind", "context", "variant", "batch_size", "status",
                                         "ratio", "tokens_per_s", "load_before", "wall_s")}  # fmt: skip
        print(json.dumps(shown), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
