"""Peak FLOP/s, the denominator of MFU (model FLOPs utilization): ``device_peak_flops``,
measured on a CPU, the datasheet's on a known CUDA card. The numerator's FLOPs per token are
``gptref.plan.compute.flops_per_token`` (re-exported here).
"""

from __future__ import annotations

import functools
import time

import torch

from gptref.fast.probe import matmul_flops
from gptref.plan.compute import flops_per_token  # noqa: F401  (bench's FLOP count)

# published dense (no sparsity) peaks, FLOP/s: NVIDIA H100/H200 and A100 datasheets;
# float32 is the plain FP32 rate: PyTorch leaves TF32 matmuls off unless asked
CUDA_PEAK_FLOPS = {
    "H100 PCIe": {"bfloat16": 756e12, "float32": 51.2e12, "tf32": 378e12},
    "H100": {"bfloat16": 989e12, "float32": 67e12, "tf32": 495e12},  # SXM
    "H200": {"bfloat16": 989e12, "float32": 67e12, "tf32": 495e12},
    "A100": {"bfloat16": 312e12, "float32": 19.5e12, "tf32": 156e12},
}


@functools.cache
def cpu_peak_flops(dtype: str = "float32", size: int = 2048, seconds: float = 0.5) -> float:
    """The best FLOP/s of ``size``-square matmuls in ``dtype`` on this CPU (all torch
    threads) over ~``seconds`` by wall clock (measured once per process and remembered)."""
    return matmul_flops(dtype, size, seconds=seconds, clock=time.perf_counter)


def device_peak_flops(device: str, dtype: str) -> float | None:
    """Peak dense FLOP/s: measured on CPU, the datasheet's for known CUDA cards, else None."""
    if device == "cpu":
        return cpu_peak_flops(dtype)
    name = torch.cuda.get_device_name(0)
    key = "tf32" if dtype == "float32" and torch.backends.cuda.matmul.allow_tf32 else dtype
    for card, peaks in CUDA_PEAK_FLOPS.items():  # "H100 PCIe" before "H100"
        if all(word in name for word in card.split()):
            return peaks[key]
    return None
