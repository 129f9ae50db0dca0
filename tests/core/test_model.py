"""gptref/model.py: GPTConfig, the presets and GPTModel, specified by properties and the book's numbers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from gptref.loss import perplexity
from gptref.model import (
    GPT_CONFIG_124M,
    GPT_CONFIG_355M,
    GPT_CONFIG_774M,
    GPT_CONFIG_1558M,
    GPT_CONFIG_SMALL,
    GPT_CONFIG_TINY,
    GPTConfig,
    GPTModel,
    MultiHeadAttention,
)
from tests.strategies import seeds, tiny_configs, token_batches

# the largest |reference - sdpa| logit difference we accept in float32, eval mode; observed
# on CPU: ~1.4e-6 for GPT-124M at (2, 256) (logits up to ~3), ~1e-7 for tiny configs
SDPA_ATOL, SDPA_RTOL = 1e-5, 1e-5

# the book's parameter names, in creation order (model.named_parameters()); block i repeats
# BOOK_BLOCK_PARAMETERS under trf_blocks.{i}., with W_query/W_key/W_value biases when qkv_bias
BOOK_HEAD_PARAMETERS = ["tok_emb.weight", "pos_emb.weight"]
BOOK_BLOCK_PARAMETERS = [
    "att.W_query.weight",
    "att.W_key.weight",
    "att.W_value.weight",
    "att.out_proj.weight",
    "att.out_proj.bias",
    "ff.layers.0.weight",
    "ff.layers.0.bias",
    "ff.layers.2.weight",
    "ff.layers.2.bias",
    "norm1.scale",
    "norm1.shift",
    "norm2.scale",
    "norm2.shift",
]
BOOK_TAIL_PARAMETERS = ["final_norm.scale", "final_norm.shift", "out_head.weight"]
# the book's chapter-4 count for GPT_CONFIG_124M (context 1024): out_head is not tied
BOOK_124M_PARAMETER_COUNT = 163_009_536

# chapter 4 prints these corners (first and last 3 logits of each position) of
# torch.manual_seed(123); GPTModel(GPT_CONFIG_124M)(batch) in train mode, dropout 0.1
# of the batch "Every effort moves you", "Every day holds a"
BOOK_CH4_BATCH = [[6109, 3626, 6100, 345], [6109, 1110, 6622, 257]]
BOOK_CH4_CORNERS = [
    [
        [0.3613, 0.4222, -0.0711, 0.3483, 0.4661, -0.2838],
        [-0.1792, -0.5660, -0.9485, 0.0477, 0.5181, -0.3168],
        [0.7120, 0.0332, 0.1085, 0.1018, -0.4327, -0.2553],
        [-1.0076, 0.3418, -0.1190, 0.7195, 0.4023, 0.0532],
    ],
    [
        [-0.2564, 0.0900, 0.0335, 0.2659, 0.4454, -0.6806],
        [0.1230, 0.3653, -0.2074, 0.7705, 0.2710, 0.2246],
        [1.0558, 1.0318, -0.2800, 0.6936, 0.3205, -0.3178],
        [-0.1565, 0.3926, 0.3288, 1.2630, -0.1858, 0.0388],
    ],
]
# chapter 5: "every effort moves" / "I really like" -> " effort moves you" / " really like chocolate"
BOOK_TOY_INPUTS = [[16833, 3626, 6100], [40, 1107, 588]]
BOOK_TOY_TARGETS = [[3626, 6100, 345], [1107, 588, 11311]]


def book_parameter_names(n_layers: int, qkv_bias: bool = False) -> list[str]:
    block = []
    for name in BOOK_BLOCK_PARAMETERS:
        block.append(name)
        if qkv_bias and name.startswith(("att.W_query", "att.W_key", "att.W_value")):
            block.append(name.replace(".weight", ".bias"))
    blocks = [f"trf_blocks.{i}.{name}" for i in range(n_layers) for name in block]
    return BOOK_HEAD_PARAMETERS + blocks + BOOK_TAIL_PARAMETERS


def seeded_model(cfg, seed: int = 123) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(cfg).eval()


@pytest.fixture(scope="module")
def tiny_model() -> GPTModel:
    return seeded_model(GPT_CONFIG_TINY)


@pytest.fixture(scope="module")
def book_model() -> GPTModel:
    """The chapter-5 model: GPT-124M with context 256, built right after torch.manual_seed(123)."""
    return seeded_model({**GPT_CONFIG_124M, "context_length": 256})


# ---------------------------------------------------------------- GPTConfig and presets


@pytest.mark.parametrize(
    "preset, emb_dim, n_layers, n_heads",
    [
        (GPT_CONFIG_124M, 768, 12, 12),
        (GPT_CONFIG_355M, 1024, 24, 16),
        (GPT_CONFIG_774M, 1280, 36, 20),
        (GPT_CONFIG_1558M, 1600, 48, 25),
    ],
)
def test_gpt2_presets_have_the_books_sizes(preset, emb_dim, n_layers, n_heads):
    """Every GPT-2 preset is the book's dict: vocab 50257, context 1024, drop 0.1, no qkv bias."""
    cfg = GPTConfig.from_dict(preset)
    expected = GPTConfig(50257, 1024, emb_dim, n_heads, n_layers, 0.1, False)
    assert cfg == expected, f"{preset} != {expected}"


@pytest.mark.parametrize("preset", [GPT_CONFIG_TINY, GPT_CONFIG_SMALL])
def test_demo_presets_are_valid_and_use_gpt2_vocabulary(preset):
    """The tiny and small presets validate and keep vocab 50257, so real tokenizer ids work."""
    cfg = GPTConfig.from_dict(preset)
    assert cfg.vocab_size == 50257, f"{preset}"


@given(cfg=tiny_configs())
def test_config_to_dict_from_dict_round_trips(cfg):
    """GPTConfig.from_dict(cfg.to_dict()) == cfg, and the dict carries the book's seven keys."""
    d = cfg.to_dict()
    book_keys = set(GPT_CONFIG_124M)
    assert book_keys <= set(d), f"missing book keys {book_keys - set(d)} in {d}"
    assert GPTConfig.from_dict(d) == cfg, f"{d}"


@pytest.mark.parametrize(
    "changes, error, words",
    [
        ({"emb_dim": 770}, ValueError, "multiple of n_heads"),
        ({"n_layers": 0}, ValueError, "n_layers must be >= 1, got 0"),
        ({"vocab_size": -1}, ValueError, "vocab_size must be >= 1, got -1"),
        ({"context_length": 2.0}, TypeError, "context_length must be an int"),
        ({"drop_rate": 1.0}, ValueError, "drop_rate must be in [0, 1), got 1.0"),
        ({"drop_rate": -0.1}, ValueError, "drop_rate must be in [0, 1)"),
        ({"qkv_bias": 1}, TypeError, "qkv_bias must be True or False"),
        ({"attn_impl": "flash"}, ValueError, "'flash'"),
        ({"n_head": 12}, ValueError, "unknown keys ['n_head']"),
    ],
)
def test_invalid_config_is_rejected_naming_the_value(changes, error, words):
    """An invalid field is a ValueError/TypeError whose message names the field and the value."""
    with pytest.raises(error) as info:
        GPTConfig.from_dict({**GPT_CONFIG_TINY, **changes})
    assert words in str(info.value), f"{changes}: {info.value}"


# ---------------------------------------------------------------- architecture and init


@given(cfg=tiny_configs())
def test_parameter_names_and_order_are_the_books(cfg):
    """named_parameters() lists exactly the book's names in the book's creation order."""
    model = GPTModel(cfg)
    names = [name for name, _ in model.named_parameters()]
    expected = book_parameter_names(cfg.n_layers, cfg.qkv_bias)
    assert names == expected, f"{cfg}: {names} != {expected}"


def test_gpt_124m_has_the_books_parameter_names_shapes_and_count():
    """GPT_CONFIG_124M: the book's names, shapes, 163,009,536 parameters, and a mask buffer per block."""
    with torch.device("meta"):  # shapes only: no memory, no time
        model = GPTModel(GPT_CONFIG_124M)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert list(shapes) == book_parameter_names(12), f"{list(shapes)}"
    expected_shapes = {
        "tok_emb.weight": (50257, 768),
        "pos_emb.weight": (1024, 768),
        "trf_blocks.0.att.W_query.weight": (768, 768),
        "trf_blocks.0.att.out_proj.bias": (768,),
        "trf_blocks.0.ff.layers.0.weight": (3072, 768),
        "trf_blocks.0.ff.layers.2.weight": (768, 3072),
        "trf_blocks.11.norm2.scale": (768,),
        "out_head.weight": (50257, 768),
    }
    for name, shape in expected_shapes.items():
        assert shapes[name] == shape, f"{name}: {shapes[name]} != {shape}"
    count = sum(p.numel() for p in model.parameters())
    assert count == BOOK_124M_PARAMETER_COUNT, f"{count} != {BOOK_124M_PARAMETER_COUNT}"
    buffers = {name: tuple(b.shape) for name, b in model.named_buffers()}
    assert buffers == {f"trf_blocks.{i}.att.mask": (1024, 1024) for i in range(12)}, f"{buffers}"


@given(cfg=tiny_configs(), seed=seeds)
def test_seeded_init_is_deterministic(cfg, seed):
    """Two models built right after torch.manual_seed(seed) have equal state dicts."""
    a, b = seeded_model(cfg, seed), seeded_model(cfg, seed)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), f"{cfg}, seed {seed}: {name} differs"


@given(cfg=tiny_configs())
def test_book_dict_and_gptconfig_build_the_same_model(cfg):
    """GPTModel(cfg.to_dict()) and GPTModel(cfg) draw the same weights under the same seed."""
    a, b = seeded_model(cfg), seeded_model(cfg.to_dict())
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), f"{cfg}: {name} differs"


def test_state_dict_saved_with_torch_save_loads_into_a_fresh_model(tmp_path, tiny_model):
    """torch.save(model.state_dict()) -> torch.load -> load_state_dict(strict) gives equal logits."""
    path = tmp_path / "model.pth"
    torch.save(tiny_model.state_dict(), path)
    state = torch.load(path, weights_only=True)
    assert "trf_blocks.0.att.mask" in state, f"the book's mask buffer is missing: {list(state)}"
    torch.manual_seed(0)  # a different init, so equality below comes from the load
    fresh = GPTModel(GPT_CONFIG_TINY)
    fresh.load_state_dict(state)  # strict: every name of the book's layout must match
    fresh.eval()
    ids = torch.tensor([[40, 367, 2885, 1464]])
    with torch.no_grad():
        assert torch.equal(fresh(ids), tiny_model(ids)), "loaded model's logits differ"


# ---------------------------------------------------------------- the forward pass


@given(cfg=tiny_configs(), data=st.data())
def test_logits_have_shape_batch_by_time_by_vocab(cfg, data):
    """model(ids (b, T)) has shape (b, T, vocab_size) and dtype float32, in train and eval mode."""
    ids = data.draw(token_batches(cfg.vocab_size, max_len=cfg.context_length))
    model = seeded_model(cfg)
    for training in (False, True):
        model.train(training)
        logits = model(ids)
        expected = (*ids.shape, cfg.vocab_size)
        assert logits.shape == expected, f"{cfg}, training={training}: {logits.shape} != {expected}"
        assert logits.dtype == torch.float32, f"{cfg}: {logits.dtype}"


@given(cfg=tiny_configs(min_context=2), data=st.data())
def test_logits_up_to_t_ignore_tokens_after_t(cfg, data):
    """Changing the tokens after position t never changes the logits at positions <= t."""
    ids = data.draw(token_batches(cfg.vocab_size, min_len=2, max_len=cfg.context_length))
    t = data.draw(st.integers(0, ids.shape[1] - 2), label="t")
    changed = ids.clone()
    tail = data.draw(token_batches(cfg.vocab_size, batch=ids.shape[0], length=ids.shape[1] - t - 1))
    changed[:, t + 1 :] = tail
    model = seeded_model(cfg)
    with torch.no_grad():
        before, after = model(ids)[:, : t + 1], model(changed)[:, : t + 1]
    torch.testing.assert_close(
        after, before, msg=lambda m: f"{cfg}, t={t}, ids={ids.tolist()} -> {changed.tolist()}: {m}"
    )


@given(cfg=tiny_configs(), data=st.data())
def test_rows_of_a_batch_are_independent(cfg, data):
    """model(ids)[i] equals model(ids[i:i+1])[0]: no row sees another."""
    ids = data.draw(token_batches(cfg.vocab_size, max_len=cfg.context_length))
    model = seeded_model(cfg)
    with torch.no_grad():
        together = model(ids)
        for i in range(ids.shape[0]):
            torch.testing.assert_close(
                together[i], model(ids[i : i + 1])[0], msg=lambda m, i=i: f"{cfg}, row {i}: {m}"
            )


@given(cfg=tiny_configs(), batch=st.integers(1, 3), seed=seeds, data=st.data())
def test_reference_and_sdpa_attention_agree_in_eval_mode(cfg, batch, seed, data):
    """With the same weights, the sdpa attention module gives the reference output within
    SDPA_ATOL/RTOL on any input (b, T, emb_dim): the two paths compute one function."""
    T = data.draw(st.integers(1, cfg.context_length), label="T")
    args = (cfg.emb_dim, cfg.emb_dim, cfg.context_length, cfg.drop_rate, cfg.n_heads, cfg.qkv_bias)
    torch.manual_seed(seed)
    reference = MultiHeadAttention(*args, attn_impl="reference").eval()
    sdpa = MultiHeadAttention(*args, attn_impl="sdpa").eval()
    sdpa.load_state_dict(reference.state_dict())
    x = torch.randn(batch, T, cfg.emb_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(
            sdpa(x), reference(x), atol=SDPA_ATOL, rtol=SDPA_RTOL, msg=lambda m: f"{cfg}: {m}"
        )


@given(seed=seeds, data=st.data())
def test_reference_and_sdpa_logits_agree_in_eval_mode(seed, data):
    """GPT_CONFIG_TINY with the same weights: sdpa logits equal the reference within SDPA_ATOL/RTOL.

    Logits, unlike attention outputs, go through LayerNorm, which divides by the spread of
    its emb_dim features; at widths of 2-4 (tiny_configs) two nearly equal features amplify
    float32 rounding up to 1/sqrt(eps) ~ 300-fold, so this property uses the tiny preset's 32.
    """
    ids = data.draw(token_batches(50257, max_len=GPT_CONFIG_TINY["context_length"]))
    reference = seeded_model(GPT_CONFIG_TINY, seed)
    sdpa = GPTModel({**GPT_CONFIG_TINY, "attn_impl": "sdpa"}).eval()
    sdpa.load_state_dict(reference.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(
            sdpa(ids),
            reference(ids),
            atol=SDPA_ATOL,
            rtol=SDPA_RTOL,
            msg=lambda m: f"seed {seed}, ids={ids.tolist()}: {m}",
        )


@pytest.mark.slow
def test_reference_and_sdpa_agree_for_gpt_124m(book_model):
    """GPT-124M (context 256): sdpa logits equal the reference within SDPA_ATOL/RTOL at (2, 256)."""
    sdpa = GPTModel({**GPT_CONFIG_124M, "context_length": 256, "attn_impl": "sdpa"}).eval()
    sdpa.load_state_dict(book_model.state_dict())
    ids = torch.randint(0, 50257, (2, 256), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(sdpa(ids), book_model(ids), atol=SDPA_ATOL, rtol=SDPA_RTOL)


@given(cfg=tiny_configs(), data=st.data(), seed=seeds)
def test_dropout_is_off_in_eval_mode(cfg, data, seed):
    """In eval mode two calls give equal logits, whatever the global RNG state between them."""
    ids = data.draw(token_batches(cfg.vocab_size, max_len=cfg.context_length))
    model = seeded_model(cfg)
    with torch.no_grad():
        first = model(ids)
        torch.manual_seed(seed)
        second = model(ids)
    assert torch.equal(first, second), f"{cfg}, seed {seed}: eval-mode logits changed"


@pytest.mark.parametrize("attn_impl", ["reference", "sdpa"])
def test_dropout_is_on_in_train_mode(attn_impl):
    """With drop_rate 0.1 in train mode, two calls on the same ids differ (the RNG advanced)."""
    model = seeded_model({**GPT_CONFIG_TINY, "attn_impl": attn_impl}).train()
    ids = torch.arange(16).unsqueeze(0)
    with torch.no_grad():
        first, second = model(ids), model(ids)
    assert not torch.equal(first, second), f"{attn_impl}: train-mode logits did not change"


# ---------------------------------------------------------------- input errors


def test_sequence_longer_than_context_is_value_error(tiny_model):
    """T > context_length is a ValueError naming T, the context length and the fix."""
    ctx = GPT_CONFIG_TINY["context_length"]
    with pytest.raises(ValueError, match=f"sequence length {ctx + 1} exceeds context_length {ctx}"):
        tiny_model(torch.zeros(1, ctx + 1, dtype=torch.int64))


@pytest.mark.parametrize("bad", [-1, 50257, 10**6])
def test_token_id_outside_vocabulary_is_value_error_naming_it(tiny_model, bad):
    """An id outside [0, vocab_size) is a ValueError whose message names that id."""
    ids = torch.tensor([[1, 2, bad, 3]])
    with pytest.raises(ValueError, match=f"token id {bad} is outside \\[0, vocab_size=50257\\)"):
        tiny_model(ids)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
def test_non_integer_ids_are_type_error(tiny_model, dtype):
    """Float or bool input is a TypeError naming the dtype."""
    with pytest.raises(TypeError, match=str(dtype)):
        tiny_model(torch.zeros(1, 4, dtype=dtype))


def test_ids_without_batch_dimension_are_value_error(tiny_model):
    """A 1-D ids tensor is a ValueError that suggests unsqueeze(0)."""
    with pytest.raises(ValueError, match="unsqueeze"):
        tiny_model(torch.tensor([1, 2, 3]))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_other_integer_dtypes_give_the_int64_logits(tiny_model, dtype):
    """int32/int16/uint8 ids give exactly the logits of the same ids as int64."""
    ids = torch.tensor([[40, 3, 200, 7]])
    with torch.no_grad():
        assert torch.equal(tiny_model(ids.to(dtype)), tiny_model(ids)), f"{dtype}"


# ---------------------------------------------------------------- the book's numbers


@pytest.mark.slow
def test_book_toy_example_loss_and_perplexity(book_model):
    """Chapter 5's two 3-token examples on the seeded GPT-124M: loss 10.7940, perplexity ~48725.8.

    Observed here: loss 10.793965339660645 (prints as the book's 10.7940), perplexity
    48725.868 (float32 torch.exp: 48725.8672). The book prints 48725.8203, which is exp of the
    float32 one ulp below (10.793964385986328) -- what this model gives too when the two rows
    run as separate batches, i.e. matmul rounding that depends on the shape and the BLAS.
    """
    inputs, targets = torch.tensor(BOOK_TOY_INPUTS), torch.tensor(BOOK_TOY_TARGETS)
    with torch.no_grad():
        logits = book_model(inputs)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten()).item()
    assert f"{loss:.4f}" == "10.7940", f"loss {loss!r}"
    ppl = perplexity(loss)
    # one float32 ulp of the loss moves the perplexity by ~0.047
    assert abs(ppl - 48725.82) < 0.1, f"perplexity {ppl!r}, the book: 48725.8203"


@pytest.mark.slow
def test_train_mode_logits_are_the_books_chapter_4_output():
    """Seeded GPT-124M in train mode reproduces chapter 4's printed logits (4 decimals): the
    init and every dropout draw the global RNG in the book's order, as training relies on."""
    torch.manual_seed(123)
    model = GPTModel(GPT_CONFIG_124M)  # a fresh nn.Module is in train mode
    with torch.no_grad():
        logits = model(torch.tensor(BOOK_CH4_BATCH))
    corners = torch.cat([logits[..., :3], logits[..., -3:]], dim=-1)
    torch.testing.assert_close(corners, torch.tensor(BOOK_CH4_CORNERS), atol=5e-5, rtol=0)
