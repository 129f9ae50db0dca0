"""Hugging Face GPT-2 ``model.safetensors`` <-> gptref's GPTModel, offline, on local files.

The two layouts (E = emb_dim, C = context_length, V = vocab_size, block i in 0..n_layers-1)::

    Hugging Face GPT-2                      gptref (the book's names)
    wte.weight            (V, E)            tok_emb.weight                  (V, E)
    wpe.weight            (C, E)            pos_emb.weight                  (C, E)
    h.i.ln_1.weight/bias  (E,)              trf_blocks.i.norm1.scale/shift  (E,)
    h.i.attn.c_attn.weight (E, 3E)          trf_blocks.i.att.W_query/W_key/W_value.weight (E, E)
    h.i.attn.c_attn.bias   (3E,)            trf_blocks.i.att.W_query/W_key/W_value.bias   (E,)
    h.i.attn.c_proj.weight (E, E) + bias    trf_blocks.i.att.out_proj.weight (E, E) + bias
    h.i.ln_2.weight/bias  (E,)              trf_blocks.i.norm2.scale/shift  (E,)
    h.i.mlp.c_fc.weight   (E, 4E) + bias    trf_blocks.i.ff.layers.0.weight (4E, E) + bias
    h.i.mlp.c_proj.weight (4E, E) + bias    trf_blocks.i.ff.layers.2.weight (E, 4E) + bias
    ln_f.weight/bias      (E,)              final_norm.scale/shift          (E,)
    lm_head.weight (V, E), optional         out_head.weight                 (V, E)

GPT-2's linear layers are ``Conv1D`` modules, which store the weight as (in, out): the
transpose of ``nn.Linear``'s (out, in), so every c_attn / c_proj / c_fc weight is transposed
on the way through. ``c_attn`` fuses the query, key and value projections: q, k and v are
the three consecutive E-wide blocks of its last dimension, in that order (weight and bias).
Heads need no rearranging: both models split a projection into heads as
``view(b, T, n_heads, head_dim)``, so ``n_heads`` is not in the file and is taken from
GPT-2's sizes (768: 12, 1024: 16, 1280: 20, 1600: 25) unless given.

The rules where the formats differ:

- **Prefix.** Names may carry ``transformer.`` (as ``GPT2LMHeadModel.save_pretrained``
  writes them) or not (as the released ``openai-community/gpt2`` file has them); import
  accepts both. ``gptref_to_hf`` returns names without the prefix.
- **Output head.** GPT-2 ties ``lm_head`` to ``wte``; GPTModel's ``out_head`` is a weight
  of its own. Import: ``out_head`` <- ``lm_head.weight`` when the file has it, else <-
  ``wte.weight`` (a copy: fine-tuning the imported model unties them). Export: ``wte``
  always; ``lm_head.weight`` only when ``out_head`` differs from ``tok_emb`` (bitwise), e.g.
  a model trained from scratch. ``export_hf`` then writes every name with the
  ``transformer.`` prefix, because transformers (4.x) reads ``lm_head.weight`` only in that
  layout and rejects it beside unprefixed names; load such a file with
  ``tie_word_embeddings=False`` in the GPT-2 config, or transformers re-ties the head to wte.
- **qkv_bias.** GPT-2's ``c_attn`` always has a bias, so imported models have
  ``qkv_bias=True``. A model with ``qkv_bias=False`` (the book's) exports zero q/k/v biases,
  which compute exactly the same function; it comes back as ``qkv_bias=True`` with zeros.
- **Mask buffers.** ``h.i.attn.bias`` and ``h.i.attn.masked_bias`` are GPT-2's causal-mask
  buffers, not weights: import ignores them (GPTModel builds its own ``att.mask``, which
  ``hf_to_gptref`` adds so the result loads with ``strict=True``) and export never writes
  them (transformers rebuilds them and does not need them in the file); likewise export
  ignores gptref's ``att.mask``.
- **Dtypes.** ``hf_to_gptref`` and ``gptref_to_hf`` keep each tensor's dtype and device;
  ``import_hf`` stores float32, the dtype GPTModel is built in (GPT-2's released weights
  are float32), and ``export_hf`` writes what the checkpoint holds.

The mapping functions return new contiguous tensors that share memory neither with their
input nor with each other (safetensors refuses shared storage).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from gptref._check import few, one_line
from gptref._io import atomic_write
from gptref.checkpoint import load_checkpoint, load_config, save_checkpoint
from gptref.model import GPTConfig, GPTModel
from gptref.rundir import find_checkpoint

HF_PREFIX = "transformer."  # GPT2LMHeadModel's name for its GPT2Model, on every name but lm_head
GPT2_HEADS = {768: 12, 1024: 16, 1280: 20, 1600: 25}  # emb_dim -> n_heads of the four GPT-2s

# within block i: (gptref name, HF name, Conv1D weight to transpose); c_attn is split apart
_BLOCK = (
    ("att.out_proj.weight", "attn.c_proj.weight", True),
    ("att.out_proj.bias", "attn.c_proj.bias", False),
    ("ff.layers.0.weight", "mlp.c_fc.weight", True),
    ("ff.layers.0.bias", "mlp.c_fc.bias", False),
    ("ff.layers.2.weight", "mlp.c_proj.weight", True),
    ("ff.layers.2.bias", "mlp.c_proj.bias", False),
    ("norm1.scale", "ln_1.weight", False),
    ("norm1.shift", "ln_1.bias", False),
    ("norm2.scale", "ln_2.weight", False),
    ("norm2.shift", "ln_2.bias", False),
)
_TOP = (
    ("tok_emb.weight", "wte.weight"),
    ("pos_emb.weight", "wpe.weight"),
    ("final_norm.scale", "ln_f.weight"),
    ("final_norm.shift", "ln_f.bias"),
)
_QKV = ("W_query", "W_key", "W_value")  # the order of the three blocks of c_attn
_HF_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")  # causal-mask buffers, not weights
_HF_BLOCK = re.compile(r"h\.(\d+)\.")
_GPTREF_BLOCK = re.compile(r"trf_blocks\.(\d+)\.")


# ---------------------------------------------------------------- state dicts


def config_from_hf(
    hf_state: Mapping[str, torch.Tensor], n_heads: int | None = None, drop_rate: float = 0.1
) -> GPTConfig:
    """HF GPT-2 state dict -> the GPTConfig it fits (``qkv_bias=True``).

    ``vocab_size`` and ``emb_dim`` come from ``wte.weight`` (V, E), ``context_length`` from
    ``wpe.weight`` (C, E), ``n_layers`` from the ``h.{i}`` blocks; ``n_heads`` from GPT-2's
    sizes (``GPT2_HEADS``) unless given. ``drop_rate`` 0.1 is GPT-2's. The whole layout is
    checked first, as in ``hf_to_gptref``."""
    return _config("config_from_hf", _canonical_hf("config_from_hf", hf_state), n_heads, drop_rate)


def hf_to_gptref(hf_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF GPT-2 state dict (with or without ``transformer.``) -> a complete gptref state dict.

    ``GPTModel(config_from_hf(hf_state)).load_state_dict(result)`` works with
    ``strict=True``: the result holds every parameter (q/k/v biases included) and each
    block's ``att.mask`` buffer, float32 (C, C). ``out_head.weight`` is ``lm_head.weight``
    when present, else a copy of ``wte.weight``. A missing or unexpected name, a shape that
    does not fit ``wte``/``wpe``, or a non-float tensor is a ValueError naming it."""
    hf = _canonical_hf("hf_to_gptref", hf_state)
    _, context, emb, n_layers = _hf_dims("hf_to_gptref", hf)
    out = {ours: _copy(hf[theirs]) for ours, theirs in _TOP}
    for i in range(n_layers):
        c_attn_w = hf[f"h.{i}.attn.c_attn.weight"]  # (E, 3E): q | k | v along the last dim
        c_attn_b = hf[f"h.{i}.attn.c_attn.bias"]  # (3E,)
        for j, name in enumerate(_QKV):
            block = slice(j * emb, (j + 1) * emb)
            out[f"trf_blocks.{i}.att.{name}.weight"] = _copy(c_attn_w[:, block].T)  # (E, E)
            out[f"trf_blocks.{i}.att.{name}.bias"] = _copy(c_attn_b[block])  # (E,)
        for ours, theirs, transpose in _BLOCK:
            t = hf[f"h.{i}.{theirs}"]
            out[f"trf_blocks.{i}.{ours}"] = _copy(t.T if transpose else t)
        # GPTModel's own causal mask, as model.py builds it, so a strict load finds it
        out[f"trf_blocks.{i}.att.mask"] = torch.triu(
            torch.ones(context, context, device=hf["wte.weight"].device), diagonal=1
        )
    out["out_head.weight"] = _copy(hf.get("lm_head.weight", hf["wte.weight"]))
    return out


def gptref_to_hf(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """gptref state dict (``GPTModel.state_dict()``) -> HF GPT-2 state dict, names without
    ``transformer.``.

    ``c_attn`` is q | k | v concatenated along the last dim, (E, 3E), with zeros for the
    bias when the model has ``qkv_bias=False``; every Linear weight is transposed to Conv1D's
    (in, out). ``lm_head.weight`` is included only when ``out_head.weight`` differs from
    ``tok_emb.weight``. ``att.mask`` buffers are optional and not exported. A missing or
    unexpected name, or a shape that does not fit ``tok_emb``/``pos_emb``, is a ValueError."""
    sd = dict(state_dict)
    vocab = sd["tok_emb.weight"].shape[0] if "tok_emb.weight" in sd else None
    head = sd.get("out_head.weight")
    if vocab is not None and head is not None and head.shape[0] > vocab:
        sd["out_head.weight"] = head[:vocab]  # a vocab-padded head: its extra rows are zeros
    _, _, emb, n_layers, qkv_bias = _gptref_dims("gptref_to_hf", sd)
    out = {theirs: _copy(sd[ours]) for ours, theirs in _TOP}
    for i in range(n_layers):
        att = f"trf_blocks.{i}.att"
        out[f"h.{i}.attn.c_attn.weight"] = torch.cat(
            [sd[f"{att}.{name}.weight"].T for name in _QKV], dim=1
        )  # (E, 3E)
        if qkv_bias:
            biases = [sd[f"{att}.{name}.bias"] for name in _QKV]
        else:
            # a Linear without bias is exactly one with a zero bias; Conv1D always has one
            w = sd[f"{att}.W_query.weight"]
            biases = [torch.zeros(emb, dtype=w.dtype, device=w.device)] * 3
        out[f"h.{i}.attn.c_attn.bias"] = torch.cat(biases)  # (3E,)
        for ours, theirs, transpose in _BLOCK:
            t = sd[f"trf_blocks.{i}.{ours}"]
            out[f"h.{i}.{theirs}"] = _copy(t.T if transpose else t)
    if not torch.equal(sd["out_head.weight"], sd["tok_emb.weight"]):
        out["lm_head.weight"] = _copy(sd["out_head.weight"])
    return out


# ---------------------------------------------------------------- files


def load_hf_safetensors(
    path: str | os.PathLike, n_heads: int | None = None, drop_rate: float = 0.1
) -> tuple[GPTConfig, dict[str, torch.Tensor]]:
    """A Hugging Face GPT-2 ``model.safetensors`` -> (config, gptref state dict), on CPU.

    ``GPTModel(config).load_state_dict(state_dict)`` then gives GPT-2 with the book's names.
    ``n_heads`` and ``drop_rate`` as in ``config_from_hf``. A missing file, a directory,
    a file that is not safetensors, or one that is not GPT-2's layout is a ValueError naming
    the file."""
    path = Path(path)
    where = f"load_hf_safetensors: {path}"
    hf = _read_safetensors("load_hf_safetensors", path)
    # the config checks the whole layout, so its errors name the file
    cfg = _config(where, _canonical_hf(where, hf), n_heads, drop_rate)
    return cfg, hf_to_gptref(hf)


def import_hf(
    safetensors_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    n_heads: int | None = None,
    drop_rate: float = 0.1,
) -> Path:
    """Hugging Face GPT-2 ``model.safetensors`` -> a gptref checkpoint directory at
    ``out_dir`` (step 0, epoch 0, empty history, no optimizer state) -> its Path.

    The weights are stored float32; ``gptref eval`` / ``gptref generate --checkpoint
    out_dir`` and ``load_checkpoint`` read it like any checkpoint. ``out_dir`` may be new or
    an earlier checkpoint (replaced atomically), never other data."""
    cfg, state_dict = load_hf_safetensors(safetensors_path, n_heads, drop_rate)
    model = GPTModel(cfg)
    model.load_state_dict(state_dict)
    return save_checkpoint(out_dir, model, step=0, epoch=0, config=cfg, history={})


def export_hf(checkpoint_dir: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """gptref checkpoint directory (or a ``gptref train`` run directory, whose checkpoint/ is
    read) -> a Hugging Face GPT-2 ``model.safetensors`` at ``out_path`` (written atomically,
    replacing a file there) -> its Path.

    Tied head (``out_head`` == ``tok_emb``, e.g. an imported GPT-2): the names of the
    released GPT-2 file, no prefix, no ``lm_head``. Untied head (a model trained from
    scratch): ``transformer.``-prefixed names plus ``lm_head.weight``, the layout
    ``GPT2LMHeadModel.save_pretrained`` writes; give transformers ``tie_word_embeddings=False``.
    Metadata ``{"format": "pt"}``, as transformers expects. The checkpoint is verified first
    (``load_checkpoint``): a missing or damaged one is a ValueError."""
    checkpoint_dir, out_path = Path(checkpoint_dir), Path(out_path)
    if out_path.is_dir():
        raise ValueError(
            f"export_hf: {out_path} is a directory; give a file name such as "
            f"{out_path / 'model.safetensors'}"
        )
    checkpoint_dir = find_checkpoint(checkpoint_dir)
    model = GPTModel(GPTConfig.from_dict(load_config(checkpoint_dir)))
    load_checkpoint(checkpoint_dir, model)
    hf = gptref_to_hf(model.state_dict())
    if "lm_head.weight" in hf:
        hf = {(k if k == "lm_head.weight" else HF_PREFIX + k): v for k, v in hf.items()}
    return atomic_write(out_path, lambda tmp: save_file(hf, str(tmp), metadata={"format": "pt"}))


# ---------------------------------------------------------------- layout checks


def _config(
    where: str, hf: Mapping[str, torch.Tensor], n_heads: int | None, drop_rate: float
) -> GPTConfig:
    vocab, context, emb, n_layers = _hf_dims(where, hf)
    if n_heads is None:
        if emb not in GPT2_HEADS:
            raise ValueError(
                f"{where}: emb_dim {emb} is none of GPT-2's sizes {sorted(GPT2_HEADS)}, so the "
                "number of heads is unknown; pass n_heads (a divisor of emb_dim)"
            )
        n_heads = GPT2_HEADS[emb]
    return GPTConfig(
        vocab_size=vocab,
        context_length=context,
        emb_dim=emb,
        n_heads=n_heads,
        n_layers=n_layers,
        drop_rate=drop_rate,
        qkv_bias=True,
    )


def _read_safetensors(where: str, path: Path) -> dict[str, torch.Tensor]:
    if path.is_dir():
        raise ValueError(
            f"{where}: {path} is a directory; pass the model.safetensors file inside it"
        )
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


def _canonical_hf(where: str, hf_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
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


def _hf_dims(where: str, hf: Mapping[str, torch.Tensor]) -> tuple[int, int, int, int]:
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


def _gptref_dims(where: str, sd: Mapping[str, torch.Tensor]) -> tuple[int, int, int, int, bool]:
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
        for name in _QKV:
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


# ---------------------------------------------------------------- helpers


def _copy(t: torch.Tensor) -> torch.Tensor:
    """A contiguous copy: no memory shared with the input or with any other output."""
    return t.detach().clone(memory_format=torch.contiguous_format)


def _natural(name: str) -> list[tuple[int, str]]:
    """Sort key: h.2 before h.10."""
    return [(int(part), "") if part.isdigit() else (-1, part) for part in name.split(".")]
