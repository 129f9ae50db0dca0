"""``gptref plan``: the largest micro-batch for a memory budget, the accumulation that reaches
a target batch (``gptref.plan.memory``'s model), and the memory levers worth their cost
(``gptref.plan.planner.plan_levers``)."""

from __future__ import annotations

import dataclasses
import json

from gptref._check import check_int
from gptref._setting import required, same_as, setting
from gptref.fast.paths import Dtype
from gptref.run.config import Preset, RunConfig

NAME = "plan"
HELP = "largest micro-batch for a memory budget, the accumulation and the levers to reach a target"
DESCRIPTION = (
    "Predict (with gptref.plan.memory's model, checked against measurement) the largest micro-batch "
    "that fits --memory and the accumulation steps that reach --target-batch sequences, for "
    "each memory lever (chunked loss, activation checkpointing), with what each costs in "
    "tokens/s; choose the fastest."
)


@dataclasses.dataclass(frozen=True)
class Args:
    memory: str = required("the memory budget, e.g. 24GiB, 80GB, 512MiB", metavar="SIZE")
    target_batch: int = setting(1024, "sequences per optimizer update to reach", metavar="N")
    preset: Preset = same_as(
        RunConfig, "preset", default="124M",
        help="model size: tiny, small, 124M (default 124M here, small in train: plans are for "
        "the model people run out of memory with)",
    )  # fmt: skip
    context: int | None = same_as(RunConfig, "context")
    dtype: Dtype = setting("float32", "float32, or bfloat16 autocast (as gptref train --dtype)")
    device: str = setting(
        "cpu", "whose memory: cpu (RSS) or cuda (allocator); no 'auto' as in train: a plan "
        "names the machine it is for", choices=("cpu", "cuda"),
    )  # fmt: skip
    levers: str = setting(
        "auto", "auto: choose the chunked loss and recomputation too, where they pay; none: "
        "the micro-batch alone", choices=("auto", "none"),
    )  # fmt: skip
    json: bool = setting(False, "print the plan as JSON")

    def __post_init__(self) -> None:
        check_int("plan", "target_batch", self.target_batch, low=1)


def main(args: Args) -> int:
    from gptref.plan.planner import DoesNotFit, format_bytes, parse_bytes

    try:
        budget = parse_bytes(args.memory)
    except ValueError:
        raise ValueError(f"--memory {args.memory!r}: expected a size like '24GiB', '512MB', '8G' "
                         "or '1073741824' (bytes)") from None  # fmt: skip
    try:
        return _main(args)
    except DoesNotFit as e:
        if e.need is None:
            raise ValueError(
                f"--target-batch {args.target_batch} rows do not fit in --memory {args.memory} "
                f"({format_bytes(budget)}) even one row per pass; lower --target-batch or use "
                "more --memory"
            ) from None
        raise ValueError(
            f"--memory {args.memory} ({format_bytes(budget)}) is too little: one row of "
            f"--preset {args.preset} needs {format_bytes(e.need)} even with every lever; use a "
            "shorter --context, --dtype bfloat16, a smaller --preset, or more --memory"
        ) from None


def _main(args: Args) -> int:
    from gptref.plan.planner import format_plan, parse_bytes, plan, train_command

    options = {"context": args.context, "dtype": args.dtype, "device": args.device,
               "levers": args.levers}  # fmt: skip
    if args.json:
        result = plan(args.preset, args.memory, args.target_batch, **options)
        print(json.dumps({
            "preset": args.preset, "memory_bytes": parse_bytes(args.memory),
            "target_batch": args.target_batch, **options, "micro_batch": result.micro_batch,
            "accumulation_steps": result.accumulation_steps,
            "effective_batch": result.effective_batch, "predicted_peak_bytes": result.predicted_peak,
            "loss_chunk": result.loss_chunk, "recompute": result.recompute,
            "train_command": train_command(args.preset, result, context=args.context, dtype=args.dtype),
        }, indent=2))  # fmt: skip
        return 0
    print(format_plan(args.preset, args.memory, args.target_batch, **options))
    return 0
