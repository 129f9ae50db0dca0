"""The tracked suite's worker with a slowdown injected: the environment switch that proves the
comparison sees a regression of known size. It exists only here, never in the library.

``GPTREF_BENCH_SLOWDOWN=train_step:0.10`` makes every call of that workload spin, after it
returns, for 0.10 x the CPU time the call took, so the workload costs 1.10x its CPU time
(the clock reads add ~1 µs to an 8 ms step; the spin reads the clock every ~2 µs, not in a
tight loop: a few thousand system calls in a row also slowed the next call, and made
"+10 %" a 15 % slowdown). ``train_step:0`` wraps it the same way
with no delay: the A side of a proof runs the same wrapper, so the true ratio is 1 + fraction.
Run by ``benchmarks/track_proof.py`` as the ``worker`` of ``gptref.track.abtest.Side``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if sys.path and Path(sys.path[0]).resolve() == HERE:
    sys.path.pop(0)  # run by path: benchmarks/ must not shadow anything

_spec = importlib.util.spec_from_file_location(
    "gptref_track_workloads", HERE.parent / "gptref" / "bench" / "workloads.py"
)
workloads = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = workloads  # dataclasses look their module up there
_spec.loader.exec_module(workloads)


SPIN = 50  # empty loop turns between two reads of the CPU clock (~2 µs)
SPENT: dict[float, list[float]] = {}  # fraction -> [CPU s in the calls, CPU s with the spins]


def slowed(setup, fraction: float):
    """A workload setup whose call spins for ``fraction`` x its own CPU time after each call."""

    def new_setup():
        call = setup()

        def run():
            t0 = time.process_time()
            out = call()
            t1 = time.process_time()
            end = t1 + (t1 - t0) * fraction
            while time.process_time() < end:  # the clock read is a system call: ~1 per 2 µs
                for _ in range(SPIN):
                    pass
            spent = SPENT.setdefault(fraction, [0.0, 0.0])
            spent[0] += t1 - t0
            spent[1] += time.process_time() - t0
            return out

        return run

    return new_setup


def injected() -> dict:
    """The suite, with the slowdown of ``GPTREF_BENCH_SLOWDOWN`` (``name:fraction``) applied."""
    suite = dict(workloads.WORKLOADS)
    switch = os.environ.get("GPTREF_BENCH_SLOWDOWN")
    if switch:
        name, _, fraction = switch.partition(":")
        base = suite[name]
        suite[name] = workloads.Workload(slowed(base.setup, float(fraction)), base.number,
                                         base.calls, base.doc + f" (+{fraction})")  # fmt: skip
    return suite


if __name__ == "__main__":
    workloads.main(workloads=injected())
