"""The book's training loops by their own names and signatures: chapter 5's
``train_model_simple(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq,
eval_iter, start_context, tokenizer)`` and appendix D's ``train_model(..., n_epochs, ...,
warmup_steps, initial_lr=3e-05, min_lr=1e-6)``, each against the oracle loop (a plain
restatement of the book in ``oracles.py``) run on a twin of the model from the same RNG state.

The model is ``models.ProbeGPT`` (dropout, so train/eval mode shows; it records the mode, the
grad mode and the input shape of every forward call), the loaders are the book's
(``DataLoader(..., shuffle=True, drop_last=True)`` for training: the global RNG shuffles), the
tokenizer one id per character. One run of the implementation and one of the oracle serve
each test; the tests differ in what they compare.
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
from torch.utils.data import DataLoader

from gptref.conformance import models
from gptref.conformance.oracles import oracle_train_model, oracle_train_model_simple
from gptref.conformance.repro import Call, Code, source
from gptref.conformance.tokenizer import CharTokenizer

uses = pytest.mark.uses
pytestmark = pytest.mark.level("book")

VOCAB, CONTEXT = 13, 6
START = "Every effort"
LOSS_RTOL, PARAM_ATOL = 1e-5, 1e-5


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
        case["warmup_steps"] = draw(st.integers(1, max(1, steps)))
        case["peak_lr"] = draw(st.sampled_from([0.1, 0.5]))
        case["initial_lr"] = draw(st.sampled_from([0.0, 3e-05, 0.01]))
        case["min_lr"] = draw(st.sampled_from([0.0, 1e-6, 0.05]))
    return case


def _setup(case: dict, appendix_d: bool):
    """-> (model, optimizer, train_loader, val_loader, setup lines): SGD for appendix D (so
    that clipping changes the update; Adam's first step would hide a uniform rescaling), the
    book's AdamW(lr=4e-4, weight_decay=0.1) for chapter 5."""
    g = torch.Generator().manual_seed(case["seed"])
    T, b = case["length"], case["batch_size"]

    def pairs(n):
        ids = torch.randint(0, VOCAB, (n, T + 1), generator=g)
        return [(row[:-1].clone(), row[1:].clone()) for row in ids]

    train, val = pairs(case["n_train"]), pairs(case["n_val"])
    scale = 8.0 if appendix_d else 1.0  # large gradients: clipping to norm 1 shows
    # in eval mode, as the book leaves its model before training (chapter 5 evaluates the
    # untrained model first): the loop must switch to train mode itself
    model = models.ProbeGPT(VOCAB, CONTEXT, drop_rate=case["drop_rate"], seed=case["seed"], scale=scale).eval()  # fmt: skip
    optimizer = make_optimizer(model, case, appendix_d)
    if appendix_d:
        opt_code = f"torch.optim.SGD(model.parameters(), lr={case['peak_lr']})"
    else:
        opt_code = "torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)"
    train_loader = DataLoader(train, batch_size=b, shuffle=True, drop_last=True)
    val_loader = DataLoader(val, batch_size=b, shuffle=False, drop_last=False)
    setup = [
        f"model = {source(model)}.eval()",
        f"optimizer = {opt_code}",
        f"train_loader = torch.utils.data.DataLoader({source(train)}, batch_size={b}, shuffle=True, drop_last=True)",  # fmt: skip
        f"val_loader = torch.utils.data.DataLoader({source(val)}, batch_size={b}, shuffle=False, drop_last=False)",  # fmt: skip
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
    common = dict(device="cpu", eval_iter=case["eval_iter"], start_context=START, tokenizer=CharTokenizer(VOCAB))  # fmt: skip
    extra = {}
    if appendix_d:
        extra = {k: case[k] for k in ("warmup_steps", "initial_lr", "min_lr")}
    name = "train_model" if appendix_d else "train_model_simple"
    epochs_kw = "n_epochs" if appendix_d else "num_epochs"
    call = Call(
        impl, name, Code("model", model), Code("train_loader", train_loader),
        Code("val_loader", val_loader), Code("optimizer", optimizer), common["device"],
        **{epochs_kw: case["num_epochs"]}, eval_freq=case["eval_freq"],
        eval_iter=case["eval_iter"], start_context=START, tokenizer=common["tokenizer"],
        **extra, setup=setup,
    )  # fmt: skip
    torch.manual_seed(case["seed"])
    with contextlib.redirect_stdout(io.StringIO()):
        got = call()
        got_rng = torch.get_rng_state()
        torch.manual_seed(case["seed"])
        oracle = oracle_train_model if appendix_d else oracle_train_model_simple
        kwargs = dict(common, **extra)
        if appendix_d:
            kwargs["clip_start"] = impl.conventions["CLIP_START"]
        epochs = {epochs_kw: case["num_epochs"]}
        want = oracle(twin, train_loader, val_loader, twin_optimizer, **epochs, eval_freq=case["eval_freq"], **kwargs)  # fmt: skip
        want_rng = torch.get_rng_state()
    return dict(call=call, got=got, want=want, got_rng=got_rng, want_rng=want_rng,
                model=model, twin=twin, case=case)  # fmt: skip


def _close_lists(a, b, rtol: float) -> bool:
    if len(a) != len(b):
        return False
    return all(
        (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=rtol, abs_tol=rtol)
        for x, y in zip(a, b, strict=True)
    )


def check_returns(run: dict, names: tuple[str, ...]) -> None:
    call, got, want = run["call"], run["got"], run["want"]
    call.equal(len(got), len(want), f"the number of returned lists ({', '.join(names)})")
    for name, g, w in zip(names, got, want, strict=True):
        if not name:  # checked by the caller
            continue
        if name == "track_tokens_seen":
            call.equal(list(g), w, f"{name}: the tokens seen at each evaluation")
        else:
            ok = _close_lists([float(x) for x in g], w, LOSS_RTOL)
            call.check(ok, f"{name} (one per evaluation, at global_step % eval_freq == 0)", w, list(g))  # fmt: skip


def check_calls(run: dict) -> None:
    """The forward calls, in order: (training, grad enabled, shape): train mode with grad for
    the updates, eval mode without grad for evaluations and the per-epoch 50-token sample."""
    got, want = run["model"].calls, run["twin"].calls
    if got != want:
        i = next((i for i, (g, w) in enumerate(zip(got, want, strict=False)) if g != w), min(len(got), len(want)))  # fmt: skip
        run["call"].fail(
            f"forward call {i} of {len(want)}: (model.training, grad enabled, input shape) "
            "differ from the book's loop (updates in train mode, evaluations and samples in "
            "eval mode under no_grad)",
            want[max(0, i - 2) : i + 3],
            got[max(0, i - 2) : i + 3],
        )
    run["call"].equal(run["model"].training, True, "model.training after the loop (the book's sample ends with model.train())")  # fmt: skip


def check_state(run: dict) -> None:
    """The final parameters and the global RNG state equal the oracle's."""
    for (name, p), q in zip(run["model"].named_parameters(), run["twin"].parameters(), strict=True):
        diff = (p.detach() - q.detach()).abs().flatten()
        if float(diff.max()) > PARAM_ATOL:
            i = int(diff.argmax())
            run["call"].fail(
                f"parameter {name} after training, entry {i} of {diff.numel()} (atol={PARAM_ATOL})",
                float(q.detach().flatten()[i]),
                float(p.detach().flatten()[i]),
            )
    same = torch.equal(run["got_rng"], run["want_rng"])
    run["call"].check(same, "the global RNG after training (the loaders' shuffles, dropout)", "the book's loop's state", "another")  # fmt: skip


SIMPLE = ("train_losses", "val_losses", "track_tokens_seen")
APPENDIX_D = ("train_losses", "val_losses", "track_tokens_seen", "track_lrs")


@uses("train_model_simple")
@given(case=loop_cases())
@settings(max_examples=12)
def test_train_model_simple_evaluates_every_eval_freq_steps_and_counts_tokens_seen(impl, case):
    """train_model_simple returns the book's (train_losses, val_losses, track_tokens_seen): an
    entry after each update whose global_step (0 for the first) is a multiple of eval_freq,
    the mean of eval_iter batch losses in eval mode, and the input tokens seen so far."""
    check_returns(run_both(impl, case), SIMPLE)


@uses("train_model_simple")
@given(case=loop_cases())
@settings(max_examples=12)
def test_train_model_simple_switches_train_and_eval_mode_like_the_book(impl, case):
    """Updates run in train mode with grad (from a model handed over in eval mode);
    evaluations and the 50-token sample after each epoch in eval mode without grad; the model
    ends in train mode."""
    check_calls(run_both(impl, case))


@uses("train_model_simple")
@given(case=loop_cases())
@settings(max_examples=12)
def test_train_model_simple_draws_the_global_rng_and_updates_like_the_book(impl, case):
    """After the loop the parameters and the global RNG state are the oracle's: the same
    updates, the same loader passes (each evaluation iterates the loaders too) and dropout."""
    check_state(run_both(impl, case))


@uses("train_model")
@given(case=loop_cases(appendix_d=True))
@settings(max_examples=12)
def test_train_model_sets_appendix_d_lrs_and_evaluates_like_the_book(impl, case):
    """train_model returns the book's four lists; track_lrs is appendix D's warmup-then-cosine
    lr of every update (peak_lr: the optimizer's lr, total steps len(train_loader) * n_epochs)."""
    run = run_both(impl, case, appendix_d=True)
    check_returns(run, APPENDIX_D[:3] + ("",))
    lrs, want = [float(x) for x in run["got"][3]], run["want"][3]
    tol = impl.conventions["LR_ULPS"] * math.ulp(case["peak_lr"])
    ok = len(lrs) == len(want) and all(abs(g - w) <= tol for g, w in zip(lrs, want, strict=True))
    run["call"].check(ok, f"track_lrs: appendix D's lr at every step (to {impl.conventions['LR_ULPS']} ulps of peak_lr)", want, lrs)  # fmt: skip


@uses("train_model")
@given(case=loop_cases(appendix_d=True))
@settings(max_examples=12)
def test_train_model_clips_from_the_declared_step_and_switches_modes(impl, case):
    """Gradients are clipped to norm 1 from global_step >= warmup_steps (CLIP_START=">=", the
    book's repository) or > warmup_steps (">", the print edition): the final parameters and
    RNG state are the oracle's with the declared start; modes switch as in the book."""
    run = run_both(impl, case, appendix_d=True)
    check_calls(run)
    check_state(run)
