"""gptref/loss.py beyond the public contract: a custom ignore_index, the book's arithmetic bit for
bit, loaders without len, no graph, argument errors, perplexity and the book's numbers.

calc_loss_batch's and calc_loss_loader's contract (against the oracles, both weightings) is the
conformance suite's: gptref/conformance/test_loss.py, run against gptref by ``python -m pytest``."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from gptref.conformance.models import FixedLogits
from gptref.data import split
from gptref.loader import create_dataloader
from gptref.loss import calc_loss_batch, calc_loss_loader, perplexity
from gptref.model import GPT_CONFIG_124M, GPTConfig, GPTModel
from tests.oracles import oracle_book_loss_loader, oracle_mean_nll
from tests.strategies import batch_lists, logit_tensors, target_batches, tiny_configs

# float32 logits and losses against a double-precision oracle
RTOL, ATOL = 1e-5, 1e-5


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


def same_float(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


# ---------------------------------------------------------------- calc_loss_batch


@given(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(2, 16)),
    ignore_index=st.sampled_from([-1, 0]),
    data=st.data(),
)
def test_a_custom_ignore_index_is_skipped_like_the_default(shape, ignore_index, data):
    """With ignore_index=... (the default -100 is the suite's), logits at those targets never
    change the loss, and only counted targets average."""
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


# ---------------------------------------------------------------- calc_loss_loader


@given(cfg=tiny_configs(), num_batches=st.none() | st.integers(1, 6), data=st.data())
def test_batch_weighting_is_the_books_formula(cfg, num_batches, data):
    """weighting="batch" returns exactly the book's loop over the per-batch mean losses."""
    batches = data.draw(batch_lists(cfg.vocab_size, cfg.context_length))
    model = eval_model(cfg)
    expected = oracle_book_loss_loader([batch_loss(x, y, model) for x, y in batches], num_batches)
    got = calc_loss_loader(batches, model, "cpu", num_batches)
    assert same_float(got, expected), f"{cfg}, num_batches={num_batches}: {got!r} != {expected!r}"


@pytest.mark.parametrize("weighting", ["batch", "token"])
@pytest.mark.parametrize("num_batches", [None, 1, 3])
def test_empty_iterator_gives_nan(weighting, num_batches):
    """An iterator (no len) of no batches gives nan, as an empty list does (the suite's)."""
    model = eval_model(GPTConfig(vocab_size=10, context_length=4, emb_dim=4, n_heads=1, n_layers=1))
    loss = calc_loss_loader(iter([]), model, "cpu", num_batches, weighting=weighting)
    assert math.isnan(loss), f"{num_batches}, {weighting}: {loss}"


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


@pytest.mark.parametrize("vocab", [2, 7, 1000, 50257])
def test_perplexity_of_a_uniform_model_is_its_vocabulary_size(vocab):
    """A model that gives every token the same logit is as unsure as a fair die with
    ``vocab`` faces: its loss is log(vocab) nats and its perplexity ``vocab``, from the loss
    as a float or as the scalar tensor calc_loss_batch returns."""
    ids = torch.randint(0, vocab, (3, 9), generator=torch.Generator().manual_seed(vocab))
    uniform = lambda x: torch.zeros(*x.shape, vocab)  # noqa: E731
    loss = calc_loss_batch(ids[:, :-1], ids[:, 1:], uniform, "cpu")
    assert perplexity(loss) == pytest.approx(vocab, rel=1e-6)
    assert perplexity(loss.item()) == pytest.approx(vocab, rel=1e-6)


@given(a=st.floats(0, 700), b=st.floats(0, 700))
def test_a_lower_loss_has_a_lower_perplexity(a, b):
    assert (perplexity(a) < perplexity(b)) == (a < b) or perplexity(a) == perplexity(b)


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
