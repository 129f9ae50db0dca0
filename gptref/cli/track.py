"""``gptref track record | compare | report | check``: performance history and regressions.

``record`` adds a run of the tracked suite (``gptref.track.workloads``) to a store;
``compare`` times two builds in interleaved rounds and tests the difference; ``report``
draws the store's history as a static page; ``check`` is the gate: exit status 1 on a
significant regression beyond its threshold (timed, against a git revision) or on an
instruction count beyond its threshold (``--counts-only``, against a committed baseline).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from gptref._io import atomic_write_json, atomic_write_text
from gptref._owned import lstat, read_marker
from gptref._setting import required, setting

NAME = "track"
HELP = "performance history: record, compare (significance-tested), report, check (CI gate)"
DESCRIPTION = (
    "Track the suite (chunk, collate, tokenize, a tiny model's forward, loss and train_step) "
    "across commits and torch versions: timed in interleaved rounds with a Mann-Whitney U "
    "test and a bootstrap interval on the ratio, counted exactly under callgrind."
)

# a checkout keeps its own history and baseline beside its benchmarks (paths inside it)
STORE = "benchmarks/results/track/store"
REPORT = "benchmarks/results/track/report"
COUNTS_BASELINE = "benchmarks/results/track/counts_baseline.json"
SUITE = "chunk,collate,tokenize,forward,loss,train_step"
MIN_ROUNDS = 8  # 2 / 2**8 < 0.01: the fewest pairs in which the signed-rank test can tell
ROUNDS = 20  # compare's and check's default: a +10 % slow-down of train_step seen >= 95 % of
# the time with 2 cores under load from other work (benchmarks/track_proof.py measures it)
# a significant slow-down beyond this fails `check` (timed); an increase beyond it (counted)
THRESHOLDS = {"chunk": 0.10, "collate": 0.10, "tokenize": 0.10, "forward": 0.10,
              "loss": 0.10, "train_step": 0.05}  # fmt: skip


def _bench() -> Any:
    return setting(SUITE, "benchmarks, comma-separated", metavar="LIST")


def _python() -> Any:
    return setting(None, "the Python (and so the torch) to run; default this one", metavar="EXE")


@dataclasses.dataclass(frozen=True)
class RecordArgs:
    store: str | None = setting(
        None, f"the store folder (pytest-benchmark layout; default the measured checkout's {STORE})",
        metavar="DIR",
    )  # fmt: skip
    label: str | None = setting(None, "the run's name (default: commit and torch version)")
    src: str | None = setting(
        None, "the gptref to measure: a checkout's folder or a git revision (default: the "
        "checkout that holds the current folder)", metavar="DIR|REV",
    )  # fmt: skip
    python: str | None = _python()
    bench: str = _bench()
    rounds: int = setting(5, "worker processes, one sample each", metavar="N")
    reps: int = setting(5, "timed repetitions per process; a round keeps the fastest", metavar="N")
    counts: bool = setting(False, "also count instructions (callgrind), ops and peak bytes")
    from_json: str | None = setting(
        None, "instead: add a pytest-benchmark --benchmark-json FILE as it is", metavar="FILE"
    )


@dataclasses.dataclass(frozen=True)
class CompareArgs:
    a: str = required("side A (the baseline): a checkout's folder or a git revision",
                      metavar="DIR|REV")  # fmt: skip
    b: str = setting(".", "side B: a checkout's folder or a git revision", metavar="DIR|REV")
    a_python: str | None = _python()
    b_python: str | None = _python()
    bench: str = _bench()
    rounds: int = setting(ROUNDS, "interleaved round pairs", metavar="N")
    reps: int = setting(5, "timed repetitions per process; a round keeps the fastest", metavar="N")
    threshold: float | None = setting(
        None, "a significant slow-down beyond this fraction is a regression (default: per "
        "benchmark, 0.05-0.10)", metavar="F",
    )  # fmt: skip
    json: str | None = setting(None, "also write the verdicts and samples here (a new file)",
                               metavar="FILE")  # fmt: skip
    overwrite: bool = setting(False, "replace an earlier --json FILE of gptref track compare")


@dataclasses.dataclass(frozen=True)
class ReportArgs:
    store: str | None = setting(None, f"the store folder (default this checkout's {STORE})",
                                metavar="DIR")  # fmt: skip
    out: str | None = setting(
        None, f"where index.html, trend.png go (default this checkout's {REPORT})", metavar="DIR"
    )
    overwrite: bool = setting(False, "replace an earlier report in --out DIR")


@dataclasses.dataclass(frozen=True)
class CheckArgs:
    baseline: str = setting(
        None, "timed: the git revision (or checkout) to compare with; --counts-only: the "
        f"baseline counts file (default {COUNTS_BASELINE})", metavar="REV|FILE",
    )  # fmt: skip
    counts_only: bool = setting(False, "instructions, ops and peak bytes only: deterministic, "
                                "no timing (the CI form)")  # fmt: skip
    src: str | None = setting(
        None, "the gptref checkout to check (default: the one that holds the current folder)",
        metavar="DIR",
    )  # fmt: skip
    bench: str = _bench()
    rounds: int = setting(ROUNDS, "interleaved round pairs (timed)", metavar="N")
    update: bool = setting(False, "--counts-only: write the counts measured now as the baseline")


def _names(text: str) -> list[str]:
    from gptref.track.workloads import WORKLOADS

    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if not names or unknown:
        raise ValueError(
            f"--bench: unknown {unknown or text!r}; choose from {', '.join(WORKLOADS)}"
        )
    return names


def _here() -> Path:
    """The checkout to measure when none is named: the one that holds the current folder (a
    folder with gptref/__init__.py, the current one or above it), never the one gptref
    happens to be installed from."""
    cwd = Path.cwd()
    for folder in (cwd, *cwd.parents):
        if (folder / "gptref" / "__init__.py").is_file():
            return folder
    raise ValueError(f"{cwd} is in no gptref checkout: run gptref track from inside one, or "
                     "name the trees to measure (--src, --a/--b: a checkout's folder)")  # fmt: skip


def _side(label: str, spec: str, python: str | None, stack):
    """A side from a folder or a git revision (exported for as long as ``stack`` lives);
    prints which tree it is (path and commit)."""
    from gptref.track.abtest import Side, exported, is_git_revision

    folder = Path(spec)
    if folder.is_dir() and (folder / "gptref" / "__init__.py").is_file():
        folder = folder.resolve()
        print(f"{label}: the tree at {folder} ({_state(folder)})", flush=True)
        return Side(label, str(folder), python or sys.executable), str(folder)
    repo = _here()
    commit = is_git_revision(spec, repo)
    if commit is None:
        raise ValueError(f"{spec!r} is neither a gptref checkout's folder nor a git revision of "
                         f"{repo}")  # fmt: skip
    print(f"{label}: {spec} = commit {commit[:10]} of {repo} (its tree, exported)", flush=True)
    src = stack.enter_context(exported(commit, repo))
    return Side(label, str(src), python or sys.executable), commit


def _state(folder: Path) -> str:
    """A checkout's commit as git sees it, for the line that names a measured tree."""
    from gptref.track.abtest import commit_info

    info = commit_info(folder)
    if info["id"] is None:
        return "not a git checkout"
    return f"commit {info['id'][:10]}" + (", with uncommitted changes" if info["dirty"] else "")


def _commit(ref: str) -> dict[str, Any]:
    from gptref.track.abtest import commit_info

    if Path(ref).is_dir():
        return commit_info(ref)
    return {**commit_info(_here()), "id": ref, "dirty": False, "branch": None,
            "time": _git_time(ref)}  # fmt: skip


def _git_time(commit: str) -> str | None:
    import subprocess

    proc = subprocess.run(["git", "-C", str(_here()), "show", "-s", "--format=%cI", commit],
                          capture_output=True, text=True, check=False)  # fmt: skip
    return proc.stdout.strip() or None


def _count_report(side, names: list[str]) -> dict[str, dict[str, Any]]:
    """instructions (when valgrind is here), ops and peak bytes per benchmark."""
    from gptref.track.counts import count_instructions, valgrind_available

    merged: dict[str, dict[str, Any]] = {}
    ops = side.run("ops", names)["results"]
    for name, result in ops.items():
        if "missing" not in result:
            merged[name] = {"ops": result["ops"], "peak_bytes": result["peak_bytes"]}
    why = valgrind_available()
    if why is not None:
        print(f"no instruction counts: {why}", file=sys.stderr)
        return merged
    counted = count_instructions(names, python=side.python, worker=side.worker, src=side.src)
    for name, result in counted["results"].items():
        if "instructions" in result:
            merged.setdefault(name, {})["instructions"] = result["instructions"]
    return merged


def record(args: RecordArgs) -> int:
    import contextlib
    import statistics

    from gptref.track import store
    from gptref.track.stats import round_value

    if args.from_json:
        label = args.label or Path(args.from_json).stem
        folder = args.store or _here() / STORE
        print(f"recorded {store.record_pytest_json(folder, args.from_json, label)}")
        return 0
    if args.rounds < 1 or args.reps < 1:
        raise ValueError(f"--rounds and --reps must be >= 1, got {args.rounds} and {args.reps}")
    names = _names(args.bench)
    with contextlib.ExitStack() as stack:
        side, ref = _side("run", args.src or str(_here()), args.python, stack)
        times: dict[str, list[float]] = {}
        ratios: list[float] = []
        env: dict[str, Any] = {}
        for i in range(args.rounds):
            report = side.run("time", names, "--reps", str(args.reps))
            env = report["env"]
            for name, result in report["results"].items():
                if "samples" in result:
                    times.setdefault(name, []).append(round_value(result["samples"]))
            if report["ratios"].get("book_loop_over_chunk"):
                ratios.append(report["ratios"]["book_loop_over_chunk"])
            print(f"round {i + 1}/{args.rounds}", file=sys.stderr)
        counts = _count_report(side, names) if args.counts else None
    commit = _commit(ref)
    torch = env.get("torch_version")
    label = args.label or f"{(commit.get('id') or 'unknown')[:7]}_torch-{torch}"
    run = store.run_record(
        label, env, commit, times, counts,
        {"book_loop_over_chunk": statistics.median(ratios) if ratios else None},
        machine=_machine(env),
    )  # fmt: skip
    tree = Path(args.src) if args.src and Path(args.src).is_dir() else _here()
    print(f"recorded {store.record(args.store or tree / STORE, run)}")
    return 0


def _machine(env: dict[str, Any]) -> dict[str, Any]:
    import os
    import re

    cpu = None
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = found.group(1).strip() if found else None
    except OSError:
        pass
    return {"cpu_model": cpu, "cpu_count": os.cpu_count(), "cuda_device": env.get("cuda_device")}


def compare(args: CompareArgs) -> int:
    import contextlib

    from gptref.track.abtest import interleave

    names = _names(args.bench)
    _check_rounds(args.rounds)
    thresholds = _thresholds(args.threshold, names)
    if args.json:  # before the rounds, not after: minutes of timing for a refused file
        _claim_json(Path(args.json), "a comparison", _is_comparison, args.overwrite)
    with contextlib.ExitStack() as stack:
        side_a, _ = _side("A", args.a, args.a_python, stack)
        side_b, _ = _side("B", args.b, args.b_python, stack)
        rounds = interleave([side_a, side_b], names, args.rounds, args.reps,
                            progress=lambda i, n: print(f"round {i}/{n}", file=sys.stderr))  # fmt: skip
    verdicts = rounds.verdicts("A", "B", thresholds)
    print(f"B ({args.b}) against A ({args.a}): ratio B/A, 99 % interval, signed-rank p")
    for v in verdicts:
        print("  " + v.describe())
    if args.json:
        _claim_json(Path(args.json), "a comparison", _is_comparison, args.overwrite)
        atomic_write_json(args.json, {
            "format": COMPARISON, "a": args.a, "b": args.b,
            "verdicts": [v.to_dict() for v in verdicts], "samples": rounds.samples,
            "order": rounds.order,
        })  # fmt: skip
    return 1 if any(v.regression for v in verdicts) else 0


COMPARISON = "gptref.track.compare"  # the format of compare's --json file


def _is_comparison(path: Path) -> bool:
    marker = read_marker(path)
    return marker is not None and (
        marker.get("format") == COMPARISON
        or set(marker) == {"a", "b", "verdicts", "samples", "order"}
    )


def _is_baseline(path: Path) -> bool:
    marker = read_marker(path)
    return marker is not None and set(marker) == {"baselines"}


def _claim_json(path: Path, what: str, owns, overwrite: bool) -> None:
    from gptref._owned import claim_file

    claim_file(path, what, owns, overwrite=overwrite)


def _read_baseline(path: Path) -> dict[str, Any]:
    """The counts baseline file -> {key: {benchmark: {metric: count}}}; ValueError naming the
    file and what is wrong (read before anything is measured)."""
    marker = read_marker(path)
    baselines = marker.get("baselines") if marker is not None else None
    ok = isinstance(baselines, dict) and all(
        isinstance(counts, dict) and all(
            isinstance(c, dict) and all(type(v) in (int, float) for v in c.values())
            for c in counts.values()
        )
        for counts in baselines.values()
    )  # fmt: skip
    if not ok:
        raise ValueError(
            f'{path}: not a counts baseline of gptref track (a JSON object {{"baselines": '
            "{key: {benchmark: {metric: count}}}}); restore it, or write one with --update"
        )
    return baselines


def _check_rounds(rounds: int) -> None:
    if rounds < MIN_ROUNDS:
        raise ValueError(f"--rounds must be >= {MIN_ROUNDS}, got {rounds}: with fewer pairs the "
                         "signed-rank test cannot reach p < 0.01")  # fmt: skip


def _thresholds(threshold: float | None, names: list[str]) -> dict[str, float]:
    if threshold is not None and threshold < 0:
        raise ValueError(f"--threshold must be >= 0 (0.05 = +5 %), got {threshold}")
    return {n: THRESHOLDS.get(n, 0.05) if threshold is None else threshold for n in names}


def report(args: ReportArgs) -> int:
    from gptref.track.trend import write_report

    here = None if args.store and args.out else _here()
    paths = write_report(args.store or here / STORE, args.out or here / REPORT, THRESHOLDS,
                         overwrite=args.overwrite)  # fmt: skip
    flags = json.loads(paths["json"].read_text())["flags"]
    print(f"wrote {paths['html']} and {paths['png']}: {len(flags)} flagged regression(s)")
    for f in flags:
        print(f"  {f['benchmark']} ({f['kind']}, {f['line']}): {f['from']} -> {f['to']} "
              f"{f['ratio']:.3f}x")  # fmt: skip
    return 0


def check(args: CheckArgs) -> int:
    if args.src is not None and not (Path(args.src) / "gptref" / "__init__.py").is_file():
        raise ValueError(f"--src {args.src}: not a gptref checkout (no gptref/__init__.py there)")
    if args.counts_only:
        return _check_counts(args)
    if args.baseline is None:
        raise ValueError("check: give --baseline REV (timed) or --counts-only")
    import contextlib

    from gptref.track.abtest import interleave

    names = _names(args.bench)
    _check_rounds(args.rounds)
    with contextlib.ExitStack() as stack:
        base, _ = _side("baseline", args.baseline, None, stack)
        here, _ = _side("current", args.src or str(_here()), None, stack)
        rounds = interleave([base, here], names, args.rounds)
    verdicts = rounds.verdicts("baseline", "current", _thresholds(None, names))
    for v in verdicts:
        print(("FAIL " if v.regression else "ok   ") + v.describe())
    return 1 if any(v.regression for v in verdicts) else 0


def _check_counts(args: CheckArgs) -> int:
    from gptref.track.abtest import Side
    from gptref.track.counts import compare_counts, count_key

    names = _names(args.bench)
    path = Path(args.baseline or (Path(args.src) if args.src else _here()) / COUNTS_BASELINE)
    if not args.update and not path.is_file():
        raise ValueError(f"{path}: no counts baseline; write one with gptref track check "
                         "--counts-only --update")  # fmt: skip
    old = {}
    if args.update and lstat(path) is not None:  # --update replaces only a baseline file
        _claim_json(path, "a counts baseline", _is_baseline, True)
        old = _read_baseline(path)
    baselines = old if args.update else _read_baseline(path)  # before minutes of counting
    tree = Path(args.src).resolve() if args.src else _here()
    print(f"current: the tree at {tree} ({_state(tree)})", flush=True)
    side = Side("current", str(tree))
    counts = _count_report(side, names)
    env = side.run("env", [])["env"]
    key = count_key(env)
    if args.update:
        baselines = {**old, key: counts}
        atomic_write_text(path, json.dumps({"baselines": baselines}, indent=1, sort_keys=True) + "\n")  # fmt: skip
        print(f"wrote the counts of {', '.join(counts)} under {key} to {path}")
        return 0
    if key not in baselines:
        print(f"check: SKIPPED, no baseline counts for {key} in {path} (recorded: "
              f"{', '.join(baselines)}); write one with --update")  # fmt: skip
        return 0
    failed = False
    for metric in ("instructions", "peak_bytes", "ops"):
        old = {n: c[metric] for n, c in baselines[key].items() if metric in c and n in names}
        new = {n: c[metric] for n, c in counts.items() if metric in c}
        limits = {n: THRESHOLDS.get(n, 0.05) / 2 for n in names}  # half the timed bound
        for row in compare_counts(old, new, limits):
            bad = row["regression"] and metric != "ops"
            failed |= bad
            state = "FAIL" if bad else "changed" if row["changed"] else "ok"
            rule = "reported, not gated" if metric == "ops" else \
                f"fails above {1 + row['threshold']:.3f}x"  # fmt: skip
            print(f"{state:8s}{row['name']} {metric}: {row['current']:,.0f} against "
                  f"{row['baseline']:,.0f} ({row['ratio']:.4f}x, {rule})")  # fmt: skip
    return 1 if failed else 0


# ACTION -> (help, its Args, its function)
ACTIONS = {
    "record": ("run the suite and add it to the store", RecordArgs, record),
    "compare": ("two builds in interleaved rounds: ratio, interval, significance; exit 1 when B "
                "regressed beyond the threshold", CompareArgs, compare),
    "report": ("the store's history as index.html and trend.png", ReportArgs, report),
    "check": ("the gate: the checkout that holds the current folder (or --src) against "
              "--baseline; exit 1 on a significant regression (or a count) beyond its threshold",
              CheckArgs, check),
}  # fmt: skip
