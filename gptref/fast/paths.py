"""``FastPaths``: every opt-in speed path as one type, each computing the reference's function.

A ``FastPaths`` value is a set of switches; ``FastPaths()`` is the fp32 reference (the book's
ops, PyTorch's default AdamW). ``FAST_BF16`` (sdpa + bf16 autocast + fused AdamW + fused
LayerNorm/GELU) and ``FAST_FP32`` (the same in float32) are the two fixed bundles that
``--fast`` chooses from (``gptref.fast.choice``: by device and, on CPU, by a measured probe,
with the chunked loss added on CPU); ``FAST`` is that choice. The CLI, ``gptref bench
--compare`` and the benchmarks all start from these. Each path is tested against the
reference (``tests/fast/test_fast.py``, with the tolerance it is held to and why) and timed
beside it (``benchmarks/test_bench_fast.py``, ``benchmarks/test_bench_auto.py``):

- ``attn="sdpa"``: fused attention (``F.scaled_dot_product_attention``), equal up to rounding;
- ``dtype="bfloat16"``: ``train_step``'s autocast; matmuls in bf16, weights, gradients and
  AdamW state in fp32; 2-4x on CPUs with AMX/AVX512-BF16 and on every recent GPU, 30-100x
  slower on CPUs without native bf16 (AVX2);
- ``optimizer="foreach" | "fused"``: AdamW's multi-tensor or fused kernels instead of the
  per-parameter loop ("default" is PyTorch's choice, "for-loop" forces the loop);
- ``compile=True``: ``torch.compile`` (inductor) of the forward and backward;
- ``tf32=True``: float32 matmuls on CUDA tensor cores in TF32 (10-bit mantissa);
- ``fused_layers=True``: LayerNorm and GELU as ``F.layer_norm`` / ``F.gelu(approximate="tanh")``,
  one kernel each instead of the book's 5-8 elementwise ops;
- ``vocab_pad=64``: ``out_head`` rows rounded up to a multiple of 64 (friendlier GPU matmul
  shapes); logits on real ids are unchanged (the pad is sliced off);
- ``pin_memory``: page-locked batches copied with ``non_blocking=True``, so the host-to-GPU
  copy overlaps the previous step (``None``: on CUDA only).

Two of them are memory paths, levers for a larger batch (``gptref plan`` chooses them):

- ``loss="chunked"``: the output head and cross-entropy ``loss_chunk`` rows at a time
  (``gptref.chunked_loss``): the (b, T, vocab) logits and their log-softmax never exist;
- ``recompute=k``: activation checkpointing of every k-th transformer block (1: all of them):
  a checkpointed block keeps only its input and runs its forward again in the backward.

torch is imported inside the functions: the CLI reads these fields to build its flags, and
``gptref --help`` should not pay torch's start-up.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, get_args

from gptref._check import check_choice, check_int
from gptref._setting import setting
from gptref.gpt_config import AttnImpl

if TYPE_CHECKING:
    import torch
    from torch import nn

    from gptref.gpt_config import GPTConfig

Dtype = Literal["float32", "bfloat16"]
Optimizer = Literal["default", "for-loop", "foreach", "fused"]
OPTIMIZER_IMPLS: tuple[str, ...] = get_args(Optimizer)
Loss = Literal["full", "chunked"]


@dataclasses.dataclass(frozen=True)
class FastPaths:
    """The speed paths of one run; the defaults are the fp32 reference."""

    attn: AttnImpl = setting("reference", "attention: reference (the book's ops) or sdpa (fused)")
    dtype: Dtype = setting(
        "float32", "bfloat16: autocast, matmuls in bf16 (about 2-4x faster on recent CPUs)"
    )
    optimizer: Optimizer = setting(
        "default", "AdamW implementation (default: PyTorch's choice); all compute the same update"
    )
    compile: bool = setting(False, "torch.compile the model (slower start, faster steps)")
    tf32: bool = setting(False, "CUDA: float32 matmuls on TF32 tensor cores")
    vocab_pad: int = setting(
        1,
        "round out_head's rows up to a multiple of N (64 suits GPUs); logits unchanged",
        metavar="N",
    )
    fused_layers: bool = setting(
        False, "LayerNorm and GELU as one kernel each (F.layer_norm, F.gelu): same functions"
    )
    loss: Loss = setting(
        "full", "chunked: out_head and cross-entropy in --loss-chunk rows at a time, without the "
        "(batch, T, vocab) logits (less memory, same loss)",
    )  # fmt: skip
    loss_chunk: int = setting(1024, "rows of batch*T per chunk of --loss chunked", metavar="ROWS")
    recompute: int = setting(
        0, "activation checkpointing: recompute every K-th transformer block in the backward "
        "(1: all; 0: none); less memory, one more forward of those blocks", metavar="K",
    )  # fmt: skip
    pin_memory: bool | None = None  # page-locked batches; None: on CUDA (not a flag)

    def __post_init__(self) -> None:
        check_int("FastPaths", "loss_chunk", self.loss_chunk, low=1, hint="; e.g. 1024")
        check_int("FastPaths", "recompute", self.recompute, low=0, hint=" (0: none, 1: all blocks)")
        for name, kind in (("attn", AttnImpl), ("dtype", Dtype), ("optimizer", Optimizer),
                           ("loss", Loss)):  # fmt: skip
            check_choice("FastPaths", name, getattr(self, name), get_args(kind))
        for name in ("compile", "tf32", "fused_layers"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"FastPaths: {name} must be True or False, got {getattr(self, name)!r}")  # fmt: skip
        check_int("FastPaths", "vocab_pad", self.vocab_pad, low=1, hint="; e.g. 64")

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> FastPaths:
        """{field: value} (missing fields: the reference's) -> FastPaths; unknown keys raise."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(f"FastPaths: unknown settings {unknown}; the settings are {sorted(known)}")  # fmt: skip
        return cls(**settings)

    def replace(self, **changes: Any) -> FastPaths:
        return dataclasses.replace(self, **changes)

    def apply(self, config: GPTConfig) -> GPTConfig:
        """The model-side paths (attention, vocabulary pad, fused layers, recomputation) set
        on ``config``."""
        return dataclasses.replace(
            config,
            attn_impl=self.attn,
            vocab_pad_multiple=self.vocab_pad,
            fused_layers=self.fused_layers,
            recompute=self.recompute,
        )

    @property
    def loss_chunk_rows(self) -> int | None:
        """``train_step``'s ``loss_chunk``: rows per chunk, or None for the full logits."""
        return self.loss_chunk if self.loss == "chunked" else None

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """``train_step``'s ``autocast_dtype``: torch.bfloat16 or None (fp32)."""
        import torch

        return torch.bfloat16 if self.dtype == "bfloat16" else None

    def pins(self, device: torch.device | str) -> bool:
        """Whether batches for ``device`` go through page-locked memory."""
        import torch

        on_cuda = torch.device(device).type == "cuda"
        return on_cuda if self.pin_memory is None else self.pin_memory and on_cuda

    def build(
        self, model: nn.Module, lr: float, weight_decay: float
    ) -> tuple[nn.Module, torch.optim.AdamW]:
        """-> (the module to train: ``model`` compiled or itself, its AdamW). Also sets the
        process-wide TF32 switch. ``gptref.unwrap`` of the first gives ``model`` back."""
        set_tf32(self.tf32)
        optimizer = make_optimizer(model, lr, weight_decay, self.optimizer)
        return compile_model(model, self.compile), optimizer


REFERENCE = FastPaths()
# the fixed bundles --fast chooses from (gptref.fast.choice); FAST_BF16 is what FAST first meant
FAST_BF16 = FastPaths(attn="sdpa", dtype="bfloat16", optimizer="fused", fused_layers=True)
FAST_FP32 = FAST_BF16.replace(dtype="float32")


def make_optimizer(
    params: Iterable[nn.Parameter] | nn.Module,
    lr: float,
    weight_decay: float,
    impl: str = "default",
) -> torch.optim.AdamW:
    """-> ``torch.optim.AdamW(params, lr, weight_decay=...)``, the book's optimizer, with the
    implementation chosen: "default" (PyTorch's choice: foreach on CUDA, the per-parameter
    loop on CPU), "for-loop", "foreach" (one kernel per op over all tensors) or "fused"."""
    import torch
    from torch import nn

    check_choice("make_optimizer", "optimizer", impl, OPTIMIZER_IMPLS)
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
    import torch

    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def compile_model(model: nn.Module, enabled: bool = True, **kwargs: Any) -> nn.Module:
    """``torch.compile(model, **kwargs)`` when ``enabled``, else ``model`` itself. The compiled
    module shares ``model``'s parameters; ``gptref.unwrap`` gives ``model`` back (for state dicts)."""
    import torch

    return torch.compile(model, **kwargs) if enabled else model  # type: ignore[return-value]
