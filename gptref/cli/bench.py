"""``gptref bench``: time ``train_step`` over batch sizes, or the fast paths side by side."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from gptref._check import check_int
from gptref._setting import nested, same_as, setting
from gptref.cli.common import no_progress_flag
from gptref.fast.paths import FastPaths
from gptref.run.config import Preset, RunConfig
from gptref.run.loaders import resolve_device

NAME = "bench"
HELP = "time train_step over batch sizes: tokens/s, memory, MFU"
DESCRIPTION = (
    "For each device/dtype/attention/batch size: warm up, time train_step, record tokens/s, "
    "step time (median, spread), peak memory measured and predicted, and MFU. Out of memory "
    "is an OOM row; the sweep goes on. Writes bench.md, bench.json and bench.png to --out."
)


@dataclasses.dataclass(frozen=True)
class Args:
    preset: Preset = same_as(RunConfig, "preset")
    context: int | None = same_as(RunConfig, "context")
    batch_sizes: str = setting("1,2,4,8", "batch sizes, comma-separated", metavar="LIST")
    device: str = setting(
        "cpu", "cpu, cuda or all (cpu, and cuda when available); no 'auto' as in train: a "
        "benchmark names the device it measures", choices=("cpu", "cuda", "all"),
    )  # fmt: skip
    dtype: str = setting("float32", "float32,bfloat16 (comma-separated)", metavar="LIST")
    attn: str = setting("reference", "reference,sdpa (comma-separated)", metavar="LIST")
    steps: int = setting(
        10, "timed steps per configuration (after one warm-up step; the median is reported)",
        metavar="N",
    )  # fmt: skip
    # the other fast paths, as `gptref train` declares them (dtype and attn are lists here)
    fast: FastPaths = nested(FastPaths, exclude=("attn", "dtype"))
    compare: bool = setting(
        False, "instead of a sweep: the fp32 reference, --fast (the bundle chosen for this "
        "device) and the bundle in the other dtype side by side at the first batch size and "
        "device, with speed-ups; names the CPU and each side's dtype (writes compare.md/json)",
    )  # fmt: skip
    levers: bool = setting(
        False, "instead of the default sweep: the memory levers side by side (reference, chunked loss, "
        "recompute every block, both) at every batch size on the first device and dtype, with "
        "tokens/s over the reference's and peak memory measured and predicted (writes "
        "levers.md/json)",
    )  # fmt: skip
    out: str = setting("bench", "where bench.md/json/png go", metavar="DIR")
    overwrite: bool = setting(False, "replace earlier results of the same kind in --out DIR")
    no_progress: bool = no_progress_flag()

    def __post_init__(self) -> None:
        if self.context is not None:
            check_int("bench", "context", self.context, low=1)


def _split_list(flag_name: str, text: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise ValueError(f"{flag_name}: expected a comma-separated list, got {text!r}")
    for item in items:
        if allowed is not None and item not in allowed:
            raise ValueError(f"{flag_name}: {item!r} is not one of {', '.join(allowed)}")
    return items


def main(args: Args) -> int:
    import torch

    from gptref._io import atomic_write_text
    from gptref.bench import compare_paths, run_bench, standard_variants, write_results
    from gptref.bench.levers import compare_levers, format_levers
    from gptref.bench.report import claim_results, format_comparison, format_table

    sizes = []
    for item in _split_list("--batch-sizes", args.batch_sizes):
        if not item.isdigit() or int(item) < 1:
            raise ValueError(f"--batch-sizes: each size must be an integer >= 1, got {item!r}")
        sizes.append(int(item))
    dtypes = _split_list("--dtype", args.dtype, ("float32", "bfloat16"))
    attns = _split_list("--attn", args.attn, ("reference", "sdpa"))
    if args.device == "all":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [resolve_device(args.device).type]
    if args.levers and args.compare:
        raise ValueError("--levers and --compare are two different runs: pick one")
    progress = not args.no_progress and sys.stderr.isatty()  # redrawn bars fill a log
    name = "compare" if args.compare else "levers" if args.levers else "bench"
    claim_results(Path(args.out), name, overwrite=args.overwrite)  # before minutes of timing
    if args.compare:
        from gptref.bench.compare import device_line, left_out
        from gptref.fast.choice import choose_fast

        choice = choose_fast(devices[0])
        head = device_line(choice)
        print(head)
        if left_out(choice):
            print(left_out(choice))
        variants = standard_variants(devices[0], vocab_pad=args.fast.vocab_pad,
                                     compile=args.fast.compile, choice=choice)  # fmt: skip
        rows = compare_paths(variants, args.preset, args.context, sizes[0], devices[0],
                             steps=args.steps, progress=progress)  # fmt: skip
        write_results(rows, args.out, "compare", overwrite=args.overwrite, head=head)
        print(format_comparison(rows))
        _warn_if_starved(rows)
        print(f"wrote {args.out}/: compare.md, compare.json")
        return 0
    if args.levers:
        rows = compare_levers(args.preset, args.context, sizes,
                              base=args.fast.replace(dtype=dtypes[0], attn=attns[0]),
                              device=devices[0], steps=args.steps,
                              progress=progress)  # fmt: skip
        write_results(rows, args.out, "levers", overwrite=args.overwrite)
        table = format_levers(rows)
        atomic_write_text(Path(args.out) / "levers.md", table + "\n")
        print(table)
        _warn_if_starved(rows)
        print(f"wrote {args.out}/: levers.md, levers.json")
        return 0
    rows = run_bench(
        args.preset, args.context, sizes, devices, dtypes, attns, args.steps, args.out,
        progress=progress, fast=args.fast, overwrite=args.overwrite,
    )  # fmt: skip
    print(format_table(rows))
    _warn_if_starved(rows)
    print(f"wrote {args.out}/: bench.md, bench.json, bench.png")
    return 0


def _warn_if_starved(rows) -> None:
    """Rows whose timed steps got much less CPU than their threads could use: other work
    ran on the machine, and their times say more about it than about gptref."""
    starved = [r for r in rows if r.get("status") == "ok" and r["device"] == "cpu"
               and r.get("cpu_share") is not None and r["cpu_share"] < STARVED]  # fmt: skip
    for r in starved:
        print(
            f"warning: {r['dtype']}/{r['attn']} batch {r['batch_size']} got {r['cpu_share']:.2f} "
            f"of its CPU share (< {STARVED}): other work slowed it; rerun on a quiet machine",
            file=sys.stderr,
        )


STARVED = 0.7  # CPU share below which a row's timing is not gptref's alone
