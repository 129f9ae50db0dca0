"""The opt-in fast paths: settings that compute the reference's function faster.

Each one is tested against the fp32 reference (``tests/test_fast.py``, with the tolerance
it is held to and why) and timed beside it (``benchmarks/test_bench_fast.py``):

- ``attn_impl="sdpa"`` (``GPTConfig``): fused attention, equal up to float rounding.
- ``autocast_dtype=torch.bfloat16`` (``train_step``): matmuls in bf16, weights, grads and
  AdamW state in fp32; 2-4x on CPUs with AMX/AVX512-BF16 and on every recent GPU.
- ``make_optimizer(..., impl="foreach" | "fused")``: AdamW's multi-tensor or fused kernels
  instead of the per-parameter loop, the same update up to float rounding.
- ``compile_model``: ``torch.compile`` (inductor) of the forward and backward.
- ``set_tf32(True)``: float32 matmuls on CUDA tensor cores in TF32 (10-bit mantissa).
- ``GPTConfig(fused_layers=True)``: LayerNorm and GELU through ``F.layer_norm`` and
  ``F.gelu(approximate="tanh")``, one kernel each instead of the book's 5-8 elementwise ops.
- ``GPTConfig(vocab_pad_multiple=64)``: ``out_head`` rows rounded up to a multiple of 64 for
  friendlier GPU matmul shapes; logits on real ids are unchanged (the pad is sliced off).
- ``create_dataloader(pin_memory=True)``: page-locked batches, copied with
  ``non_blocking=True`` so the host-to-GPU copy overlaps the previous step.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

OPTIMIZER_IMPLS = ("default", "for-loop", "foreach", "fused")


def make_optimizer(
    params: Iterable[nn.Parameter] | nn.Module,
    lr: float,
    weight_decay: float,
    impl: str = "default",
) -> torch.optim.AdamW:
    """-> ``torch.optim.AdamW(params, lr, weight_decay=...)``, the book's optimizer, with the
    implementation chosen: "default" (PyTorch's choice: foreach on CUDA, the per-parameter
    loop on CPU), "for-loop", "foreach" (one kernel per op over all tensors) or "fused"."""
    if impl not in OPTIMIZER_IMPLS:
        raise ValueError(f"optimizer must be one of {OPTIMIZER_IMPLS}, got {impl!r}")
    if isinstance(params, nn.Module):
        params = params.parameters()
    kwargs: dict[str, bool] = {
        "default": {},
        "for-loop": {"foreach": False},
        "foreach": {"foreach": True},
        "fused": {"fused": True},
    }[impl]
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **kwargs)


def set_tf32(enabled: bool) -> None:
    """Let float32 matmuls and convolutions on CUDA use TF32 tensor cores (or forbid it)."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def compile_model(model: nn.Module, enabled: bool = True, **kwargs) -> nn.Module:
    """``torch.compile(model, **kwargs)`` when ``enabled``, else ``model`` itself. The compiled
    module shares ``model``'s parameters; ``unwrap`` gives ``model`` back (for state dicts)."""
    return torch.compile(model, **kwargs) if enabled else model  # type: ignore[return-value]


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside ``DistributedDataParallel`` and ``torch.compile`` wrappers (any nesting):
    the module whose ``state_dict`` has the book's parameter names."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model
