"""``choose_fast``: ``--fast`` as the fastest tested bundle for the device it runs on.

sdpa + fused AdamW + fused LayerNorm/GELU everywhere; the chunked loss on CPUs (measured
faster there); bf16 autocast on CUDA cards with bf16 and on CPUs whose bf16 matmul
``gptref.fast.probe`` measures at least ``BF16_MIN_SPEEDUP`` (1.5) times their float32 one
(elsewhere bf16 is 30-100x slower). ``FAST`` is the choice for the device ``--device auto``
picks, made on first use and fixed for the process. Explicit settings win over the choice:
a run replaces fields of ``FastChoice.paths``, and ``FastChoice.line`` describes the result.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from gptref._check import check_choice
from gptref.fast.paths import FAST_BF16, FAST_FP32, REFERENCE, FastPaths

if TYPE_CHECKING:
    from gptref.fast.probe import Probe

# on CPU the chunked loss is in the bundle: faster on every CPU measured, in float32 and in
# bf16 (it never writes the (b*T, V) logits and their log-softmax gradient to memory): at the
# main job's setting 1.3-1.4x, at GPT-124M context 256 1.1-1.3x (AVX2 and AVX512-BF16 CPUs)
CPU_BUNDLE = {"loss": "chunked"}


@dataclasses.dataclass(frozen=True)
class FastChoice:
    """``choose_fast``'s answer: the bundle for a device and why it has its dtype."""

    paths: FastPaths
    device: str  # "cpu" or "cuda"
    reason: str  # why this dtype, with the numbers that decided it
    probe: Probe | None = None  # on CPU: what gptref.fast.probe measured

    def line(self, paths: FastPaths | None = None) -> str:
        """'fast paths: sdpa, fused layers, fused AdamW, chunked loss; fp32 (this CPU has no
        native bf16 matmul: ...)' for ``paths`` (default: the choice; a run may have
        changed some of it explicitly)."""
        paths = self.paths if paths is None else paths
        dtype = {"float32": "fp32", "bfloat16": "bf16"}[paths.dtype]
        why = (
            self.reason if paths.dtype == self.paths.dtype else f"chosen explicitly; {self.reason}"
        )
        return f"fast paths: {describe_paths(paths) or 'none'}; {dtype} ({why})"


def describe_paths(paths: FastPaths) -> str:
    """The paths that differ from the reference, in words (dtype aside): 'sdpa, fused
    layers, fused AdamW, chunked loss'."""
    words = {
        "attn": "sdpa", "fused_layers": "fused layers", "optimizer": f"{paths.optimizer} AdamW",
        "loss": "chunked loss", "recompute": f"recompute k={paths.recompute}",
        "compile": "compile", "tf32": "TF32", "vocab_pad": f"vocab pad {paths.vocab_pad}",
    }  # fmt: skip
    return ", ".join(w for k, w in words.items() if getattr(paths, k) != getattr(REFERENCE, k))


def choose_fast(device: str = "auto", *, cache: bool = True) -> FastChoice:
    """The fastest tested bundle for ``device`` ("auto": CUDA when available, else "cpu"):
    CUDA: ``FAST_BF16`` (``FAST_FP32`` on a card without bf16); CPU: ``FAST_BF16`` or
    ``FAST_FP32`` as ``gptref.fast.probe`` measures bf16 against float32 matmuls (``cache``:
    its answer remembered per machine and torch), with ``CPU_BUNDLE`` on top."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    check_choice("choose_fast", "device", device, ("cpu", "cuda"))
    if device == "cuda":
        name = torch.cuda.get_device_name()
        if torch.cuda.is_bf16_supported():
            return FastChoice(FAST_BF16, device, f"{name} has native bf16")
        return FastChoice(FAST_FP32, device, f"{name} has no native bf16")
    from gptref.fast.probe import bf16_pays, bf16_reason, probe_cpu

    probe = probe_cpu(cache=cache)
    base = FAST_BF16 if bf16_pays(probe) else FAST_FP32
    return FastChoice(base.replace(**CPU_BUNDLE), device, bf16_reason(probe), probe)


def __getattr__(name: str) -> Any:
    """``FAST``: ``choose_fast().paths``, made on first use (a probe of ~10 ms, or the cache)
    and then fixed for the process."""
    if name == "FAST":
        globals()["FAST"] = value = choose_fast().paths
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
