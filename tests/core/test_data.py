"""The data path's gptref-specific specification: argument errors, tokenize, chunk's views and
input types, batches, GPTDataset and create_dataloader; each property against a naive oracle.

The properties of the public contract (split, num_chunks, chunk's windows, batch_order and
collate) are the conformance suite's: gptref/conformance/test_data.py, run against gptref by
the same ``python -m pytest``."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from gptref.data import batch_order, batches, chunk, collate, num_chunks, split, tokenize
from gptref.loader import GPTDataset, create_dataloader
from gptref.tokenizer import gpt2_tokenizer
from tests.oracles import (
    OracleBookDataset,
    oracle_windows,
)
from tests.strategies import batch_sizes, epochs, seeds, token_lists

# ---------------------------------------------------------------- split


@pytest.mark.parametrize("ratio", [0, 1, -0.1, 1.5, float("nan")])
def test_split_rejects_ratio_outside_open_unit_interval(ratio):
    """train_ratio outside (0, 1) is a ValueError that names the value."""
    with pytest.raises(ValueError, match=r"train_ratio must be in \(0, 1\)"):
        split("abc", ratio)


def test_split_rejects_a_2d_tensor():
    """Only 1-D tensors split; the message names the shape."""
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        split(torch.zeros(2, 2), 0.5)


# ---------------------------------------------------------------- tokenize


@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_tokenize_equals_tiktoken_encode_as_int64(text):
    """tokenize(s) == encode(s, allowed_special={"<|endoftext|>"}) as an int64 (N,) tensor."""
    ids = tokenize(text)
    assert ids.dtype == torch.int64 and ids.dim() == 1
    assert ids.tolist() == gpt2_tokenizer().encode(text, allowed_special={"<|endoftext|>"})


def test_tokenize_keeps_endoftext_as_one_id():
    """The special token is allowed by default and maps to 50256."""
    assert tokenize("a<|endoftext|>b").tolist() == [64, 50256, 65]


def test_tokenize_rejects_non_text():
    """A list is not text: TypeError naming the type."""
    with pytest.raises(TypeError, match="list"):
        tokenize([1, 2])  # type: ignore[arg-type]


# ---------------------------------------------------------------- num_chunks / chunk


@given(ids=token_lists(min_size=1, max_size=200), L=st.integers(1, 40), s=st.integers(1, 50))
def test_chunk_outputs_are_views_sharing_the_input_storage(ids, L, s):
    """chunk copies nothing: both outputs alias the input's storage."""
    t = torch.tensor(ids, dtype=torch.int64)
    inputs, targets = chunk(t, L, s)
    base = t.untyped_storage().data_ptr()
    assert inputs.untyped_storage().data_ptr() == base
    assert targets.untyped_storage().data_ptr() == base
    if inputs.shape[0]:
        t[L] = t[L] + 1  # a write to the input shows through both views
        assert targets[0, L - 1] == t[L]
        assert inputs[0, 0] == t[0]


def test_chunk_of_a_slice_is_a_view_of_the_slice():
    """A non-zero storage offset (a slice) is honoured."""
    t = torch.arange(100)
    inputs, targets = chunk(t[10:30], 4, 3)
    assert inputs.tolist() == oracle_windows(list(range(10, 30)), 4, 3)[0]
    assert targets.tolist() == oracle_windows(list(range(10, 30)), 4, 3)[1]
    assert inputs.untyped_storage().data_ptr() == t.untyped_storage().data_ptr()


@given(ids=token_lists(max_size=100), L=st.integers(1, 10), s=st.integers(1, 10))
def test_chunk_accepts_lists_and_narrow_integer_dtypes_alike(ids, L, s):
    """A list, an int32 tensor and a uint16 tensor give the int64 windows of the int64 tensor."""
    want = chunk(torch.tensor(ids, dtype=torch.int64), L, s)
    for variant in (
        ids,
        torch.tensor(ids, dtype=torch.int32),
        torch.tensor(ids, dtype=torch.uint16),
    ):
        got = chunk(variant, L, s)
        assert got[0].dtype == torch.int64
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        (dict(token_ids=torch.arange(10), max_length=0, stride=1), ValueError, "max_length must be >= 1, got 0"),
        (dict(token_ids=torch.arange(10), max_length=4, stride=0), ValueError, "stride must be >= 1, got 0"),
        (dict(token_ids=torch.zeros(2, 5, dtype=torch.int64), max_length=2, stride=1), ValueError, r"1-D, got shape \(2, 5\)"),
        (dict(token_ids=torch.zeros(5), max_length=2, stride=1), TypeError, "integer tensor, got dtype torch.float32"),
        (dict(token_ids=torch.tensor([3, -7, 2]), max_length=1, stride=1), ValueError, ">= 0, got -7"),
        (dict(token_ids=torch.arange(10), max_length=2.5, stride=1), TypeError, "max_length must be an int"),
    ],
)  # fmt: skip
def test_chunk_rejects_bad_arguments_naming_the_value(kwargs, error, pattern):
    """Bad max_length / stride / ids raise with the offending value in the message."""
    with pytest.raises(error, match=pattern):
        chunk(**kwargs)


# ---------------------------------------------------------------- batch_order


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (dict(batch_size=0), "batch_size must be >= 1, got 0"),
        (dict(batch_size=2, world_size=0), "world_size must be >= 1, got 0"),
        (dict(batch_size=2, world_size=2, rank=2), r"rank must be in \[0, world_size=2\), got 2"),
        (dict(batch_size=2, rank=-1), r"rank must be in \[0, world_size=1\), got -1"),
        (dict(batch_size=2, shuffle=True, seed=-1), r"seed must be in \[0, 2\*\*32\), got -1"),
    ],
)
def test_batch_order_rejects_bad_arguments_naming_the_value(kwargs, pattern):
    """batch_size < 1, world_size < 1, rank out of range and bad seeds are ValueErrors."""
    with pytest.raises(ValueError, match=pattern):
        batch_order(10, **kwargs)


# ---------------------------------------------------------------- collate


ragged_pairs = st.lists(
    st.integers(1, 15).flatmap(lambda k: st.tuples(token_lists(k, k), token_lists(k, k))),
    min_size=1,
    max_size=6,
)


@pytest.mark.parametrize(
    ("samples", "error", "pattern"),
    [
        ([], ValueError, "no samples"),
        ([(torch.arange(3), torch.arange(2))], ValueError, r"sample 0 .* \(3,\) and \(2,\)"),
    ],
)
def test_collate_rejects_empty_and_mismatched_samples(samples, error, pattern):
    """No samples, or an input/target pair of different lengths, is a ValueError."""
    with pytest.raises(error, match=pattern):
        collate(samples)


# ---------------------------------------------------------------- batches


@given(ids=token_lists(min_size=1, max_size=120), L=st.integers(1, 8), s=st.integers(1, 8), b=batch_sizes,
       shuffle=st.booleans(), drop_last=st.booleans(), seed=seeds)  # fmt: skip
def test_batches_yield_the_rows_of_batch_order(ids, L, s, b, shuffle, drop_last, seed):
    """batches(...) yields (inputs[idx], targets[idx]) for idx in batch_order(...)."""
    inputs, targets = chunk(torch.tensor(ids), L, s)
    kw = dict(shuffle=shuffle, drop_last=drop_last, seed=seed)
    got = list(batches(inputs, targets, b, **kw))
    order = batch_order(inputs.shape[0], b, **kw)
    assert len(got) == len(order)
    for (x, y), idx in zip(got, order, strict=True):
        assert torch.equal(x, inputs[idx]) and torch.equal(y, targets[idx])


# ---------------------------------------------------------------- GPTDataset / create_dataloader


def _dataloader_len(n: int, b: int, drop_last: bool) -> int:
    return n // b if drop_last else math.ceil(n / b)


@given(ids=token_lists(min_size=2, max_size=200), L=st.integers(1, 16), s=st.integers(1, 16), b=batch_sizes,
       drop_last=st.booleans(), seed=st.none() | seeds)  # fmt: skip
def test_create_dataloader_length_is_the_batch_count_formula(ids, L, s, b, drop_last, seed):
    """len(loader) == n // b with drop_last, else ceil(n / b), n = num_chunks(N, L, s)."""
    n = num_chunks(len(ids), L, s)
    if n == 0 or (drop_last and n < b):
        with pytest.raises(ValueError, match="tokens"):
            create_dataloader(torch.tensor(ids), b, L, s, drop_last=drop_last, seed=seed)
        return
    loader = create_dataloader(torch.tensor(ids), b, L, s, drop_last=drop_last, seed=seed)
    assert len(loader) == _dataloader_len(n, b, drop_last)
    assert len(list(loader)) == len(loader)


@given(ids=token_lists(min_size=2, max_size=200), L=st.integers(1, 16), s=st.integers(1, 16), b=batch_sizes,
       shuffle=st.booleans(), drop_last=st.booleans(), rng_seed=st.integers(0, 2**31))  # fmt: skip
def test_create_dataloader_in_book_mode_equals_the_books_loader(
    ids, L, s, b, shuffle, drop_last, rng_seed
):
    """seed=None: the same batches as a DataLoader over the book's per-window-tensor dataset,
    under the same global RNG state, and the global RNG advances the same way."""
    n = num_chunks(len(ids), L, s)
    if n == 0 or (drop_last and n < b):
        return
    oracle = DataLoader(
        OracleBookDataset(ids, L, s), batch_size=b, shuffle=shuffle, drop_last=drop_last
    )
    torch.manual_seed(rng_seed)
    want = [list(batch) for _ in range(2) for batch in oracle]  # two epochs
    after_want = torch.get_rng_state()
    ours = create_dataloader(torch.tensor(ids), b, L, s, shuffle=shuffle, drop_last=drop_last)
    torch.manual_seed(rng_seed)
    got = [list(batch) for _ in range(2) for batch in ours]
    assert torch.equal(torch.get_rng_state(), after_want), "global RNG consumed differently"
    assert len(got) == len(want)
    for (x, y), (wx, wy) in zip(got, want, strict=True):
        assert torch.equal(x, wx) and torch.equal(y, wy)


@given(ids=token_lists(min_size=2, max_size=200), L=st.integers(1, 8), s=st.integers(1, 8), b=batch_sizes,
       drop_last=st.booleans(), seed=seeds, epoch=epochs)  # fmt: skip
def test_seeded_dataloader_yields_batch_order_and_leaves_the_global_rng_alone(
    ids, L, s, b, drop_last, seed, epoch
):
    """With a seed, the loader yields batches(...) for its epoch, the same on every pass,
    and neither reads nor advances the global RNG."""
    n = num_chunks(len(ids), L, s)
    if n == 0 or (drop_last and n < b):
        return
    loader = create_dataloader(
        torch.tensor(ids), b, L, s, shuffle=True, drop_last=drop_last, seed=seed
    )
    loader.batch_sampler.set_epoch(epoch)
    state = torch.get_rng_state()
    first, second = list(loader), list(loader)
    assert torch.equal(torch.get_rng_state(), state), "the seeded loader used the global RNG"
    inputs, targets = chunk(torch.tensor(ids), L, s)
    want = list(
        batches(inputs, targets, b, shuffle=True, drop_last=drop_last, seed=seed, epoch=epoch)
    )
    for got in (first, second):
        assert len(got) == len(want)
        for (x, y), (wx, wy) in zip(got, want, strict=True):
            assert torch.equal(x, wx) and torch.equal(y, wy)


def test_gptdataset_items_are_views_of_one_token_tensor():
    """GPTDataset stores views, not one tensor per window (the book copies each window)."""
    ds = GPTDataset(torch.arange(1000), None, max_length=8, stride=1)
    x, y = ds[5]
    assert x.tolist() == list(range(5, 13)) and y.tolist() == list(range(6, 14))
    assert x.untyped_storage().data_ptr() == ds.token_ids.untyped_storage().data_ptr()


def test_create_dataloader_on_too_short_text_says_how_many_tokens_it_has_and_needs():
    """Too little text for one window is a ValueError naming both token counts."""
    with pytest.raises(ValueError, match=r"has 3 tokens but max_length=256 needs at least 257"):
        create_dataloader("one two three", max_length=256)


def test_create_dataloader_without_a_full_batch_under_drop_last_is_an_error():
    """Fewer windows than batch_size with drop_last=True would be an empty loader: an error."""
    with pytest.raises(ValueError, match=r"3 windows .* batch_size=4 with drop_last=True"):
        create_dataloader(torch.arange(4), batch_size=4, max_length=1, stride=1)


# ---------------------------------------------------------------- the book's chapter-5 facts


def test_the_verdict_has_5145_tokens(verdict_text):
    """The book's corpus: 20,479 characters, 5,145 GPT-2 tokens."""
    assert len(verdict_text) == 20479
    assert tokenize(verdict_text).numel() == 5145


def test_first_window_of_the_verdict(verdict_text):
    """max_length 4, stride 1: the book's first input/target pair."""
    inputs, targets = chunk(tokenize(verdict_text), 4, 1)
    assert inputs[0].tolist() == [40, 367, 2885, 1464]
    assert targets[0].tolist() == [367, 2885, 1464, 1807]


def test_chapter5_loaders_have_9_training_and_1_validation_batch(verdict_text):
    """Context 256, stride 256, batch 2: 9 training batches (4,608 tokens), 1 validation (512)."""
    train_text, val_text = split(verdict_text, 0.90)
    torch.manual_seed(123)
    train_loader = create_dataloader(train_text, 2, 256, 256, shuffle=True, drop_last=True)
    val_loader = create_dataloader(val_text, 2, 256, 256, shuffle=False, drop_last=False)
    train = list(train_loader)
    val = list(val_loader)
    assert len(train) == len(train_loader) == 9
    assert len(val) == len(val_loader) == 1
    assert all(x.shape == y.shape == (2, 256) for x, y in train + val)
    assert sum(x.numel() for x, _ in train) == 4608
    assert sum(x.numel() for x, _ in val) == 512
