"""Measured proof that ``gptref track`` does not cry wolf on this shared machine, and sees a
real regression of known size.

``python benchmarks/track_proof.py aa`` / ``inject`` / ``counts`` / ``all`` (results in
``benchmarks/results/track/proof_*.json``; ``summary`` prints the table the README shows):

- ``aa``: the same build against itself, ``--comparisons`` times (default 20), each a full
  interleaved comparison of the six benchmarks (``gptref.bench.abtest.interleave``, the
  defaults ``gptref track compare`` uses): a false alarm is a verdict of regression (the
  gate would fail), counted per benchmark comparison; "significant" changes of any size
  are counted too.
- ``inject``: B runs ``benchmarks/slowdown_worker.py`` with ``train_step`` slowed by 5 % and
  by 10 % of its own CPU time (A the same wrapper with 0 %), ``--comparisons`` each: the
  detection rate (a significant slow-down), the gate's rate (beyond train_step's 5 %
  threshold) and the reported ratios beside the true one.
- ``counts``: the instruction counts of the suite, ``--repeats`` runs (default 3) of
  callgrind: the largest relative spread of each benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gptref.bench.abtest import Side, interleave  # noqa: E402
from gptref.bench.counts import count_instructions  # noqa: E402
from gptref.bench.workloads import WORKLOADS  # noqa: E402
from gptref.commands.track import THRESHOLDS  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "track"
SLOW_WORKER = str(ROOT / "benchmarks" / "slowdown_worker.py")
SUITE = list(WORKLOADS)


def _save(name: str, data: dict) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"proof_{name}.json"
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def aa(comparisons: int, rounds: int, cpu: int = -1) -> dict:
    runs = []
    for k in range(comparisons):
        t0 = time.time()
        r = interleave(Side("A", str(ROOT)), Side("B", str(ROOT)), SUITE, rounds, seed=k, cpu=cpu)
        verdicts = [v.to_dict() for v in r.verdicts("A", "B", THRESHOLDS)]
        runs.append({"seed": k, "seconds": time.time() - t0, "verdicts": verdicts,
                     "load_avg": list(os.getloadavg()), "samples": r.samples})  # fmt: skip
        alarms = [v["name"] for v in verdicts if v["regression"]]
        print(f"A/A {k + 1}/{comparisons}: {time.time() - t0:.0f} s, alarms {alarms}", flush=True)
        _save("aa", {"rounds": rounds, "runs": runs})
    return {"rounds": rounds, "runs": runs}


def inject(comparisons: int, rounds: int, cpu: int = -1, fractions=(0.10, 0.05),
           bench: str = "train_step") -> dict:  # fmt: skip
    out = {"rounds": rounds, "benchmark": bench, "by_fraction": {}}
    for fraction in fractions:
        a = Side("A", str(ROOT), env={"GPTREF_BENCH_SLOWDOWN": f"{bench}:0"}, worker=SLOW_WORKER)
        b = Side("B", str(ROOT), env={"GPTREF_BENCH_SLOWDOWN": f"{bench}:{fraction}"},
                 worker=SLOW_WORKER)  # fmt: skip
        runs = []
        for k in range(comparisons):
            t0 = time.time()
            r = interleave(a, b, [bench], rounds, seed=1000 + k, cpu=cpu)
            (v,) = r.verdicts("A", "B", THRESHOLDS)
            runs.append({"seed": 1000 + k, "seconds": time.time() - t0, **v.to_dict(),
                         "load_avg": list(os.getloadavg()), "samples": r.samples})  # fmt: skip
            print(f"+{fraction:.0%} {k + 1}/{comparisons}: {v.describe()}", flush=True)
            out["by_fraction"][str(fraction)] = runs
            _save("inject", out)
    return out


def counts(repeats: int) -> dict:
    runs = []
    for k in range(repeats):
        t0 = time.time()
        report = count_instructions(SUITE, python=sys.executable, worker=ROOT / "gptref" /
                                    "bench" / "workloads.py", src=ROOT)  # fmt: skip
        runs.append({n: r.get("instructions") for n, r in report["results"].items()})
        print(f"counts {k + 1}/{repeats}: {time.time() - t0:.0f} s {runs[-1]}", flush=True)
        _save("counts", {"runs": runs, "env": report["env"]})
    return {"runs": runs}


def summary() -> str:
    lines = []
    aa_path, inj_path, cnt_path = (OUT / f"proof_{n}.json" for n in ("aa", "inject", "counts"))
    if aa_path.is_file():
        data = json.loads(aa_path.read_text())
        verdicts = [v for run in data["runs"] for v in run["verdicts"]]
        alarms = sum(v["regression"] for v in verdicts)
        sig = sum(v["significant"] for v in verdicts)
        runs_alarmed = sum(any(v["regression"] for v in run["verdicts"]) for run in data["runs"])
        lines.append(f"A/A: {len(data['runs'])} comparisons x {len(SUITE)} benchmarks = "
                     f"{len(verdicts)} verdicts, {data['rounds']} rounds each: false alarms "
                     f"(gate fails) {alarms}/{len(verdicts)} = {alarms / len(verdicts):.1%} "
                     f"(comparisons with any: {runs_alarmed}/{len(data['runs'])}); significant "
                     f"changes of any size {sig}/{len(verdicts)} = {sig / len(verdicts):.1%}; "
                     "median |ratio - 1| "
                     f"{statistics.median(abs(v['ratio'] - 1) for v in verdicts):.2%}")  # fmt: skip
    if inj_path.is_file():
        data = json.loads(inj_path.read_text())
        for fraction, runs in data["by_fraction"].items():
            n = len(runs)
            detected = sum(r["significant"] and r["ratio"] > 1 for r in runs)
            gate = sum(r["regression"] for r in runs)
            covered = sum(r["low"] <= 1 + float(fraction) <= r["high"] for r in runs)
            ratios = [r["ratio"] for r in runs]
            lines.append(f"+{float(fraction):.0%} injected into {data['benchmark']}: detected "
                         f"{detected}/{n} = {detected / n:.0%}, gate fails {gate}/{n}, reported "
                         f"ratio median {statistics.median(ratios):.3f} (range {min(ratios):.3f}"
                         f"-{max(ratios):.3f}; true {1 + float(fraction):.3f}), 99 % interval "
                         f"holds the true ratio in {covered}/{n}")  # fmt: skip
    if cnt_path.is_file():
        runs = json.loads(cnt_path.read_text())["runs"]
        spreads = {n: (max(r[n] for r in runs) - min(r[n] for r in runs)) / min(r[n] for r in runs)
                   for n in runs[0] if all(r.get(n) for r in runs)}  # fmt: skip
        lines.append(f"counts, {len(runs)} callgrind runs: largest spread " + ", ".join(
            f"{n} {s:.4%} ({runs[0][n] / 1e6:.2f} M)" for n, s in spreads.items()))  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("aa", "inject", "counts", "all", "summary"))
    parser.add_argument("--comparisons", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=-1, help="the core both sides run on")
    args = parser.parse_args()
    if args.what in ("aa", "all"):
        aa(args.comparisons, args.rounds, args.cpu)
    if args.what in ("inject", "all"):
        inject(args.comparisons, args.rounds, args.cpu)
    if args.what in ("counts", "all"):
        counts(args.repeats)
    print(summary())


if __name__ == "__main__":
    main()
