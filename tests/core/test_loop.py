"""train_step, evaluate and train: the book's loop exactly, and RNG isolation with seeded
loaders (resuming a run exactly: tests/run/test_resume.py).

train_step's contract (the update, accumulation, clipping, lr, counts, against a float64 SGD
oracle) is the conformance suite's: gptref/conformance/test_train_step.py."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gptref.data import split
from gptref.loader import create_dataloader
from gptref.loop import train
from gptref.loss import calc_loss_batch
from gptref.model import GPTModel
from gptref.schedule import appendix_d_lr, lr_at
from gptref.step import NonFiniteError, evaluate, train_step
from tests.helpers import adamw, assert_same_parameters, loaders, micro_model, token_stream
from tests.oracles import oracle_book_training

# ---------------------------------------------------------------- train_step


def test_train_step_loss_is_bitwise_calc_loss_batch_of_the_pre_update_model():
    """StepResult.loss is exactly calc_loss_batch on the pre-update model (the suite checks it
    against the oracle to float tolerance), with AdamW."""
    model = micro_model(0, drop_rate=0.0)
    x, y = token_stream(33).unfold(0, 9, 8)[:, :-1], token_stream(33).unfold(0, 9, 8)[:, 1:]
    want = calc_loss_batch(x, y, model, "cpu").item()
    assert train_step(model, adamw(model), x, y, "cpu").loss == want


def test_train_step_refuses_a_non_finite_loss_and_leaves_parameters_untouched():
    """A nan weight makes the loss nan: NonFiniteError, and no parameter changes."""
    model = micro_model(3, drop_rate=0.0)
    with torch.no_grad():
        model.out_head.weight[0, 0] = float("nan")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = token_stream(17)[:16].view(2, 8)
    with pytest.raises(NonFiniteError, match="non-finite loss nan"):
        train_step(model, adamw(model), x, x, "cpu")
    for k, v in model.state_dict().items():
        assert torch.equal(v.nan_to_num(), before[k].nan_to_num()), k


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (dict(accumulation_steps=0), r"accumulation_steps must be in \[1, batch size 2\], got 0"),
        (dict(accumulation_steps=3), r"accumulation_steps must be in \[1, batch size 2\], got 3"),
        (dict(grad_clip=0.0), "grad_clip must be > 0 or None, got 0.0"),
        (dict(lr=-1.0), "lr must be >= 0, got -1.0"),
    ],
)
def test_train_step_rejects_bad_arguments_naming_the_value(kwargs, pattern):
    """Bad accumulation, clipping or lr values are ValueErrors with the value."""
    model = micro_model(0)
    x = token_stream(17)[:16].view(2, 8)
    with pytest.raises(ValueError, match=pattern):
        train_step(model, adamw(model), x, x, "cpu", **kwargs)


# ---------------------------------------------------------------- evaluate


def test_evaluate_runs_in_eval_mode_and_restores_the_previous_mode():
    """evaluate() leaves model.training as it found it, and its losses are dropout-free."""
    model = micro_model(4, drop_rate=0.5)
    train_loader, val_loader = loaders(seed=0)
    for mode in (True, False):
        model.train(mode)
        first = evaluate(model, train_loader, val_loader, "cpu", eval_iter=2)
        second = evaluate(model, train_loader, val_loader, "cpu", eval_iter=2)
        assert model.training is mode
        assert first == second


# ---------------------------------------------------------------- the loop


@given(seed=st.integers(0, 2**16), eval_freq=st.integers(1, 4), eval_iter=st.integers(1, 3))
@settings(max_examples=5)
def test_train_in_book_mode_equals_the_books_loop_bitwise(seed, eval_freq, eval_iter):
    """With book-mode loaders, train() gives the book's train_model_simple's losses, tokens
    seen and final weights exactly: it draws the global RNG in the same order."""
    results = []
    for run in ("ours", "book"):
        torch.manual_seed(seed)
        train_loader, val_loader = loaders(seed=None)
        model = micro_model(seed)
        opt = adamw(model)
        if run == "ours":
            h = train(model, train_loader, val_loader, opt, "cpu", num_epochs=2, eval_freq=eval_freq, eval_iter=eval_iter, log=None)  # fmt: skip
            results.append(((h.train_losses, h.val_losses, h.tokens_seen), model))
        else:
            tl, vl, seen, _ = oracle_book_training(model, train_loader, val_loader, opt, 2, eval_freq, eval_iter)  # fmt: skip
            results.append(((tl, vl, seen), model))
    (ours, m_ours), (book, m_book) = results
    assert ours == book
    assert_same_parameters(m_ours, m_book, "book mode")


def test_train_reaches_appendix_d_through_schedule_and_clip_from_step():
    """schedule=appendix_d_lr, grad_clip=1.0 and clip_from_step=warmup+1 (the print
    edition's `global_step > warmup_steps`) reproduce appendix D's train_model bitwise."""
    warmup, epochs = 3, 2
    results = []
    for run in ("ours", "book"):
        torch.manual_seed(7)
        train_loader, val_loader = loaders(seed=None)
        model = micro_model(7)
        opt = adamw(model, lr=5e-3)
        schedule = functools.partial(appendix_d_lr, peak_lr=5e-3, total_steps=len(train_loader) * epochs, warmup_steps=warmup, initial_lr=3e-5, min_lr=1e-6)  # fmt: skip
        if run == "ours":
            h = train(model, train_loader, val_loader, opt, "cpu", num_epochs=epochs, eval_freq=2, eval_iter=1, schedule=schedule, grad_clip=1.0, clip_from_step=warmup + 1, log=None)  # fmt: skip
            results.append(((h.train_losses, h.val_losses, h.tokens_seen, h.lrs), model))
        else:
            out = oracle_book_training(model, train_loader, val_loader, opt, epochs, 2, 1, lr_of_step=schedule, clip_when=lambda s: s > warmup)  # fmt: skip
            results.append((out, model))
    (ours, m_ours), (book, m_book) = results
    assert ours == tuple(book)
    assert_same_parameters(m_ours, m_book, "appendix D")


def test_seeded_training_does_not_depend_on_eval_freq_or_eval_iter():
    """With seeded loaders, how often and how long we evaluate changes nothing in training:
    equal per-step losses and final weights, dropout on."""
    finals = []
    for eval_freq, eval_iter in ((1, 3), (4, 1), (1000, 1)):
        torch.manual_seed(11)
        train_loader, val_loader = loaders(seed=5)
        model = micro_model(11)
        h = train(model, train_loader, val_loader, adamw(model), "cpu", num_epochs=2, eval_freq=eval_freq, eval_iter=eval_iter, start_context=None, log=None)  # fmt: skip
        finals.append((h.step_losses, model))
    for losses, model in finals[1:]:
        assert losses == finals[0][0]
        assert_same_parameters(model, finals[0][1], "eval schedule changed training")


def test_train_records_one_lr_and_loss_per_step_and_stops_at_max_steps():
    """max_steps bounds the updates; lrs/step_losses have one entry per update."""
    torch.manual_seed(0)
    train_loader, val_loader = loaders(seed=1)
    model = micro_model(0)
    schedule = functools.partial(lr_at, peak_lr=1e-3, total_steps=7, warmup_steps=2)
    h = train(model, train_loader, val_loader, adamw(model), "cpu", num_epochs=50, eval_freq=3, eval_iter=1, schedule=schedule, max_steps=7, log=None)  # fmt: skip
    assert len(h.lrs) == len(h.step_losses) == 7
    assert h.lrs == [schedule(s) for s in range(7)]
    assert h.steps == [0, 3, 6]


def test_train_callback_returning_true_stops_after_that_step():
    """A callback that returns True ends training after the current update."""
    torch.manual_seed(0)
    train_loader, val_loader = loaders(seed=1)
    model = micro_model(0)
    h = train(model, train_loader, val_loader, adamw(model), "cpu", num_epochs=5, eval_freq=100, eval_iter=1, callback=lambda info: info["step"] == 4, log=None)  # fmt: skip
    assert len(h.step_losses) == 5


@pytest.mark.parametrize("name", ["num_epochs", "eval_freq", "eval_iter"])
def test_train_rejects_non_positive_counts(name):
    """num_epochs, eval_freq and eval_iter must be >= 1."""
    train_loader, val_loader = loaders(seed=1)
    model = micro_model(0)
    kw = dict(num_epochs=1, eval_freq=1, eval_iter=1) | {name: 0}
    with pytest.raises(ValueError, match=f"{name} must be >= 1, got 0"):
        train(model, train_loader, val_loader, adamw(model), "cpu", **kw)


# ---------------------------------------------------------------- the book's tiny test


def test_the_books_tiny_training_config_makes_39_evaluations(verdict_text):
    """Context 12, emb 32, 4 heads, 2 layers, AdamW 5e-4 / 0.1, batch 2, 1 epoch,
    eval_freq 5, eval_iter 1: 39 entries in each of train_losses, val_losses, tokens_seen."""
    cfg = {"vocab_size": 50257, "context_length": 12, "emb_dim": 32, "n_heads": 4, "n_layers": 2, "drop_rate": 0.1, "qkv_bias": False}  # fmt: skip
    train_text, val_text = split(verdict_text, 0.90)
    torch.manual_seed(123)
    kw = dict(batch_size=2, max_length=12, stride=12)
    train_loader = create_dataloader(train_text, shuffle=True, drop_last=True, **kw)
    val_loader = create_dataloader(val_text, shuffle=False, drop_last=False, **kw)
    torch.manual_seed(123)
    model = GPTModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.1)
    h = train(model, train_loader, val_loader, opt, "cpu", num_epochs=1, eval_freq=5, eval_iter=1, start_context="Every effort moves you", log=None)  # fmt: skip
    assert len(h.train_losses) == len(h.val_losses) == len(h.tokens_seen) == 39
    assert h.tokens_seen[0] == 24 and h.tokens_seen[-1] == 24 * (5 * 38 + 1)
    assert len(h.samples) == 1 and h.samples[0].startswith("Every effort moves you")
    assert h.train_losses[-1] < h.train_losses[0]
