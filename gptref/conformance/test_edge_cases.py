"""Edge cases, apart from the main properties: no tokens, no windows, no samples, no batches,
no new tokens. Each has its own test, so that an implementation that mishandles one (the
book's ``DataLoader(shuffle=True)`` raises on an empty dataset) fails here and nowhere else,
and the main property tests (which draw at least one window, sample or token) still show
whether the main properties hold."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from gptref.conformance import models
from gptref.conformance.repro import Call, Code, source
from gptref.conformance.strategies import batch_sizes, seeds, token_lists
from gptref.conformance.tokenizer import IdsTokenizer, gpt2

uses = pytest.mark.uses
book = pytest.mark.level("book")


@book
@uses("split")
@pytest.mark.parametrize("data", ["", [], torch.zeros(0, dtype=torch.int64)], ids=["str", "list", "tensor"])  # fmt: skip
def test_split_of_empty_data_is_two_empty_parts(impl, data):
    """split(empty, 0.9) -> (empty, empty), of the data's type."""
    call = Call(impl, "split", data, 0.9)
    train, val = call()
    call.equal([type(train).__name__, type(val).__name__, len(train), len(val)], [type(data).__name__] * 2 + [0, 0], "parts")  # fmt: skip


@book
@uses("num_chunks")
@given(L=st.integers(1, 40), s=st.integers(1, 50), data=st.data())
def test_num_chunks_is_zero_without_room_for_one_window(impl, L, s, data):
    """num_chunks(n, L, s) == 0 for n <= L: no token would be left for the last target."""
    n = data.draw(st.integers(0, L), label="n_tokens")
    call = Call(impl, "num_chunks", n, L, s)
    call.equal(call(), 0, "window count of a text with no room for one window")


@book
@uses("chunk")
@given(L=st.integers(1, 40), s=st.integers(1, 50), data=st.data())
def test_chunk_without_room_for_one_window_gives_empty_int64_tensors(impl, L, s, data):
    """chunk(ids, L, s) with len(ids) <= L -> two int64 (0, L) tensors."""
    ids = data.draw(token_lists(max_size=L), label="ids")
    call = Call(impl, "chunk", torch.tensor(ids, dtype=torch.int64), L, s)
    inputs, targets = call()
    call.equal([tuple(inputs.shape), tuple(targets.shape), str(inputs.dtype), str(targets.dtype)],
               [(0, L), (0, L), "torch.int64", "torch.int64"], "shapes and dtypes")  # fmt: skip


@book
@uses("GPTDatasetV1")
@given(L=st.integers(1, 40), s=st.integers(1, 50), data=st.data())
def test_gpt_dataset_v1_without_room_for_one_window_is_empty_or_says_why(impl, L, s, data):
    """GPTDatasetV1 over len(ids) <= max_length tokens has no items (the book's loop is empty)
    or raises a ValueError that says why (as gptref's loader refuses a text with no window):
    never an item, never another exception (an assert is an AssertionError)."""
    ids = data.draw(token_lists(max_size=L), label="ids")
    call = Call(impl, "GPTDatasetV1", "any text", IdsTokenizer(ids), L, s)
    try:
        dataset = call()
    except ValueError as e:
        call.check(len(str(e)) > 0, "the ValueError must say what is wrong", "a message", repr(e))
        return
    call.equal(len(dataset), 0, "len(dataset): the number of windows of a text too short for one")


@book
@uses("create_dataloader_v1")
@given(pieces=st.integers(2, 6), shuffle=st.booleans(), seed=seeds)
def test_create_dataloader_v1_with_no_full_batch_yields_none_or_says_why(impl, pieces, shuffle, seed):  # fmt: skip
    """A text whose windows fill no batch (drop_last=True, batch_size above the window count)
    gives a loader with no batches (the book's, shuffle=False) or a ValueError that says so
    (the book's DataLoader(shuffle=True) raises one for no windows at all; gptref refuses
    with a message): never a short batch, never another exception."""
    text = " the" * pieces  # `pieces` tokens: pieces - 1 windows of length 1
    setup = [f"torch.manual_seed({seed})"]
    call = Call(impl, "create_dataloader_v1", text, batch_size=pieces, max_length=1, stride=1,
                shuffle=shuffle, drop_last=True, num_workers=0, setup=setup)  # fmt: skip
    torch.manual_seed(seed)
    try:
        batches = list(call())
    except ValueError as e:
        call.check(len(str(e)) > 0, "the ValueError must say what is wrong", "a message", repr(e))
        return
    call.equal(
        batches, [], f"batches of {pieces - 1} windows with batch_size={pieces}, drop_last=True"
    )


@book
@uses("text_to_token_ids", "token_ids_to_text")
def test_empty_text_is_a_1_by_0_id_tensor_and_back(impl):
    """text_to_token_ids("") has shape (1, 0) (the book's torch.tensor([]) is float32: the
    dtype of no ids is not checked) and token_ids_to_text of it is ""."""
    tok = Code("tokenizer", gpt2())
    setup = ["from gptref import gpt2_tokenizer; tokenizer = gpt2_tokenizer()"]
    call = Call(impl, "text_to_token_ids", "", tok, setup=setup)
    ids = call()
    call.equal(tuple(ids.shape), (1, 0), "shape")
    back = Call(impl, "token_ids_to_text", ids, tok, setup=setup)
    back.equal(back(), "", "decoded text")


@book
@uses("batch_order")
@given(b=batch_sizes, drop_last=st.booleans())
def test_batch_order_of_no_samples_is_no_batches(impl, b, drop_last):
    """batch_order(0, b, shuffle=False) -> [] (the book's validation loader over no windows)."""
    call = Call(impl, "batch_order", 0, b, shuffle=False, drop_last=drop_last)
    call.equal(list(call()), [], "batches of no samples")


@pytest.mark.level("seeded")
@uses("batch_order")
@given(b=batch_sizes, drop_last=st.booleans(), seed=seeds, epoch=st.integers(0, 50))
def test_shuffled_batch_order_of_no_samples_is_no_batches(impl, b, drop_last, seed, epoch):
    """batch_order(0, b, shuffle=True, seed, epoch) -> [] (torch's RandomSampler refuses an
    empty dataset; a seeded order need not)."""
    call = Call(impl, "batch_order", 0, b, shuffle=True, drop_last=drop_last, seed=seed, epoch=epoch)  # fmt: skip
    call.equal(list(call()), [], "batches of no samples")


@pytest.mark.level("distributed")
@uses("batch_order")
@given(b=batch_sizes, world_size=st.integers(2, 5), shuffle=st.booleans())
def test_sharded_batch_order_of_no_samples_is_no_batches_on_every_rank(impl, b, world_size, shuffle):  # fmt: skip
    """batch_order(0, ..., rank=r, world_size) -> [] for every rank."""
    for r in range(world_size):
        call = Call(impl, "batch_order", 0, b, shuffle=shuffle, rank=r, world_size=world_size)
        call.equal(list(call()), [], f"rank {r}'s batches of no samples")


@pytest.mark.level("padding")
@uses("collate")
@given(ids=token_lists(min_size=1, max_size=12))
def test_collate_of_one_sample_is_a_batch_of_one(impl, ids):
    """collate([(x, y)]) -> (x[None], y[None]): nothing to pad against."""
    x = torch.tensor(ids)
    call = Call(impl, "collate", [(x, x.flip(0))])
    inputs, targets = call()
    call.equal([inputs, targets], [[ids], [ids[::-1]]], "the batch of one sample")


@book
@uses("calc_loss_loader")
@pytest.mark.parametrize("num_batches", [None, 1, 3])
def test_loader_loss_of_no_batches_is_nan(impl, num_batches):
    """A loader with no batches gives nan (the book's convention), for every weighting."""
    model = models.ConstantLogits(torch.zeros(3))
    setup = [f"model = {source(model)}"]
    calls = [(impl.loader_loss_weighting, Call(impl, "calc_loss_loader", [], Code("model", model), "cpu", num_batches=num_batches, setup=setup))]  # fmt: skip
    for w in impl.loader_loss_weightings:
        calls.append((w, Call(impl, "calc_loss_loader", [], Code("model", model), "cpu", num_batches=num_batches, setup=setup, weighting=w)))  # fmt: skip
    for weighting, call in calls:
        loss = float(call())
        call.check(math.isnan(loss), f'"{weighting}" loss of no batches', float("nan"), loss)


@book
@uses("generate")
@given(rows=st.lists(st.integers(0, 10), min_size=1, max_size=8), seed=seeds)
def test_generate_of_no_new_tokens_returns_idx(impl, rows, seed):
    """max_new_tokens=0 -> idx itself (int64 (1, T)), whatever the options."""
    torch.manual_seed(seed)
    call = Call(impl, "generate", models.BagOfTokens(11), torch.tensor([rows]), 0, 4, 1.0, setup=[f"torch.manual_seed({seed})"])  # fmt: skip
    out = call()
    call.equal([str(out.dtype), out], ["torch.int64", [rows]], "the output for max_new_tokens=0")
