"""The two state-dict layouts ``gptref.weights.hf`` converts between, checked completely: every
name present, none unexpected, every shape consistent with the sizes that ``wte``/``wpe``
(Hugging Face GPT-2) or ``tok_emb``/``pos_emb`` (gptref) imply. Errors name the tensor."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open

from gptref._check import FieldError, few, one_line
from gptref.gpt_config import GPTConfig

HF_PREFIX = "transformer."  # GPT2LMHeadModel's name for its GPT2Model, on every name but lm_head
GPT2_HEADS = {768: 12, 1024: 16, 1280: 20, 1600: 25}  # emb_dim -> n_heads of the four GPT-2s
QKV = ("W_query", "W_key", "W_value")  # gptref's names of the three blocks of c_attn, in order
_HF_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")  # causal-mask buffers, not weights
_HF_BLOCK = re.compile(r"h\.(\d+)\.")
_GPTREF_BLOCK = re.compile(r"trf_blocks\.(\d+)\.")


def config_for(
    where: str, hf: Mapping[str, torch.Tensor], n_heads: int | None, drop_rate: float
) -> GPTConfig:
    vocab, context, emb, n_layers = hf_dims(where, hf)
    if n_heads is None:
        if emb not in GPT2_HEADS:
            raise ValueError(
                f"{where}: emb_dim {emb} is none of GPT-2's sizes {sorted(GPT2_HEADS)}, so the "
                "number of heads is unknown; pass n_heads (a divisor of emb_dim)"
            )
        n_heads = GPT2_HEADS[emb]
    elif type(n_heads) is int and n_heads >= 1 and emb % n_heads:
        divisors = [d for d in range(1, emb + 1) if emb % d == 0]
        raise FieldError(where, "n_heads", f"must divide the weights' width {emb}, got {n_heads}; "
                         f"one of {few([str(d) for d in divisors], 8)}")  # fmt: skip
    return GPTConfig(
        vocab_size=vocab,
        context_length=context,
        emb_dim=emb,
        n_heads=n_heads,
        n_layers=n_layers,
        drop_rate=drop_rate,
        qkv_bias=True,
    )


def read_safetensors(where: str, path: Path) -> dict[str, torch.Tensor]:
    if path.is_dir():
        raise ValueError(
            f"{where}: {path} is a directory; pass the model.safetensors file inside it"
        )
    if path.exists() and not path.is_file():
        raise ValueError(f"{where}: {path} is not a regular file (a FIFO, device or socket); "
                         "pass a Hugging Face GPT-2 model.safetensors")  # fmt: skip
    if not path.is_file():
        raise ValueError(
            f"{where}: no file at {path}; pass the local path of a Hugging Face GPT-2 "
            "model.safetensors (e.g. from openai-community/gpt2)"
        )
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except Exception as e:
        raise ValueError(
            f"{where}: {path} is not a readable safetensors file ({one_line(e, kind=True)}); pass a "
            "Hugging Face model.safetensors (pytorch_model.bin is not read: it is a pickle)"
        ) from e


def canonical_hf(where: str, hf_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Names without ``transformer.``, the mask buffers dropped; tensors only."""
    if not isinstance(hf_state, Mapping):
        raise TypeError(f"{where}: expected a dict of tensors, got {type(hf_state).__name__}")
    if "tok_emb.weight" in hf_state:
        raise ValueError(
            f"{where}: has gptref names (tok_emb.weight, trf_blocks.*), not Hugging Face "
            "GPT-2 names; it is already in gptref's layout (load_checkpoint reads it, "
            "gptref_to_hf converts it)"
        )
    out: dict[str, torch.Tensor] = {}
    for name, value in hf_state.items():
        short = name[len(HF_PREFIX) :] if name.startswith(HF_PREFIX) else name
        if short in out:
            raise ValueError(
                f"{where}: {short} appears both with and without the {HF_PREFIX!r} prefix; "
                "keep one of them"
            )
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{where}: {name} is a {type(value).__name__}, not a tensor")
        if not _HF_BUFFER.fullmatch(short):
            out[short] = value
    return out


def hf_dims(where: str, hf: Mapping[str, torch.Tensor]) -> tuple[int, int, int, int]:
    """Check a canonical HF state dict completely -> (vocab, context, emb, n_layers)."""
    (vocab, emb), (context, _) = _matrix(where, hf, "wte.weight"), _matrix(where, hf, "wpe.weight")
    n_layers = _n_blocks(where, hf, _HF_BLOCK, "h.0.attn.c_attn.weight")
    shapes = {"wte.weight": (vocab, emb), "wpe.weight": (context, emb)}
    shapes |= {"ln_f.weight": (emb,), "ln_f.bias": (emb,)}
    for i in range(n_layers):
        h = f"h.{i}"
        shapes |= {
            f"{h}.ln_1.weight": (emb,),
            f"{h}.ln_1.bias": (emb,),
            f"{h}.attn.c_attn.weight": (emb, 3 * emb),
            f"{h}.attn.c_attn.bias": (3 * emb,),
            f"{h}.attn.c_proj.weight": (emb, emb),
            f"{h}.attn.c_proj.bias": (emb,),
            f"{h}.ln_2.weight": (emb,),
            f"{h}.ln_2.bias": (emb,),
            f"{h}.mlp.c_fc.weight": (emb, 4 * emb),
            f"{h}.mlp.c_fc.bias": (4 * emb,),
            f"{h}.mlp.c_proj.weight": (4 * emb, emb),
            f"{h}.mlp.c_proj.bias": (emb,),
        }
    if "lm_head.weight" in hf:  # optional; a weight like the others when present
        shapes["lm_head.weight"] = (vocab, emb)
    sizes = f"emb_dim {emb}, vocab {vocab}, context {context} (from wte.weight and wpe.weight)"
    _check_names(where, hf, shapes, {}, sizes, "GPT-2 (GPT2Model or GPT2LMHeadModel)")
    return vocab, context, emb, n_layers


def gptref_dims(where: str, sd: Mapping[str, torch.Tensor]) -> tuple[int, int, int, int, bool]:
    """Check a gptref state dict completely -> (vocab, context, emb, n_layers, qkv_bias)."""
    if "wte.weight" in sd or f"{HF_PREFIX}wte.weight" in sd:
        raise ValueError(
            f"{where}: has Hugging Face GPT-2 names (wte.weight, h.*), not gptref names; "
            "convert it with hf_to_gptref"
        )
    for name, value in sd.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{where}: {name} is a {type(value).__name__}, not a tensor")
    (vocab, emb), (context, _) = (
        _matrix(where, sd, "tok_emb.weight"),
        _matrix(where, sd, "pos_emb.weight"),
    )
    n_layers = _n_blocks(where, sd, _GPTREF_BLOCK, "trf_blocks.0.att.W_query.weight")
    qkv_bias = "trf_blocks.0.att.W_query.bias" in sd
    shapes = {
        "tok_emb.weight": (vocab, emb),
        "pos_emb.weight": (context, emb),
        "final_norm.scale": (emb,),
        "final_norm.shift": (emb,),
        "out_head.weight": (vocab, emb),
    }
    buffers = {}
    for i in range(n_layers):
        b = f"trf_blocks.{i}"
        for name in QKV:
            shapes[f"{b}.att.{name}.weight"] = (emb, emb)
            if qkv_bias:
                shapes[f"{b}.att.{name}.bias"] = (emb,)
        shapes |= {
            f"{b}.att.out_proj.weight": (emb, emb),
            f"{b}.att.out_proj.bias": (emb,),
            f"{b}.ff.layers.0.weight": (4 * emb, emb),
            f"{b}.ff.layers.0.bias": (4 * emb,),
            f"{b}.ff.layers.2.weight": (emb, 4 * emb),
            f"{b}.ff.layers.2.bias": (emb,),
            f"{b}.norm1.scale": (emb,),
            f"{b}.norm1.shift": (emb,),
            f"{b}.norm2.scale": (emb,),
            f"{b}.norm2.shift": (emb,),
        }
        buffers[f"{b}.att.mask"] = (context, context)
    sizes = f"emb_dim {emb}, vocab {vocab}, context {context} (from tok_emb and pos_emb)"
    _check_names(where, sd, shapes, buffers, sizes, "GPTModel")
    return vocab, context, emb, n_layers, qkv_bias


def _matrix(where: str, state: Mapping[str, torch.Tensor], name: str) -> tuple[int, int]:
    if name not in state:
        raise ValueError(
            f"{where}: {name} is missing, so the model's sizes are unknown; "
            f"the names present include {few(sorted(state, key=_natural))}; is this "
            f"{'a GPT-2 model.safetensors' if name == 'wte.weight' else 'a GPTModel state dict'}?"
        )
    t = state[name]
    if t.dim() != 2:
        raise ValueError(f"{where}: {name} must be a matrix, got shape {tuple(t.shape)}")
    return tuple(t.shape)


def _n_blocks(
    where: str, state: Mapping[str, torch.Tensor], pattern: re.Pattern, first: str
) -> int:
    """1 + the highest block index among the names; the names of each block are checked later."""
    indices = [int(m.group(1)) for name in state if (m := pattern.match(name))]
    if not indices:
        raise ValueError(
            f"{where}: no transformer blocks (no {first}); the model needs at least one"
        )
    return max(indices) + 1


def _check_names(
    where: str,
    state: Mapping[str, torch.Tensor],
    shapes: Mapping[str, tuple[int, ...]],
    buffers: Mapping[str, tuple[int, ...]],
    sizes: str,
    layout: str,
) -> None:
    """Every name of ``shapes`` present with its shape and a float dtype; ``buffers`` may be
    present (with their shape, any dtype); nothing else."""
    missing = sorted(set(shapes) - set(state), key=_natural)
    unexpected = sorted(set(state) - set(shapes) - set(buffers), key=_natural)
    if missing:
        raise ValueError(
            f"{where}: missing {few(missing)} ({len(missing)} in all); not a complete "
            f"{layout} state dict"
        )
    if unexpected:
        raise ValueError(
            f"{where}: unexpected {few(unexpected)}; these names are not in {layout}'s "
            "layout (a different architecture?)"
        )
    for name, value in state.items():
        expected = shapes.get(name, buffers.get(name))
        if tuple(value.shape) != expected:
            raise ValueError(
                f"{where}: {name} has shape {tuple(value.shape)}, expected {expected} for "
                f"{sizes}; the tensors do not belong to one model"
            )
        if not value.dtype.is_floating_point and name in shapes:
            raise ValueError(
                f"{where}: {name} has dtype {value.dtype}; weights must be floating point"
            )


def _natural(name: str) -> list[tuple[int, str]]:
    """Sort key: h.2 before h.10."""
    return [(int(part), "") if part.isdigit() else (-1, part) for part in name.split(".")]
