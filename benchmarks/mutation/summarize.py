"""Turn a mutmut work directory (benchmarks/mutation/run_mutmut.sh) into the mutation score:

    python -m benchmarks.mutation.summarize WORKDIR

Reads mutmut's per-file results (``mutants/gptref/*.py.meta``): exit code 1 is killed (a
test failed), a negative code is a timeout (the mutant ran past 15x the clean run: an
endless or exploding loop, detected), 0 survived, none not run (outside the scope). Each
survivor's diff comes from ``mutmut show`` and its judgement from ``JUDGED`` below, so the
score is given as measured and with the survivors judged equivalent left out.

Writes ``benchmarks/results/mutmut.json`` and ``mutmut.md``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# survivor -> (category, argument); categories: "equivalent" (no test can tell it from the
# original: the argument says why), "message" (the wording of an error message past what the
# tests match), "gap" (a behaviour no test pins: a real hole in gptref's tests)
JUDGED: dict[str, tuple[str, str]] = {}


def outcome(code) -> str:
    if code is None:
        return "not run"
    if code == 1:
        return "killed"
    if code == 0:
        return "survived"
    if isinstance(code, int) and code < 0:
        return "timeout"
    return f"exit {code}"


def show(workdir: Path, name: str) -> list[str]:
    done = subprocess.run(["mutmut", "show", name], cwd=workdir, capture_output=True, text=True)
    return [
        line
        for line in done.stdout.splitlines()
        if line[:2] in ("- ", "+ ") and not line.startswith(("---", "+++"))
    ]


def main(argv: list[str]) -> int:
    workdir = Path(argv[0]).resolve()
    rows = []
    for meta in sorted((workdir / "mutants" / "gptref").glob("*.py.meta")):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            module, rest = name.split(".x_", 1)
            rows.append((module, rest.split("__mutmut")[0], name, outcome(code)))
    ran = [r for r in rows if r[3] != "not run"]
    per_function: dict[str, Counter] = defaultdict(Counter)
    for module, fn, _, result in ran:
        per_function[f"{module}.{fn}"][result] += 1
    survivors = []
    for _module, _fn, name, result in ran:
        if result == "survived":
            category, argument = JUDGED.get(name, ("unjudged", ""))
            survivors.append({"mutant": name, "diff": show(workdir, name), "category": category, "argument": argument})  # fmt: skip
    detected = sum(r[3] in ("killed", "timeout") for r in ran)
    equivalent = sum(s["category"] == "equivalent" for s in survivors)
    summary = {
        "mutants_generated": len(rows),
        "mutants_run": len(ran),
        "killed": sum(r[3] == "killed" for r in ran),
        "timeout": sum(r[3] == "timeout" for r in ran),
        "survived": len(survivors),
        "survived_equivalent": equivalent,
        "survived_message": sum(s["category"] == "message" for s in survivors),
        "survived_gap": sum(s["category"] == "gap" for s in survivors),
        "score": round(detected / len(ran), 4) if ran else None,
        "score_without_equivalent": round(detected / (len(ran) - equivalent), 4) if ran else None,
    }
    out = {"summary": summary, "per_function": {k: dict(v) for k, v in per_function.items()}, "survivors": survivors}  # fmt: skip
    (ROOT / "benchmarks" / "results" / "mutmut.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = ["| function | run | killed | timeout | survived |", "|---|---|---|---|---|"]
    for fn, c in sorted(per_function.items()):
        lines.append(f"| `{fn}` | {sum(c.values())} | {c['killed']} | {c['timeout']} | {c['survived']} |")  # fmt: skip
    lines += ["", "| survivor | change | judged | why |", "|---|---|---|---|"]
    for s in survivors:
        change = " / ".join(d.replace("|", "\\|").strip() for d in s["diff"])[:160]
        lines.append(f"| `{s['mutant']}` | `{change}` | {s['category']} | {s['argument']} |")
    (ROOT / "benchmarks" / "results" / "mutmut.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
