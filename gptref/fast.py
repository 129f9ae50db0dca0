"""``FastPaths``: every opt-in speed path as one type, each computing the reference's function.

A ``FastPaths`` value is a set of switches; ``FastPaths()`` is the fp32 reference (the book's
ops, PyTorch's default AdamW). ``--fast`` is the fastest tested bundle for the device it runs
on, ``choose_fast(device)``: sdpa + fused AdamW + fused LayerNorm/GELU everywhere, the chunked
loss on CPUs (measured faster there), and bf16 autocast on CUDA and on CPUs whose bf16
matmul ``gptref.fast_probe`` measures at least 1.5x their float32 one (elsewhere bf16 is
30-100x slower). ``FAST`` is that choice for the device ``--device auto`` picks, made on
first use and fixed for the process; the two fixed bundles are ``FAST_BF16`` (``FAST`` as it
was first defined: sdpa + bf16 + fused AdamW + fused layers) and ``FAST_FP32`` (the same in
float32). Each path is tested against the reference (``tests/test_fast.py``, with the
tolerance it is held to and why) and timed beside it (``benchmarks/test_bench_fast.py``,
``benchmarks/test_bench_auto.py``):

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

if TYPE_CHECKING:
    import torch
    from torch import nn

    from gptref.fast_probe import Probe
    from gptref.model import GPTConfig

Attn = Literal["reference", "sdpa"]
Dtype = Literal["float32", "bfloat16"]
Optimizer = Literal["default", "for-loop", "foreach", "fused"]
OPTIMIZER_IMPLS: tuple[str, ...] = get_args(Optimizer)
Loss = Literal["full", "chunked"]


@dataclasses.dataclass(frozen=True)
class FastPaths:
    """The speed paths of one run; the defaults are the fp32 reference."""

    attn: Attn = setting("reference", "attention: reference (the book's ops) or sdpa (fused)")
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
        for name, kind in (("attn", Attn), ("dtype", Dtype), ("optimizer", Optimizer),
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
        process-wide TF32 switch. ``unwrap`` of the first gives ``model`` back."""
        set_tf32(self.tf32)
        optimizer = make_optimizer(model, lr, weight_decay, self.optimizer)
        return compile_model(model, self.compile), optimizer


REFERENCE = FastPaths()
# the fixed bundles --fast chooses from (FAST_BF16 is what FAST meant before it was chosen)
FAST_BF16 = FastPaths(attn="sdpa", dtype="bfloat16", optimizer="fused", fused_layers=True)
FAST_FP32 = FAST_BF16.replace(dtype="float32")
# on CPU the chunked loss is in the bundle: faster on every CPU measured, in float32 and in
# bf16 (it never writes the (b*T, V) logits and their log-softmax gradient to memory): the
# main job's setting 1.3-1.4x, GPT-124M at context 256 1.1-1.3x (benchmarks/results/auto_*,
# and issue 24's AVX2 table: 1.44x and 1.09x)
CPU_BUNDLE = {"loss": "chunked"}


@dataclasses.dataclass(frozen=True)
class FastChoice:
    """``choose_fast``'s answer: the bundle for a device and why it has its dtype."""

    paths: FastPaths
    device: str  # "cpu" or "cuda"
    reason: str  # why this dtype, with the numbers that decided it
    probe: Probe | None = None  # on CPU: what gptref.fast_probe measured

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
    ``FAST_FP32`` as ``gptref.fast_probe`` measures bf16 against float32 matmuls (``cache``:
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
    from gptref.fast_probe import bf16_pays, bf16_reason, probe_cpu

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
    module shares ``model``'s parameters; ``unwrap`` gives ``model`` back (for state dicts)."""
    import torch

    return torch.compile(model, **kwargs) if enabled else model  # type: ignore[return-value]


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside ``DistributedDataParallel`` and ``torch.compile`` wrappers (any nesting):
    the module whose ``state_dict`` has the book's parameter names."""
    from torch import nn

    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model
