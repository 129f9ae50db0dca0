"""Properties of gptref/weights/hf.py: the HF GPT-2 <-> gptref layout rules, round trips both
ways, GPT-2's forward on imported weights, the files, and every refused input."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from gptref.model import GPTConfig, GPTModel
from gptref.run.checkpoint import load_checkpoint, load_config, save_checkpoint, snapshot
from gptref.weights.hf import (
    config_from_hf,
    export_hf,
    gptref_to_hf,
    hf_to_gptref,
    import_hf,
    load_hf_safetensors,
)
from gptref.weights.hf_layout import GPT2_HEADS, HF_PREFIX
from tests.oracles import oracle_gpt2_logits
from tests.strategies import hf_gpt2_states, seeds, tiny_configs, token_batches

BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")


def assert_same_tensors(got: dict, expected: dict, what: str) -> None:
    """Same names; every tensor bitwise equal with the same dtype and shape."""
    assert sorted(got) == sorted(expected), (
        f"{what}: names differ: extra {sorted(set(got) - set(expected))}, "
        f"missing {sorted(set(expected) - set(got))}"
    )
    for name, value in expected.items():
        assert got[name].dtype == value.dtype, f"{what}: {name}: {got[name].dtype} != {value.dtype}"
        assert torch.equal(got[name], value), f"{what}: {name} differs:\n{got[name]}\n{value}"


def hf_as_exported(hf: dict) -> dict:
    """What export writes for ``hf``: no mask buffers; lm_head only when it is not wte."""
    out = {k: v for k, v in hf.items() if not BUFFER.fullmatch(k)}
    if "lm_head.weight" in out and torch.equal(out["lm_head.weight"], out["wte.weight"]):
        del out["lm_head.weight"]
    return out


def read_safetensors(path) -> dict:
    with safe_open(str(path), framework="pt", device="cpu") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


def hand_built(emb: int = 4, vocab: int = 5, context: int = 3) -> dict:
    """One block whose every entry is distinct and predictable: arange offsets per tensor."""
    n = iter(range(0, 10**6, 1000))

    def arange(*shape: int) -> torch.Tensor:
        size = 1
        for d in shape:
            size *= d
        return (next(n) + torch.arange(size, dtype=torch.float32)).reshape(shape)

    hf = {"wte.weight": arange(vocab, emb), "wpe.weight": arange(context, emb)}
    hf |= {"h.0.ln_1.weight": arange(emb), "h.0.ln_1.bias": arange(emb)}
    hf |= {"h.0.attn.c_attn.weight": arange(emb, 3 * emb), "h.0.attn.c_attn.bias": arange(3 * emb)}
    hf |= {"h.0.attn.c_proj.weight": arange(emb, emb), "h.0.attn.c_proj.bias": arange(emb)}
    hf |= {"h.0.ln_2.weight": arange(emb), "h.0.ln_2.bias": arange(emb)}
    hf |= {"h.0.mlp.c_fc.weight": arange(emb, 4 * emb), "h.0.mlp.c_fc.bias": arange(4 * emb)}
    hf |= {"h.0.mlp.c_proj.weight": arange(4 * emb, emb), "h.0.mlp.c_proj.bias": arange(emb)}
    hf |= {"ln_f.weight": arange(emb), "ln_f.bias": arange(emb)}
    return hf


# ---------------------------------------------------------------- layout rules


def test_hf_to_gptref_follows_the_layout_rules_on_a_hand_built_example():
    """q, k, v are c_attn's three 4-wide column blocks, transposed; biases split the same
    way; every Conv1D weight is transposed; LayerNorm weight/bias -> scale/shift; the head
    is wte."""
    hf = hand_built()
    hf["h.0.attn.c_attn.weight"] = c_attn = torch.arange(48.0).reshape(4, 12)
    hf["h.0.attn.c_attn.bias"] = c_attn_b = 100 + torch.arange(12.0)
    sd = hf_to_gptref(hf)
    att = "trf_blocks.0.att"
    # written out: W_query's first row (its first output unit) is c_attn's column 0, i.e.
    # [0, 12, 24, 36]; W_key's is column 4, W_value's column 8
    for name, first_row in (("W_query", [0.0, 12, 24, 36]), ("W_key", [4.0, 16, 28, 40]),
                            ("W_value", [8.0, 20, 32, 44])):  # fmt: skip
        got = sd[f"{att}.{name}.weight"][0]
        assert torch.equal(got, torch.tensor(first_row)), (
            f"{name}.weight[0] = {got}, not {first_row}"
        )
    for name, bias in (("W_query", [100.0, 101, 102, 103]), ("W_value", [108.0, 109, 110, 111])):
        got = sd[f"{att}.{name}.bias"]
        assert torch.equal(got, torch.tensor(bias)), f"{name}.bias = {got}, not {bias}"
    expected = {
        f"{att}.W_query.weight": c_attn[:, 0:4].T,
        f"{att}.W_key.weight": c_attn[:, 4:8].T,
        f"{att}.W_value.weight": c_attn[:, 8:12].T,
        f"{att}.W_query.bias": c_attn_b[0:4],
        f"{att}.W_key.bias": c_attn_b[4:8],
        f"{att}.W_value.bias": c_attn_b[8:12],
        f"{att}.out_proj.weight": hf["h.0.attn.c_proj.weight"].T,
        f"{att}.out_proj.bias": hf["h.0.attn.c_proj.bias"],
        "trf_blocks.0.ff.layers.0.weight": hf["h.0.mlp.c_fc.weight"].T,  # (16, 4)
        "trf_blocks.0.ff.layers.0.bias": hf["h.0.mlp.c_fc.bias"],
        "trf_blocks.0.ff.layers.2.weight": hf["h.0.mlp.c_proj.weight"].T,  # (4, 16)
        "trf_blocks.0.ff.layers.2.bias": hf["h.0.mlp.c_proj.bias"],
        "trf_blocks.0.norm1.scale": hf["h.0.ln_1.weight"],
        "trf_blocks.0.norm1.shift": hf["h.0.ln_1.bias"],
        "trf_blocks.0.norm2.scale": hf["h.0.ln_2.weight"],
        "trf_blocks.0.norm2.shift": hf["h.0.ln_2.bias"],
        f"{att}.mask": torch.triu(torch.ones(3, 3), diagonal=1),
        "tok_emb.weight": hf["wte.weight"],
        "pos_emb.weight": hf["wpe.weight"],
        "final_norm.scale": hf["ln_f.weight"],
        "final_norm.shift": hf["ln_f.bias"],
        "out_head.weight": hf["wte.weight"],
    }
    assert_same_tensors(sd, expected, "hand-built import")
    assert_same_tensors(gptref_to_hf(sd), hf, "hand-built export")


def test_imported_tensors_are_contiguous_and_share_no_memory():
    """Every output tensor is contiguous and owns its storage (safetensors can write it)."""
    hf = hand_built()
    hf["lm_head.weight"] = hf["wte.weight"]  # the same tensor, as a tied HF model has it
    for what, out in (
        ("hf_to_gptref", hf_to_gptref(hf)),
        ("gptref_to_hf", gptref_to_hf(hf_to_gptref(hf))),
    ):
        storages = [t.untyped_storage().data_ptr() for t in out.values()]
        assert len(set(storages)) == len(storages), f"{what}: outputs share storage"
        inputs = {t.untyped_storage().data_ptr() for t in hf.values()}
        assert not inputs & set(storages), f"{what}: an output shares the input's storage"
        bad = [k for k, t in out.items() if not t.is_contiguous()]
        assert not bad, f"{what}: not contiguous: {bad}"


# ---------------------------------------------------------------- round trips


@given(hf_gpt2_states(), st.booleans())
def test_hf_import_then_export_is_the_identity(drawn, prefixed):
    """gptref_to_hf(hf_to_gptref(hf)) == hf bitwise, less the mask buffers and a tied
    lm_head, with or without the transformer. prefix."""
    hf, _ = drawn
    given_hf = {
        HF_PREFIX + k if prefixed and k != "lm_head.weight" else k: v for k, v in hf.items()
    }
    assert_same_tensors(gptref_to_hf(hf_to_gptref(given_hf)), hf_as_exported(hf), "HF round trip")


@given(hf_gpt2_states())
def test_the_transformer_prefix_gives_the_same_import(drawn):
    """Names with and without transformer. (lm_head never prefixed) import identically."""
    hf, _ = drawn
    prefixed = {k if k == "lm_head.weight" else HF_PREFIX + k: v for k, v in hf.items()}
    assert_same_tensors(hf_to_gptref(prefixed), hf_to_gptref(hf), "prefixed vs plain")


@given(tiny_configs(), seeds, st.booleans())
def test_gptref_export_then_import_is_the_identity(cfg, seed, tied):
    """For a GPTModel(qkv_bias=True) state dict, hf_to_gptref(gptref_to_hf(sd)) == sd bitwise,
    masks included; lm_head is exported exactly when out_head is not tok_emb."""
    cfg = dataclasses.replace(cfg, qkv_bias=True)
    torch.manual_seed(seed)
    model = GPTModel(cfg)
    if tied:
        with torch.no_grad():
            model.out_head.weight.copy_(model.tok_emb.weight)
    sd = model.state_dict()
    hf = gptref_to_hf(sd)
    has_head = "lm_head.weight" in hf
    assert has_head != tied, f"tied={tied} but lm_head.weight exported: {has_head}"
    assert_same_tensors(hf_to_gptref(hf), dict(sd), f"gptref round trip of {cfg}")


@given(tiny_configs(attn_impl="reference"), seeds, st.data())
def test_a_model_without_qkv_bias_exports_zero_biases_and_the_same_function(cfg, seed, data):
    """qkv_bias=False exports c_attn.bias == 0; re-imported (qkv_bias=True) it gives the
    same logits."""
    cfg = dataclasses.replace(cfg, qkv_bias=False)
    torch.manual_seed(seed)
    model = GPTModel(cfg).eval()
    hf = gptref_to_hf(model.state_dict())
    for i in range(cfg.n_layers):
        bias = hf[f"h.{i}.attn.c_attn.bias"]
        assert torch.equal(bias, torch.zeros(3 * cfg.emb_dim)), f"h.{i} c_attn.bias = {bias}"
    back = GPTModel(dataclasses.replace(cfg, qkv_bias=True)).eval()
    back.load_state_dict(hf_to_gptref(hf))
    ids = data.draw(token_batches(cfg.vocab_size, max_len=cfg.context_length))
    with torch.no_grad():
        torch.testing.assert_close(back(ids), model(ids), msg=lambda m: f"{cfg}, ids {ids}: {m}")


# ---------------------------------------------------------------- GPT-2's function


# emb_dim >= 8: LayerNorm of two near-equal numbers is ill-conditioned (float32 rounding grows
# by up to 1/sqrt(eps) ~ 300), which would make the comparison about rounding, not the mapping
@given(hf_gpt2_states(min_emb=8), st.sampled_from(["reference", "sdpa"]), st.data())
def test_a_model_loaded_from_hf_weights_computes_gpt2s_logits(drawn, attn_impl, data):
    """GPTModel with imported weights == GPT-2's forward restated on the HF tensors
    (tests/oracles.py), eval mode, to 1e-5."""
    hf, n_heads = drawn
    cfg = dataclasses.replace(config_from_hf(hf, n_heads=n_heads), attn_impl=attn_impl)
    model = GPTModel(cfg).eval()
    model.load_state_dict(hf_to_gptref(hf))  # strict: every name, masks included
    ids = data.draw(token_batches(cfg.vocab_size, max_len=cfg.context_length))
    with torch.no_grad():
        got, expected = model(ids), oracle_gpt2_logits(hf, ids, n_heads)
    torch.testing.assert_close(
        got, expected, rtol=1e-5, atol=1e-5, msg=lambda m: f"{cfg}, ids {ids.tolist()}: {m}"
    )


@pytest.mark.parametrize("emb", sorted(GPT2_HEADS))
def test_config_from_hf_infers_the_sizes_and_gpt2s_heads(emb):
    """vocab/emb from wte, context from wpe, n_layers from h.{i}, n_heads from GPT-2's table
    (or the argument), qkv_bias on. Meta tensors: only shapes are read."""
    hf = {name: torch.empty(t.shape, device="meta") for name, t in hand_built(emb, 7, 5).items()}
    hf |= {name.replace("h.0.", "h.1."): t for name, t in hf.items() if name.startswith("h.0.")}
    cfg = config_from_hf(hf)
    expected = GPTConfig(vocab_size=7, context_length=5, emb_dim=emb, n_heads=GPT2_HEADS[emb],
                         n_layers=2, drop_rate=0.1, qkv_bias=True)  # fmt: skip
    assert cfg == expected, f"{cfg} != {expected}"
    assert config_from_hf(hf, n_heads=8).n_heads == 8, "the n_heads argument is not used"


# ---------------------------------------------------------------- files


@pytest.mark.parametrize("head", ["tied", "untied"])
def test_import_hf_then_export_hf_round_trips_the_file(tmp_path, head):
    """HF file -> import_hf -> a checkpoint GPTModel loads, with GPT-2's logits -> export_hf ->
    the same tensors; a tied head exports plain names, an untied one transformer. + lm_head."""
    torch.manual_seed(7)
    cfg = GPTConfig(vocab_size=50, context_length=8, emb_dim=16, n_heads=4, n_layers=2)
    sd = GPTModel(dataclasses.replace(cfg, qkv_bias=True)).state_dict()
    if head == "tied":
        sd["out_head.weight"] = sd["tok_emb.weight"].clone()
    hf = gptref_to_hf(sd)
    hf["h.0.attn.masked_bias"] = torch.tensor(-1e4)  # as transformers wrote it: ignored
    source = tmp_path / "gpt2" / "model.safetensors"
    source.parent.mkdir()
    save_file(
        {HF_PREFIX + k if k != "lm_head.weight" else k: v for k, v in hf.items()}, str(source)
    )

    ckpt = import_hf(source, tmp_path / "ckpt", n_heads=4)
    loaded_cfg = GPTConfig.from_dict(load_config(ckpt))
    assert loaded_cfg == dataclasses.replace(cfg, qkv_bias=True), f"{loaded_cfg}"
    model = GPTModel(loaded_cfg).eval()
    state = load_checkpoint(ckpt, model)
    assert (state["step"], state["epoch"], state["history"]) == (0, 0, {}), f"{state}"
    assert_same_tensors(model.state_dict(), dict(sd), "imported checkpoint")
    ids = torch.tensor([[1, 2, 3, 4, 5, 49, 0, 7]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids), oracle_gpt2_logits(hf, ids, 4), rtol=1e-5, atol=1e-5)

    out = export_hf(ckpt, tmp_path / "export" / "model.safetensors")
    written = read_safetensors(out)
    expected = hf_as_exported(hf)
    if head == "untied":
        expected = {k if k == "lm_head.weight" else HF_PREFIX + k: v for k, v in expected.items()}
        assert "lm_head.weight" in written, f"untied head not written: {sorted(written)[:5]}"
    else:
        assert "lm_head.weight" not in written and "wte.weight" in written, f"{sorted(written)[:5]}"
    assert_same_tensors(written, expected, f"exported file ({head})")
    with safe_open(str(out), framework="pt") as f:
        assert f.metadata() == {"format": "pt", "gptref": "export-hf"}, f"metadata {f.metadata()}"
    _, reimported = load_hf_safetensors(out, n_heads=4)
    assert_same_tensors(reimported, dict(sd), "export re-imported")


def test_export_hf_of_a_book_model_writes_zero_qkv_biases(tmp_path):
    """A checkpoint of a qkv_bias=False model exports c_attn.bias zeros and an lm_head."""
    torch.manual_seed(3)
    cfg = GPTConfig(vocab_size=30, context_length=4, emb_dim=8, n_heads=2, n_layers=1)
    model = GPTModel(cfg)
    ckpt = save_checkpoint(tmp_path / "ckpt", model, step=5, epoch=1, config=cfg, history={})
    written = read_safetensors(export_hf(ckpt, tmp_path / "model.safetensors"))
    bias = written[HF_PREFIX + "h.0.attn.c_attn.bias"]
    assert torch.equal(bias, torch.zeros(24)), f"c_attn.bias = {bias}"
    assert torch.equal(written["lm_head.weight"], model.out_head.weight.detach()), "lm_head"


# ---------------------------------------------------------------- refused inputs


def _without(name):
    return lambda hf: {k: v for k, v in hf.items() if k != name}


def _with(name, value):
    return lambda hf: {**hf, name: value}


HF_DAMAGE = {
    "missing c_fc bias": (_without("h.0.mlp.c_fc.bias"), r"missing \[h\.0\.mlp\.c_fc\.bias\]"),
    "missing wte": (_without("wte.weight"), r"wte\.weight is missing"),
    "no blocks": (lambda hf: {k: v for k, v in hf.items() if not k.startswith("h.")}, r"no transformer blocks"),
    "c_attn too narrow": (_with("h.0.attn.c_attn.weight", torch.zeros(4, 8)), r"h\.0\.attn\.c_attn\.weight has shape \(4, 8\), expected \(4, 12\)"),
    "c_fc not transposed": (_with("h.0.mlp.c_fc.weight", torch.zeros(16, 4)), r"c_fc\.weight has shape \(16, 4\), expected \(4, 16\)"),
    "wpe of another width": (_with("wpe.weight", torch.zeros(3, 5)), r"wpe\.weight has shape \(3, 5\), expected \(3, 4\)"),
    "lm_head of another vocab": (_with("lm_head.weight", torch.zeros(6, 4)), r"lm_head\.weight has shape"),
    "wte not a matrix": (_with("wte.weight", torch.zeros(20)), r"wte\.weight must be a matrix"),
    "unknown name": (_with("score.weight", torch.zeros(2, 4)), r"unexpected \[score\.weight\]"),
    "integer weights": (_with("ln_f.bias", torch.zeros(4, dtype=torch.int64)), r"ln_f\.bias has dtype torch\.int64"),
    "prefixed and plain": (_with(HF_PREFIX + "wte.weight", torch.zeros(5, 4)), r"wte\.weight appears both with and without"),
    "gptref names": (lambda hf: hf_to_gptref(hf), r"has gptref names"),
}  # fmt: skip


@pytest.mark.parametrize("damage", sorted(HF_DAMAGE))
def test_a_damaged_hf_state_dict_is_a_valueerror_naming_the_key(damage):
    """Each damage is refused by hf_to_gptref and config_from_hf with a message naming it."""
    change, message = HF_DAMAGE[damage]
    hf = change(hand_built())
    for convert in (hf_to_gptref, lambda s: config_from_hf(s, n_heads=2)):
        with pytest.raises(ValueError, match=message):
            convert(hf)


def test_an_hf_width_outside_gpt2s_sizes_needs_n_heads():
    """emb_dim 4 is no GPT-2 size: config_from_hf asks for n_heads; a non-divisor is refused."""
    with pytest.raises(ValueError, match=r"emb_dim 4 is none of GPT-2's sizes.*pass n_heads"):
        config_from_hf(hand_built())
    with pytest.raises(
        ValueError, match=r"n_heads must divide the weights' width 4, got 3; one of \[1, 2, 4\]"
    ):
        config_from_hf(hand_built(), n_heads=3)


GPTREF_DAMAGE = {
    "missing out_head": (_without("out_head.weight"), r"missing \[out_head\.weight\]"),
    "half the qkv biases": (_without("trf_blocks.0.att.W_value.bias"), r"missing \[trf_blocks\.0\.att\.W_value\.bias\]"),
    "ff weight transposed": (_with("trf_blocks.0.ff.layers.0.weight", torch.zeros(4, 16)), r"ff\.layers\.0\.weight has shape \(4, 16\), expected \(16, 4\)"),
    "unknown name": (_with("trf_blocks.0.att.extra", torch.zeros(1)), r"unexpected \[trf_blocks\.0\.att\.extra\]"),
    "hf names": (lambda sd: {**sd, "wte.weight": torch.zeros(5, 4)}, r"has Hugging Face GPT-2 names"),
}  # fmt: skip


@pytest.mark.parametrize("damage", sorted(GPTREF_DAMAGE))
def test_a_damaged_gptref_state_dict_is_a_valueerror_naming_the_key(damage):
    """gptref_to_hf refuses each damage with a message naming it."""
    change, message = GPTREF_DAMAGE[damage]
    with pytest.raises(ValueError, match=message):
        gptref_to_hf(change(hf_to_gptref(hand_built())))


def test_a_file_that_is_missing_or_not_gpt2_safetensors_is_a_valueerror_naming_it(tmp_path):
    """Missing file, directory, not safetensors (text, a torch pickle), a gptref checkpoint's
    weights, a key missing in the file: each a ValueError naming the path."""
    cases = {}
    cases["missing"] = (tmp_path / "absent.safetensors", r"no file at .*absent\.safetensors")
    cases["directory"] = (tmp_path, r"is a directory; pass the model\.safetensors")
    text = tmp_path / "notes.safetensors"
    text.write_text("not weights")
    cases["text"] = (text, r"notes\.safetensors is not a readable safetensors file")
    pickle = tmp_path / "pytorch_model.bin"
    torch.save(hand_built(), pickle)
    cases["pickle"] = (pickle, r"pytorch_model\.bin is not a readable safetensors file")
    ckpt = tmp_path / "ckpt"
    model = GPTModel(GPTConfig(vocab_size=5, context_length=3, emb_dim=4, n_heads=2, n_layers=1))
    save_checkpoint(ckpt, model, step=0, epoch=0, config=model.cfg, history={})
    cases["gptref weights"] = (
        snapshot(ckpt) / "model.safetensors",
        r"ckpt/save-\d+-\d+/model\.safetensors: has gptref names",
    )
    partial = tmp_path / "partial.safetensors"
    save_file(_without("h.0.ln_2.weight")(hand_built()), str(partial))
    cases["missing key"] = (partial, r"partial\.safetensors: missing \[h\.0\.ln_2\.weight\]")
    for case, (path, message) in cases.items():
        for load in (
            lambda p: load_hf_safetensors(p, n_heads=2),
            lambda p: import_hf(p, tmp_path / "out", 2),
        ):
            with pytest.raises(ValueError, match=message):
                load(path)
        assert not (tmp_path / "out").exists(), f"{case}: import_hf left {tmp_path / 'out'}"


def test_export_hf_refuses_a_missing_checkpoint_and_a_directory_target(tmp_path):
    """export_hf: no checkpoint at the path, or an out_path that is a directory: ValueError."""
    with pytest.raises(ValueError, match=r"no checkpoint directory at .*nothing"):
        export_hf(tmp_path / "nothing", tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"is a directory; give a file name"):
        export_hf(tmp_path / "nothing", tmp_path)
    assert not (tmp_path / "model.safetensors").exists(), "a failed export left a file"
