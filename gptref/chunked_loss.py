"""The output head and cross-entropy in row chunks: the loss without the ``(b*T, V)`` logits.

``chunked_cross_entropy(hidden, weight, targets, chunk)`` computes what
``F.cross_entropy(hidden @ weight.T, targets)`` computes, ``chunk`` rows of logits at a time,
so at most ``(chunk, V)`` logits (and their softmax) exist at once instead of ``(b*T, V)``:
for GPT-124M at context 1024 and batch 32, 1024 rows instead of 32,768 (0.2 GB instead of
6.6 GB per copy, and the reference keeps three copies at its peak).

The backward pass needs each chunk's softmax again. Recomputing it in the backward (as
``torch.utils.checkpoint`` per chunk would) repeats the head's forward matmul, ~10 % of a
GPT-124M training step's FLOPs. Instead, when a gradient is wanted, each chunk's gradients
are computed in the forward pass, right after its loss, from the softmax in hand (as
Liger-Kernel's fused linear cross-entropy does): ``d loss / d logits = softmax - onehot``
(zero on ignored rows), then ``grad_hidden = g @ weight`` and ``grad_weight += g.T @
hidden``. That is the reference's arithmetic (its backward does the same two matmuls), no
extra FLOPs, and holds ``(b*T, E)`` + ``(V, E)`` gradient bytes until the backward, which
only scales them by the incoming gradient (and the ``1 / count`` of the mean). Under
``torch.no_grad()`` only the loss is computed.

Precision follows autocast as the reference's ``out_head`` + ``cross_entropy`` do: under a
bf16 autocast the head's matmuls run in bf16 and the softmax in float32; the weight's
gradient is accumulated over chunks in float32.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

from gptref._check import check_choice, check_int

DEFAULT_CHUNK = 1024  # rows per chunk: 1024 x 50,257 float32 logits = 206 MB


def chunked_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk: int = DEFAULT_CHUNK,
    *,
    ignore_index: int = -100,
    reduction: Literal["mean", "sum"] = "mean",
) -> torch.Tensor:
    """hidden: float (n, E), weight: float (V, E), targets: int64 (n,) -> float scalar (float32,
    or float64 for float64 inputs):
    ``F.cross_entropy(hidden @ weight.T, targets, ignore_index=..., reduction=...)``, computed
    ``chunk`` rows at a time (the last chunk may be shorter).

    ``"mean"`` divides the sum by the number of targets that are not ``ignore_index`` (nan
    when there are none, as ``F.cross_entropy``); ``"sum"`` returns the sum. Differentiable in
    ``hidden`` and ``weight`` (once: the saved gradients are scaled in place)."""
    check_int("chunked_cross_entropy", "chunk", chunk, low=1, hint="; e.g. 1024 rows")
    check_choice("chunked_cross_entropy", "reduction", reduction, ("mean", "sum"))
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(
            f"chunked_cross_entropy: expected hidden (n, E) and weight (V, E), got "
            f"{tuple(hidden.shape)} and {tuple(weight.shape)}; flatten hidden with .flatten(0, 1)"
        )
    if targets.shape != hidden.shape[:1]:
        raise ValueError(
            f"chunked_cross_entropy: targets must have shape ({hidden.shape[0]},), got "
            f"{tuple(targets.shape)}; flatten them with .flatten()"
        )
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        compute_dtype = torch.get_autocast_dtype(device_type)
    else:
        compute_dtype = torch.promote_types(hidden.dtype, weight.dtype)
    wants_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    return _ChunkedCrossEntropy.apply(
        hidden, weight, targets, chunk, ignore_index, reduction == "mean", compute_dtype,
        wants_grad,
    )  # fmt: skip


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Forward: the loss, and (``wants_grad``) the unscaled gradients of the summed loss;
    backward: those gradients times the incoming gradient (and 1 / count for a mean)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk, ignore_index, mean, dtype, wants_grad):
        n = hidden.shape[0]
        # logits and sums in float32 at least, as cross_entropy upcasts bf16/fp16 logits
        acc = torch.promote_types(dtype, torch.float32)
        # the casts are made here, once (autocast would cast the weight once per chunk)
        with _no_autocast(hidden.device.type):
            w = weight.to(dtype)  # (V, E)
            valid = targets != ignore_index  # (n,)
            safe = torch.where(valid, targets, 0).long()  # gather needs an id on ignored rows
            total = hidden.new_zeros((), dtype=acc)
            grad_hidden = torch.empty_like(hidden) if wants_grad else None  # (n, E)
            grad_weight = torch.zeros_like(weight, dtype=acc) if wants_grad else None
            for start in range(0, n, chunk):
                rows = slice(start, min(start + chunk, n))
                loss, grad = _chunk(hidden[rows], w, safe[rows, None], valid[rows, None], acc,
                                    grad_weight)  # fmt: skip
                total = total + loss
                if grad_hidden is not None:
                    grad_hidden[rows] = grad
            count = valid.sum()
        ctx.mean, ctx.used = mean, False
        ctx.save_for_backward(count, grad_hidden, grad_weight)
        ctx.input_dtypes = (hidden.dtype, weight.dtype)
        return total / count if mean else total

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.used:
            raise RuntimeError(
                "chunked_cross_entropy: its backward runs once (the saved gradients are scaled "
                "in place); recompute the loss instead of retain_graph=True"
            )
        ctx.used = True
        count, grad_hidden, grad_weight = ctx.saved_tensors
        if grad_hidden is None:
            raise RuntimeError(
                "chunked_cross_entropy: no gradient was computed in the forward pass (it ran "
                "under torch.no_grad(), or neither input required a gradient)"
            )
        scale = grad_output / count if ctx.mean else grad_output
        hidden_dtype, weight_dtype = ctx.input_dtypes
        grad_hidden = grad_hidden.mul_(scale.to(grad_hidden.dtype))
        grad_weight = grad_weight.mul_(scale).to(weight_dtype)
        return grad_hidden.to(hidden_dtype), grad_weight, None, None, None, None, None, None


def _chunk(hidden, w, y, keep, acc, grad_weight):
    """One chunk: hidden (c, E), w (V, E) in the compute dtype, y and keep (c, 1) -> (its loss
    sum, d sum / d hidden (c, E) or None); adds d sum / d w to ``grad_weight`` (None: no
    gradients). A function of its own, so that the chunk's (c, V) logits are freed on return,
    before the next chunk's exist."""
    h = hidden.to(w.dtype)  # (c, E)
    z = (h @ w.T).to(acc)  # (c, V) logits, float32 at least (as cross_entropy upcasts)
    target_logit = z.gather(1, y)  # (c, 1), before z becomes the softmax
    top = z.amax(dim=1, keepdim=True)  # (c, 1)
    z.sub_(top).exp_()
    norm = z.sum(dim=1, keepdim=True)  # (c, 1)
    losses = norm.log() + top - target_logit  # logsumexp - target logit
    loss = torch.where(keep, losses, 0.0).sum()
    if grad_weight is None:
        return loss, None
    z.div_(norm)  # softmax
    z.scatter_add_(1, y, -keep.to(z.dtype))  # - onehot(target) on counted rows
    z.mul_(keep)  # ignored rows have no gradient
    g = z.to(w.dtype)  # d loss / d logits in the compute dtype: (c, V)
    del z  # under autocast: the float32 softmax goes before the products
    if g.dtype == acc:  # in place: no (V, E) temporary
        grad_weight.addmm_(g.T, h)
    else:  # a bf16 product, accumulated over chunks in float32
        grad_weight += g.T @ h  # (V, E)
    return loss, g @ w  # (c, E)


def _no_autocast(device_type: str) -> contextlib.AbstractContextManager:
    """Autocast off: the function casts to its compute dtype itself."""
    if device_type in ("cpu", "cuda"):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()
