"""The global random-number generators: capture, restore, and isolate a block from them.

gptref's exact resume and its seeded runs rest on these: the torch CPU generator (dropout,
the book's loaders), every CUDA device's generator and Python's ``random``. numpy's global
RNG is not captured (nothing in gptref draws from it).
"""

from __future__ import annotations

import contextlib
import random
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import torch


def capture_rng() -> dict[str, Any]:
    """-> {"torch": uint8 tensor, "cuda": [uint8 tensor per device], "python": random.getstate()}.

    ``cuda`` is empty when CUDA is not available. numpy's global RNG is not captured
    (nothing in gptref draws from it)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"torch": torch.get_rng_state(), "cuda": list(cuda), "python": random.getstate()}


def restore_rng(state: Mapping[str, Any]) -> None:
    """Set the global RNGs from ``load_checkpoint``'s state (or its ``"rng"`` entry, or
    ``capture_rng()``): torch CPU, Python ``random``, and CUDA when both the checkpoint and
    this process have it (a device-count mismatch restores the common devices and warns)."""
    rng = state.get("rng", state)
    if "torch" not in rng:
        raise ValueError(
            f"restore_rng: expected the state load_checkpoint returns or capture_rng()'s dict, "
            f"got keys {sorted(rng)}"
        )
    torch.set_rng_state(rng["torch"])
    if "python" in rng:
        random.setstate(rng["python"])
    cuda = rng.get("cuda") or []
    if cuda and torch.cuda.is_available():
        n = torch.cuda.device_count()
        if len(cuda) != n:
            warnings.warn(
                f"restore_rng: the checkpoint has {len(cuda)} CUDA RNG states, this process sees "
                f"{n} devices; restoring the first {min(n, len(cuda))}",
                stacklevel=2,
            )
        for device, s in enumerate(cuda[:n]):
            torch.cuda.set_rng_state(s, device)


@contextlib.contextmanager
def isolated_rng() -> Iterator[None]:
    """Restore the torch CPU (and CUDA) RNG states on exit: the block cannot perturb them."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
