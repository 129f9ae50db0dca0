"""The parts of the book's training loops, by their own names, checked before the loops that
call them (so that a bug in one is named here first): chapter 5's ``evaluate_model(model,
train_loader, val_loader, device, eval_iter)`` and ``generate_and_print_sample(model,
tokenizer, device, start_context)``.

The model is ``models.ProbeGPT`` with dropout (train and eval mode give different numbers),
handed over in train mode, as the loops hand it; it records the mode, the grad mode and the
ids of every forward call.
"""

from __future__ import annotations

import contextlib
import copy
import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gptref.conformance import models
from gptref.conformance.loop_oracles import oracle_evaluate, oracle_sample
from gptref.conformance.repro import Call, Code, source
from gptref.conformance.tokenizer import CharTokenizer

uses = pytest.mark.uses
pytestmark = pytest.mark.level("book")

VOCAB, CONTEXT = 64, 6
RTOL = 1e-6


def _forward_calls(call: Call, got: list, want: list, what: str) -> None:
    """The forward calls: how many (a count), then each one's (training, grad, shape), then
    the ids, against the oracle's."""
    call.equal(len(got), len(want), f"the number of forward calls ({what})")
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        at = f"forward call {k + 1} of {len(want)} (the book's: {w.phase})"
        call.equal(g.what, w.what, f"{at}: (model.training, grad enabled, input shape)")
        call.equal(g.data, w.data, f"{at}: the input ids")


@st.composite
def eval_cases(draw):
    return dict(
        n_train=draw(st.integers(1, 7)),
        n_val=draw(st.integers(0, 4)),
        batch_size=draw(st.integers(1, 3)),
        length=draw(st.integers(1, CONTEXT)),
        eval_iter=draw(st.integers(1, 4)),
        seed=draw(st.integers(0, 2**16)),
    )


@uses("evaluate_model")
@given(case=eval_cases())
@settings(max_examples=25)
def test_evaluate_model_averages_eval_iter_batches_in_eval_mode_without_grad(impl, case):
    """evaluate_model(model, train_loader, val_loader, device, eval_iter) -> (train_loss,
    val_loss): each the mean of the per-batch mean losses of the loader's first eval_iter
    batches (nan for an empty loader), every forward call in eval mode without grad; the model
    is back in train mode after, and the global RNG (the shuffled loader's pass) as the book's."""
    loaders = models.book_loaders(case["seed"], case["n_train"], case["n_val"], case["length"], case["batch_size"], VOCAB)  # fmt: skip
    train_loader, val_loader, loader_setup = loaders
    model = models.ProbeGPT(VOCAB, CONTEXT, drop_rate=0.5, seed=case["seed"]).train()
    twin = copy.deepcopy(model)
    setup = [
        f"model = {source(model)}.train()",
        *loader_setup,
        f"torch.manual_seed({case['seed']})",
    ]
    call = Call(impl, "evaluate_model", Code("model", model), Code("train_loader", train_loader),
                Code("val_loader", val_loader), "cpu", case["eval_iter"], setup=setup)  # fmt: skip
    call.depends = ("calc_loss_batch", "calc_loss_loader")
    torch.manual_seed(case["seed"])
    got = call()
    got_rng = torch.get_rng_state()
    torch.manual_seed(case["seed"])
    want = oracle_evaluate(twin, train_loader, val_loader, "cpu", case["eval_iter"],
                           trace=lambda label: setattr(twin, "phase", label))  # fmt: skip
    _forward_calls(call, model.events, twin.events, "min(eval_iter, len(loader)) of each loader")
    call.equal(len(got), 2, "the number of returned losses (train_loss, val_loss)")
    for name, a, w in zip(("train_loss", "val_loss"), got, want, strict=True):
        call.close(float(a), w, f"{name}: the mean of the first eval_iter batch losses", rtol=RTOL, atol=RTOL)  # fmt: skip
    call.equal(model.training, True, "model.training after evaluate_model (the book: model.train())")  # fmt: skip
    same = torch.equal(got_rng, torch.get_rng_state())
    call.check(same, "the global RNG after evaluate_model (a pass over the shuffled train_loader)", "the book's state", "another")  # fmt: skip


@uses("generate_and_print_sample")
@given(seed=st.integers(0, 2**16), start=st.sampled_from(["Every effort", "I", "HAD always"]),
       context=st.integers(1, CONTEXT), training=st.booleans())  # fmt: skip
@settings(max_examples=15)
def test_generate_and_print_sample_prints_50_greedy_tokens_in_eval_mode(
    impl, seed, start, context, training
):
    """generate_and_print_sample(model, tokenizer, device, start_context) prints the decoded
    start_context plus 50 greedy tokens (newlines as spaces), each from the last
    pos_emb.weight.shape[0] tokens, every forward call in eval mode without grad; then the model
    is in train mode (the book's model.train())."""
    model = models.ProbeGPT(VOCAB, context, drop_rate=0.5, seed=seed).train(training)
    twin = copy.deepcopy(model)
    tokenizer = CharTokenizer(VOCAB)
    setup = [f"model = {source(model)}.train({training})"]
    call = Call(impl, "generate_and_print_sample", Code("model", model), tokenizer, "cpu", start, setup=setup)  # fmt: skip
    call.depends = ("generate_text_simple", "text_to_token_ids", "token_ids_to_text")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        call()
    want = oracle_sample(twin, tokenizer, "cpu", start, trace=lambda label: setattr(twin, "phase", label))  # fmt: skip
    _forward_calls(call, model.events, twin.events, "one per generated token: 50")
    call.equal(printed.getvalue().strip(), want, "the printed sample")
    call.equal(model.training, True, "model.training after the sample (the book: model.train())")
