"""The tracked suite: the workloads ``gptref track`` times and counts, and the worker that runs
them in a process of its own.

Run as a script by path, under the Python and with the gptref checkout being measured first on
``PYTHONPATH``: ``python workloads.py MODE --bench chunk,collate``. It imports only the
standard library, torch and gptref's stable public API (``chunk``, ``collate``, ``tokenize``,
``GPTModel``, ``calc_loss_batch``, ``train_step``), which every commit since the model landed
has, so the one script of today measures old commits and other torch versions alike. A
workload whose names a checkout lacks is reported missing, not failed.

Modes (one JSON object on the last line of stdout):

- ``time``: per benchmark, ``reps`` repetitions of ``number`` calls, each a sample of CPU
  seconds per call (``samples``: the process's CPU time, which the time the scheduler gives
  to other jobs on a shared machine does not inflate; ``wall``: the wall clock beside it),
  garbage collection off while timed, after one untimed repetition; plus the ratios
  measured in the same process (``book_loop_over_chunk``);
- ``ops``: per benchmark, the aten ops one call dispatches (``TorchDispatchMode``) and the
  peak bytes the torch CPU allocator holds during one call over what it held before (the
  profiler's memory events): both deterministic;
- ``counts``: under callgrind, one instrumented stretch of ``calls`` calls per benchmark,
  turned on and dumped through the client-request library named by ``GPTREF_CALLGRIND_LIB``
  (``gptref.track.counts`` builds it and reads the dumps);
- ``serve``: ``time`` on request: the workloads are set up, then each line
  ``time REPS [NAME [cold]]`` on stdin answers one JSON line, ``setup N`` sets them up
  anew (after a buffer of 64 x (N mod 4099 + 1) bytes, so that their tensors land
  elsewhere), until ``quit`` or end of input; ``gptref.track.abtest`` keeps one such
  process per side, alternates the two repetition by repetition, sets the workloads up
  anew every round and starts fresh processes every few rounds;
- ``env``: what ran: Python, torch, threads, the gptref that was imported.

Everything runs single-threaded (``torch.set_num_threads(1)``; the caller sets
``OMP_NUM_THREADS=1``), on fixed inputs (seeded generators, a synthetic text), so a sample
depends on the build and the machine's load only. ``SUITE_VERSION`` changes whenever a
workload does: counts recorded under another version are not comparable.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # run by path: this folder's modules must not shadow anything

SUITE_VERSION = 1
CONTEXT = 64  # tokens per row of the model workloads (GPT_CONFIG_TINY's context)
BATCH = 2  # rows per model batch
VOCAB = 2048  # the tiny model's vocabulary: its out_head stays small beside the blocks


@dataclass(frozen=True)
class Workload:
    setup: Callable[[], Callable[[], object]]  # -> the zero-argument call to measure
    number: int  # calls per timed repetition (~5-50 ms on one core)
    calls: int  # calls per instrumented stretch under callgrind
    doc: str


def _ids(n: int, vocab: int = 50257):
    import torch

    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(0))


def _setup_chunk():
    from gptref import chunk

    ids = _ids(1_000_000)
    return lambda: chunk(ids, 256, 128)


def _setup_collate():
    from gptref import collate

    ids = _ids(4096)
    # 16 pairs of lengths 193..256: the padding path, the one a last short batch takes
    samples = [(ids[i : i + 193 + 4 * i], ids[i + 1 : i + 194 + 4 * i]) for i in range(16)]
    return lambda: collate(samples)


WORDS = (  # noqa: SIM905
    "the picture was a sketch of Gisburn , painted when he was young ; nobody knew why it "
    'had been hung there . I said : " It\'s the last thing he did " -- and she laughed , '
    "1908 , 42 times over , don't won't can't they're"
).split(" ")


def synthetic_text(n_words: int = 4000) -> str:
    """A fixed English-like text (the same on every Python: no stdlib corpus that changes)."""
    return " ".join(WORDS[(i * 7919 + i // 7) % len(WORDS)] for i in range(n_words))


def _setup_tokenize():
    from gptref import tokenize

    text = synthetic_text()
    tokenize(text)  # the encoder is built on first use: not part of the workload
    return lambda: tokenize(text)


def _model(train: bool):
    import torch

    from gptref import GPT_CONFIG_TINY, GPTModel

    torch.manual_seed(123)
    cfg = {**GPT_CONFIG_TINY, "vocab_size": VOCAB, "context_length": CONTEXT}
    model = GPTModel(cfg)
    model.train() if train else model.eval()
    ids = _ids(BATCH * (CONTEXT + 1), VOCAB).view(BATCH, CONTEXT + 1)
    return model, ids[:, :-1].contiguous(), ids[:, 1:].contiguous()


def _setup_forward():
    import torch

    model, x, _ = _model(train=False)

    def forward():
        with torch.no_grad():
            return model(x)

    return forward


def _setup_loss():
    import torch

    from gptref import calc_loss_batch

    model, x, y = _model(train=False)

    def loss():
        with torch.no_grad():
            return calc_loss_batch(x, y, model, "cpu")

    return loss


def _setup_train_step():
    import torch

    from gptref import train_step

    model, x, y = _model(train=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)
    step = lambda: train_step(model, optimizer, x, y, "cpu")  # noqa: E731
    step()  # AdamW's state is made in the first step: steady state from here on
    return step


WORKLOADS: dict[str, Workload] = {
    "chunk": Workload(_setup_chunk, 50, 20, "chunk(1M ids, 256, stride 128): two views"),
    "collate": Workload(_setup_collate, 100, 20, "collate(16 pairs of 193-256 ids): padded"),
    "tokenize": Workload(_setup_tokenize, 5, 5, "tokenize(a 4,000-word text): GPT-2 BPE"),
    "forward": Workload(_setup_forward, 10, 10, "tiny GPTModel forward, (2, 64), no grad"),
    "loss": Workload(_setup_loss, 10, 10, "calc_loss_batch, tiny model, (2, 64), no grad"),
    "train_step": Workload(_setup_train_step, 3, 5, "train_step, tiny model, AdamW, (2, 64)"),
}


def book_loop_over_chunk(n_tokens: int = 20_000, max_length: int = 256, stride: int = 128):
    """The book's per-window copy loop over ``chunk`` on the same ids, timed in turn: a ratio
    that the machine's speed cancels out of (None where the checkout has no ``chunk``)."""
    import torch

    try:
        from gptref import chunk
    except ImportError:
        return None
    ids = _ids(n_tokens)
    as_list = ids.tolist()

    def book():
        inputs, targets = [], []
        for i in range(0, len(as_list) - max_length, stride):
            inputs.append(torch.tensor(as_list[i : i + max_length]))
            targets.append(torch.tensor(as_list[i + 1 : i + max_length + 1]))

    book_s = min(_timed(book, 3) for _ in range(3))
    chunk_s = min(_timed(lambda: chunk(ids, max_length, stride), 100) for _ in range(3))
    return book_s / chunk_s


def _timed(fn: Callable[[], object], number: int, clock=time.process_time) -> float:
    """-> seconds per call of ``number`` calls in a row, by ``clock``."""
    t0 = clock()
    for _ in range(number):
        fn()
    return (clock() - t0) / number


def _timed_both(fn: Callable[[], object], number: int) -> tuple[float, float]:
    """-> (CPU seconds, wall seconds) per call of ``number`` calls in a row."""
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(number):
        fn()
    return (time.process_time() - c0) / number, (time.perf_counter() - w0) / number


def prepare(names: list[str], workloads: dict[str, Workload]) -> dict[str, object]:
    """names -> {name: its zero-argument call, or the error text when this checkout lacks it}."""
    calls: dict[str, object] = {}
    for name in names:
        try:
            calls[name] = workloads[name].setup()
        except ImportError as e:  # an old checkout without this name
            calls[name] = f"missing: {e}"
    return calls


def time_round(
    calls: dict[str, object], reps: int, workloads: dict[str, Workload], warm: bool = True
) -> dict:
    """One round: per benchmark, one untimed repetition (caches; unless not ``warm``), then
    ``reps`` timed."""
    results: dict[str, object] = {}
    for name, call in calls.items():
        if isinstance(call, str):
            results[name] = {"missing": call}
            continue
        number = workloads[name].number
        if warm:
            _timed(call, number)
        gc.collect()
        gc.disable()
        try:
            both = [_timed_both(call, number) for _ in range(reps)]
        finally:
            gc.enable()
        results[name] = {"samples": [c for c, _ in both], "wall": [w for _, w in both],
                         "number": number}  # fmt: skip
    return results


def _frozen(calls: dict[str, object]) -> dict[str, object]:
    """``calls``, after moving every object alive now out of the collector's sight
    (``gc.freeze``): the ``gc.collect()`` before each repetition then takes microseconds, not
    the ~0.2 s of a full pass over torch's objects."""
    gc.collect()
    gc.freeze()
    return calls


def run_time(names: list[str], reps: int, workloads: dict[str, Workload]) -> dict[str, object]:
    results = time_round(_frozen(prepare(names, workloads)), reps, workloads)
    return {"results": results, "ratios": {"book_loop_over_chunk": book_loop_over_chunk()}}


def serve(names: list[str], workloads: dict[str, Workload]) -> None:
    """Rounds on request (see the module doc): ``time REPS [NAME [cold]]`` -> one JSON line
    (NAME: that benchmark only; ``cold``: without the untimed repetition first)."""
    calls = _frozen(prepare(names, workloads))
    print(json.dumps({"ready": True, "env": environment()}), flush=True)
    pad = bytearray(0)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            break
        if words[0] == "setup":  # fresh workloads, placed elsewhere in memory
            calls = {}  # the old ones freed as their references go (a cycle stays frozen)
            pad = bytearray(64 * (int(words[1]) % 4099 + 1))  # shifts where the heap goes on
            calls = prepare(names, workloads)
            gc.freeze()  # no full collection: it would cost more than the set-up itself
            print(json.dumps({"setup": len(pad)}), flush=True)
            continue
        reps = int(words[1]) if len(words) > 1 else 5
        chosen = {words[2]: calls[words[2]]} if len(words) > 2 else calls
        warm = not (len(words) > 3 and words[3] == "cold")
        print(json.dumps({"results": time_round(chosen, reps, workloads, warm)}), flush=True)


def run_ops(names: list[str], workloads: dict[str, Workload]) -> dict[str, object]:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: dict[str, int] = {}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            key = str(func.overloadpacket)
            self.ops[key] = self.ops.get(key, 0) + 1
            return func(*args, **(kwargs or {}))

    results: dict[str, object] = {}
    for name, call in prepare(names, workloads).items():
        if isinstance(call, str):
            results[name] = {"missing": call}
            continue
        call()
        with Count() as counter:
            call()
        activities = [torch.profiler.ProfilerActivity.CPU]
        with torch.profiler.profile(activities=activities, profile_memory=True) as prof:
            call()
        live = peak = 0
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        for event in sorted(events, key=lambda e: e.start_ns()):  # allocations +, frees -
            live += event.nbytes()
            peak = max(peak, live)
        ops = dict(sorted(counter.ops.items()))
        results[name] = {"ops": sum(ops.values()), "op_counts": ops, "peak_bytes": peak}
    return {"results": results}


def run_counts(names: list[str], workloads: dict[str, Workload]) -> dict[str, object]:
    import ctypes

    lib = ctypes.CDLL(os.environ["GPTREF_CALLGRIND_LIB"])
    lib.gptref_cg_stop.argtypes = [ctypes.c_char_p]
    if not lib.gptref_cg_running():
        raise SystemExit("workloads counts: not running under valgrind --tool=callgrind")
    results: dict[str, object] = {}
    for name, call in prepare(names, workloads).items():
        if isinstance(call, str):
            results[name] = {"missing": call}
            continue
        calls = workloads[name].calls
        call()
        call()  # twice: whatever the first call caches is cached before the count starts
        gc.collect()
        gc.disable()
        lib.gptref_cg_start()
        for _ in range(calls):
            call()
        lib.gptref_cg_stop(name.encode())
        gc.enable()
        results[name] = {"calls": calls}
    return {"results": results}


def environment() -> dict[str, object]:
    import torch

    import gptref

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "gptref_path": str(Path(gptref.__file__).resolve().parent.parent),
        "load_avg": list(load) if load else None,
        "suite_version": SUITE_VERSION,
    }


def main(argv: list[str] | None = None, workloads: dict[str, Workload] | None = None) -> None:
    """``MODE [--bench a,b] [--reps N]`` -> one JSON line on stdout (see the module doc)."""
    import argparse

    import torch

    workloads = WORKLOADS if workloads is None else workloads
    parser = argparse.ArgumentParser(prog="workloads.py")
    parser.add_argument("mode", choices=("time", "ops", "counts", "serve", "env"))
    parser.add_argument("--bench", default=",".join(workloads))
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    names = [n for n in args.bench.split(",") if n]
    unknown = [n for n in names if n not in workloads]
    if unknown:
        raise SystemExit(f"workloads: unknown benchmark(s) {unknown}; known: {list(workloads)}")
    torch.set_num_threads(1)
    cpu = os.environ.get("GPTREF_BENCH_CPU")
    if cpu and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(cpu)})  # both sides on one core: the same neighbours
    if args.mode == "serve":
        return serve(names, workloads)
    if args.mode == "time":
        out = run_time(names, args.reps, workloads)
    elif args.mode == "ops":
        out = run_ops(names, workloads)
    elif args.mode == "counts":
        out = run_counts(names, workloads)
    else:
        out = {}
    out["env"] = environment()
    print("\n" + json.dumps(out))


if __name__ == "__main__":
    main()
