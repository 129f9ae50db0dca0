"""The data path's contract through gptref's function protocol: split, num_chunks, chunk,
batch_order and collate. Book level: the window loop, unshuffled batches, default-collate
stacking; extensions: seeded shuffling, distributed sharding, padding. Edge cases (no tokens,
no samples) are test_edge_cases.py's."""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from torch.utils.data import default_collate

from gptref.conformance.oracles import (
    oracle_batches_of,
    oracle_pad,
    oracle_shards,
    oracle_split,
    oracle_unshuffled_batches,
    oracle_window_count,
    oracle_windows,
)
from gptref.conformance.repro import Call, Calls, Code
from gptref.conformance.strategies import (
    batch_sizes,
    epochs,
    seeds,
    token_lists,
    train_ratios,
    window_params,
    windowed_ids,
)

uses = pytest.mark.uses
book = pytest.mark.level("book")

# ---------------------------------------------------------------- split

splittables = st.one_of(
    st.text(max_size=100),
    token_lists(max_size=100),
    token_lists(max_size=100).map(lambda ids: torch.tensor(ids, dtype=torch.int64)),
)


def _as_list(x):
    return x.tolist() if isinstance(x, torch.Tensor) else list(x)


@book
@uses("split")
@given(data=splittables, ratio=train_ratios)
def test_split_parts_are_the_data_cut_at_int_of_ratio_times_length(impl, data, ratio):
    """split(data, r) == (data[:k], data[k:]), k = int(r * len(data)), of data's own type, for a
    str, a list and a 1-D tensor (the book splits the characters of the text)."""
    call = Call(impl, "split", data, ratio)
    train, val = call()
    call.check(
        type(train) is type(data) and type(val) is type(data),
        "the parts must have the data's type",
        (type(data).__name__, type(data).__name__),
        (type(train).__name__, type(val).__name__),
    )
    call.equal([_as_list(train), _as_list(val)], list(oracle_split(_as_list(data), ratio)), "parts")


# ---------------------------------------------------------------- num_chunks / chunk


@book
@uses("num_chunks")
@given(params=window_params())
@example(params=(10, 9, 1)).via("one window: its last target is the last token")
@example(params=(10, 10, 1)).via("no window: no token left for the last target")
def test_num_chunks_is_the_books_window_count(impl, params):
    """num_chunks(n, L, s) == the number of starts range(0, n - L, s) yields."""
    call = Call(impl, "num_chunks", *params)
    call.equal(call(), oracle_window_count(*params), "window count")


@book
@uses("chunk")
@given(case=windowed_ids())
@example(case=(list(range(10)), 9, 1)).via("one window: the last target is the last token")
def test_chunk_rows_equal_the_books_loop(impl, case):
    """inputs, targets: int64 (n, L), n = the book's window count; window i is
    ids[i*s : i*s+L] and its targets ids[i*s+1 : i*s+L+1] (the book's GPTDatasetV1 loop)."""
    ids, L, s = case
    call = Call(impl, "chunk", torch.tensor(ids, dtype=torch.int64), L, s)
    inputs, targets = call()
    want_in, want_out = oracle_windows(ids, L, s)
    n = len(want_in)
    call.equal([len(inputs), len(targets)], [n, n], "the number of windows: rows of (inputs, targets)")  # fmt: skip
    call.equal(
        [tuple(inputs.shape), tuple(targets.shape), str(inputs.dtype), str(targets.dtype)],
        [(n, L), (n, L), "torch.int64", "torch.int64"],
        "shapes and dtypes of (inputs, targets)",
    )
    call.equal([inputs, targets], [want_in, want_out], "windows differ from the book's loop")


@book
@uses("chunk")
@given(case=windowed_ids(), head=st.integers(1, 5))
def test_chunk_of_a_view_windows_the_view(impl, case, head):
    """chunk(ids[head:]) of a longer tensor (a view at a non-zero storage offset) gives the
    windows of the view's own tokens, the book's loop over them."""
    ids, L, s = case
    base = [0] * head + ids
    view = torch.tensor(base, dtype=torch.int64)[head:]
    call = Call(impl, "chunk", Code(f"torch.tensor({base})[{head}:]", view), L, s)
    inputs, targets = call()
    want = list(oracle_windows(ids, L, s))
    call.equal(len(inputs), len(want[0]), "the number of windows of the view")
    call.equal([inputs, targets], want, "windows of the view")


@book
@uses("chunk")
@given(case=windowed_ids())
def test_chunk_targets_are_inputs_shifted_by_one(impl, case):
    """targets[i, :-1] == inputs[i, 1:] and targets[i, -1] is the token after the window."""
    ids, L, s = case
    call = Call(impl, "chunk", torch.tensor(ids, dtype=torch.int64), L, s)
    inputs, targets = call()
    got = [targets[i].tolist() for i in range(inputs.shape[0])]
    want = [inputs[i, 1:].tolist() + [ids[i * s + L]] for i in range(inputs.shape[0])]
    call.equal(got, want, "targets are not the inputs shifted by one token")


@book
@uses("chunk", "num_chunks")
@given(n=st.integers(1, 20), L=st.integers(1, 20), extra=st.integers(1, 19))
def test_chunk_with_stride_equal_max_length_tiles_the_prefix(impl, n, L, extra):
    """stride == max_length gives num_chunks non-overlapping windows covering ids[:k*L]."""
    ids = torch.arange(n * L + extra % L + 1)
    call = Call(impl, "chunk", ids, L, L)
    inputs, _ = call()
    k = inputs.shape[0]
    call.equal(inputs.reshape(-1), ids[: k * L], "windows do not tile the prefix")
    count = Call(impl, "num_chunks", ids.numel(), L, L)
    count.equal(count(), k, "num_chunks disagrees with chunk's row count")


# ---------------------------------------------------------------- batch_order

seeded = pytest.mark.level("seeded")


def _flat(order) -> list[int]:
    return [int(i) for batch in order for i in batch]


def _lists(order) -> list[list[int]]:
    return [[int(i) for i in batch] for batch in order]


@book
@uses("batch_order")
@given(n=st.integers(1, 60), b=batch_sizes, drop_last=st.booleans())
def test_batch_order_without_shuffle_is_consecutive_slices(impl, n, b, drop_last):
    """Unshuffled batches are consecutive slices of 0..n-1, the short last one dropped with
    drop_last (a DataLoader's shuffle=False order, the book's validation loader)."""
    call = Call(impl, "batch_order", n, b, shuffle=False, drop_last=drop_last)
    call.equal(_lists(call()), oracle_unshuffled_batches(n, b, drop_last), "batches")


@seeded
@uses("batch_order")
@given(n=st.integers(1, 60), b=batch_sizes, seed=seeds, epoch=epochs)
def test_shuffled_batch_order_partitions_range_without_drop_last(impl, n, b, seed, epoch):
    """Shuffled, without drop_last: ceil(n / b) batches, all full but the last, that together
    hold each of 0..n-1 once."""
    call = Call(impl, "batch_order", n, b, shuffle=True, drop_last=False, seed=seed, epoch=epoch)
    order = call()
    want = [b] * (n // b) + ([n % b] if n % b else [])
    call.equal([len(x) for x in order], want, "batch sizes")
    call.equal(sorted(_flat(order)), list(range(n)), "the batches must hold each index once")


@seeded
@uses("batch_order")
@given(n=st.integers(1, 60), b=batch_sizes, seed=seeds, epoch=epochs)
def test_shuffled_batch_order_with_drop_last_keeps_only_full_batches(impl, n, b, seed, epoch):
    """Shuffled, with drop_last: n // b full batches of distinct indices from 0..n-1."""
    call = Call(impl, "batch_order", n, b, shuffle=True, drop_last=True, seed=seed, epoch=epoch)
    order = call()
    call.equal([len(x) for x in order], [b] * (n // b), "batch sizes")
    flat = _flat(order)
    call.check(
        len(set(flat)) == len(flat) and set(flat) <= set(range(n)),
        "indices must be distinct and in range(n)",
        f"{n - n % b} distinct indices in range({n})",
        flat,
    )


@seeded
@uses("batch_order")
@given(n=st.integers(1, 60), b=batch_sizes, seed=seeds, epoch=epochs, drop_last=st.booleans())
def test_batch_order_is_a_pure_function_of_its_arguments(impl, n, b, seed, epoch, drop_last):
    """Equal arguments give equal batches, whatever the global RNG did in between, and the
    global RNG is neither read nor advanced."""
    call = Call(
        impl, "batch_order", n, b, shuffle=True, drop_last=drop_last, seed=seed, epoch=epoch
    )
    first = _lists(call())
    torch.rand(7)  # disturb the global RNG
    state = torch.get_rng_state()
    second = _lists(call())
    call.check(
        torch.equal(torch.get_rng_state(), state),
        "the global RNG changed",
        "unchanged",
        "changed",
    )
    call.equal(second, first, "a second call gave other batches")


@seeded
@uses("batch_order")
def test_batch_order_epochs_and_seeds_give_different_orders(impl):
    """Different epochs of a seed, and different seeds at an epoch, shuffle differently."""
    orders = {}
    for seed, epoch in [(0, 0), (0, 1), (1, 0), (1, 1)]:
        call = Call(impl, "batch_order", 50, 5, shuffle=True, seed=seed, epoch=epoch)
        orders[(seed, epoch)] = tuple(_flat(call()))
    call.check(
        len(set(orders.values())) == 4,
        "(seed, epoch) in (0, 0), (0, 1), (1, 0), (1, 1) must give 4 distinct orders",
        "4 distinct orders",
        orders,
    )


@pytest.mark.level("distributed")
@uses("batch_order")
@given(
    n=st.integers(1, 60),
    b=batch_sizes,
    world_size=st.integers(2, 5),
    shuffle=st.booleans(),
    drop_last=st.booleans(),
    seed=seeds,
    epoch=st.integers(0, 3),
)
def test_batch_order_shards_are_the_declared_split_of_the_single_process_order(
    impl, n, b, world_size, shuffle, drop_last, seed, epoch
):
    """Rank r's batches are consecutive batches of its shard of the world_size=1 order, as
    SHARDING declares: "drop-remainder" (gptref's) drops the last n % world_size samples and
    rank r takes every world_size-th from position r, so shards are disjoint and equal;
    "pad" (torch's DistributedSampler) first repeats the order's head up to a multiple of
    world_size. Either way the ranks' j-th batches together are block j of the global order."""
    kw = dict(shuffle=shuffle, drop_last=drop_last, seed=seed, epoch=epoch)
    single = Call(impl, "batch_order", n, 1, **kw)
    order = _flat(single())
    calls = [
        Call(impl, "batch_order", n, b, rank=r, world_size=world_size, **kw)
        for r in range(world_size)
    ]
    group = Calls([single, *calls])
    got = [_lists(c()) for c in calls]
    sharding = impl.conventions["SHARDING"]
    want = [oracle_batches_of(shard, b, drop_last) for shard in oracle_shards(order, world_size, sharding)]  # fmt: skip
    group.equal(
        got, want, f'every rank\'s batches (SHARDING="{sharding}", single-process order {order})'
    )


# ---------------------------------------------------------------- collate


@book
@uses("collate")
@given(rows=st.integers(1, 6), width=st.integers(1, 12), data=st.data())
def test_collate_of_equal_lengths_equals_default_collate(impl, rows, width, data):
    """Equal-length pairs stack exactly as torch's default_collate does."""
    samples = [
        (
            torch.tensor(data.draw(token_lists(width, width))),
            torch.tensor(data.draw(token_lists(width, width))),
        )
        for _ in range(rows)
    ]
    call = Call(impl, "collate", samples)
    got = call()
    want = default_collate(samples)
    call.equal(
        [tuple(got[0].shape), str(got[0].dtype), tuple(got[1].shape), str(got[1].dtype)],
        [tuple(want[0].shape), str(want[0].dtype), tuple(want[1].shape), str(want[1].dtype)],
        "shapes and dtypes",
    )
    call.equal(list(got), list(want), "stacked batch")


ragged_pairs = st.lists(
    st.integers(1, 15).flatmap(lambda k: st.tuples(token_lists(k, k), token_lists(k, k))),
    min_size=1,
    max_size=6,
)


@pytest.mark.level("padding")
@uses("collate")
@given(
    pairs=ragged_pairs,
    max_length=st.none() | st.integers(1, 15),
    pad=st.integers(0, 50256),
    ignore=st.integers(-200, -1),
)
def test_collate_pads_inputs_with_pad_and_targets_with_ignore_index(
    impl, pairs, max_length, pad, ignore
):
    """Ragged pairs are truncated to max_length, then right-padded to the longest: inputs with
    pad_token_id, targets with ignore_index; the unpadded prefix is unchanged."""
    samples = [(torch.tensor(x), torch.tensor(y)) for x, y in pairs]
    call = Call(
        impl, "collate", samples, pad_token_id=pad, ignore_index=ignore, max_length=max_length
    )
    inputs, targets = call()
    call.equal([str(inputs.dtype), str(targets.dtype)], ["torch.int64"] * 2, "dtypes")
    call.equal([inputs, targets], list(oracle_pad(pairs, pad, ignore, max_length)), "padded batch")
