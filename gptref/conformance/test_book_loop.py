"""The book's training loops by their own names and signatures: chapter 5's
``train_model_simple(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq,
eval_iter, start_context, tokenizer)`` and appendix D's ``train_model(..., n_epochs, ...,
warmup_steps, initial_lr=3e-05, min_lr=1e-6)``, each against the oracle loop (a plain
restatement of the book in ``oracles.py``) run on a twin of the model from the same RNG state.

The model is ``models.ProbeGPT`` (dropout, so train/eval mode shows; a vocabulary of 64, above
the 50 of a sample with a hard-coded ``top_k=50``); it records every forward call (mode, grad
mode, input ids) and every ``optimizer.step()`` (the lrs and the gradient norm it applies).
The loaders are the book's (``DataLoader(..., shuffle=True, drop_last=True)`` for training: the
global RNG shuffles), the tokenizer one id per character. The per-epoch sample is where
``EPOCH_SAMPLE`` declares it.

One test per loop, checked causes first: the timeline of forward calls and optimizer steps
(the first event that departs from the book's loop, named by what the book's loop does there:
an update, an evaluation batch, a sample token; the lrs and the clipping are in the steps),
then the returned lists (their lengths, as counts, then their values), then the final
parameters and RNG state. The book's sub-functions (``calc_loss_loader``, ``evaluate_model``,
``generate_and_print_sample``, ...) have their own tests, which run first; a loop's failure
names any of them that failed there.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gptref.conformance import models
from gptref.conformance.loop_oracles import oracle_train_model, oracle_train_model_simple
from gptref.conformance.repro import Call, Code, add_note, source
from gptref.conformance.tokenizer import CharTokenizer

uses = pytest.mark.uses
pytestmark = pytest.mark.level("book")

VOCAB, CONTEXT = 64, 6
START = "Every effort"
LOSS_RTOL, NORM_RTOL, PARAM_ATOL = 1e-5, 1e-5, 1e-5
# what the book's loops call: a failure of one of these in its own test is named by the loop's
BOOK_PARTS = ("calc_loss_batch", "calc_loss_loader", "evaluate_model", "generate_and_print_sample",
              "generate_text_simple", "text_to_token_ids", "token_ids_to_text")  # fmt: skip


@st.composite
def loop_cases(draw, appendix_d: bool = False):
    """Keyword arguments of one run: data sizes, epochs, eval_freq, eval_iter, seeds (and for
    appendix D warmup_steps, initial_lr, min_lr and the optimizer's lr, the peak)."""
    case = dict(
        n_train=draw(st.integers(1, 7)),
        n_val=draw(st.integers(0, 3)),
        batch_size=draw(st.integers(1, 3)),
        length=draw(st.integers(1, CONTEXT)),
        num_epochs=draw(st.integers(1, 3)),
        eval_freq=draw(st.integers(1, 4)),
        eval_iter=draw(st.integers(1, 3)),
        drop_rate=draw(st.sampled_from([0.0, 0.5])),
        seed=draw(st.integers(0, 2**16)),
    )
    case["n_train"] = max(case["n_train"], case["batch_size"])  # drop_last keeps >= 1 batch
    if appendix_d:
        steps = (case["n_train"] // case["batch_size"]) * case["num_epochs"]
        # mostly two or more steps after the warmup, so that the cosine's progress passes 0
        case["warmup_steps"] = draw(st.integers(1, max(1, steps - 2)) | st.integers(1, max(1, steps)))  # fmt: skip
        case["peak_lr"] = draw(st.sampled_from([0.1, 0.5]))
        case["initial_lr"] = draw(st.sampled_from([0.0, 3e-05, 0.01]))
        case["min_lr"] = draw(st.sampled_from([0.0, 1e-6, 0.05]))
    return case


def _setup(case: dict, appendix_d: bool):
    """-> (model, optimizer, train_loader, val_loader, setup lines): SGD for appendix D (so
    that clipping changes the update; Adam's first step would hide a uniform rescaling), the
    book's AdamW(lr=4e-4, weight_decay=0.1) for chapter 5."""
    loaders = models.book_loaders(case["seed"], case["n_train"], case["n_val"], case["length"], case["batch_size"], VOCAB)  # fmt: skip
    train_loader, val_loader, loader_setup = loaders
    scale = 8.0 if appendix_d else 1.0  # large gradients: clipping to norm 1 shows
    # in eval mode, as the book leaves its model before training (chapter 5 evaluates the
    # untrained model first): the loop must switch to train mode itself
    model = models.ProbeGPT(VOCAB, CONTEXT, drop_rate=case["drop_rate"], seed=case["seed"], scale=scale).eval()  # fmt: skip
    optimizer = make_optimizer(model, case, appendix_d)
    if appendix_d:
        opt_code = f"torch.optim.SGD(model.parameters(), lr={case['peak_lr']})"
    else:
        opt_code = "torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)"
    setup = [
        f"model = {source(model)}.eval()",
        f"optimizer = {opt_code}",
        *loader_setup,
        f"torch.manual_seed({case['seed']})",
    ]
    return model, optimizer, train_loader, val_loader, setup


def make_optimizer(model, case: dict, appendix_d: bool) -> torch.optim.Optimizer:
    if appendix_d:
        return torch.optim.SGD(model.parameters(), lr=case["peak_lr"])
    return torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)


def run_both(impl, case: dict, appendix_d: bool = False) -> dict:
    """Run the implementation's loop and the oracle's from the same RNG state, on twins."""
    model, optimizer, train_loader, val_loader, setup = _setup(case, appendix_d)
    twin = copy.deepcopy(model)
    twin_optimizer = make_optimizer(twin, case, appendix_d)
    model.record_steps(optimizer)
    twin.record_steps(twin_optimizer)
    tokenizer = CharTokenizer(VOCAB)
    extra = {}
    if appendix_d:
        extra = {k: case[k] for k in ("warmup_steps", "initial_lr", "min_lr")}
    name = "train_model" if appendix_d else "train_model_simple"
    epochs = {"n_epochs" if appendix_d else "num_epochs": case["num_epochs"]}
    call = Call(
        impl, name, Code("model", model), Code("train_loader", train_loader),
        Code("val_loader", val_loader), Code("optimizer", optimizer), "cpu", **epochs,
        eval_freq=case["eval_freq"], eval_iter=case["eval_iter"], start_context=START,
        tokenizer=tokenizer, **extra, setup=setup,
    )  # fmt: skip
    call.depends = BOOK_PARTS
    raised = None
    torch.manual_seed(case["seed"])
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            got = call()
        except Exception as e:  # judged below, once the oracle says where its loop was
            raised, got = e, None
        got_rng = torch.get_rng_state()
        torch.manual_seed(case["seed"])
        oracle = oracle_train_model if appendix_d else oracle_train_model_simple
        kwargs = dict(extra, clip_start=impl.conventions["CLIP_START"]) if appendix_d else {}
        want = oracle(
            twin, train_loader, val_loader, twin_optimizer, "cpu", **epochs,
            eval_freq=case["eval_freq"], eval_iter=case["eval_iter"], start_context=START,
            tokenizer=tokenizer, **kwargs, trace=lambda label: setattr(twin, "phase", label),
            sample=impl.conventions["EPOCH_SAMPLE"],
        )  # fmt: skip
        want_rng = torch.get_rng_state()
    if raised is not None:
        done = model.events
        at = twin.events[len(done)].phase if len(done) < len(twin.events) else "past its end"
        add_note(raised, f"gptref conformance: {name} raised after {_count(done, 'forward')} forward calls and {_count(done, 'step')} optimizer steps; the book's loop was then at: {at}")  # fmt: skip
        raise raised
    return dict(call=call, got=got, want=want, got_rng=got_rng, want_rng=want_rng,
                model=model, twin=twin, case=case, appendix_d=appendix_d)  # fmt: skip


def _count(events, kind: str) -> int:
    return sum(e.kind == kind for e in events)


def _nth(events, i: int) -> str:
    """'forward call 3 of 20' / 'optimizer.step() 2 of 6': event i counted within its kind."""
    e = events[i]
    kind = "forward call" if e.kind == "forward" else "optimizer.step()"
    return f"{kind} {_count(events[: i + 1], e.kind)} of {_count(events, e.kind)}"


def _shown(e) -> str:
    if e.kind == "step":
        return f"optimizer.step() with lrs {list(e.what)}"
    return f"a forward call in (model.training, grad enabled, input shape) = {e.what}"


def check_timeline(run: dict, lr_tol: float) -> None:
    """The forward calls and optimizer steps, in order, against the book's loop's: the first
    that differs in kind, mode, grad mode, input ids, lr or applied gradient norm."""
    call, got, want = run["call"], run["model"].events, run["twin"].events
    for i, (g, w) in enumerate(zip(got, want, strict=False)):
        where = f"{_nth(want, i)} (the book's loop: {w.phase})"
        if g.kind != w.kind:
            call.fail(f"{where}: the book's loop does {_shown(w)} here", _shown(w), _shown(g))
        if g.kind == "forward":
            training, grad, shape = g.what
            mode = f"{'train' if training else 'eval'} mode {'with' if grad else 'without'} grad"
            call.equal(g.what, w.what, f"{where}: (model.training, grad enabled, input shape); this loop calls the model in {mode} on a {shape} input here")  # fmt: skip
            call.equal(g.data, w.data, f"{where}: the input ids")
        else:
            lrs_ok = len(g.what) == len(w.what) and all(abs(a - b) <= lr_tol for a, b in zip(g.what, w.what, strict=True))  # fmt: skip
            call.check(lrs_ok, f"{where}: the lr of each param group the step applies", list(w.what), list(g.what))  # fmt: skip
            call.close(g.data, w.data, f"{where}: the gradient norm the step applies (after any clipping)", rtol=NORM_RTOL, atol=1e-7)  # fmt: skip
    if len(got) < len(want):
        w = want[len(got)]
        call.fail(
            f"the loop stopped after {_count(got, 'forward')} forward calls and "
            f"{_count(got, 'step')} optimizer steps; the book's loop goes on with {_nth(want, len(got))}: {w.phase}",
            f"{_count(want, 'forward')} forward calls, {_count(want, 'step')} optimizer steps",
            f"{_count(got, 'forward')} forward calls, {_count(got, 'step')} optimizer steps",
        )  # fmt: skip
    if len(got) > len(want):
        call.fail(
            f"the loop goes on after the book's loop ended ({_count(want, 'forward')} forward "
            f"calls, {_count(want, 'step')} optimizer steps) with {_shown(got[len(want)])}",
            f"{_count(want, 'forward')} forward calls, {_count(want, 'step')} optimizer steps",
            f"{_count(got, 'forward')} forward calls, {_count(got, 'step')} optimizer steps",
        )  # fmt: skip


def check_returns(run: dict, names: tuple[str, ...], lr_tol: float) -> None:
    """The returned lists: how many, each one's length (a count), then its values."""
    call, got, want = run["call"], run["got"], run["want"]
    got = list(got) if isinstance(got, (tuple, list)) else [got]
    call.equal(len(got), len(want), f"the number of returned lists ({', '.join(names)})")
    for name, g, w in zip(names, got, want, strict=True):
        each = "update" if name == "track_lrs" else "evaluation (at global_step % eval_freq == 0)"
        call.equal(len(g), len(w), f"len({name}): one entry per {each}")
        if name == "track_tokens_seen":
            call.equal([int(x) for x in g], w, f"{name}: the input tokens seen at each evaluation")
            continue
        values = [float(x) for x in g]
        tol = lr_tol if name == "track_lrs" else None
        for k, (a, b) in enumerate(zip(values, w, strict=True)):
            same = (math.isnan(a) and math.isnan(b)) or (
                abs(a - b) <= tol if tol is not None else math.isclose(a, b, rel_tol=LOSS_RTOL, abs_tol=LOSS_RTOL)
            )  # fmt: skip
            call.check(same, f"{name}[{k}]", b, a)


def check_state(run: dict) -> None:
    """The model's mode, its final parameters and the global RNG state equal the oracle's."""
    call = run["call"]
    call.equal(run["model"].training, run["twin"].training, "model.training after the loop")
    for (name, p), q in zip(run["model"].named_parameters(), run["twin"].parameters(), strict=True):
        diff = (p.detach() - q.detach()).abs().flatten()
        if float(diff.max()) > PARAM_ATOL:
            i = int(diff.argmax())
            call.fail(
                f"parameter {name} after training, entry {i} of {diff.numel()} (atol={PARAM_ATOL})",
                float(q.detach().flatten()[i]),
                float(p.detach().flatten()[i]),
            )
    same = torch.equal(run["got_rng"], run["want_rng"])
    call.check(same, "the global RNG after training (the loaders' shuffles, dropout)", "the book's loop's state", "another")  # fmt: skip


SIMPLE = ("train_losses", "val_losses", "track_tokens_seen")
APPENDIX_D = ("train_losses", "val_losses", "track_tokens_seen", "track_lrs")


@uses("train_model_simple")
@given(case=loop_cases())
@settings(max_examples=25)
def test_train_model_simple_runs_the_books_loop(impl, case):
    """train_model_simple does what chapter 5's does, step for step: per batch one update in
    train mode with grad (from a model handed over in eval mode), an evaluation of eval_iter
    batches of each loader in eval mode without grad after each update whose global_step (0
    for the first) is a multiple of eval_freq, the greedy 50-token sample where EPOCH_SAMPLE
    says (eval mode, no grad); it returns (train_losses, val_losses, track_tokens_seen) and
    leaves the parameters, the model's mode and the global RNG as the book's loop does."""
    run = run_both(impl, case)
    check_timeline(run, lr_tol=0.0)
    check_returns(run, SIMPLE, lr_tol=0.0)
    check_state(run)


@uses("train_model")
@given(case=loop_cases(appendix_d=True))
@settings(max_examples=25)
def test_train_model_runs_appendix_ds_loop_with_its_lrs_and_clipping(impl, case):
    """train_model does what appendix D's does: train_model_simple's loop with, before each
    forward pass, the warmup-then-cosine lr on every param group (peak_lr: the optimizer's lr,
    total steps len(train_loader) * n_epochs) and clip_grad_norm_(max_norm=1.0) from
    global_step >= warmup_steps (CLIP_START=">=", the book's repository) or > warmup_steps
    (">", the print edition); each step's lr and applied gradient norm are compared before the
    losses; it returns the four lists, track_lrs to LR_ULPS ulps of peak_lr."""
    tol = impl.conventions["LR_ULPS"] * math.ulp(case["peak_lr"])
    run = run_both(impl, case, appendix_d=True)
    check_timeline(run, lr_tol=tol)
    check_returns(run, APPENDIX_D, lr_tol=tol)
    check_state(run)
