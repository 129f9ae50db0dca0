"""generate's contract: the book's generate (top-k, then temperature, then multinomial from the
global RNG; greedy at temperature 0; stop at eos). Several prompts at once are used only for
greedy decoding and plain sampling: the book's top-k filter and eos test are for one prompt."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from gptref.conformance import models
from gptref.conformance.oracles import oracle_book_generate, oracle_greedy, oracle_kth_largest
from gptref.conformance.repro import Call
from gptref.conformance.strategies import prompts, seeds

uses = pytest.mark.uses
requires = pytest.mark.requires
pytestmark = pytest.mark.level("book")

VOCAB = 11
temperatures = st.sampled_from([0.0, 0.3, 1.0, 2.5])
top_ks = st.one_of(st.none(), st.integers(1, VOCAB))
eos_ids = st.one_of(st.none(), st.integers(0, VOCAB - 1))
context_sizes = st.integers(1, 8)
new_token_counts = st.integers(1, 10)  # max_new_tokens=0 is test_edge_cases.py's


def supported(impl, temperature, top_k=None, eos_id=None):
    """The options with the declared-UNSUPPORTED ones made neutral: temperature 0 becomes 1.0
    without "greedy", top_k and eos_id become None without "top_k" / "eos_id"."""
    if temperature == 0.0 and not impl.supports("greedy"):
        temperature = 1.0
    return (
        temperature,
        top_k if impl.supports("top_k") else None,
        eos_id if impl.supports("eos_id") else None,
    )


def run(impl, seed: int | None, model, rows, *args) -> tuple[Call, torch.Tensor]:
    """generate(model, tensor(rows), max_new_tokens=..., context_size=..., temperature=...,
    top_k=..., eos_id=...) after torch.manual_seed(seed): the book's names, by keyword, so that
    a reproduce line names every argument."""
    setup = [] if seed is None else [f"torch.manual_seed({seed})"]
    names = ("max_new_tokens", "context_size", "temperature", "top_k", "eos_id")
    options = dict(zip(names, args, strict=False))
    call = Call(impl, "generate", model, torch.tensor(rows), setup=setup, **options)
    if seed is not None:
        torch.manual_seed(seed)
    return call, call()


def next_logits_of(model):
    def next_logits(seq: list[int]) -> list[float]:
        with torch.no_grad():
            return model(torch.tensor([seq]))[0, -1].tolist()

    return next_logits


@uses("generate")
@given(row=prompts(VOCAB, max_batch=1), n=new_token_counts, ctx=context_sizes,
       temperature=temperatures, top_k=top_ks, eos_id=eos_ids, seed=seeds)  # fmt: skip
def test_output_starts_with_idx_and_grows_by_at_most_max_new_tokens(
    impl, row, n, ctx, temperature, top_k, eos_id, seed
):
    """out: int64 (1, T + k) with out[:, :T] == idx and 0 <= k <= max_new_tokens (k ==
    max_new_tokens without eos_id), for every option."""
    temperature, top_k, eos_id = supported(impl, temperature, top_k, eos_id)
    call, out = run(impl, seed, models.BagOfTokens(VOCAB), row, n, ctx, temperature, top_k, eos_id)
    T = len(row[0])
    call.equal(str(out.dtype), "torch.int64", "dtype")
    k = out.shape[1] - T
    ok = out.shape[0] == 1 and (k == n if eos_id is None else 0 <= k <= n)
    call.check(ok, "shape", f"(1, {T} + {'' if eos_id is None else '<= '}{n})", tuple(out.shape))
    call.equal(out[:, :T], row, "the output must start with idx")


@uses("generate")
@requires("greedy")
@given(rows=prompts(VOCAB), n=new_token_counts, ctx=context_sizes)
def test_greedy_equals_stepwise_argmax_oracle(impl, rows, n, ctx):
    """temperature 0 appends, row by row, the first argmax of the logits of the last
    context_size tokens (a plain loop over lists of floats)."""
    model = models.BagOfTokens(VOCAB)
    call, out = run(impl, None, model, rows, n, ctx)
    call.equal(out, oracle_greedy(next_logits_of(model), rows, n, ctx), "greedy decoding")


@uses("generate")
@requires("top_k")
@given(row=prompts(VOCAB, max_batch=1), n=new_token_counts, ctx=context_sizes,
       temperature=st.floats(0.01, 100.0), seed=seeds)  # fmt: skip
def test_top_k_1_equals_greedy_at_any_temperature(impl, row, n, ctx, temperature, seed):
    """top_k=1 leaves one finite logit, so sampling at any temperature is the argmax."""
    model = models.BagOfTokens(VOCAB)
    call, out = run(impl, seed, model, row, n, ctx, temperature, 1)
    call.equal(out, oracle_greedy(next_logits_of(model), row, n, ctx), "top_k=1 must be greedy")


@uses("generate")
@requires("top_k")
@given(row=prompts(VOCAB, max_batch=1), n=st.integers(1, 10), ctx=context_sizes,
       temperature=st.floats(0.05, 20.0), top_k=st.integers(1, VOCAB), seed=seeds)  # fmt: skip
def test_every_sampled_token_lies_in_the_top_k_of_its_step(
    impl, row, n, ctx, temperature, top_k, seed
):
    """The token appended at step s has a logit >= the k-th largest logit of step s."""
    model = models.BagOfTokens(VOCAB)
    call, out = run(impl, seed, model, row, n, ctx, temperature, top_k)
    seq, T = out[0].tolist(), len(row[0])
    next_logits = next_logits_of(model)
    for s in range(out.shape[1] - T):
        logits = next_logits(seq[: T + s][-ctx:])
        kth = oracle_kth_largest(logits, top_k)
        chosen = seq[T + s]
        call.check(logits[chosen] >= kth, f"token {s} is outside the top {top_k}",
                   f"a token with logit >= {kth} (logits {logits})", chosen)  # fmt: skip


@uses("generate")
@given(rows=prompts(VOCAB), n=new_token_counts, ctx=context_sizes, seed=seeds)
def test_model_sees_exactly_the_last_context_size_tokens(impl, rows, n, ctx, seed):
    """At step s the model's input is out[:, :T + s][:, -context_size:]: never wider than
    context_size, never anything else (sampling at temperature 1)."""
    model = models.BagOfTokens(VOCAB)
    call, out = run(impl, seed, model, rows, n, ctx, 1.0)
    T = len(rows[0])
    want = [out[:, : T + s][:, -ctx:].tolist() for s in range(n)]
    call.equal([seen.tolist() for seen in model.inputs], want, "the model's inputs, step by step")


@uses("generate")
@requires("eos_id")
@given(row=prompts(VOCAB, max_batch=1), n=new_token_counts, temperature=temperatures,
       top_k=top_ks, eos_id=st.integers(0, VOCAB - 1), seed=seeds)  # fmt: skip
def test_eos_stops_before_the_first_generated_eos(impl, row, n, temperature, top_k, eos_id, seed):
    """With eos_id, the output is the same call's output without eos_id cut just before its
    first generated eos_id (the eos itself is not appended)."""
    temperature, top_k, _ = supported(impl, temperature, top_k)
    _, free = run(impl, seed, models.BagOfTokens(VOCAB), row, n, 5, temperature, top_k)
    call, out = run(impl, seed, models.BagOfTokens(VOCAB), row, n, 5, temperature, top_k, eos_id)
    T = len(row[0])
    generated = free[0, T:].tolist()
    cut = generated.index(eos_id) if eos_id in generated else len(generated)
    call.equal(out, [row[0] + generated[:cut]], f"the output without eos_id={eos_id}, cut at it")


@uses("generate")
@given(row=prompts(VOCAB, max_batch=1), n=new_token_counts, ctx=context_sizes,
       temperature=temperatures, top_k=top_ks, eos_id=eos_ids, seed=seeds)  # fmt: skip
def test_one_prompt_equals_the_books_generate_including_rng(
    impl, row, n, ctx, temperature, top_k, eos_id, seed
):
    """For one prompt: the book's generate's output, and the same global RNG state afterwards
    (the same random numbers were drawn, so seeded runs reproduce the book's samples)."""
    temperature, top_k, eos_id = supported(impl, temperature, top_k, eos_id)
    torch.manual_seed(seed)
    book = oracle_book_generate(models.BagOfTokens(VOCAB), torch.tensor(row), n, ctx, temperature, top_k, eos_id)  # fmt: skip
    book_rng = torch.get_rng_state()
    call, out = run(impl, seed, models.BagOfTokens(VOCAB), row, n, ctx, temperature, top_k, eos_id)
    call.equal(out, book, "the book's generate")
    same = torch.equal(torch.get_rng_state(), book_rng)
    call.check(same, "the global RNG advanced differently", "the book's RNG state", "another")


@uses("generate")
@requires("greedy")
@given(rows=prompts(50, max_batch=2, max_len=9), n=st.integers(1, 4))
def test_gpt_greedy_equals_oracle_and_crops_to_its_context(impl, rows, n):
    """With a GPT of context 6 and prompts up to 9 tokens, generate(context_size=6) crops every
    input to the context (the model rejects longer ones), and each row is the stepwise-argmax
    oracle's (one row at a time: batched float sums may round differently)."""
    cfg = dict(vocab_size=50, context_length=6, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0, qkv_bias=False)  # fmt: skip
    model = models.gpt(cfg, 0, impl.make_model)
    for row in rows:
        call, out = run(impl, None, model, [row], n, 6)
        call.equal(out, oracle_greedy(next_logits_of(model), [row], n, 6), "greedy decoding")


@uses("generate")
@pytest.mark.parametrize("training", [True, False])
def test_generate_runs_every_forward_call_without_grad_in_the_models_mode(impl, training):
    """generate neither calls eval() nor train(): every forward call sees the mode the model
    was handed in (a model with dropout, so the mode matters) with grad disabled (the book's
    no_grad), and model.training is unchanged after (sampling at temperature 1, which every
    implementation offers)."""
    model = models.ProbeGPT(VOCAB, 6, drop_rate=0.5).train(training)
    model._gptref_repro += f".train({training})"
    call, out = run(impl, 0, model, [[1, 2, 3]], 3, 6, 1.0)
    want = [(training, False, (1, 3 + s)) for s in range(3)]
    call.equal(len(model.calls), 3, "the number of forward calls (one per new token)")
    call.equal(model.calls, want, "(model.training, grad enabled, input shape) of each forward call")  # fmt: skip
    call.equal(model.training, training, "model.training after generate")


@uses("generate_text_simple")
@given(rows=prompts(VOCAB), n=new_token_counts, ctx=context_sizes, training=st.booleans())
def test_generate_text_simple_is_greedy_without_grad(impl, rows, n, ctx, training):
    """Chapter 4's generate_text_simple(model, idx, max_new_tokens, context_size) appends, row
    by row, the argmax of the logits of the last context_size tokens (the oracle's plain loop),
    every forward call without grad and in the mode the model was handed in."""
    model = models.BagOfTokens(VOCAB)
    call, out = run_simple(impl, model, rows, n, ctx)
    call.equal(out, oracle_greedy(next_logits_of(model), rows, n, ctx), "greedy decoding")
    probe = models.ProbeGPT(VOCAB, 8, drop_rate=0.5).train(training)
    probe._gptref_repro += f".train({training})"
    call, _ = run_simple(impl, probe, rows, n, ctx)
    T = len(rows[0])
    want = [(training, False, (len(rows), min(T + s, ctx))) for s in range(n)]
    call.equal(len(probe.calls), n, "the number of forward calls (one per new token)")
    call.equal(probe.calls, want, "(model.training, grad enabled, input shape) of each forward call")  # fmt: skip


def run_simple(impl, model, rows, n, ctx) -> tuple[Call, torch.Tensor]:
    call = Call(impl, "generate_text_simple", model, torch.tensor(rows), max_new_tokens=n, context_size=ctx)  # fmt: skip
    return call, call()
