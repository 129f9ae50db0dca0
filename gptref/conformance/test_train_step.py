"""train_step's contract: one optimizer update from the batch's mean loss, clipping of the total
gradient norm and the reported numbers (level book), and gradient accumulation (level
accumulation, weighted as ACCUMULATION_WEIGHTING declares); against a float64 restatement of
one SGD step. Ignored targets are the declared IGNORE_INDEX."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gptref.conformance import models
from gptref.conformance.oracles import oracle_sgd_step
from gptref.conformance.repro import Call, Code, source

uses = pytest.mark.uses
book = pytest.mark.level("book")

VOCAB = 101
MICRO = dict(vocab_size=VOCAB, context_length=16, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0, qkv_bias=False)  # fmt: skip
LR = 0.5
# float32 step against the float64 oracle
LOSS_RTOL, NORM_RTOL, PARAM_RTOL, PARAM_ATOL = 1e-6, 1e-5, 1e-5, 1e-6


@st.composite
def step_batches(draw, max_rows: int = 6, max_len: int = 8, ignore_index: int = -100, ignore=True):
    """(inputs, targets): int64 (b, T) ids below VOCAB; some targets ignore_index anywhere
    (micro-batches of unequal counts, whole rows ignored between counted ones), never all;
    none without ``ignore``."""
    b, T = draw(st.integers(1, max_rows)), draw(st.integers(1, max_len))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    x = torch.randint(0, VOCAB, (b, T), generator=g)
    y = torch.randint(0, VOCAB, (b, T), generator=g)
    if ignore:
        mask = draw(st.lists(st.booleans(), min_size=b * T, max_size=b * T), label="ignored")
        mask[draw(st.integers(0, b * T - 1), label="one counted")] = False
        y.view(-1)[torch.tensor(mask)] = ignore_index
    return x, y


def sgd_step_call(impl, seed: int, x, y, **kwargs) -> tuple[Call, torch.nn.Module]:
    model = models.gpt(MICRO, seed, impl.make_model).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    setup = [f"model = {source(model)}.train()", f"optimizer = torch.optim.SGD(model.parameters(), lr={LR})"]  # fmt: skip
    args = (Code("model", model), Code("optimizer", optimizer), x, y, "cpu")
    return Call(impl, "train_step", *args, setup=setup, **kwargs), model


def check_sgd_step(impl, seed: int, x, y, *, grad_clip=None, accumulation_steps=1) -> None:
    """train_step with SGD(lr=LR) must report the oracle's loss and gradient norm, count the
    tokens, and move every parameter to the oracle's p - LR * (clipped) gradient."""
    kwargs = {"grad_clip": grad_clip} if grad_clip is not None else {}
    if accumulation_steps != 1:
        kwargs["accumulation_steps"] = accumulation_steps
    call, model = sgd_step_call(impl, seed, x, y, **kwargs)
    weighting = impl.conventions["ACCUMULATION_WEIGHTING"]
    loss, grad_norm, new_params = oracle_sgd_step(
        model, x, y, LR, grad_clip, impl.ignore_index, accumulation_steps, weighting
    )
    result = call()
    call.close(result.loss, loss, "loss (before the update)", rtol=LOSS_RTOL, atol=1e-6)
    call.close(result.grad_norm, grad_norm, "grad_norm (before clipping)", rtol=NORM_RTOL, atol=1e-7)  # fmt: skip
    counts = [int(result.tokens), int(result.target_tokens)]
    call.equal(counts, [x.numel(), int((y != impl.ignore_index).sum())], "(tokens, target_tokens)")
    names = [name for name, _ in model.named_parameters()]
    for name, p, want in zip(names, model.parameters(), new_params, strict=True):
        err = (p.detach().double() - want).abs() - PARAM_RTOL * want.abs()
        if float(err.max()) > PARAM_ATOL:
            i = int(err.argmax())
            call.fail(
                f"parameter {name} after the update, entry {i} (rtol={PARAM_RTOL}, atol={PARAM_ATOL})",
                float(want.flatten()[i]),
                float(p.detach().flatten()[i]),
            )


@book
@uses("train_step")
@given(batch=st.data(), seed=st.integers(0, 2**16))
@settings(max_examples=15)
def test_train_step_is_one_sgd_step_on_the_mean_loss(impl, batch, seed):
    """With SGD: loss is the batch's mean cross-entropy over counted targets before the update,
    grad_norm the L2 norm of all gradients, and each parameter becomes p - lr * grad."""
    check_sgd_step(impl, seed, *batch.draw(step_batches(ignore_index=impl.ignore_index)))


@book
@uses("train_step")
@pytest.mark.requires("grad_clip")
@given(batch=st.data(), seed=st.integers(0, 2**16), clip=st.floats(1e-4, 10.0))
@settings(max_examples=15)
def test_train_step_clips_the_total_gradient_norm(impl, batch, seed, clip):
    """grad_clip=c scales all gradients by min(1, c / grad_norm) before the update (so the SGD
    update has norm lr * min(grad_norm, c)); grad_norm is reported before clipping."""
    x, y = batch.draw(step_batches(ignore_index=impl.ignore_index))
    check_sgd_step(impl, seed, x, y, grad_clip=clip)


@pytest.mark.level("accumulation")
@uses("train_step")
@given(seed=st.integers(0, 2**16), data=st.data())
@settings(max_examples=15)
def test_train_step_accumulation_gives_the_declared_update(impl, seed, data):
    """accumulation_steps=k (1 <= k <= batch rows): "token" weighting gives the full batch's
    loss, gradient norm and update, also when ignored targets make the micro-batches' counts
    unequal; "batch" weighting (nanoGPT's) the update of the mean of the k micro-batch means
    (micro-batches: torch.tensor_split along rows; no ignored targets, as nanoGPT has none)."""
    token = impl.conventions["ACCUMULATION_WEIGHTING"] == "token"
    x, y = data.draw(step_batches(ignore_index=impl.ignore_index, ignore=token), label="batch")
    k = data.draw(st.integers(1, x.shape[0]), label="accumulation_steps")
    check_sgd_step(impl, seed, x, y, accumulation_steps=k)


@book
@uses("train_step")
@given(seed=st.integers(0, 2**16), data=st.data())
@settings(max_examples=10)
def test_two_consecutive_train_steps_equal_two_sgd_steps(impl, seed, data):
    """Two train_step calls on one model and optimizer are two oracle SGD steps, the second
    from the first's parameters: nothing the first step leaves behind (gradients, the lr it
    set) changes the second. The second call passes no lr: the optimizer's own applies."""
    first = data.draw(step_batches(ignore_index=impl.ignore_index), label="first batch")
    second = data.draw(step_batches(ignore_index=impl.ignore_index), label="second batch")
    call, model = sgd_step_call(impl, seed, *first)
    twin = copy.deepcopy(model)
    call()
    again = Call(
        impl, "train_step", *call.args[:2], *second, "cpu", setup=[*call.setup, call.code()]
    )
    result = again()
    for x, y in (first, second):
        loss, _, new = oracle_sgd_step(twin, x, y, LR, None, impl.ignore_index)
        with torch.no_grad():
            for p, q in zip(twin.parameters(), new, strict=True):
                p.copy_(q)
    again.close(result.loss, loss, "the second step's loss (before its update)", rtol=LOSS_RTOL, atol=1e-6)  # fmt: skip
    for (name, p), want in zip(model.named_parameters(), twin.parameters(), strict=True):
        want = want.detach().double()
        err = (p.detach().double() - want).abs() - PARAM_RTOL * want.abs()
        if float(err.max()) > PARAM_ATOL:
            i = int(err.argmax())
            again.fail(f"parameter {name} after two steps, entry {i}", float(want.flatten()[i]), float(p.detach().flatten()[i]))  # fmt: skip


@book
@uses("train_step")
@given(seed=st.integers(0, 2**16), rows=st.integers(1, 3), length=st.integers(1, 6))
@settings(max_examples=10)
def test_train_step_runs_its_forward_calls_in_train_mode_with_grad(impl, seed, rows, length):
    """A model handed over in train mode (with dropout, so eval mode would change the update)
    stays in it: every forward call of train_step sees model.training and grad enabled, and
    model.training is True after."""
    model = models.ProbeGPT(13, 6, drop_rate=0.5, seed=seed).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randint(0, 13, (rows, length), generator=g), torch.randint(0, 13, (rows, length), generator=g)  # fmt: skip
    setup = [f"model = {source(model)}.train()", f"optimizer = torch.optim.SGD(model.parameters(), lr={LR})"]  # fmt: skip
    call = Call(impl, "train_step", Code("model", model), Code("optimizer", optimizer), x, y, "cpu", setup=setup)  # fmt: skip
    call()
    call.check(len(model.calls) >= 1, "the number of forward calls", ">= 1", len(model.calls))
    call.equal(
        [c[:2] for c in model.calls], [(True, True)] * len(model.calls),
        "(model.training, grad enabled) of each forward call",
    )  # fmt: skip
    call.equal(model.training, True, "model.training after train_step")


@book
@uses("train_step")
def test_train_step_sets_the_given_lr_on_every_param_group(impl):
    """lr=... overrides each param group's learning rate before the update; result.lr is it."""
    model = models.gpt(MICRO, 2, impl.make_model).train()
    params = list(model.parameters())
    optimizer = torch.optim.AdamW([{"params": params[:3]}, {"params": params[3:], "weight_decay": 0.0}], lr=1.0)  # fmt: skip
    setup = [
        f"model = {source(model)}.train()",
        "params = list(model.parameters())",
        'optimizer = torch.optim.AdamW([{"params": params[:3]}, {"params": params[3:], "weight_decay": 0.0}], lr=1.0)',
    ]
    x = torch.arange(16).view(2, 8)
    args = (Code("model", model), Code("optimizer", optimizer), x, x, "cpu")
    call = Call(impl, "train_step", *args, setup=setup, lr=3e-4)
    result = call()
    got = [float(result.lr)] + [g["lr"] for g in optimizer.param_groups]
    call.equal(got, [3e-4] * 3, "[result.lr, lr of each param group]")
