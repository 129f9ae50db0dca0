"""Interleaved A/B rounds: two builds (commits, torch versions, flags) timed in turn.

A ``Side`` is what runs: a Python executable (its torch), a gptref checkout (put first on
``PYTHONPATH``; a git revision is exported into a temporary folder with ``git archive``) and
extra environment. Each side keeps one worker process (``workloads.py serve``: the
workloads set up once, a repetition on request), both pinned to one core; within a round
the two take turns repetition by repetition (ABBA..., which side starts seeded at random),
so the two samples of a pair come from the same fraction of a second of the machine's
load, and the waiting one sleeps on its input. A round's value is a side's fastest
repetition of it (CPU time: see ``workloads``).

Two identical processes of one build can differ by 5-15 % in CPU time for as long as they
live (where their tensors landed: cache sets, huge pages or not), and a comparison of one
process per side would take that for a difference of the builds. So every round each
worker sets its workloads up anew (new tensors, after a buffer of a seeded random size:
elsewhere in memory; milliseconds), and every ``per_process`` rounds both are replaced by
fresh processes: that variation then shows as round-to-round noise the test sees, instead
of as a bias between the two sides, at a fraction of the cost of a new process (an import
of torch, seconds) per round.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptref.track.counts import run_worker, worker_env
from gptref.track.stats import THRESHOLD, Verdict, compare_samples, round_value

WORKER = Path(__file__).with_name("workloads.py")


@dataclass(frozen=True)
class Side:
    label: str
    src: str | None = None  # a gptref checkout; None: the gptref this Python imports
    python: str = sys.executable
    env: Mapping[str, str] = field(default_factory=dict)
    worker: str = str(WORKER)  # the suite's script (benchmarks/ may wrap it)

    def run(self, mode: str, benches: Sequence[str], *args: str) -> dict[str, Any]:
        """One worker process in ``mode`` -> its JSON report; checks it imported ``src``."""
        report = run_worker(self.python, self.worker, [mode, "--bench", ",".join(benches), *args],
                            worker_env(self.src, self.env))  # fmt: skip
        if self.src is not None:
            got, want = Path(report["env"]["gptref_path"]), Path(self.src).resolve()
            if got != want:
                raise RuntimeError(f"side {self.label!r} imported gptref from {got}, not {want}"
                                   " (is another gptref first on sys.path?)")  # fmt: skip
        return report


@dataclass
class Rounds:
    """What ``interleave`` measured: per side, per benchmark, one value per round."""

    samples: dict[str, dict[str, list[float]]]  # side label -> bench -> round values
    reports: dict[str, list[dict[str, Any]]]  # side label -> each round's worker report
    order: list[tuple[str, ...]]  # the order the sides ran in, each round

    def verdicts(self, a: str, b: str, thresholds: Mapping[str, float] | None = None,
                 **kwargs: Any) -> list[Verdict]:  # fmt: skip
        """B against A, one Verdict per benchmark both sides have."""
        sa, sb = self.samples[a], self.samples[b]
        return [
            compare_samples(name, sa[name], sb[name],
                            threshold=(thresholds or {}).get(name, THRESHOLD), **kwargs)
            for name in sa if name in sb and len(sa[name]) == len(sb[name]) >= 2
        ]  # fmt: skip


class Worker:
    """A side's ``serve`` process: ``round(reps)`` -> that round's results."""

    def __init__(self, side: Side, benches: Sequence[str], cpu: int | None = None) -> None:
        self.side = side
        pin = {} if cpu is None else {"GPTREF_BENCH_CPU": str(cpu)}
        self.proc = subprocess.Popen(
            [side.python, side.worker, "serve", "--bench", ",".join(benches)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=worker_env(side.src, {**side.env, **pin}),
        )  # fmt: skip
        self.env = self._read()["env"]
        if side.src is not None and Path(self.env["gptref_path"]) != Path(side.src).resolve():
            self.close()
            raise RuntimeError(f"side {side.label!r} imported gptref from "
                               f"{self.env['gptref_path']}, not {side.src}")  # fmt: skip

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"side {self.side.label!r}: the worker ended:\n{err[-3000:]}")
        return json.loads(line)

    def setup(self, seed: int) -> None:
        """The workloads set up anew, after a buffer of a size ``seed`` chooses."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"setup {seed}\n")
        self.proc.stdin.flush()
        self._read()

    def rep(self, name: str, warm: bool) -> dict[str, Any]:
        """One timed repetition of benchmark ``name`` (after an untimed one when ``warm``)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"time 1 {name}{'' if warm else ' cold'}\n")
        self.proc.stdin.flush()
        return self._read()["results"][name]

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()


def interleave(
    sides: Sequence[Side],
    benches: Sequence[str],
    rounds: int = 20,
    reps: int = 5,
    seed: int = 0,
    per_process: int = 5,
    progress: Callable[[int, int], None] | None = None,
    cpu: int | None = -1,
) -> Rounds:
    """``rounds`` rounds of two or more sides (A and B; or more), in fresh worker processes
    every ``per_process`` rounds, all pinned to core ``cpu`` (-1: the last this process may
    use; None: unpinned). In each round the sides take turns repetition by repetition, in a
    seeded random order and its reverse (ABC CBA ABC ...); any two of them then compare as a
    pair (``Rounds.verdicts``). On a shared machine one core may be busier than the other
    (its hyperthread sibling or the host's other guests), and a process stays on its core for
    a while: unpinned, A and B could sit on different cores for whole stretches and differ by
    2x in CPU time for that reason alone."""
    labels = [s.label for s in sides]
    if len(set(labels)) != len(labels) or len(sides) < 2:
        raise ValueError(f"interleave: give >= 2 sides with different labels, got {labels}")
    if rounds < 2:
        raise ValueError(f"interleave: rounds must be >= 2 for a comparison, got {rounds}")
    if per_process < 1 or reps < 1:
        raise ValueError(
            f"interleave: per_process and reps must be >= 1, got {per_process}, {reps}"
        )
    if cpu == -1:
        cpu = max(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    rng = random.Random(seed)
    samples: dict[str, dict[str, list[float]]] = {label: {} for label in labels}
    reports: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    order = []
    workers: dict[str, Worker] = {}
    try:
        for i in range(rounds):
            if i % per_process == 0:
                for w in workers.values():
                    w.close()
                workers = {}  # started in this round's order, so none always starts first
            first = list(sides)
            rng.shuffle(first)
            order.append(tuple(s.label for s in first))
            for side in first:
                if side.label not in workers:
                    workers[side.label] = Worker(side, benches, cpu)
                else:  # set up anew: the next round's tensors elsewhere in memory
                    workers[side.label].setup(rng.randrange(1 << 30))
            got: dict[str, dict[str, Any]] = {label: {} for label in labels}
            for name in benches:
                for r in range(reps):  # the sides alternate, ABBA..., a repetition at a time
                    for side in first if r % 2 == 0 else first[::-1]:
                        result = workers[side.label].rep(name, warm=r == 0)
                        mine = got[side.label].setdefault(name, {"samples": [], "wall": []})
                        if "missing" in result:
                            got[side.label][name] = result
                            continue
                        mine["samples"] += result["samples"]
                        mine["wall"] += result["wall"]
            for side in first:
                env = workers[side.label].env
                reports[side.label].append({"results": got[side.label], "env": env})
                for name, result in got[side.label].items():
                    if result.get("samples"):
                        values = samples[side.label].setdefault(name, [])
                        values.append(round_value(result["samples"]))
            if progress is not None:
                progress(i + 1, rounds)
    finally:
        for w in workers.values():
            w.close()
    return Rounds(samples, reports, order)


def is_git_revision(spec: str, repo: str | Path = ".") -> str | None:
    """-> the full commit id ``spec`` names in ``repo``, or None when it names none."""
    proc = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "-q", f"{spec}^{{commit}}"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    return proc.stdout.strip() if proc.returncode == 0 else None


@contextlib.contextmanager
def exported(revision: str, repo: str | Path = ".") -> Iterator[Path]:
    """The tree of ``revision`` in a temporary folder (``git archive``; no worktree is
    registered, nothing is left behind)."""
    commit = is_git_revision(revision, repo)
    if commit is None:
        raise ValueError(f"{revision!r} is not a commit of {Path(repo).resolve()}; give a "
                         "branch, tag or commit id (git log), or a checkout's directory")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix=f"gptref-{commit[:10]}-") as tmp:
        archive = Path(tmp, "tree.tar")
        with archive.open("wb") as f:
            subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", commit],
                           stdout=f, check=True)  # fmt: skip
        with tarfile.open(archive) as tar:
            tar.extractall(Path(tmp, "src"), filter="data") if hasattr(tarfile, "data_filter") \
                else tar.extractall(Path(tmp, "src"))  # fmt: skip
        archive.unlink()
        yield Path(tmp, "src")


def commit_info(src: str | Path | None, repo: str | Path = ".") -> dict[str, Any]:
    """-> {"id", "dirty", "branch", "time"} of a checkout (git's view; ``src`` None: ``repo``)."""
    where = str(src or repo)

    def git(*args: str) -> str:
        proc = subprocess.run(["git", "-C", where, *args], capture_output=True, text=True,
                              check=False)  # fmt: skip
        return proc.stdout.strip() if proc.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {"id": None, "dirty": None, "branch": None, "time": None}
    return {
        "id": commit,
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
        "time": git("show", "-s", "--format=%cI", "HEAD"),
    }


def tree_digest(src: str | Path) -> str:
    """A short digest of a checkout's gptref/*.py: which code a sample measured."""
    h = hashlib.sha256()
    for path in sorted(Path(src, "gptref").rglob("*.py")):
        h.update(path.relative_to(src).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]
