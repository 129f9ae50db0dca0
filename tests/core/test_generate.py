"""gptref/generate.py beyond the book's generate for one prompt: batches (per-row top-k, eos
padding), the generator argument, generate_text_simple, argument errors.

generate's contract (greedy, top-k, eos and the book's random numbers for one prompt, context
cropping, model mode) is the conformance suite's: gptref/conformance/test_generate.py."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from gptref.conformance.models import BagOfTokens
from gptref.generation import generate, generate_text_simple
from gptref.model import GPTConfig, GPTModel
from tests.oracles import oracle_book_generate_text_simple
from tests.strategies import prompts, seeds

VOCAB = 11


@functools.lru_cache(maxsize=2)
def tiny_gpt(drop_rate: float = 0.0) -> GPTModel:
    """A real GPTModel, tiny: 50 ids, context 6, one block; seeded, built once."""
    torch.manual_seed(0)
    cfg = GPTConfig(
        vocab_size=50, context_length=6, emb_dim=16, n_heads=2, n_layers=1, drop_rate=drop_rate
    )
    return GPTModel(cfg).eval()


temperatures = st.sampled_from([0.0, 0.3, 1.0, 2.5])
top_ks = st.one_of(st.none(), st.integers(1, VOCAB + 2))
eos_ids = st.one_of(st.none(), st.integers(0, VOCAB - 1))
context_sizes = st.integers(1, 8)
new_token_counts = st.integers(0, 10)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@given(
    rows=prompts(VOCAB),
    n=new_token_counts,
    ctx=context_sizes,
    temperature=temperatures,
    top_k=top_ks,
    eos_id=eos_ids,
    seed=seeds,
)
def test_output_starts_with_idx_and_grows_by_at_most_max_new_tokens(
    rows, n, ctx, temperature, top_k, eos_id, seed
):
    """out: int64 (b, T + k) with out[:, :T] == idx and 0 <= k <= max_new_tokens (k ==
    max_new_tokens without eos_id), for every option."""
    idx = torch.tensor(rows)
    out = generate(BagOfTokens(), idx, n, ctx, temperature, top_k, eos_id, seeded(seed))
    b, T = idx.shape
    assert out.dtype == torch.int64 and out.shape[0] == b, (out.dtype, out.shape)
    assert T <= out.shape[1] <= T + n, (out.shape, T, n)
    assert torch.equal(out[:, :T], idx), (out, idx)
    if eos_id is None:
        assert out.shape[1] == T + n, (out.shape, T, n)


@given(
    rows=prompts(VOCAB),
    n=new_token_counts,
    ctx=context_sizes,
    temperature=st.floats(0.01, 100.0),
    seed=seeds,
)
def test_top_k_1_equals_greedy_at_any_temperature(rows, n, ctx, temperature, seed):
    """top_k=1 leaves one finite logit, so sampling at any temperature is the argmax."""
    idx = torch.tensor(rows)
    greedy = generate(BagOfTokens(), idx, n, ctx)
    sampled = generate(BagOfTokens(), idx, n, ctx, temperature, top_k=1, generator=seeded(seed))
    assert torch.equal(sampled, greedy), (temperature, sampled, greedy)


@given(
    rows=prompts(VOCAB),
    n=st.integers(1, 10),
    ctx=context_sizes,
    temperature=st.floats(0.05, 20.0),
    top_k=st.integers(1, VOCAB),
    seed=seeds,
)
def test_every_sampled_token_lies_in_the_top_k_of_its_step(rows, n, ctx, temperature, top_k, seed):
    """The token appended at step s has a logit >= the k-th largest logit of step s."""
    model = BagOfTokens()
    idx = torch.tensor(rows)
    out = generate(model, idx, n, ctx, temperature, top_k, generator=seeded(seed))
    T = idx.shape[1]
    for s, logits in enumerate(model.last_logits):
        kth = torch.topk(logits, top_k).values[:, -1]  # (b,)
        chosen = logits.gather(1, out[:, T + s, None])[:, 0]
        assert bool((chosen >= kth).all()), (s, logits, out[:, T + s], kth)


@given(rows=prompts(VOCAB), n=new_token_counts, top_k=top_ks, seed=seeds)
def test_same_generator_seed_same_output_and_global_rng_untouched(rows, n, top_k, seed):
    """Two calls with generators seeded alike agree, and neither reads nor advances the
    global RNG."""
    idx = torch.tensor(rows)
    before = torch.get_rng_state()
    a = generate(BagOfTokens(), idx, n, 4, 1.0, top_k, generator=seeded(seed))
    b = generate(BagOfTokens(), idx, n, 4, 1.0, top_k, generator=seeded(seed))
    assert torch.equal(a, b), (a, b)
    assert torch.equal(torch.get_rng_state(), before), "generate advanced the global RNG"


@given(
    rows=prompts(VOCAB, max_batch=5),
    n=new_token_counts,
    temperature=temperatures,
    top_k=top_ks,
    eos_id=st.integers(0, VOCAB - 1),
    seed=seeds,
)
def test_eos_truncates_each_row_and_pads_it_with_eos(rows, n, temperature, top_k, eos_id, seed):
    """With eos_id, row i is the same call's row without eos_id cut before its first
    generated eos_id and padded with eos_id; the width is T + the longest cut, so generation
    stops once every row is done and no row ends with the eos it stopped at."""
    idx = torch.tensor(rows)
    T = idx.shape[1]
    free = generate(BagOfTokens(), idx, n, 5, temperature, top_k, None, seeded(seed))
    out = generate(BagOfTokens(), idx, n, 5, temperature, top_k, eos_id, seeded(seed))
    generated = [row[T:] for row in free.tolist()]
    cuts = [g.index(eos_id) if eos_id in g else len(g) for g in generated]
    width = max(cuts)
    want = [
        p + g[:c] + [eos_id] * (width - c) for p, g, c in zip(rows, generated, cuts, strict=True)
    ]
    assert out.tolist() == want, (free, out, eos_id)


@given(rows=prompts(50, max_batch=2, max_len=9), n=st.integers(0, 4))
def test_gpt_model_generate_text_simple_equals_the_books_and_crops_to_its_context(rows, n):
    """With a real GPTModel (context 6) and prompts up to 9 tokens, generate_text_simple crops
    every input to the context (the model rejects longer ones) and equals the book's (the
    suite checks generate the same way)."""
    model = tiny_gpt()
    idx = torch.tensor(rows)
    ctx = model.cfg.context_length
    simple = generate_text_simple(model, idx, n, ctx)
    assert torch.equal(simple, oracle_book_generate_text_simple(model, idx, n, ctx)), rows


@given(rows=prompts(VOCAB), n=new_token_counts, ctx=context_sizes)
def test_generate_text_simple_equals_the_books(rows, n, ctx):
    """generate_text_simple is the book's greedy loop (argmax of the softmax), any batch."""
    idx = torch.tensor(rows)
    ours = generate_text_simple(BagOfTokens(), idx, n, ctx)
    book = oracle_book_generate_text_simple(BagOfTokens(), idx, n, ctx)
    assert torch.equal(ours, book), (ours, book)


@pytest.mark.parametrize("training", [True, False])
def test_generate_text_simple_leaves_model_mode_unchanged(training):
    """generate_text_simple neither calls eval() nor train(): model.training is what it was
    (the suite checks generate)."""
    model = tiny_gpt(drop_rate=0.1)
    model.train(training)
    try:
        generate_text_simple(model, torch.tensor([[1, 2, 3]]), 3, 6)
        assert model.training is training
    finally:
        model.eval()


def test_zero_new_tokens_returns_idx_as_int64():
    """max_new_tokens=0 calls no model and returns idx (as int64)."""
    model = BagOfTokens()
    idx = torch.tensor([[3, 1, 4]], dtype=torch.int32)
    out = generate(model, idx, 0, 4)
    assert out.dtype == torch.int64 and out.tolist() == [[3, 1, 4]] and not model.inputs


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(idx=[[1, 2]]), TypeError, "idx must be a tensor of token ids, got list"),
        (dict(idx=torch.tensor([[1.0]])), TypeError, "integer tensor, got dtype torch.float32"),
        (dict(idx=torch.tensor([1, 2])), ValueError, r"shape \(batch, T\).*got \(2,\)"),
        (dict(idx=torch.zeros(1, 0, dtype=torch.long)), ValueError, r"got \(1, 0\)"),
        (dict(max_new_tokens=-1), ValueError, "max_new_tokens must be >= 0, got -1"),
        (dict(context_size=0), ValueError, "context_size must be >= 1, got 0"),
        (dict(temperature=-0.5), ValueError, "temperature must be a finite number >= 0, got -0.5"),
        (dict(temperature=float("nan")), ValueError, "temperature must be a finite number"),
        (dict(top_k=0), ValueError, "top_k must be >= 1, got 0"),
        (dict(top_k=2.0), TypeError, "top_k must be an int, got 2.0"),
        (dict(eos_id=-1), ValueError, "eos_id must be >= 0, got -1"),
        (dict(generator=0), TypeError, "generator must be a torch.Generator or None, got int"),
    ],
)
def test_generate_rejects_bad_arguments_naming_the_value(kwargs, error, match):
    """Each invalid argument is a TypeError/ValueError whose message names the value."""
    args = dict(model=BagOfTokens(), idx=torch.tensor([[1, 2]]), max_new_tokens=2, context_size=4)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        generate(**args)
