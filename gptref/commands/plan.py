"""``gptref plan``: the largest micro-batch for a memory budget, and the accumulation that
reaches a target batch (``gptref.memory``'s model)."""

from __future__ import annotations

import dataclasses

from gptref._setting import required, same_as, setting
from gptref.config import Preset, RunConfig
from gptref.fast import Dtype

NAME = "plan"
HELP = "largest micro-batch for a memory budget and the accumulation to reach a target batch"
DESCRIPTION = (
    "Predict (with gptref.memory's model, checked against measurement) the largest micro-batch "
    "that fits --memory and the accumulation steps that reach --target-batch sequences."
)


@dataclasses.dataclass(frozen=True)
class Args:
    memory: str = required("the memory budget, e.g. 24GiB, 80GB, 512MiB", metavar="SIZE")
    target_batch: int = setting(1024, "sequences per optimizer update to reach", metavar="N")
    preset: Preset = same_as(RunConfig, "preset", default="124M")
    context: int | None = same_as(RunConfig, "context")
    dtype: Dtype = setting("float32", "float32, or bfloat16 autocast (as gptref train --dtype)")
    device: str = setting(
        "cpu", "whose memory: cpu (RSS) or cuda (allocator)", choices=("cpu", "cuda")
    )


def main(args: Args) -> int:
    from gptref.planner import format_plan

    print(format_plan(args.preset, args.memory, args.target_batch, context=args.context,
                      dtype=args.dtype, device=args.device))  # fmt: skip
    return 0
