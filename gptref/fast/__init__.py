"""Opt-in paths around the core: ``FastPaths`` (``paths``), every speed and memory switch as
one type, each computing the reference's function; ``choice``, ``choose_fast``: the fastest
tested bundle for a device (``--fast``), by the bf16-against-float32 matmul ``probe`` on CPU;
``distributed``, data-parallel training with ``torchrun`` (the core's ``group`` argument is a
``distributed.DistContext``).

Nothing in the core imports this package: the core's functions take what these build (a
compiled model, an optimizer, an autocast dtype, a process group) as arguments.
"""

from typing import Any

from gptref.fast.choice import CPU_BUNDLE, FastChoice, choose_fast
from gptref.fast.paths import (
    FAST_BF16,
    FAST_FP32,
    REFERENCE,
    FastPaths,
    compile_model,
    make_optimizer,
    set_tf32,
)

__all__ = [
    "CPU_BUNDLE",
    "FAST",
    "FAST_BF16",
    "FAST_FP32",
    "REFERENCE",
    "FastChoice",
    "FastPaths",
    "choose_fast",
    "compile_model",
    "make_optimizer",
    "set_tf32",
]


def __getattr__(name: str) -> Any:
    """``FAST``: ``gptref.fast.choice.FAST``, chosen on first use (not when this imports)."""
    if name == "FAST":
        from gptref.fast import choice

        return choice.FAST
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
