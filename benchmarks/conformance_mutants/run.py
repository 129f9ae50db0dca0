"""The conformance suite's kill rate: run it on every mutant of ``examples/book_style.py``
(``mutants.py``), or of the book's own chapter-5 and appendix-D code as
``examples/book_scripts.py`` restates it (``book_mutants.py``, ``--source book``).

    python -m benchmarks.conformance_mutants.run                 # all mutants, one at a time
    python -m benchmarks.conformance_mutants.run -k loop -j 2    # some, two at a time
    python -m benchmarks.conformance_mutants.run --source book   # the book's code, --fast-fail

Each mutant (``mutants.py``) is the book-style module with one edit, written to a temporary
``.py`` file and run as ``GPTREF_IMPL=that.py python -m pytest --pyargs gptref.conformance -x``
under the ``detect`` hypothesis profile: ``ci``'s derandomized examples (the same every run)
without the shrink phase, so the time measured is the time to detect the bug, not to also
shrink its example (a user's run shrinks: the message shows the smallest example). Reported
per mutant: killed or not, the first failing test, and the wall time to the first failure
(the whole ``pytest -x`` process: interpreter start, collection and the tests before the
failing one, in the suite's own order). Equivalent mutants are expected to survive; the run fails (exit 1) if any other
survives, or if an equivalent one is killed (then the argument for it is wrong).

``--source book`` runs the suite as ``gptref conformance`` does, with ``--fast-fail`` (``ci``'s
examples, each failing test reporting its first counterexample unshrunk), and checks more:
the first failure's message must name the mutant's ``at_fault`` function first (``"train_model:
..."``) and show its ``argument`` where one is given; a mutant whose first failure names
another function counts against the run as a survivor does.

Results: ``benchmarks/results/conformance_mutants.json`` and ``.md``;
``conformance_mutants_book.json`` and ``.md`` for ``--source book``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.conformance_mutants.book_mutants import BOOK_MUTANTS
from benchmarks.conformance_mutants.mutants import MUTANTS, Mutant

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
GOAL_S = 30.0  # the first table's goal (examples/book_style.py, -x from the suite's start)
BOOK_GOAL_S = 60.0  # issue 23: each failing function's first counterexample within ~1 minute
# --source: (the module mutated, its mutants, the results' file stem, the suite's setting, goal)
SOURCES = {
    "style": (ROOT / "examples" / "book_style.py", MUTANTS, "conformance_mutants", "detect", GOAL_S),
    "book": (ROOT / "examples" / "book_scripts.py", BOOK_MUTANTS, "conformance_mutants_book", "fast-fail", BOOK_GOAL_S),
}  # fmt: skip
SOURCE = SOURCES["style"][0]


def mutate(source: str, mutant: Mutant) -> str:
    """source with the nth occurrence of mutant.old replaced by mutant.new."""
    start = -1
    for _ in range(mutant.nth + 1):
        start = source.find(mutant.old, start + 1)
        if start < 0:
            raise ValueError(
                f"mutant {mutant.name}: occurrence {mutant.nth} of {mutant.old!r} is not in "
                f"{SOURCE.name}; update the mutant to the current source"
            )
    return source[:start] + mutant.new + source[start + len(mutant.old) :]


def run_one(mutant: Mutant, source: str, workdir: Path, setting: str = "detect") -> dict:
    path = workdir / f"mutant_{mutant.name}.py"
    path.write_text(mutate(source, mutant))
    env = {**os.environ, "GPTREF_IMPL": str(path), "CI": "true", "GPTREF_TEST_THREADS": "1",
           "COLUMNS": "1000"}  # fmt: skip
    command = [sys.executable, "-m", "pytest", "--pyargs", "gptref.conformance", "-x", "-q",
               "-p", "no:cacheprovider", "--tb=short", "-rf"]  # fmt: skip
    if setting == "fast-fail":
        command.append("--fast-fail")
    else:
        env["HYPOTHESIS_PROFILE"] = setting
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=900
    )
    seconds = time.perf_counter() - start
    failed = re.search(r"^FAILED (\S+?)(?: - (.*))?$", done.stdout, re.M)
    killed = done.returncode == 1 and failed is not None
    if done.returncode not in (0, 1):
        raise RuntimeError(f"mutant {mutant.name}: pytest exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")  # fmt: skip
    message = (failed.group(2) or "") if failed else ""
    first_line = re.sub(r"^(AssertionError|Failed): ", "", message)
    block = first_failure(done.stdout)
    names = None
    if mutant.at_fault is not None and killed:
        names = first_line.startswith(f"{mutant.at_fault}:") and (
            mutant.argument is None or mutant.argument in block
        )
    return {
        "name": mutant.name,
        "bug": mutant.bug,
        "equivalent": mutant.equivalent,
        "killed": killed,
        "first_failure": failed.group(1).split("gptref/conformance/")[-1] if failed else None,
        "message": first_line,
        "at_fault": mutant.at_fault,
        "argument": mutant.argument,
        "names_fault": names,
        "seconds": round(seconds, 2),
    }


def first_failure(out: str) -> str:
    """The report of the first failing test (its section under FAILURES)."""
    section = re.search(
        r"^=+ FAILURES =+\n_+ .* _+\n(.*?)(?=^_{3,} .* _{3,}$|^=+ )", out, re.M | re.S
    )
    return section.group(1) if section else ""


def table(rows: list[dict]) -> str:
    naming = any(r.get("at_fault") for r in rows)
    head = "| mutant | the bug | killed | first failing test | time to failure (s) |"
    rule = "|---|---|---|---|---|"
    if naming:
        head = "| mutant | the bug | killed | first failing test | its first line | names the function at fault | time to failure (s) |"  # fmt: skip
        rule = "|---|---|---|---|---|---|---|"
    lines = [head, rule]
    for r in rows:
        verdict = "yes" if r["killed"] else ("no (equivalent)" if r["equivalent"] else "**no**")
        test = f"`{r['first_failure']}`" if r["first_failure"] else "-"
        if naming:
            said = r["message"] if len(r["message"]) <= 140 else r["message"][:140] + " ..."
            said = said.replace("|", "\\|")
            fault = f"{r['at_fault']}" + (f" ({r['argument']})" if r["argument"] else "")
            named = "yes" if r["names_fault"] else "**no**"
            lines.append(f"| `{r['name']}` | {r['bug']} | {verdict} | {test} | {said} | {named}: {fault} | {r['seconds']:.1f} |")  # fmt: skip
        else:
            lines.append(
                f"| `{r['name']}` | {r['bug']} | {verdict} | {test} | {r['seconds']:.1f} |"
            )
    return "\n".join(lines)


def summary(rows: list[dict], goal: float = GOAL_S) -> dict:
    real = [r for r in rows if not r["equivalent"]]
    killed = [r for r in real if r["killed"]]
    times = sorted(r["seconds"] for r in killed)
    return {
        "mutants": len(rows),
        "equivalent": len(rows) - len(real),
        "non_equivalent": len(real),
        "killed": len(killed),
        "kill_rate": round(len(killed) / len(real), 4) if real else None,
        "max_seconds_to_failure": times[-1] if times else None,
        "median_seconds_to_failure": times[len(times) // 2] if times else None,
        "over_goal": [r["name"] for r in killed if r["seconds"] > goal],
        "survivors": [r["name"] for r in real if not r["killed"]],
        "killed_equivalents": [r["name"] for r in rows if r["equivalent"] and r["killed"]],
        "misnamed": [r["name"] for r in killed if r.get("names_fault") is False],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", default="", help="run only the mutants whose name contains this")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="mutants run at once")
    parser.add_argument("--source", choices=sorted(SOURCES), default="style",
                        help="style: examples/book_style.py; book: examples/book_scripts.py")  # fmt: skip
    parser.add_argument("--no-write", action="store_true", help="print, do not write results")
    args = parser.parse_args(argv)
    path, mutants, stem, setting, goal = SOURCES[args.source]
    source = path.read_text()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    chosen = [m for m in mutants if args.k in m.name]
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda m: run_one(m, source, Path(tmp), setting), chosen))
    for r in rows:
        state = (
            "killed" if r["killed"] else "survived" + (" (equivalent)" if r["equivalent"] else "")
        )
        named = {True: "names it", False: "MISNAMED", None: ""}[r.get("names_fault")]
        print(f"{r['name']:<34} {state:<22} {r['seconds']:6.1f} s  {named:<9} {r['first_failure'] or ''}")  # fmt: skip
    result = summary(rows, goal)
    print(json.dumps(result, indent=2))
    if not args.no_write and not args.k:
        RESULTS.mkdir(exist_ok=True)
        meta = {"jobs": args.jobs, "cpus": os.cpu_count(), "cpu": cpu_name(), "setting": setting,
                "goal_seconds": goal, "load_average_at_start": load,
                "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
                "wall_seconds": round(time.time() - started, 1), "source": str(path.relative_to(ROOT))}  # fmt: skip
        (RESULTS / f"{stem}.json").write_text(json.dumps({"summary": result, "run": meta, "mutants": rows}, indent=2) + "\n")  # fmt: skip
        (RESULTS / f"{stem}.md").write_text(preamble(meta, result) + table(rows) + "\n")
    bad = result["survivors"] or result["killed_equivalents"] or result["over_goal"]
    return 1 if bad or result["misnamed"] else 0


def preamble(meta: dict, result: dict) -> str:
    """The lines above a table: where and how it was measured."""
    load = meta.get("load_average_at_start")
    busy = f", load average {load[0]:.1f} at the start" if load else ""
    return (
        f"`{meta.get('source', 'examples/book_style.py')}`, {result['mutants']} mutants: "
        f"{result['killed']} of {result['non_equivalent']} non-equivalent killed, median "
        f"{result['median_seconds_to_failure']} s and at most {result['max_seconds_to_failure']} s "
        f"to the first failure (`pytest -x`, setting `{meta['setting']}`, one mutant at a time). "
        f"CPU: {meta.get('cpu', 'unknown')}, {meta['cpus']} cores{busy} (shared with other "
        "work: the times are upper bounds).\n\n"
    )


def cpu_name() -> str:
    """The CPU's model name and torch's vector capability (the figures depend on both)."""
    name = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(Exception):
        import torch

        name += f", torch {torch.backends.cpu.get_cpu_capability()}"
    return name


if __name__ == "__main__":
    sys.exit(main())
