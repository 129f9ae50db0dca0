"""The losses' contract (book level): calc_loss_batch and calc_loss_loader (the declared
weighting, and every weighting the implementation accepts by keyword), against
double-precision oracles; the ignored target is the declared IGNORE_INDEX (the book's -100)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from gptref.conformance import models
from gptref.conformance.oracles import oracle_book_loss_loader, oracle_mean_nll
from gptref.conformance.repro import Call, Code, source
from gptref.conformance.strategies import (
    batch_lists,
    logit_tensors,
    target_batches,
    tiny_configs,
    token_batches,
)

uses = pytest.mark.uses
pytestmark = pytest.mark.level("book")

# float32 logits and losses against a double-precision oracle
RTOL, ATOL = 1e-5, 1e-5


def gpt(impl, cfg, seed: int = 123):
    return models.gpt(cfg.to_dict(), seed, impl.make_model)


def logits_of(model, batches) -> tuple[list, list]:
    """-> (logits rows, target rows) of every batch, as nested lists, for the oracles."""
    logits, targets = [], []
    with torch.no_grad():
        for x, y in batches:
            logits += model(x).tolist()
            targets += y.tolist()
    return logits, targets


def batch_loss(impl, inputs, targets, model) -> tuple[Call, float]:
    call = Call(impl, "calc_loss_batch", inputs, targets, model, "cpu")
    with torch.no_grad():
        return call, float(call())


# ---------------------------------------------------------------- calc_loss_batch


@uses("calc_loss_batch")
@given(cfg=tiny_configs(), data=st.data())
def test_loss_is_non_negative(impl, cfg, data):
    """calc_loss_batch >= 0: a cross-entropy is a mean of -log p with p <= 1."""
    ids = data.draw(token_batches(cfg.vocab_size, max_len=cfg.context_length))
    targets = data.draw(token_batches(cfg.vocab_size, batch=ids.shape[0], length=ids.shape[1]))
    call, loss = batch_loss(impl, ids, targets, gpt(impl, cfg))
    call.check(loss >= 0, "a cross-entropy is never negative", ">= 0", loss)


@uses("calc_loss_batch")
@given(vocab_size=st.integers(2, 60000), batch=st.integers(1, 4), length=st.integers(1, 8))
def test_zero_logits_give_ln_vocab_size(impl, vocab_size, batch, length):
    """All-zero logits give ln(vocab_size), to float32 rounding (the log and the mean round)."""
    targets = torch.randint(
        0, vocab_size, (batch, length), generator=torch.Generator().manual_seed(0)
    )
    model = models.FixedLogits(torch.zeros(batch, length, vocab_size))
    model._gptref_repro = f"models.FixedLogits(torch.zeros({batch}, {length}, {vocab_size}))"
    call, loss = batch_loss(impl, targets, targets, model)
    call.close(loss, math.log(vocab_size), "uniform logits", rtol=1e-6, atol=0)


@uses("calc_loss_batch")
@given(cfg=tiny_configs(), data=st.data())
def test_permuting_rows_leaves_loss_unchanged(impl, cfg, data):
    """calc_loss_batch(x[p], y[p]) == calc_loss_batch(x, y) for any permutation p of the rows."""
    ids = data.draw(token_batches(cfg.vocab_size, max_len=cfg.context_length))
    targets = data.draw(
        target_batches(cfg.vocab_size, ids.shape[0], ids.shape[1], ignore_index=impl.ignore_index)
    )
    perm = torch.tensor(data.draw(st.permutations(range(ids.shape[0])), label="perm"))
    model = gpt(impl, cfg)
    _, loss = batch_loss(impl, ids, targets, model)
    call, permuted = batch_loss(impl, ids[perm], targets[perm], model)
    call.close(permuted, loss, "loss of the rows in another order", rtol=RTOL, atol=ATOL)


@uses("calc_loss_batch")
@given(cfg=tiny_configs(), data=st.data())
def test_loss_is_the_mean_of_oracle_token_nll(impl, cfg, data):
    """calc_loss_batch equals the mean over counted targets (not IGNORE_INDEX) of the oracle's
    -log softmax of the model's logits."""
    ids = data.draw(token_batches(cfg.vocab_size, max_len=cfg.context_length))
    targets = data.draw(
        target_batches(cfg.vocab_size, ids.shape[0], ids.shape[1], ignore_index=impl.ignore_index)
    )
    model = gpt(impl, cfg)
    call, loss = batch_loss(impl, ids, targets, model)
    expected = oracle_mean_nll(*logits_of(model, [(ids, targets)]), ignore_index=impl.ignore_index)
    call.close(loss, expected, "mean cross-entropy", rtol=RTOL, atol=ATOL)


@uses("calc_loss_batch")
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(2, 16)), data=st.data())
def test_loss_of_extreme_logits_is_the_oracle_mean_over_counted_targets(impl, shape, data):
    """For logits anywhere in [-30, 30], calc_loss_batch equals the oracle's mean -log softmax
    over the targets that are not IGNORE_INDEX, and logits at ignored targets never change it."""
    b, T, V = shape
    ignore = impl.ignore_index
    logits = data.draw(logit_tensors(b, T, V), label="logits")
    targets = data.draw(target_batches(V, b, T, ignore_index=ignore))
    noisy = logits.clone()
    noisy[targets == ignore] = data.draw(logit_tensors(1, 1, V), label="noise")[0, 0]
    ids = targets.clamp(min=0)
    call, loss = batch_loss(impl, ids, targets, models.FixedLogits(logits))
    want = oracle_mean_nll(logits.tolist(), targets.tolist(), ignore_index=ignore)
    call.close(loss, want, "mean", rtol=RTOL, atol=ATOL)
    call_noisy, loss_noisy = batch_loss(impl, ids, targets, models.FixedLogits(noisy))
    call_noisy.equal(loss_noisy, loss, "logits at ignored targets changed the loss")


@uses("calc_loss_batch")
def test_calc_loss_batch_is_differentiable(impl):
    """loss.backward() reaches every parameter of the model with a finite gradient."""
    cfg = dict(vocab_size=50, context_length=8, emb_dim=8, n_heads=2, n_layers=1, drop_rate=0.0, qkv_bias=False)  # fmt: skip
    model = models.gpt(cfg, 0, impl.make_model).train()
    ids = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(0))
    call = Call(impl, "calc_loss_batch", ids, ids.roll(-1, dims=1), model, "cpu")
    call().backward()
    bad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.isfinite().all()]
    call.equal(bad, [], "parameters without a finite gradient after loss.backward()")


# ---------------------------------------------------------------- calc_loss_loader


def oracle_loader_loss(weighting: str, model, batches, num_batches, ignore: int) -> float:
    """The loader loss of ``weighting`` over the first num_batches batches, from the oracle."""
    used = batches if num_batches is None else batches[:num_batches]
    if weighting == "token":
        return oracle_mean_nll(*logits_of(model, used), ignore) if used else float("nan")
    means = [oracle_mean_nll(*logits_of(model, [batch]), ignore) for batch in batches]
    return oracle_book_loss_loader(means, num_batches)


def weighting_calls(impl, batches, model, num_batches) -> list[tuple[str, Call]]:
    """(weighting, call) for the default call (the declared weighting) and each keyword one;
    the calls show the model and the batches as setup lines, so they stay readable."""
    setup = [f"model = {source(model)}", f"batches = {source(batches)}"]
    args = (Code("batches", batches), Code("model", model), "cpu")
    calls = [(impl.loader_loss_weighting, Call(impl, "calc_loss_loader", *args, setup=setup, num_batches=num_batches))]  # fmt: skip
    for w in impl.loader_loss_weightings:
        calls.append((w, Call(impl, "calc_loss_loader", *args, setup=setup, num_batches=num_batches, weighting=w)))  # fmt: skip
    return calls


@uses("calc_loss_loader")
@given(cfg=tiny_configs(), num_batches=st.none() | st.integers(1, 6), data=st.data())
def test_loader_loss_is_the_declared_weighting(impl, cfg, num_batches, data):
    """calc_loss_loader(loader, model, device, num_batches) is the declared weighting's loss over
    the first num_batches batches (all when None; clamped to len(loader)): "batch", the book's
    mean of per-batch mean losses, or "token", the mean over all counted targets; nan with no
    batches. Every weighting accepted as weighting=... is checked the same way."""
    batches = data.draw(
        batch_lists(
            cfg.vocab_size, cfg.context_length, min_batches=1, ignore_index=impl.ignore_index
        )
    )
    model = gpt(impl, cfg)
    for weighting, call in weighting_calls(impl, batches, model, num_batches):
        expected = oracle_loader_loss(weighting, model, batches, num_batches, impl.ignore_index)
        call.close(call(), expected, f'"{weighting}"-weighted loss', rtol=RTOL, atol=ATOL)


@uses("calc_loss_loader")
@given(cfg=tiny_configs(), data=st.data())
def test_weightings_agree_when_batches_have_equal_token_counts(impl, cfg, data):
    """With every batch one shape and no ignored target, each weighting gives the same loss."""
    batches = data.draw(
        batch_lists(
            cfg.vocab_size, cfg.context_length, min_batches=1, ignore=False, same_shape=True
        )
    )
    model = gpt(impl, cfg)
    calls = weighting_calls(impl, batches, model, None)
    first = float(calls[0][1]())
    for _, call in calls[1:]:
        call.close(call(), first, "weightings disagree on equal batches", rtol=RTOL, atol=ATOL)


@uses("calc_loss_loader")
def test_short_last_batch_weighs_as_the_weighting_says(impl):
    """The documented difference: a 1-token batch after a 4-token one counts as much ("batch")
    or a fifth as much ("token") in the loader loss."""
    model = models.ConstantLogits(torch.tensor([10.0, 0.0]))  # sure of class 0 everywhere
    batches = [
        (torch.zeros(1, 4, dtype=torch.int64), torch.tensor([[0, 0, 0, 0]])),
        (torch.zeros(1, 1, dtype=torch.int64), torch.tensor([[1]])),
    ]
    right, wrong = oracle_mean_nll([[[10.0, 0.0]]], [[0]]), oracle_mean_nll([[[10.0, 0.0]]], [[1]])
    expected = {"batch": (right + wrong) / 2, "token": (4 * right + wrong) / 5}
    for weighting, call in weighting_calls(impl, batches, model, None):
        call.close(call(), expected[weighting], f'"{weighting}" weighting', rtol=RTOL, atol=ATOL)


@uses("calc_loss_loader")
@given(cfg=tiny_configs(), extra=st.integers(0, 5), data=st.data())
def test_num_batches_is_clamped_to_len(impl, cfg, extra, data):
    """num_batches >= len(loader) gives exactly the all-batches loss."""
    batches = data.draw(
        batch_lists(
            cfg.vocab_size, cfg.context_length, min_batches=1, ignore_index=impl.ignore_index
        )
    )
    model = gpt(impl, cfg)
    everything = [float(call()) for _, call in weighting_calls(impl, batches, model, None)]
    clamped = weighting_calls(impl, batches, model, len(batches) + extra)
    for (_, call), want in zip(clamped, everything, strict=True):
        call.equal(float(call()), want, "num_batches past the end changed the loss")
