"""The main job with and without ``--fast``: ``gptref train`` and ``gptref train --fast`` (the
defaults: the small preset on the built-in corpus, one epoch), each a process of its own,
in turn for ``--rounds`` rounds (reference first in even rounds, ``--fast`` first in odd
ones, so neither always follows the other).

    python -m benchmarks.main_job_fast [--rounds 2] [--out benchmarks/results/main_job_cpu.json]

Each run records its summary (wall seconds, the seconds of updates, tokens/s over them, the
final losses), its CPU time (user + system, from ``os.wait4``) and the 1-minute load before
and after; the JSON gets the machine (CPU model, PyTorch's capability, bf16 units) and, per
round, ``--fast``'s wall time and tokens/s over the reference's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gptref.bench.measure import machine_info

SIDES = {"gptref train": [], "gptref train --fast": ["--fast"]}


def run(flags: list[str], out: Path) -> dict:
    cmd = [sys.executable, "-m", "gptref", "train", *flags, "--out", str(out), "--json",
           "--no-progress"]  # fmt: skip
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stdout, stderr = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd} failed:\n{stderr[-2000:]}")
    summary = json.loads(stdout)
    keep = ("steps", "wall_seconds", "train_seconds", "tokens_per_second", "train_loss",
            "val_loss")  # fmt: skip
    return {
        **{k: summary[k] for k in keep},
        "process_wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "load_1min": [load, os.getloadavg()[0]],
        "fast_line": next((x for x in stderr.splitlines() if x.startswith("fast paths:")), None),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/main_job_cpu.json")
    args = parser.parse_args()
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = list(SIDES) if r % 2 == 0 else list(SIDES)[::-1]
            got = {name: run(SIDES[name], Path(tmp) / f"{r}-{i}") for i, name in enumerate(order)}
            ref, fast = got["gptref train"], got["gptref train --fast"]
            rounds.append({
                "round": r, "order": order, "runs": got,
                "wall_ratio": fast["wall_seconds"] / ref["wall_seconds"],
                "tokens_per_s_ratio": fast["tokens_per_second"] / ref["tokens_per_second"],
                "cpu_ratio": fast["cpu_s"] / ref["cpu_s"],
            })  # fmt: skip
            print(json.dumps(rounds[-1], indent=1), flush=True)
    record = {
        "machine": machine_info(),
        "rounds": rounds,
        "median_wall_ratio": statistics.median(r["wall_ratio"] for r in rounds),
        "median_tokens_per_s_ratio": statistics.median(r["tokens_per_s_ratio"] for r in rounds),
    }
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
