"""How much memory one training step of gptref's GPT needs: the analytic memory model.

``estimate_training_memory(config, b)`` predicts the peak bytes of a steady-state
``train_step`` (forward, backward, AdamW step) term by term; ``gptref.plan.planner`` inverts it. Every term counts what PyTorch actually keeps for *this* model's
operations (checked tensor by tensor with ``torch.autograd.graph.saved_tensors_hooks``); the
peak is the largest of the step's phases, not the sum of every term.

Notation: ``N`` parameters, ``p`` bytes per parameter (4 for float32), ``L`` layers, ``E``
emb_dim, ``h`` heads, ``V`` vocab_size, ``C`` config.context_length, ``T`` the sequence length,
``b`` rows per forward pass (the micro-batch), ``u = b*T*E``, ``s = b*h*T*T``. ``a`` bytes per
activation element: ``p``, or 2 under bf16/fp16 autocast; ``r = p`` for the float32 residual
stream, which autocast leaves in float32 (block output = float32 shortcut + low-precision branch).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gptref._check import check_choice, check_int
from gptref.gpt_config import ATTN_IMPLS, GPTConfig, as_config

OPTIMIZERS = ("adamw", "adam", "sgd")
DEVICES = ("cpu", "cuda")
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
# what the math libraries keep after the first step, measured on CPU (x86, torch 2.13): MKL's
# sgemm buffer pool (MKL_DISABLE_FAST_MM=1 frees it) and, for bf16, oneDNN's primitive cache
# and scratchpad. On CUDA, the cuBLAS workspace (8 x 4 MiB, the CUBLAS_WORKSPACE_CONFIG default).
RUNTIME_BYTES = {
    ("cpu", False): 8 * 2**20,
    ("cpu", True): 12 * 2**20,
    ("cuda", False): 32 * 2**20,
    ("cuda", True): 32 * 2**20,
}


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of a steady-state ``train_step``: sizes of each term, and what is live at the peak.

    ``total = sum(breakdown.values())``: parameters, buffers, optimizer state and runtime persist;
    the rest of ``breakdown`` is what lives at ``peak_phase``. ``phases`` holds the bytes of
    every phase on top of the persistent terms (see ``estimate_training_memory``).
    """

    batch_size: int  # rows per forward pass (the micro-batch)
    context: int  # T, tokens per row
    loss_chunk: int | None  # rows per chunk of the chunked loss; None: the full logits
    recompute: int  # activation checkpointing of every k-th block; 0: none
    parameters: int  # N * p
    buffers: int  # the causal masks: L * C * C * 4 (float32, one per block)
    gradients: int  # N * p, all .grad tensors
    optimizer_state: int  # AdamW: exp_avg + exp_avg_sq = 2 * N * p; SGD (no momentum): 0
    runtime: int  # the math libraries' buffers and caches (RUNTIME_BYTES), measured
    activations_per_layer: int  # what autograd saves in one TransformerBlock
    activations: int  # what autograd saves in the whole forward, except the loss's log-softmax
    logits: int  # the loss side at its peak: log-softmax kept + its gradient + the logits'
    # gradient; chunked: one chunk's logits and temporaries + the head's gradients
    autocast_weights: int  # low-precision copies of the Linear weights, kept until backward
    peak_phase: str  # the phase of the step where memory peaks
    phases: Mapping[str, int]  # bytes on top of the persistent terms, by phase of the step
    breakdown: Mapping[str, int]  # what is live at the peak, by component; sums to total
    total: int  # predicted peak bytes of the process's training data


def dtype_name(dtype: str | torch.dtype | None, what: str = "dtype") -> str | None:
    """'bf16', 'bfloat16' or torch.bfloat16 -> 'bfloat16'; None stays None."""
    if dtype is None:
        return None
    name = str(dtype).removeprefix("torch.").lower() if isinstance(dtype, torch.dtype) else dtype
    name = _DTYPE_ALIASES.get(str(name).lower(), str(name).lower())
    if name not in _DTYPE_BYTES:
        raise ValueError(f"{what} must be one of {sorted(_DTYPE_BYTES)}, got {dtype!r}")
    return name


def estimate_training_memory(
    config: GPTConfig | Mapping[str, Any],
    batch_size: int,
    *,
    context: int | None = None,
    dtype: str | torch.dtype = "float32",
    autocast: str | torch.dtype | None = None,
    optimizer: str = "adamw",
    attn_impl: str | None = None,
    device: str = "cpu",
    accumulation_steps: int = 1,
    loss_chunk: int | None = None,
    recompute: int | None = None,
) -> MemoryEstimate:
    """config, b rows of T = context tokens -> MemoryEstimate of one steady-state ``train_step``.

    ``dtype``: the parameters' dtype; ``autocast``: ``train_step``'s ``autocast_dtype``;
    ``attn_impl`` defaults to ``config.attn_impl``; ``accumulation_steps > 1`` means ``b`` is
    the micro-batch and the gradients stay live through every micro-batch after the first.
    The levers: ``loss_chunk`` (``train_step``'s: the chunked loss, None the full logits) and
    ``recompute`` (activation checkpointing of blocks ``i % k == 0``; defaults to
    ``config.recompute``).
    Steady state: Adam's state exists and ``zero_grad`` has freed last step's gradients. The
    first step peaks lower (Adam's state is allocated in its optimizer step, after the
    activations are gone), so the steady state is what must fit.

    Persistent (bytes):

    - parameters ``N*p``; gradients ``N*p``; AdamW ``exp_avg`` + ``exp_avg_sq`` ``2*N*p``:
      16 bytes/param in float32: weights 4 + grads 4 + m and v 8 (the float32 form of the
      count in Rajbhandari et al. 2020, ZeRO, section 3.1); buffers: the float32 causal mask
      of every block, ``L*C*C*4``.

    Saved activations, per TransformerBlock. Korthikanti et al. 2022 ("Reducing Activation
    Recomputation in Large Transformer Models", section 4.1) count ``sbh(34 + 5as/h)`` bytes
    for a fp16 block with fused LayerNorm and GELU and 1-byte dropout masks; gptref's book ops
    save more, counted here from what autograd keeps (``saved_tensors_hooks``, per storage):

    - two LayerNorms written with elementary ops: input, ``x - mean``, the normalized ``x``
      (``6*u*r``) and ``sqrt(var + eps)`` (``2*b*T*r``); fused LayerNorm would keep 1*u + stats;
    - Linear inputs: one shared LN output for Q, K, V and one for fc1 (``2*u*a``) in float32;
      autocast casts per Linear, so Q, K and V each keep a copy (``4*u*a``);
    - Q, K, V (``3*u*a``), the attention output fed to ``out_proj`` (``u*a``);
    - attention, ``attn_impl="reference"``: softmax output, dropout mask and dropped weights
      (``3*s*a``; ``s*a`` without dropout) and ``mask.bool()`` (``C*C`` bytes);
      ``"sdpa"`` fused (CUDA; CPU without dropout): ``logsumexp`` ``b*h*T*4`` and its own
      copies of Q, K, V instead of the linear outputs (same ``3*u*a``), output shared with
      ``out_proj``'s input; ``"sdpa"`` on CPU with dropout runs the math path, in float32
      even under autocast: ``3*u*4 + 3*s*4``;
    - tanh-GELU from elementary ops: fc1 output, tanh, ``1 + tanh``, ``0.5*x`` and the GELU
      output fed to fc2: ``5 * 4u * a = 20*u*a`` (a fused GELU keeps ``4u``);
    - two shortcut dropouts: ``2*u*m``, where the mask ``m`` is the dropped tensor's dtype on
      CPU (``x * noise``, a float ``noise``) and 1 byte (bool) on CUDA (``native_dropout``).

    For the float32 reference block that is ``34*u*4 + 3*s*4 + C*C + 8*b*T`` bytes. The model
    adds token/position ids (``8*b*T + 8*T``), the embedding dropout mask, the final LayerNorm
    (``3*u*r``) and ``out_head``'s input (``u*a``). Autocast also keeps a low-precision copy of
    every Linear weight until its backward (``W16 = 2*(12*E*E*L + V*E)``).

    The loss: ``cross_entropy`` keeps its float32 ``log_softmax`` (``b*T*V*4``; float32 under
    autocast too). The phases of a step, each on top of the persistent terms (grads ``G0 = 0``
    in a plain step, ``N*p`` under accumulation):

    - ``forward-end``: activations + W16 + logits (``b*T*V*a``) + log-softmax (+ its float32
      input copy under autocast);
    - ``loss-backward``: activations + W16 + log-softmax, its incoming gradient and the
      logits' gradient, ``3*b*T*V*4``; the logits themselves died with ``calc_loss_batch``;
    - ``head-backward``: the logits' gradient (and its cast), ``out_head.weight.grad``
      (``V*E*p``) and the gradient of its input;
    - ``layers-backward``: the last block's backward while all activations live: the MLP's
      temporaries (two ``(b, T, 4E)`` gradients), or later the attention's (one ``(b, h, T,
      T)`` gradient at a time, reference attention), when the MLP half's saved tensors
      (GELU's ``20*u*a``, fc1's input, ln2's ``3*u*r + b*T*r``, one shortcut mask) are freed;
    - ``optimizer-step``: all gradients + AdamW's temporaries, on CPU ``2 * largest
      parameter`` (single-tensor AdamW: ``exp_avg_sq.sqrt() / c``), on CUDA ``N*p``
      (foreach AdamW: ``_foreach_sqrt`` of every ``exp_avg_sq``).

    The chunked loss (``loss_chunk = c`` rows, ``gptref.chunked_loss``) keeps no logits: the
    final LayerNorm's output ``h`` (``u*r``) is not saved (nor the targets), and the loss
    computes each chunk's gradients in its forward. Its phase ``loss-forward`` holds, besides
    the activations and the layers' W16 (``2*12*E*E*L``: the head's weight is cast by the loss,
    not autocast): ``h`` and its gradient (``2*u*r``), the head's float32 weight gradient
    (``V*E*4``), and one chunk's temporaries: float32 ``c*V*4`` logits/softmax + ``c*E*4``;
    under autocast ``c*V*(4 + 2)`` (the bf16 product and its float32 copy, or the float32
    softmax and its bf16 cast), ``c*E*2``, the head's bf16 weight ``V*E*2`` and its bf16
    weight-gradient product ``V*E*2``. The backward only scales the saved gradients in
    place; the head and loss backward phases are gone.

    Activation checkpointing (``recompute = k``): each of the ``ceil(L/k)`` checkpointed
    blocks saves only its input (``u*r``) instead of its activations, and autocast's bf16
    copies of its weights are freed when the forward's autocast ends; in ``layers-backward``
    the last block's activations exist again when it is checkpointed (its recomputation), and
    under autocast its weights' bf16 copies (``2*12*E*E``), while the earlier blocks' are
    saved: the backward's peak is at the last block.

    ``runtime``: buffers the math libraries keep (``RUNTIME_BYTES``): 8 MiB on CPU, 12 MiB
    with bf16 autocast (MKL's sgemm pool, oneDNN's primitive cache; measured), 32 MiB of
    cuBLAS workspace on CUDA. ``total`` is the largest phase plus the persistent terms.

    ``total`` predicts, on CPU, the peak resident set of a steady-state step over the bare
    process, with freed tensors returned to the kernel (``gptref.bench`` measures it with
    glibc's mmap threshold fixed at 64 KiB; glibc's defaults keep freed blocks and add up to
    ~20 %); on CUDA, ``torch.cuda.max_memory_allocated`` (reasoned from PyTorch's kernels,
    not yet measured: the bool dropout masks, float32 softmax and pow under autocast,
    fused sdpa, foreach AdamW). Each phase matched the CPU allocator's live bytes (profiler)
    to within 0.1 %, except ``layers-backward``, which overestimates by up to 4 %.
    """
    cfg = as_config(config)
    T = cfg.context_length if context is None else context
    for name, value in (
        ("batch_size", batch_size),
        ("context", T),
        ("accumulation_steps", accumulation_steps),
    ):
        check_int("estimate_training_memory", name, value, low=1)
    if loss_chunk is not None:
        check_int("estimate_training_memory", "loss_chunk", loss_chunk, low=1, hint=" or None")
    k = cfg.recompute if recompute is None else recompute
    check_int("estimate_training_memory", "recompute", k, low=0, hint=" (0: none)")
    if T > cfg.context_length:
        raise ValueError(
            f"estimate_training_memory: context {T} exceeds context_length {cfg.context_length}; "
            "use a config with a longer context_length"
        )
    param_dtype = dtype_name(dtype, "estimate_training_memory: dtype")
    low = dtype_name(autocast, "estimate_training_memory: autocast")
    check_choice("estimate_training_memory", "optimizer", optimizer, OPTIMIZERS)
    check_choice("estimate_training_memory", "device", device, DEVICES)
    attn = cfg.attn_impl if attn_impl is None else attn_impl
    check_choice("estimate_training_memory", "attn_impl", attn, ATTN_IMPLS)

    b, L, E, h, V, C = (
        batch_size,
        cfg.n_layers,
        cfg.emb_dim,
        cfg.n_heads,
        cfg.vocab_size,
        cfg.context_length,
    )
    cuda, dropout = device == "cuda", cfg.drop_rate > 0
    p = _DTYPE_BYTES[param_dtype]
    a = _DTYPE_BYTES[low] if low is not None else p
    r = p
    u, bT = b * T * E, b * T
    n = parameter_count(cfg)

    parameters, gradients = n * p, n * p
    optimizer_state = 2 * n * p if optimizer in ("adam", "adamw") else 0
    buffers = L * C * C * 4
    runtime = RUNTIME_BYTES[device, low is not None]

    layer = _block_activations(b, T, E, h, C, a, r, low is not None, attn, cuda, dropout)
    checkpointed = sum(1 for i in range(L) if k and i % k == 0)
    emb = 8 * bT + 8 * T + (u * (1 if cuda else r) if dropout else 0)
    chunked = loss_chunk is not None
    # final LayerNorm; the full loss also saves out_head's input and nll's targets
    final = 3 * u * r + bT * r + (0 if chunked else u * a + 8 * bT)
    activations = (L - checkpointed) * layer + checkpointed * u * r + emb + final

    # the loss works in float32 whenever the parameters are (autocast lists it as float32)
    f = 4 if p == 4 else p
    log_softmax = bT * V * f
    # autocast's bf16 weight copies: all of them while the forward runs; afterwards those that
    # autograd saved, so not the checkpointed blocks' (autocast's cache dies with its context)
    head16 = 0 if chunked else V * E
    w16_fwd = 2 * (12 * E * E * L + head16) if low is not None else 0
    w16 = 2 * (12 * E * E * (L - checkpointed) + head16) if low is not None else 0
    batch = 2 * b * accumulation_steps * T * 8
    g0 = gradients if accumulation_steps > 1 else 0
    head_grad = V * E * p

    phases: dict[str, dict[str, int]] = {}
    if chunked:
        c = min(loss_chunk, bT)
        if low is None:
            chunk = c * V * 4 + c * E * 4
        else:  # the bf16 head weight and its gradient product, the chunk's casts
            chunk = c * V * (4 + 2) + c * E * 2 + 2 * V * E * 2
        logits = 2 * u * r + V * E * 4 + chunk  # h, its gradient, the head's, one chunk
        phases["loss-forward"] = _phase(g0, activations, logits, w16_fwd + batch + 9 * bT)
    else:
        logits = 3 * log_softmax
        fwd_logits = bT * V * a + log_softmax + (bT * V * 4 if low is not None else 0)
        phases["forward-end"] = _phase(g0, activations, fwd_logits, w16_fwd + batch)
        phases["loss-backward"] = _phase(g0, activations, logits, w16 + batch)
        grad_logits = bT * V * f
        fresh = head_grad if g0 else 0  # under accumulation the new gradient is added, then freed
        if low is None:
            phases["head-backward"] = _phase(
                g0 or head_grad, activations, grad_logits, w16 + batch + u * a + fresh
            )
        else:  # the float32 gradient is cast down, the matmul runs, its weight gradient is cast up
            phases["logits-grad-cast"] = _phase(
                g0, activations, grad_logits + bT * V * a, w16 + batch
            )
            phases["head-backward"] = _phase(
                g0, activations, bT * V * a, w16 + batch + V * E * a + u * a
            )
            phases["head-grad-cast"] = _phase(
                g0 or head_grad, activations, 0, w16 + batch + V * E * a + fresh
            )
    mlp_ws, attn_ws = _block_backward_workspace(b, T, E, h, a, attn, cuda, dropout)
    # the MLP's backward runs first, with every saved tensor of the block live; by the
    # attention's, the MLP half's saved tensors (GELU, fc1's input, ln2, the second shortcut
    # mask) are freed
    mlp_half = 20 * u * a + u * a + 3 * u * r + bT * r + (u * (1 if cuda else a) if dropout else 0)
    layer_bwd = max(mlp_ws, attn_ws - mlp_half)
    if k and (L - 1) % k == 0:  # the last block is recomputed while the others' inputs live
        layer_bwd += layer - u * r + (2 * 12 * E * E if low is not None else 0)
    phases["layers-backward"] = _phase(g0 or head_grad, activations, 0, w16 + batch + layer_bwd)
    phases["backward-end"] = _phase(gradients, emb, 0, batch + 4 * 8 * bT)
    if optimizer == "sgd":
        opt_tmp = 0
    elif cuda:
        opt_tmp = n * p
    else:
        opt_tmp = 2 * max(V * E, C * E, 4 * E * E + 4 * E) * p
    phases["optimizer-step"] = _phase(gradients, 0, 0, batch + opt_tmp)

    peak_phase = max(phases, key=lambda k: sum(phases[k].values()))
    breakdown = {
        "parameters": parameters,
        "buffers": buffers,
        "optimizer_state": optimizer_state,
        "runtime": runtime,
        **phases[peak_phase],
    }
    return MemoryEstimate(
        batch_size=b,
        context=T,
        loss_chunk=loss_chunk,
        recompute=k,
        parameters=parameters,
        buffers=buffers,
        gradients=gradients,
        optimizer_state=optimizer_state,
        runtime=runtime,
        activations_per_layer=layer,
        activations=activations,
        logits=logits,
        autocast_weights=w16,
        peak_phase=peak_phase,
        phases={k: sum(v.values()) for k, v in phases.items()},
        breakdown=breakdown,
        total=sum(breakdown.values()),
    )


def _phase(gradients: int, activations: int, logits: int, workspace: int) -> dict[str, int]:
    return {
        "gradients": gradients,
        "activations": activations,
        "logits": logits,
        "workspace": workspace,
    }


def _block_activations(
    b: int,
    T: int,
    E: int,
    h: int,
    C: int,
    a: int,
    r: int,
    autocast: bool,
    attn: str,
    cuda: bool,
    dropout: bool,
) -> int:
    """Bytes autograd saves in one TransformerBlock's forward (see estimate_training_memory)."""
    u, s, bT = b * T * E, b * h * T * T, b * T
    layer_norms = 6 * u * r + 2 * bT * r
    linear_inputs = (4 if autocast else 2) * u * a
    mask = 1 if cuda else a  # dropout keeps a bool mask on CUDA, the float noise on CPU
    shortcut_masks = 2 * u * mask if dropout else 0
    # CUDA autocast runs pow in float32: fc1's float32 copy, float32 tanh and 1 + tanh, then
    # 0.5*x and fc2's input in low precision; CPU autocast keeps all five in low precision
    gelu = 4 * u * (3 * 4 + 2 * a) if autocast and cuda else 20 * u * a
    if attn == "sdpa" and (cuda or not dropout):  # fused kernel: Q, K, V, logsumexp, output
        attention = 3 * u * a + u * a + b * h * T * 4
    elif attn == "sdpa":  # CPU math path with dropout, in float32
        attention = 3 * u * 4 + 3 * s * 4 + u * a
    else:
        softmax = 4 if (cuda and autocast) else a  # CUDA autocast lists softmax as float32
        if not dropout:
            scores = s * softmax + (s * a if softmax != a else 0)
        elif cuda:  # softmax output, bool mask, and the matmul's (cast) copy of the dropped weights
            scores = s * softmax + s + s * a
        else:
            scores = 3 * s * a
        attention = 3 * u * a + scores + C * C + u * a
    return layer_norms + linear_inputs + shortcut_masks + gelu + attention


def _block_backward_workspace(
    b: int, T: int, E: int, h: int, a: int, attn: str, cuda: bool, dropout: bool
) -> int:
    """Temporaries of the last block's backward, beyond the saved activations: the gradients
    of two (b, h, T, T) tensors at once in attention, or of two (b, T, 4E) ones in GELU."""
    u, s = b * T * E, b * h * T * T
    fused = attn == "sdpa" and (cuda or not dropout)
    attention = 4 * u * a if fused else 1 * s * (4 if attn == "sdpa" else a) + 3 * u * a
    return 2 * 4 * u * a + u * a, attention


def parameter_count(config: GPTConfig | Mapping[str, Any], *, embeddings: bool = True) -> int:
    """Parameters of GPTModel(config), computed, not built; ``embeddings=False`` leaves out
    tok_emb and pos_emb (the 'non-embedding' N of Kaplan et al. 2020; out_head stays)."""
    cfg = as_config(config)
    E, L, V = cfg.emb_dim, cfg.n_layers, cfg.vocab_size
    qkv = 3 * E * E + (3 * E if cfg.qkv_bias else 0)
    block = qkv + (E * E + E) + (4 * E * E + 4 * E) + (4 * E * E + E) + 4 * E  # + 2 LayerNorms
    n = L * block + 2 * E + cfg.padded_vocab_size * E  # final norm, out_head (with its pad)
    return n + (V * E + cfg.context_length * E if embeddings else 0)


def available_memory(device: str = "cpu") -> int | None:
    """Bytes a new allocation can take: MemAvailable from /proc/meminfo on CPU, the free
    device memory on CUDA; None where it cannot be read."""
    if device == "cuda":
        return torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else None
    with contextlib.suppress(OSError):
        found = re.search(r"^MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        return int(found.group(1)) * 1024 if found else None
    return None


def check_fits_memory(need: int, what: str, fix: str, device: str = "cpu") -> None:
    """ValueError before allocating when ``need`` bytes exceed what ``device`` has free."""
    free = available_memory(device)
    if free is not None and need > free:
        raise ValueError(
            f"{what} needs {format_bytes(need)}, more than the {format_bytes(free)} this "
            f"machine has free; {fix}"
        )


def format_bytes(n: float) -> str:
    """1536 -> '1.50 KiB'; binary units, as ``free -h`` prints them."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
