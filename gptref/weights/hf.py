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

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from gptref._io import atomic_write, read_json_object
from gptref._owned import claim_dir, claim_file, is_folder, read_marker
from gptref.model import GPTConfig, GPTModel
from gptref.run import checkpoint
from gptref.run.checkpoint import load_checkpoint, load_config, save_checkpoint
from gptref.run.rundir import CHECKPOINT, PARTS, find_checkpoint, is_run
from gptref.weights.hf_layout import (
    HF_PREFIX,
    QKV,
    canonical_hf,
    config_for,
    gptref_dims,
    hf_dims,
    read_safetensors,
)

EXPORT_METADATA = {"format": "pt", "gptref": "export-hf"}  # "format": what transformers reads

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


# ---------------------------------------------------------------- state dicts


def config_from_hf(
    hf_state: Mapping[str, torch.Tensor], n_heads: int | None = None, drop_rate: float = 0.1
) -> GPTConfig:
    """HF GPT-2 state dict -> the GPTConfig it fits (``qkv_bias=True``).

    ``vocab_size`` and ``emb_dim`` come from ``wte.weight`` (V, E), ``context_length`` from
    ``wpe.weight`` (C, E), ``n_layers`` from the ``h.{i}`` blocks; ``n_heads`` from GPT-2's
    sizes (``GPT2_HEADS``) unless given. ``drop_rate`` 0.1 is GPT-2's. The whole layout is
    checked first, as in ``hf_to_gptref``."""
    return config_for(
        "config_from_hf", canonical_hf("config_from_hf", hf_state), n_heads, drop_rate
    )


def hf_to_gptref(hf_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF GPT-2 state dict (with or without ``transformer.``) -> a complete gptref state dict.

    ``GPTModel(config_from_hf(hf_state)).load_state_dict(result)`` works with
    ``strict=True``: the result holds every parameter (q/k/v biases included) and each
    block's ``att.mask`` buffer, float32 (C, C). ``out_head.weight`` is ``lm_head.weight``
    when present, else a copy of ``wte.weight``. A missing or unexpected name, a shape that
    does not fit ``wte``/``wpe``, or a non-float tensor is a ValueError naming it."""
    hf = canonical_hf("hf_to_gptref", hf_state)
    _, context, emb, n_layers = hf_dims("hf_to_gptref", hf)
    out = {ours: _copy(hf[theirs]) for ours, theirs in _TOP}
    for i in range(n_layers):
        c_attn_w = hf[f"h.{i}.attn.c_attn.weight"]  # (E, 3E): q | k | v along the last dim
        c_attn_b = hf[f"h.{i}.attn.c_attn.bias"]  # (3E,)
        for j, name in enumerate(QKV):
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
    _, _, emb, n_layers, qkv_bias = gptref_dims("gptref_to_hf", sd)
    out = {theirs: _copy(sd[ours]) for ours, theirs in _TOP}
    for i in range(n_layers):
        att = f"trf_blocks.{i}.att"
        out[f"h.{i}.attn.c_attn.weight"] = torch.cat(
            [sd[f"{att}.{name}.weight"].T for name in QKV], dim=1
        )  # (E, 3E)
        if qkv_bias:
            biases = [sd[f"{att}.{name}.bias"] for name in QKV]
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
    hf = read_safetensors("load_hf_safetensors", path)
    # the config checks the whole layout, so its errors name the file
    cfg = config_for(where, canonical_hf(where, hf), n_heads, drop_rate)
    return cfg, hf_to_gptref(hf)


def import_hf(
    safetensors_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    n_heads: int | None = None,
    drop_rate: float = 0.1,
    *,
    overwrite: bool = False,
) -> Path:
    """Hugging Face GPT-2 ``model.safetensors`` (or the model directory holding it) -> a
    gptref checkpoint directory at ``out_dir`` (step 0, epoch 0, empty history, no optimizer
    state) -> its Path.

    ``n_heads`` (the file does not record it): given, else the ``n_head`` of the
    ``config.json`` beside the file (``save_pretrained`` writes one), else GPT-2's for the
    width. The weights are stored float32; ``gptref eval`` / ``gptref generate --checkpoint
    out_dir`` and ``load_checkpoint`` read it like any checkpoint. ``out_dir`` may be new or
    empty; an earlier import there is replaced with ``overwrite`` (its snapshots go once the
    new one is saved); never other data, never a run or a run's checkpoint/."""
    out_dir = Path(out_dir)
    if out_dir.name == CHECKPOINT and is_run(out_dir.parent):
        raise ValueError(f"import_hf: {out_dir} is a training run's checkpoint; import into a "
                         "new folder")  # fmt: skip
    earlier = claim_dir(out_dir, checkpoint.KIND, overwrite=overwrite)
    file, hf_cfg = hf_files(safetensors_path)
    if n_heads is None and hf_cfg is not None:
        n_heads = hf_cfg["n_head"]
    cfg, state_dict = load_hf_safetensors(file, n_heads, drop_rate)
    if hf_cfg is not None:
        _check_against(file.parent / "config.json", hf_cfg, cfg)
    model = GPTModel(cfg)
    model.load_state_dict(state_dict)
    return save_checkpoint(out_dir, model, step=0, epoch=0, config=cfg, history={},
                           keep=1 if earlier else 2)  # fmt: skip


def hf_files(path: str | os.PathLike) -> tuple[Path, dict[str, Any] | None]:
    """A model.safetensors or the directory holding it -> (the file, the GPT-2 settings of the
    ``config.json`` beside it, or None when there is none). The config's values are checked:
    ints >= 1 for n_head, n_embd, n_layer, n_positions, vocab_size."""
    path = Path(path)
    file = path / "model.safetensors" if path.is_dir() else path
    if path.is_dir() and not file.is_file():
        raise ValueError(
            f"import_hf: {path} is a directory; pass the model.safetensors file, or a directory "
            "holding one (this one holds none)"
        )
    config_file = file.parent / "config.json"
    if not config_file.is_file():
        return file, None
    raw = read_json_object(config_file, "import_hf")
    if "n_embd" not in raw and raw.get("model_type") != "gpt2":
        return file, None  # another config.json (a gptref checkpoint's, say): not ours to read
    settings = {}
    for key in ("n_head", "n_embd", "n_layer", "n_positions", "vocab_size"):
        value = raw.get(key)
        if type(value) is not int or value < 1:
            raise ValueError(f"import_hf: {config_file}: {key} must be an int >= 1, got {value!r}")
        settings[key] = value
    return file, settings


def _check_against(config_file: Path, hf: dict[str, Any], cfg: GPTConfig) -> None:
    """The config.json beside the weights must describe them."""
    ours = {"n_head": cfg.n_heads, "n_embd": cfg.emb_dim, "n_layer": cfg.n_layers,
            "n_positions": cfg.context_length, "vocab_size": cfg.vocab_size}  # fmt: skip
    for key, value in ours.items():
        if hf[key] != value:
            raise ValueError(
                f"import_hf: {config_file} says {key} {hf[key]}, the weights have {value}; "
                "they are not the same model"
            )


def export_hf(
    checkpoint_dir: str | os.PathLike, out_path: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """gptref checkpoint directory (or a ``gptref train`` run directory, whose checkpoint/ is
    read) -> a Hugging Face GPT-2 ``model.safetensors`` at ``out_path`` (written atomically)
    -> its Path. An earlier export there is replaced with ``overwrite``; any other file, and
    any place among a run's, a checkpoint's or a prepared corpus's own files, is refused.

    Tied head (``out_head`` == ``tok_emb``, e.g. an imported GPT-2): the names of the
    released GPT-2 file, no prefix, no ``lm_head``. Untied head (a model trained from
    scratch): ``transformer.``-prefixed names plus ``lm_head.weight``, the layout
    ``GPT2LMHeadModel.save_pretrained`` writes; give transformers ``tie_word_embeddings=False``.
    Metadata ``EXPORT_METADATA``: ``"format": "pt"``, as transformers expects, and the mark
    that tells an export of gptref's. The checkpoint is verified first (``load_checkpoint``):
    a missing or damaged one is a ValueError."""
    checkpoint_dir, out_path = Path(checkpoint_dir), Path(out_path)
    if out_path.is_dir():
        raise ValueError(
            f"export_hf: {out_path} is a directory; give a file name such as "
            f"{out_path / 'model.safetensors'}"
        )
    _check_not_owned(out_path)
    claim_file(out_path, "an export", is_export, overwrite=overwrite)
    snap = checkpoint.snapshot(find_checkpoint(checkpoint_dir))  # a damaged newer one: skipped
    model = GPTModel(GPTConfig.from_dict(load_config(snap)))
    load_checkpoint(snap, model)
    hf = gptref_to_hf(model.state_dict())
    if "lm_head.weight" in hf:
        hf = {(k if k == "lm_head.weight" else HF_PREFIX + k): v for k, v in hf.items()}
    return atomic_write(out_path, lambda tmp: save_file(hf, str(tmp), metadata=EXPORT_METADATA))


def is_export(path: Path) -> bool:
    """Whether ``path`` is a safetensors file ``export_hf`` wrote (its metadata says so)."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size)) if 0 < size <= 1 << 24 else None
    except (OSError, ValueError):
        return False
    return isinstance(header, dict) and header.get("__metadata__") == EXPORT_METADATA


def _check_not_owned(out_path: Path) -> None:
    """An export never lands among the files of a gptref folder of another kind: a
    checkpoint or one of its snapshots, a run's own entries, a prepared corpus."""
    parent = out_path.parent
    if not parent.is_dir():
        return
    marker = read_marker(parent / "manifest.json")
    owned = (
        checkpoint.is_checkpoint(parent)
        or (is_folder(parent.parent) and checkpoint.is_checkpoint(parent.parent))
        or (out_path.name in PARTS and is_run(parent))
        or (marker is not None and str(marker.get("format", "")).startswith("gptref"))
    )
    if owned:
        raise ValueError(
            f"export_hf: {out_path} is in {parent}, a folder gptref wrote (a run, checkpoint or "
            "prepared corpus) whose files are its own; export to a new file elsewhere"
        )


# ---------------------------------------------------------------- helpers


def _copy(t: torch.Tensor) -> torch.Tensor:
    """A contiguous copy: no memory shared with the input or with any other output."""
    return t.detach().clone(memory_format=torch.contiguous_format)
