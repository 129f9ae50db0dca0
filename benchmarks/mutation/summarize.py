"""Turn a mutmut work directory (benchmarks/mutation/run_mutmut.sh) into the mutation score:

    python -m benchmarks.mutation.summarize WORKDIR

Reads mutmut's per-file results (``mutants/gptref/*.py.meta``): exit code 1 is killed (a
test failed), a negative code is a timeout (the mutant ran past 15x the clean run: an
endless or exploding loop, detected), 0 survived, none not run (outside the scope). Each
survivor's diff comes from ``mutmut show`` and its judgement from ``JUDGED`` below, so the
score is given as measured and with the survivors judged equivalent left out.

Writes ``benchmarks/results/mutmut.json`` and ``mutmut.md``.

    python -m benchmarks.mutation.summarize WORKDIR --previous OLD_WORKDIR

combines a rerun with an earlier run: a mutant WORKDIR ran has WORKDIR's outcome; one only
OLD_WORKDIR ran keeps its old outcome if its function's source is the same in both copies
(tests were only added in between, so a mutant killed then is killed now), and is dropped if
the function changed (its mutant numbers no longer name the same edits).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


# survivor -> (category, argument); categories: "equivalent" (no test can tell it from the
# original: the argument says why), "message" (the wording of an error message past what the
# tests match), "scope" (pinned by tests outside the selection), "cpu-only" (only a GPU run
# can tell), "gap" (a behaviour no test pins: a real hole in gptref's tests)
def _names(module: str, fn: str, numbers: str) -> list[str]:
    return [f"gptref.{module}.x_{fn}__mutmut_{n}" for n in numbers.split()]


MESSAGE = "the text of an error message (its function-name prefix, a field name, the hint), past what the tests match; the error itself is still raised"  # fmt: skip
SCOPE = "a multi-process (world_size > 1) or autocast path: pinned by tests/fast/test_distributed.py (torchrun) and tests/fast/test_fast.py, outside the selected tests"  # fmt: skip
JUDGED: dict[str, tuple[str, str]] = {
    **dict.fromkeys(
        _names("data", "num_chunks", "1 7 11")
        + _names("data", "chunk", "1 5 6 7 8 15 19 20")
        + _names("data", "batch_order", "7 19 20 21 22 27 28 29 30")
        + _names("data", "collate", "4 7 11 12")
        + _names("data", "batches", "4 5 6")
        + _names("loss", "calc_loss_loader", "13 17 25 29 33")
        + _names("schedule", "lr_at", "4 18 19 22 23 26 27 33 34")
        + _names("schedule", "appendix_d_lr", "1 15 16 20 22 23 24 25 26 29 30 31 32")
        + _names("schedule", "_check", "1 14 25 36")
        + _names("step", "train_step", "13 29 37 45"),
        ("message", MESSAGE),
    ),  # chunk 5 and 6 drop a check that num_chunks (called by windows) repeats
    **dict.fromkeys(_names("step", "train_step", "81 97 101 181 185"), ("scope", SCOPE)),
    "gptref.schedule.x_lr_at__mutmut_54": (
        "equivalent",
        "step == last then takes the cosine branch: progress = 1.0 exactly, cos(pi) = -1.0 exactly, so min_lr + (peak_lr - min_lr) * 0.5 * 0.0 = min_lr, the same value (and warmup_steps == last returns peak_lr before)",
    ),  # fmt: skip
    **dict.fromkeys(
        _names("data", "collate", "37 40 44 47"),
        (
            "equivalent",
            "torch.full with an int fill value and no dtype is int64: the same tensor as dtype=torch.int64",
        ),
    ),  # fmt: skip
    **dict.fromkeys(
        _names("loss", "_flat_logits", "5 6 11 12"),
        (
            "equivalent",
            "non_blocking only lets a pinned-memory copy overlap GPU work; the values are the same (and on CPU it is a no-op)",
        ),
    ),  # fmt: skip
    # the rerun's numbering (calc_loss_batch moved the device copy into _flat_logits)
    **dict.fromkeys(
        _names("loss", "_flat_logits", "2 4 8 10"),
        (
            "cpu-only",
            "the batch's .to(device) made .to(None) / .to(non_blocking=True): a CPU tensor stays where it is, so only a GPU run tells (the tests are CPU-only; a meta-device model cannot run gptref's id check)",
        ),
    ),  # fmt: skip
    "gptref.loss.x_calc_loss_loader__mutmut_117": (
        "equivalent",
        'float("NAN") is float("nan"): float() ignores the case',
    ),  # fmt: skip
    "gptref.loss.x_calc_loss_batch__mutmut_7": (
        "cpu-only",
        "_flat_logits(..., device=None): tensor.to(None) leaves the batch where it is, so only a GPU run tells (the tests are CPU-only)",
    ),  # fmt: skip
    "gptref.loss.x_calc_loss_loader__mutmut_81": (
        "cpu-only",
        "calc_loss_batch(..., device=None): tensor.to(None) leaves the batch where it is, so only a GPU run tells (the tests are CPU-only)",
    ),  # fmt: skip
    "gptref.data.x_num_batches__mutmut_1": (
        "equivalent",
        "world_size's default: both callers (batch_order, BatchOrderSampler.__len__) always pass world_size",
    ),  # fmt: skip
    "gptref.step.x_train_step__mutmut_137": (
        "equivalent",
        "single process: a micro-batch with no counted target is then run instead of skipped; its loss is a sum of nothing divided by the count, 0, so its gradient is 0 (with dropout it would draw the RNG: the tests' models have drop_rate 0 there)",
    ),  # fmt: skip
    "gptref.data.x_split__mutmut_1": (
        "gap",
        "split's default train_ratio=0.9 is not pinned: every test passes a ratio",
    ),  # fmt: skip
    **dict.fromkeys(
        _names("data", "batch_order", "1 2 3 4"),
        (
            "gap",
            "batch_order's keyword defaults (shuffle=False, drop_last=False, seed=0, epoch=0) are not pinned: every test passes them",
        ),
    ),  # fmt: skip
    "gptref.data.x_epoch_order__mutmut_4": (
        "gap",
        "the README's generator seed (seed * 0x9E3779B1 + epoch) mod 2**32 is not pinned: the tests check only that orders differ per seed and epoch",
    ),  # fmt: skip
    "gptref.data.x_windows__mutmut_19": (
        "equivalent",
        "Tensor.as_strided(size, stride) without storage_offset keeps the input's own storage offset, the same as passing ids.storage_offset() (checked: the conformance suite's test_chunk_of_a_view_windows_the_view, added for it, passes on the mutant)",
    ),  # fmt: skip
    "gptref.data.x_collate__mutmut_31": (
        "gap",
        "equal-length pairs then take the padding path, which is int64 always; the tests use int64 samples only, so 'stacks exactly like default_collate' (keeping another dtype) is unpinned",
    ),  # fmt: skip
    "gptref.data.x_collate__mutmut_10": (
        "gap",
        "collate(max_length=0) is no longer rejected: no test passes a non-positive max_length",
    ),  # fmt: skip
    "gptref.data.x_num_chunks__mutmut_5": (
        "gap",
        "num_chunks(n, max_length=0, s) is no longer rejected: no test calls num_chunks with max_length < 1",
    ),  # fmt: skip
    **dict.fromkeys(
        _names("schedule", "appendix_d_lr", "12 13"),
        (
            "gap",
            "appendix_d_lr no longer validates peak_lr (12) / initial_lr (13): its argument-error test has no bad peak_lr or initial_lr",
        ),
    ),  # fmt: skip
    "gptref.loss.x_calc_loss_loader__mutmut_113": (
        "gap",
        'weighting="token" over batches whose targets are all ignored then divides by zero instead of giving nan: untested',
    ),  # fmt: skip
    "gptref.step.x_train_step__mutmut_145": (
        "gap",
        "a micro-batch with no counted target then ends the accumulation loop: the conformance strategy ignored targets only from the end, so such a micro-batch was always last. Closed: ignored targets now fall anywhere, and the mutant is killed (rerun)",
    ),  # fmt: skip
}


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


def exit_codes(workdir: Path) -> dict[str, int | None]:
    """mutant name -> mutmut's exit code (None: not run), over every mutated file."""
    codes: dict[str, int | None] = {}
    for meta in sorted((workdir / "mutants" / "gptref").glob("*.py.meta")):
        codes.update(json.loads(meta.read_text())["exit_code_by_key"])
    return codes


def function_sources(workdir: Path, module: str) -> dict[str, str]:
    """'gptref.data' -> {function name: its normalised source} in WORKDIR's (unmutated) copy."""
    path = workdir.joinpath(*module.split(".")).with_suffix(".py")
    tree = ast.parse(path.read_text())
    return {n.name: ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}


def combined(workdir: Path, previous: Path | None) -> dict[str, int | None]:
    codes = exit_codes(workdir)
    if previous is None:
        return codes
    sources: dict[tuple[Path, str], dict[str, str]] = {}
    for name, code in exit_codes(previous).items():
        if code is None or codes.get(name) is not None:
            continue
        module, rest = name.split(".x_", 1)
        fn = rest.split("__mutmut")[0]
        for wd in (workdir, previous):
            sources.setdefault((wd, module), function_sources(wd, module))
        if sources[(workdir, module)].get(fn) == sources[(previous, module)].get(fn):
            codes[name] = code
    return codes


def main(argv: list[str]) -> int:
    workdir = Path(argv[0]).resolve()
    previous = Path(argv[argv.index("--previous") + 1]).resolve() if "--previous" in argv else None
    rows = []
    for name, code in combined(workdir, previous).items():
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
        "survived_scope": sum(s["category"] == "scope" for s in survivors),
        "survived_cpu_only": sum(s["category"] == "cpu-only" for s in survivors),
        "unjudged": [s["mutant"] for s in survivors if s["category"] == "unjudged"],
        "score": round(detected / len(ran), 4) if ran else None,
        "score_without_equivalent": round(detected / (len(ran) - equivalent), 4) if ran else None,
        # the score of behaviour: error-message wording and the out-of-scope paths left out too
        "score_behaviour": round(
            detected
            / (
                len(ran)
                - equivalent
                - sum(s["category"] in ("message", "scope") for s in survivors)
            ),
            4,
        )
        if ran
        else None,  # fmt: skip
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
