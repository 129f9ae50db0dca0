"""Opt-in paths around the core: ``FastPaths`` (``paths``), every speed and memory switch as
one type, each computing the reference's function; ``distributed``, data-parallel training
with ``torchrun`` (the core's ``group`` argument is a ``distributed.DistContext``).

Nothing in the core imports this package: the core's functions take what these build (a
compiled model, an optimizer, an autocast dtype, a process group) as arguments.
"""

from gptref.fast.paths import (
    FAST,
    REFERENCE,
    FastPaths,
    compile_model,
    make_optimizer,
    set_tf32,
)

__all__ = ["FAST", "REFERENCE", "FastPaths", "compile_model", "make_optimizer", "set_tf32"]
