"""Measured proof that ``gptref track`` does not cry wolf on this shared machine, and sees a
real regression of known size.

``python benchmarks/track_proof.py abtest`` / ``counts`` / ``summary`` (results in
``benchmarks/results/track/proof_*.json``; ``summary`` prints the figures the README shows):

- ``abtest``: ``--comparisons`` (default 20) independent experiments, each four sides of the
  same build interleaved repetition by repetition (``gptref.bench.abtest.interleave_sides``,
  10 rounds, what ``gptref track compare`` does for two): A and A2 plain, B with
  ``train_step`` slowed by 10 % of its own CPU time and C by 5 % (``benchmarks/
  slowdown_worker.py``; every side runs the same wrapper, A and A2 with 0 %), on
  ``chunk``, ``collate`` and ``train_step``. A against A2 is the A/A comparison (three
  benchmarks each: a false alarm is a verdict of regression, what fails the gate; any
  "significant" change is counted too); A against B and A against C on ``train_step`` are
  the injected slowdowns: the detection rate (a significant slow-down), the gate's rate
  (beyond train_step's 5 % threshold) and the reported ratios beside the true ones. Four
  sides in one timeline cost a third of three separate experiments on a machine where
  every process gets a fraction of a core.
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

from gptref.bench.abtest import Side, interleave_sides  # noqa: E402
from gptref.bench.counts import count_instructions  # noqa: E402
from gptref.bench.workloads import WORKLOADS  # noqa: E402
from gptref.commands.track import THRESHOLDS  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "track"
SLOW_WORKER = str(ROOT / "benchmarks" / "slowdown_worker.py")
SUITE = list(WORKLOADS)
BENCHES = ["chunk", "collate", "train_step"]


def _save(name: str, data: dict) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"proof_{name}.json"
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def abtest(comparisons: int, rounds: int, cpu: int = -1, reps: int = 3, first_seed: int = 0,
           tag: str = "") -> dict:  # fmt: skip
    def side(label: str, fraction: float) -> Side:
        env = {"GPTREF_BENCH_SLOWDOWN": f"train_step:{fraction}"}
        return Side(label, str(ROOT), env=env, worker=SLOW_WORKER)

    sides = [side("A", 0), side("A2", 0), side("B10", 0.10), side("C5", 0.05)]
    runs = []
    for k in range(first_seed, first_seed + comparisons):
        t0 = time.time()
        r = interleave_sides(sides, BENCHES, rounds, reps, seed=k, per_process=rounds, cpu=cpu)
        run = {"seed": k, "seconds": time.time() - t0, "load_avg": list(os.getloadavg()),
               "samples": r.samples, "order": r.order,
               "aa": [v.to_dict() for v in r.verdicts("A", "A2", THRESHOLDS)],
               "inject": {f: r.verdicts("A", b, THRESHOLDS)[-1].to_dict()
                          for f, b in (("0.1", "B10"), ("0.05", "C5"))}}  # fmt: skip
        runs.append(run)
        alarms = [v["name"] for v in run["aa"] if v["regression"]]
        print(f"seed {k}: {run['seconds']:.0f} s: A/A alarms {alarms}; "
              + "; ".join(f"+{f}: {v['ratio']:.3f} [{v['low']:.3f}, {v['high']:.3f}] "
                          f"{v['change']}" for f, v in run["inject"].items()), flush=True)  # fmt: skip
        _save("abtest" + tag, {"rounds": rounds, "reps": reps, "benches": BENCHES, "runs": runs})
    return {"runs": runs}


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
    parts = sorted(OUT.glob("proof_abtest*.json"))  # one file per core the proof ran on
    cnt_path = OUT / "proof_counts.json"
    if parts:
        data = json.loads(parts[0].read_text())
        runs = [run for part in parts for run in json.loads(part.read_text())["runs"]]
        verdicts = [v for run in runs for v in run["aa"]]
        alarms = sum(v["regression"] for v in verdicts)
        sig = sum(v["significant"] for v in verdicts)
        by_bench = {n: [v["ratio"] for v in verdicts if v["name"] == n] for n in data["benches"]}
        lines.append(f"A/A: {len(runs)} comparisons x {len(data['benches'])} benchmarks = "
                     f"{len(verdicts)} verdicts, {data['rounds']} rounds each: false alarms "
                     f"(gate fails) {alarms}/{len(verdicts)} = {alarms / len(verdicts):.1%}; "
                     f"significant changes of any size {sig}/{len(verdicts)} = "
                     f"{sig / len(verdicts):.1%}; A/A ratio ranges: " + ", ".join(
                         f"{n} {min(r):.3f}-{max(r):.3f}" for n, r in by_bench.items()))  # fmt: skip
        for fraction in ("0.1", "0.05"):
            got = [run["inject"][fraction] for run in runs]
            n = len(got)
            detected = sum(r["significant"] and r["ratio"] > 1 for r in got)
            gate = sum(r["regression"] for r in got)
            covered = sum(r["low"] <= 1 + float(fraction) <= r["high"] for r in got)
            ratios = [r["ratio"] for r in got]
            lines.append(f"+{float(fraction):.0%} injected into train_step: detected "
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
    parser.add_argument("what", choices=("abtest", "counts", "summary"))
    parser.add_argument("--comparisons", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=-1, help="the core both sides run on")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--tag", default="", help="abtest: a suffix of the results file")
    args = parser.parse_args()
    if args.what == "abtest":
        abtest(args.comparisons, args.rounds, args.cpu, first_seed=args.first_seed, tag=args.tag)
    if args.what == "counts":
        counts(args.repeats)
    print(summary())


if __name__ == "__main__":
    main()
