"""gptref/loss.py: calc_loss_batch, calc_loss_loader and perplexity, against oracles and the book."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from oracles import oracle_book_loss_loader, oracle_mean_nll
from strategies import batch_lists, logit_tensors, target_batches, tiny_configs, token_batches
from torch import nn

from gptref.data import create_dataloader, split
from gptref.loss import calc_loss_batch, calc_loss_loader, perplexity
from gptref.model import GPT_CONFIG_124M, GPTConfig, GPTModel

# float32 logits and losses against a double-precision oracle
RTOL, ATOL = 1e-5, 1e-5


class FixedLogits(nn.Module):
    """A stand-in model: returns the given logits (b, T, V) for any ids of shape (b, T)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        assert ids.shape == self.logits.shape[:2], f"{ids.shape} vs {self.logits.shape}"
        return self.logits


class ConstantLogits(nn.Module):
    """A stand-in model: the same logit vector (V,) at every position of any ids (b, T)."""

    def __init__(self, row: torch.Tensor) -> None:
        super().__init__()
        self.row = row

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.row.expand(*ids.shape, -1)


class Probe(nn.Module):
    """Wraps a model and records (grad enabled, training) at every forward call."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        self.calls.append((torch.is_grad_enabled(), self.training))
        return self.model(ids)


def eval_model(cfg: GPTConfig, seed: int = 123) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(cfg).eval()


def batch_loss(inputs, targets, model, ignore_index=-100) -> float:
    with torch.no_grad():
        return calc_loss_batch(inputs, targets, model, "cpu", ignore_index=ignore_index).item()


def model_logits(model: nn.Module, batches) -> tuple[list, list]:
    """-> (logits rows, target rows) of every batch, as nested lists, for the oracles."""
    logits, targets = [], []
    with torch.no_grad():
        for x, y in batches:
            logits += model(x).tolist()
            targets += y.tolist()
    return logits, targets


def same_float(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


# ---------------------------------------------------------------- calc_loss_batch


@given(cfg=tiny_configs(), data=st.data())
def test_loss_is_non_negative(cfg, data):
    """calc_loss_batch >= 0: a cross-entropy is a mean of -log p with p <= 1."""
    ids = data.draw(token_batches(cfg.vocab_size, max_len=cfg.context_length))
    targets = data.draw(token_batches(cfg.vocab_size, batch=ids.shape[0], length=ids.shape[1]))
    loss = batch_loss(ids, targets, eval_model(cfg))
    assert loss >= 0, f"{cfg}, ids={ids.tolist()}, targets={targets.tolist()}: loss {loss}"


@given(vocab_size=st.integers(2, 60000), batch=st.integers(1, 4), length=st.integers(1, 8))
def test_zero_logits_give_ln_vocab_size(vocab_size, batch, length):
    """All-zero logits give ln(vocab_size), to float32 rounding (the log and the mean round)."""
    logits = torch.zeros(batch, length, vocab_size)
    targets = torch.randint(
        0, vocab_size, (batch, length), generator=torch.Generator().manual_seed(0)
    )
    loss = calc_loss_batch(targets, targets, FixedLogits(logits), "cpu")
    expected = torch.tensor(math.log(vocab_size))
    torch.testing.assert_close(
        loss, expected, rtol=1e-6, atol=0, msg=lambda m: f"V={vocab_size}, {batch}x{length}: {m}"
    )


@given(cfg=tiny_configs(), data=st.data())
def test_permuting_rows_leaves_loss_unchanged(cfg, data):
    """calc_loss_batch(x[p], y[p]) == calc_loss_batch(x, y) for any permutation p of the rows."""
    ids = data.draw(token_batches(cfg.vocab_size, max_len=cfg.context_length))
    targets = data.draw(target_batches(cfg.vocab_size, ids.shape[0], ids.shape[1]))
    perm = torch.tensor(data.draw(st.permutations(range(ids.shape[0])), label="perm"))
    model = eval_model(cfg)
    torch.testing.assert_close(
        batch_loss(ids[perm], targets[perm], model),
        batch_loss(ids, targets, model),
        rtol=RTOL,
        atol=ATOL,
        msg=lambda m: f"{cfg}, perm={perm.tolist()}, ids={ids.tolist()}: {m}",
    )


@given(cfg=tiny_configs(), data=st.data())
def test_loss_is_the_mean_of_oracle_token_nll(cfg, data):
    """calc_loss_batch equals the mean over counted targets of the oracle's -log softmax."""
    ids = data.draw(token_batches(cfg.vocab_size, max_len=cfg.context_length))
    targets = data.draw(target_batches(cfg.vocab_size, ids.shape[0], ids.shape[1]))
    model = eval_model(cfg)
    logits, target_rows = model_logits(model, [(ids, targets)])
    expected = oracle_mean_nll(logits, target_rows)
    torch.testing.assert_close(
        batch_loss(ids, targets, model),
        expected,
        rtol=RTOL,
        atol=ATOL,
        msg=lambda m: f"{cfg}, ids={ids.tolist()}, targets={targets.tolist()}: {m}",
    )


@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(2, 16)), data=st.data())
def test_loss_of_extreme_logits_is_the_oracle_mean(shape, data):
    """For logits anywhere in [-30, 30], calc_loss_batch equals the oracle's mean -log softmax."""
    b, T, V = shape
    logits = data.draw(logit_tensors(b, T, V), label="logits")
    targets = data.draw(target_batches(V, b, T))
    loss = batch_loss(targets, targets, FixedLogits(logits))
    expected = oracle_mean_nll(logits.tolist(), targets.tolist())
    torch.testing.assert_close(
        loss, expected, rtol=RTOL, atol=ATOL, msg=lambda m: f"targets={targets.tolist()}: {m}"
    )


@given(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(2, 16)),
    ignore_index=st.sampled_from([-100, -1, 0]),
    data=st.data(),
)
def test_ignored_targets_do_not_count(shape, ignore_index, data):
    """Logits at ignore_index targets never change the loss, and only counted targets average."""
    b, T, V = shape
    logits = data.draw(logit_tensors(b, T, V), label="logits")
    targets = data.draw(target_batches(V, b, T, ignore_index=ignore_index))
    if ignore_index == 0:  # 0 is also a class id here: the loss must skip it all the same
        targets[0, 0] = V - 1
    noisy = logits.clone()
    noisy[targets == ignore_index] = data.draw(logit_tensors(1, 1, V), label="noise")[0, 0]
    loss = batch_loss(targets.clamp(min=0), targets, FixedLogits(logits), ignore_index)
    loss_noisy = batch_loss(targets.clamp(min=0), targets, FixedLogits(noisy), ignore_index)
    assert loss == loss_noisy, f"ignore_index={ignore_index}, targets={targets.tolist()}"
    expected = oracle_mean_nll(logits.tolist(), targets.tolist(), ignore_index)
    torch.testing.assert_close(loss, expected, rtol=RTOL, atol=ATOL)


def test_calc_loss_batch_is_differentiable():
    """loss.backward() reaches every parameter of the model with a finite gradient."""
    cfg = GPTConfig(vocab_size=50, context_length=8, emb_dim=8, n_heads=2, n_layers=1)
    torch.manual_seed(0)
    model = GPTModel(cfg)
    ids = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(0))
    calc_loss_batch(ids, ids.roll(-1, dims=1), model, "cpu").backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}: grad {p.grad}"


# ---------------------------------------------------------------- calc_loss_loader


@given(cfg=tiny_configs(), num_batches=st.none() | st.integers(1, 6), data=st.data())
def test_batch_weighting_is_the_books_formula(cfg, num_batches, data):
    """weighting="batch" returns exactly the book's loop over the per-batch mean losses."""
    batches = data.draw(batch_lists(cfg.vocab_size, cfg.context_length))
    model = eval_model(cfg)
    expected = oracle_book_loss_loader([batch_loss(x, y, model) for x, y in batches], num_batches)
    got = calc_loss_loader(batches, model, "cpu", num_batches)
    assert same_float(got, expected), f"{cfg}, num_batches={num_batches}: {got!r} != {expected!r}"


@given(cfg=tiny_configs(), num_batches=st.none() | st.integers(1, 6), data=st.data())
def test_token_weighting_is_the_global_token_mean(cfg, num_batches, data):
    """weighting="token" is the oracle's mean -log p over every counted target of the used batches."""
    batches = data.draw(batch_lists(cfg.vocab_size, cfg.context_length, min_batches=1))
    model = eval_model(cfg)
    used = batches if num_batches is None else batches[:num_batches]
    expected = oracle_mean_nll(*model_logits(model, used))
    got = calc_loss_loader(batches, model, "cpu", num_batches, weighting="token")
    torch.testing.assert_close(
        got, expected, rtol=RTOL, atol=ATOL, msg=lambda m: f"{cfg}, num_batches={num_batches}: {m}"
    )


@given(cfg=tiny_configs(), data=st.data())
def test_weightings_agree_when_batches_have_equal_token_counts(cfg, data):
    """With every batch one shape and no ignored target, "batch" and "token" give the same loss."""
    batches = data.draw(
        batch_lists(
            cfg.vocab_size, cfg.context_length, min_batches=1, ignore=False, same_shape=True
        )
    )
    model = eval_model(cfg)
    by_batch = calc_loss_loader(batches, model, "cpu")
    by_token = calc_loss_loader(batches, model, "cpu", weighting="token")
    torch.testing.assert_close(by_token, by_batch, rtol=RTOL, atol=ATOL)


def test_short_last_batch_weighs_as_much_as_a_full_one():
    """The documented difference: under "batch" a 1-token batch counts as much as a 4-token one."""
    model = ConstantLogits(torch.tensor([10.0, 0.0]))  # sure of class 0 at every position
    batches = [
        (torch.zeros(1, 4, dtype=torch.int64), torch.tensor([[0, 0, 0, 0]])),
        (torch.zeros(1, 1, dtype=torch.int64), torch.tensor([[1]])),
    ]
    right, wrong = oracle_mean_nll([[[10.0, 0.0]]], [[0]]), oracle_mean_nll([[[10.0, 0.0]]], [[1]])
    by_batch = calc_loss_loader(batches, model, "cpu")
    by_token = calc_loss_loader(batches, model, "cpu", weighting="token")
    torch.testing.assert_close(by_batch, (right + wrong) / 2, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(by_token, (4 * right + wrong) / 5, rtol=RTOL, atol=ATOL)


@given(cfg=tiny_configs(), extra=st.integers(0, 5), data=st.data())
def test_num_batches_is_clamped_to_len(cfg, extra, data):
    """num_batches >= len(loader) gives exactly the all-batches loss, for both weightings."""
    batches = data.draw(batch_lists(cfg.vocab_size, cfg.context_length, min_batches=1))
    model = eval_model(cfg)
    for weighting in ("batch", "token"):
        everything = calc_loss_loader(batches, model, "cpu", weighting=weighting)
        clamped = calc_loss_loader(batches, model, "cpu", len(batches) + extra, weighting=weighting)
        assert same_float(clamped, everything), f"{weighting}: {clamped!r} != {everything!r}"


@pytest.mark.parametrize("weighting", ["batch", "token"])
@pytest.mark.parametrize("num_batches", [None, 1, 3])
def test_empty_loader_gives_nan(weighting, num_batches):
    """A loader with no batches gives nan (the book's convention), with or without num_batches."""
    model = eval_model(GPTConfig(vocab_size=10, context_length=4, emb_dim=4, n_heads=1, n_layers=1))
    for loader in ([], iter([])):
        loss = calc_loss_loader(loader, model, "cpu", num_batches, weighting=weighting)
        assert math.isnan(loss), f"{type(loader).__name__}, {num_batches}, {weighting}: {loss}"


@pytest.mark.parametrize(
    "num_batches, error", [(0, ValueError), (-1, ValueError), (1.0, TypeError)]
)
def test_num_batches_below_one_is_rejected(num_batches, error):
    """num_batches < 1 is a ValueError naming the value (a non-int is a TypeError)."""
    with pytest.raises(error, match=f"got {num_batches!r}"):
        calc_loss_loader([], nn.Identity(), "cpu", num_batches)


def test_unknown_weighting_is_value_error():
    """weighting other than "batch"/"token" is a ValueError naming it."""
    with pytest.raises(ValueError, match="'tokens'"):
        calc_loss_loader([], nn.Identity(), "cpu", weighting="tokens")


@given(cfg=tiny_configs(), num_batches=st.none() | st.integers(1, 6), data=st.data())
def test_iterable_without_len_gives_the_list_loss(cfg, num_batches, data):
    """A generator of batches gives exactly the loss of the same batches in a list."""
    batches = data.draw(batch_lists(cfg.vocab_size, cfg.context_length, min_batches=1))
    model = eval_model(cfg)
    for weighting in ("batch", "token"):
        from_list = calc_loss_loader(batches, model, "cpu", num_batches, weighting=weighting)
        from_gen = calc_loss_loader(
            (b for b in batches), model, "cpu", num_batches, weighting=weighting
        )
        assert same_float(from_gen, from_list), f"{weighting}: {from_gen!r} != {from_list!r}"


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("weighting", ["batch", "token"])
def test_loader_loss_builds_no_graph_and_keeps_the_mode(training, weighting):
    """Every forward runs with grad disabled, and model.training is what it was before the call."""
    cfg = GPTConfig(vocab_size=10, context_length=4, emb_dim=4, n_heads=1, n_layers=1)
    probe = Probe(eval_model(cfg)).train(training)
    batches = [(torch.zeros(2, 4, dtype=torch.int64), torch.ones(2, 4, dtype=torch.int64))] * 3
    calc_loss_loader(batches, probe, "cpu", 2, weighting=weighting)
    assert probe.calls == [(False, training)] * 2, f"{probe.calls}"
    assert probe.training is training and torch.is_grad_enabled()


# ---------------------------------------------------------------- perplexity


@given(loss=st.floats(0, 700))
def test_perplexity_is_exp_of_loss(loss):
    """perplexity(loss) == exp(loss), for a float and for a float64 scalar tensor."""
    assert perplexity(loss) == math.exp(loss), f"{loss}"
    assert perplexity(torch.tensor(loss, dtype=torch.float64)) == math.exp(loss), f"{loss}"


def test_perplexity_overflows_to_inf_and_keeps_nan():
    """exp of a huge loss is inf (not OverflowError); nan stays nan."""
    assert perplexity(1e4) == math.inf
    assert math.isnan(perplexity(float("nan")))


# ---------------------------------------------------------------- the book's numbers


@pytest.mark.slow
def test_untrained_gpt_124m_losses_are_the_books_to_every_digit(verdict_text):
    """Chapter 5, untrained GPT-124M (context 256), seed 123, eval mode, the book's loaders:
    training loss 10.98758347829183 and validation loss 10.98110580444336, as printed by repr."""
    cfg = {**GPT_CONFIG_124M, "context_length": 256}
    torch.manual_seed(123)
    model = GPTModel(cfg)
    train_text, val_text = split(verdict_text, 0.9)
    torch.manual_seed(123)
    loader = dict(batch_size=2, max_length=256, stride=256, num_workers=0, seed=None)
    train_loader = create_dataloader(train_text, drop_last=True, shuffle=True, **loader)
    val_loader = create_dataloader(val_text, drop_last=False, shuffle=False, **loader)
    model.eval()
    torch.manual_seed(123)  # the training loader shuffles from the global RNG
    with torch.no_grad():
        train_loss = calc_loss_loader(train_loader, model, "cpu")
        val_loss = calc_loss_loader(val_loader, model, "cpu")
    assert (len(train_loader), len(val_loader)) == (9, 1)
    assert repr(train_loss) == "10.98758347829183", f"training loss {train_loss!r}"
    assert repr(val_loss) == "10.98110580444336", f"validation loss {val_loss!r}"
