"""Measured proof that ``gptref track`` does not cry wolf on this shared machine, and sees a
real regression of known size.

``python benchmarks/track_proof.py abtest`` / ``counts`` / ``summary`` (results in
``benchmarks/results/track/proof_*.json``; ``summary`` prints the figures the README shows):

- ``abtest``: ``--comparisons`` (default 20) independent experiments, each four sides of the
  same build interleaved repetition by repetition (``gptref.track.abtest.interleave``,
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

from gptref.cli.track import ROUNDS, THRESHOLDS  # noqa: E402
from gptref.track.abtest import Side, interleave  # noqa: E402
from gptref.track.counts import count_instructions  # noqa: E402
from gptref.track.stats import compare_samples  # noqa: E402
from gptref.track.workloads import WORKLOADS  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "track"
SLOW_WORKER = str(ROOT / "benchmarks" / "slowdown_worker.py")
SUITE = list(WORKLOADS)
BENCHES = ["chunk", "collate", "train_step"]


def _save(name: str, data: dict) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"proof_{name}.json"
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def abtest(comparisons: int, rounds: int = ROUNDS, cpu: int = -1, first_seed: int = 0,
           tag: str = "") -> dict:  # fmt: skip
    """``comparisons`` experiments of four sides in ``gptref track compare``'s own setting
    (``rounds`` rounds, 5 repetitions, workloads set up anew every round, fresh processes
    every 5), results saved after each experiment."""

    def side(label: str, fraction: float) -> Side:
        env = {"GPTREF_BENCH_SLOWDOWN": f"train_step:{fraction}"}
        return Side(label, str(ROOT), env=env, worker=SLOW_WORKER)

    sides = [side("A", 0), side("A2", 0), side("B10", 0.10), side("C5", 0.05)]
    runs = []
    for k in range(first_seed, first_seed + comparisons):
        t0, load0 = time.time(), os.getloadavg()
        r = interleave(sides, BENCHES, rounds, seed=k, cpu=cpu)
        run = {"seed": k, "seconds": time.time() - t0, "load_avg": list(os.getloadavg()),
               "load_avg_start": list(load0), "cpu": cpu, "samples": r.samples,
               "order": r.order, "aa": [v.to_dict() for v in r.verdicts("A", "A2", THRESHOLDS)],
               "inject": {f: r.verdicts("A", b, THRESHOLDS)[-1].to_dict()
                          for f, b in (("0.1", "B10"), ("0.05", "C5"))}}  # fmt: skip
        runs.append(run)
        alarms = [v["name"] for v in run["aa"] if v["regression"]]
        print(f"seed {k}: {run['seconds']:.0f} s, load {run['load_avg'][0]:.1f}: A/A alarms "
              f"{alarms}; " + "; ".join(f"+{f}: {v['ratio']:.3f} [{v['low']:.3f}, "
                                        f"{v['high']:.3f}] {v['change']}"
                                        for f, v in run["inject"].items()), flush=True)  # fmt: skip
        _save("abtest" + tag, {"rounds": rounds, "reps": 5, "per_process": 5,
                               "benches": BENCHES, "runs": runs})  # fmt: skip
    return {"runs": runs}


def true_size(calls: int = 100) -> dict:
    """The slowdown the switch really injects: ``injected``, the wrapped calls' CPU time over
    the inner calls' (what the spin adds, by construction), and as a check that the spin
    costs the next call nothing, train_step with 0 %, 5 % and 10 % in turn in one process ->
    each one's ratio to 0 % (of the fastest and of the median of ``calls`` triples; on a
    loaded machine these carry its noise)."""
    import importlib.util

    import torch

    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location("slowdown_worker", SLOW_WORKER)
    worker = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = worker
    spec.loader.exec_module(worker)
    step = worker.workloads.WORKLOADS["train_step"].setup()  # one model for all three: two
    calls_of = {f: worker.slowed(lambda: step, f)() for f in (0.0, 0.05, 0.10)}  # set-ups differ
    cpu: dict[float, list[float]] = {f: [] for f in calls_of}
    for i in range(calls):
        for f, call in calls_of.items() if i % 2 else reversed(calls_of.items()):
            t0 = time.process_time()
            call(), call(), call()
            cpu[f].append(time.process_time() - t0)
    out = {str(f): {"injected": worker.SPENT[f][1] / worker.SPENT[f][0],
                    "min_ratio": min(cpu[f]) / min(cpu[0.0]),
                    "median_ratio": statistics.median(cpu[f]) / statistics.median(cpu[0.0])}
           for f in (0.05, 0.10)}  # fmt: skip
    print(f"true size: {out}", flush=True)
    _save("true_size", out)
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


def _bounds(k: int, n: int) -> tuple[float, float]:
    """Clopper-Pearson 95 % interval of a rate of k in n."""
    from scipy.stats import beta

    low = beta.ppf(0.025, k, n - k + 1) if k > 0 else 0.0
    high = beta.ppf(0.975, k + 1, n - k) if k < n else 1.0
    return float(low), float(high)


def _rate(k: int, n: int) -> str:
    low, high = _bounds(k, n)
    return f"{k}/{n} = {k / n:.1%} (95 % CI {low:.1%}-{high:.1%})"


def summary() -> str:
    lines = []
    parts = sorted(OUT.glob("proof_abtest*.json"))  # one file per core the proof ran on
    cnt_path, size_path = OUT / "proof_counts.json", OUT / "proof_true_size.json"
    sizes = json.loads(size_path.read_text()) if size_path.is_file() else {}
    if parts:
        data = json.loads(parts[0].read_text())
        runs = [run for part in parts for run in json.loads(part.read_text())["runs"]]
        verdicts = [v for run in runs for v in run["aa"]]
        # B10 and C5 differ in train_step only: on chunk and collate they are one more A/A pair
        verdicts += [
            compare_samples(n, run["samples"]["B10"][n], run["samples"]["C5"][n],
                            threshold=THRESHOLDS[n]).to_dict()
            for run in runs for n in ("chunk", "collate")
        ]  # fmt: skip
        alarms = sum(v["regression"] for v in verdicts)
        sig = sum(v["significant"] for v in verdicts)
        steps = [v for v in verdicts if v["name"] == "train_step"]
        by_bench = {n: [v["ratio"] for v in verdicts if v["name"] == n] for n in data["benches"]}
        loads = [x for r in runs for x in (r.get("load_avg_start", r["load_avg"])[0],
                                           r["load_avg"][0])]  # fmt: skip
        lines.append(f"{len(runs)} experiments of {data['rounds']} rounds (compare's default: "
                     f"{data.get('reps', 5)} repetitions, set-up anew every round, fresh "
                     f"processes every {data.get('per_process', 5)}), four sides interleaved, "
                     f"{statistics.median(r['seconds'] for r in runs):.0f} s each (median), "
                     f"load average {min(loads):.1f}-{max(loads):.1f}")  # fmt: skip
        lines.append(f"A/A (A-A2 on {', '.join(data['benches'])}; B10-C5 on chunk, collate): "
                     f"false alarms (the gate fails) {_rate(alarms, len(verdicts))}; train_step "
                     f"alone {_rate(sum(v['regression'] for v in steps), len(steps))}; "
                     f"significant changes of any size {_rate(sig, len(verdicts))}; A/A ratio "
                     "ranges: " + ", ".join(f"{n} {min(r):.3f}-{max(r):.3f}"
                                            for n, r in by_bench.items()))  # fmt: skip
        for fraction in ("0.1", "0.05"):
            got = [run["inject"][fraction] for run in runs]
            n = len(got)
            true = sizes.get(fraction, {}).get("injected", 1 + float(fraction))
            detected = sum(r["significant"] and r["ratio"] > 1 for r in got)
            gate = sum(r["regression"] for r in got)
            covered = sum(r["low"] <= true <= r["high"] for r in got)
            ratios = [r["ratio"] for r in got]
            lines.append(f"+{float(fraction):.0%} injected into train_step (true ratio "
                         f"{true:.3f}): a significant slow-down {_rate(detected, n)}; the gate "
                         f"fails (> +{THRESHOLDS['train_step']:.0%}) {_rate(gate, n)}; reported "
                         f"ratio median {statistics.median(ratios):.3f} (range {min(ratios):.3f}"
                         f"-{max(ratios):.3f}), its 99 % interval holds the true ratio in "
                         f"{covered}/{n}")  # fmt: skip
    if sizes:
        lines.append("true size of the injected slowdown: " + ", ".join(
            f"+{float(f):.0%} -> {v['injected']:.4f} (the spins' CPU time over the calls'); "
            f"timed in turn in one process {v['min_ratio']:.3f} (fastest) / "
            f"{v['median_ratio']:.3f} (median)" for f, v in sizes.items()))  # fmt: skip
    if cnt_path.is_file():
        runs = json.loads(cnt_path.read_text())["runs"]
        spreads = {n: (max(r[n] for r in runs) - min(r[n] for r in runs)) / min(r[n] for r in runs)
                   for n in runs[0] if all(r.get(n) for r in runs)}  # fmt: skip
        lines.append(f"counts, {len(runs)} callgrind runs: largest spread " + ", ".join(
            f"{n} {s:.4%} ({runs[0][n] / 1e6:.2f} M)" for n, s in spreads.items()))  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("abtest", "counts", "true-size", "summary"))
    parser.add_argument("--comparisons", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=-1, help="the core both sides run on")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--tag", default="", help="abtest: a suffix of the results file")
    args = parser.parse_args()
    if args.what == "abtest":
        abtest(args.comparisons, args.rounds, args.cpu, first_seed=args.first_seed, tag=args.tag)
    if args.what == "counts":
        counts(args.repeats)
    if args.what == "true-size":
        true_size()
    print(summary())


if __name__ == "__main__":
    main()
