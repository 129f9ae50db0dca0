"""Deterministic counts of the tracked suite: instructions under valgrind's callgrind, aten ops
dispatched and peak bytes allocated (``gptref.track.workloads``' ``counts`` and ``ops`` modes).

Timing on a shared machine moves by 10-70 %; the instructions a call executes do not: the
same build, inputs and environment give the same count whatever else the machine does. The
worker runs under ``valgrind --tool=callgrind --instr-atstart=no``, so importing torch runs
uninstrumented (tens of seconds under valgrind, about 4x faster than instrumented),
and each workload's stretch of calls is instrumented, counted and dumped by two client
requests (``CALLGRIND_START_INSTRUMENTATION`` + ``ZERO_STATS``, ``DUMP_STATS_AT`` +
``STOP_INSTRUMENTATION``) from a 10-line C library built once with the system compiler and
valgrind's header, kept in ``~/.cache/gptref``. ``instructions`` is Ir per call.

Count changes are exact: a change beyond ``REPEATABILITY`` (0.1 %, the bound measured run
to run in ``benchmarks/track_proof.py``) is a change. Counts depend on the torch build, the
Python and the instruction set valgrind reports, so a count is compared only with one
recorded under the same ``count_key``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPEATABILITY = 0.001  # relative run-to-run bound of an instruction count on one build

_HELPER_C = r"""
#include <valgrind/callgrind.h>
void gptref_cg_start(void) { CALLGRIND_START_INSTRUMENTATION; CALLGRIND_ZERO_STATS; }
void gptref_cg_stop(const char *name) {
    CALLGRIND_DUMP_STATS_AT(name);
    CALLGRIND_STOP_INSTRUMENTATION;
}
int gptref_cg_running(void) { return RUNNING_ON_VALGRIND; }
"""


def valgrind_available() -> str | None:
    """-> why instruction counts cannot be taken here, or None when they can."""
    if shutil.which("valgrind") is None:
        return "valgrind is not installed (Debian: apt-get install valgrind)"
    if shutil.which("cc") is None:
        return "no C compiler 'cc' to build the client-request helper (apt-get install gcc)"
    if not any(Path(d, "valgrind", "callgrind.h").is_file() for d in _include_dirs()):
        return "valgrind's header valgrind/callgrind.h is missing (Debian: the valgrind package)"
    return None


def _include_dirs() -> list[str]:
    return ["/usr/include", "/usr/local/include"]


def helper_library(cache: Path | None = None) -> Path:
    """The client-request library, built once per source text -> its path."""
    why = valgrind_available()
    if why is not None:
        raise ValueError(f"instruction counts: {why}")
    digest = hashlib.sha256(_HELPER_C.encode()).hexdigest()[:12]
    cache = cache or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gptref"
    lib = cache / f"callgrind-helper-{digest}.so"
    if lib.is_file():
        return lib
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        src, out = Path(tmp, "helper.c"), Path(tmp, lib.name)
        src.write_text(_HELPER_C)
        include = [f"-I{d}" for d in _include_dirs()]
        subprocess.run(["cc", "-shared", "-fPIC", "-O1", *include, "-o", str(out), str(src)],
                       check=True, capture_output=True)  # fmt: skip
        os.replace(out, lib)
    return lib


# what a worker keeps of the caller's environment: the rest (its size shifts the process's
# stack, and with it ~0.1 % of collate's instruction count) is left out, so the counts do
# not depend on the shell, pytest or CI that started the worker
KEPT_ENV = ("PATH", "HOME", "TMPDIR", "XDG_CACHE_HOME", "VIRTUAL_ENV", "PYTHONPATH",
            "LD_LIBRARY_PATH", "VALGRIND_LIB")  # fmt: skip


def worker_env(src: str | Path | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a worker runs in: the caller's PATH, HOME and the like only (KEPT_ENV),
    single-threaded, hash seed fixed, ``src`` (a gptref checkout) first on PYTHONPATH."""
    kept = {k: os.environ[k] for k in KEPT_ENV if k in os.environ}
    env = {**kept, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [env.get("PYTHONPATH")])])
    return {**env, **(extra or {})}


def run_worker(
    python: str,
    worker: str | Path,
    args: Sequence[str],
    env: Mapping[str, str],
    prefix: Sequence[str] = (),
    timeout: float | None = None,
) -> dict[str, Any]:
    """``prefix python worker args`` -> the JSON object on its last stdout line."""
    proc = subprocess.run([*prefix, python, str(worker), *args], capture_output=True, text=True,
                          env=dict(env), check=False, timeout=timeout)  # fmt: skip
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"benchmark worker {worker} {' '.join(args)} failed (exit {proc.returncode}):\n"
            f"{proc.stderr[-3000:]}"
        )
    return json.loads(lines[-1])


def count_instructions(
    benches: Sequence[str],
    *,
    python: str,
    worker: str | Path,
    src: str | Path | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``benches`` once under callgrind -> {"results": {name: {"instructions": Ir per
    call, "calls": n} or {"missing": why}}, "env": the worker's environment}."""
    lib = helper_library()
    with tempfile.TemporaryDirectory(prefix="gptref-callgrind-") as tmp:
        out = Path(tmp, "callgrind.out")
        # no address-space randomisation where setarch can turn it off: pointer hashes and
        # alignments, and so the counts, stay the same run to run
        norandom = [*(["setarch", platform.machine(), "-R"] if shutil.which("setarch") else [])]
        prefix = [*norandom, "valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-instr=no",
                  "--dump-line=no", f"--callgrind-out-file={out}"]  # fmt: skip
        extra = {"GPTREF_CALLGRIND_LIB": str(lib), **(env or {})}
        report = run_worker(python, worker, ["counts", "--bench", ",".join(benches)],
                            worker_env(src, extra), prefix=prefix)  # fmt: skip
        totals = parse_dumps(Path(tmp).glob("callgrind.out*"))
    for name, result in report["results"].items():
        if "calls" in result:
            if name not in totals:
                raise RuntimeError(f"instruction counts: callgrind wrote no dump for {name!r}")
            result["instructions"] = totals[name] / result["calls"]
    return report


_TRIGGER = re.compile(r"^desc: Trigger: Client Request: (\S+)", re.M)
_TOTALS = re.compile(r"^(?:totals|summary): (\d+)", re.M)


def parse_dumps(files) -> dict[str, int]:
    """callgrind dump files -> {the name a DUMP_STATS_AT request gave: instructions (Ir)}."""
    totals: dict[str, int] = {}
    for path in files:
        text = Path(path).read_text(errors="replace")
        trigger, total = _TRIGGER.search(text), _TOTALS.search(text)
        if trigger and total:
            totals[trigger.group(1)] = int(total.group(1))
    return totals


def count_key(env: Mapping[str, Any]) -> str:
    """What a count is comparable under: the suite's version, Python, torch and the CPU."""
    return "/".join(
        str(env.get(k)) for k in ("suite_version", "python_version", "torch_version", "machine")
    )


def compare_counts(
    baseline: Mapping[str, float],
    current: Mapping[str, float],
    thresholds: Mapping[str, float] | None = None,
    default_threshold: float = 0.05,
) -> list[dict[str, Any]]:
    """Counts of the same benchmarks -> one row each: ratio current / baseline, ``changed``
    (beyond ``REPEATABILITY``), ``regression`` (an increase beyond its threshold)."""
    rows = []
    for name in sorted(set(baseline) & set(current)):
        old, new = baseline[name], current[name]
        if old < 0:
            raise ValueError(f"compare_counts: baseline count of {name!r} must be >= 0, got {old}")
        # a count of 0 (tokenize holds no torch memory) stays 0, or grew from nothing
        ratio = new / old if old else 1.0 if new == 0 else math.inf
        limit = (thresholds or {}).get(name, default_threshold)
        rows.append({
            "name": name, "baseline": old, "current": new, "ratio": ratio, "threshold": limit,
            "changed": abs(ratio - 1) > REPEATABILITY, "regression": ratio > 1 + limit,
        })  # fmt: skip
    return rows
