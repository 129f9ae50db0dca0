"""The data path's specification: split, tokenize, num_chunks, chunk, batch_order, collate,
batches, GPTDataset and create_dataloader; each property against a naive oracle."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from torch.utils.data import DataLoader, default_collate

from gptref.data import (
    GPTDataset,
    batch_order,
    batches,
    chunk,
    collate,
    create_dataloader,
    num_chunks,
    split,
    tokenize,
)
from gptref.tokenizer import gpt2_tokenizer
from tests.oracles import (
    OracleBookDataset,
    oracle_pad,
    oracle_split,
    oracle_windows,
)
from tests.strategies import batch_sizes, epochs, seeds, token_lists, train_ratios, window_params

# ---------------------------------------------------------------- split

splittables = st.one_of(
    st.text(max_size=100),
    token_lists(max_size=100),
    token_lists(max_size=100).map(lambda ids: torch.tensor(ids, dtype=torch.int64)),
)


def _as_list(x):
    return x.tolist() if isinstance(x, torch.Tensor) else list(x)


@given(data=splittables, ratio=train_ratios)
def test_split_parts_concatenate_to_the_data(data, ratio):
    """train + val == data, for str, list and tensor alike."""
    train, val = split(data, ratio)
    assert type(train) is type(data) and type(val) is type(data)
    assert _as_list(train) + _as_list(val) == _as_list(data), (data, ratio)


@given(data=splittables, ratio=train_ratios)
def test_split_train_length_is_int_of_ratio_times_length(data, ratio):
    """len(train) == int(ratio * len(data)), and both parts equal the oracle's."""
    train, val = split(data, ratio)
    assert len(train) == int(ratio * len(data))
    head, tail = oracle_split(_as_list(data), ratio)
    assert (_as_list(train), _as_list(val)) == (head, tail)


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


@given(params=window_params())
def test_num_chunks_equals_the_books_range_length(params):
    """num_chunks(n, L, s) == len(range(0, n - L, s))."""
    n, L, s = params
    assert num_chunks(n, L, s) == len(range(0, n - L, s))


@given(ids=token_lists(max_size=200), L=st.integers(1, 40), s=st.integers(1, 50))
def test_chunk_shapes_are_num_chunks_by_max_length_int64(ids, L, s):
    """inputs and targets are int64 (num_chunks(N, L, s), L)."""
    inputs, targets = chunk(torch.tensor(ids, dtype=torch.int64), L, s)
    n = num_chunks(len(ids), L, s)
    assert inputs.shape == targets.shape == (n, L)
    assert inputs.dtype == targets.dtype == torch.int64


@given(ids=token_lists(max_size=200), L=st.integers(1, 40), s=st.integers(1, 50))
@example(ids=list(range(10)), L=9, s=1).via("one window: the last target is the last token")
@example(ids=list(range(10)), L=10, s=1).via("too short: no room for the last target")
def test_chunk_rows_equal_the_books_loop(ids, L, s):
    """Every window equals the oracle's ids[i*s : i*s+L] / ids[i*s+1 : i*s+L+1]."""
    inputs, targets = chunk(torch.tensor(ids, dtype=torch.int64), L, s)
    want_in, want_out = oracle_windows(ids, L, s)
    assert inputs.tolist() == want_in, (ids, L, s)
    assert targets.tolist() == want_out, (ids, L, s)


@given(ids=token_lists(min_size=2, max_size=200), L=st.integers(1, 40), s=st.integers(1, 50))
def test_chunk_targets_are_inputs_shifted_by_one(ids, L, s):
    """targets[i, :-1] == inputs[i, 1:] and targets[i, -1] is the token after the window."""
    t = torch.tensor(ids, dtype=torch.int64)
    inputs, targets = chunk(t, L, s)
    assert torch.equal(targets[:, :-1], inputs[:, 1:])
    for i in range(inputs.shape[0]):
        assert targets[i, -1] == t[i * s + L]


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


@given(n=st.integers(0, 20), L=st.integers(1, 20), extra=st.integers(1, 19))
def test_chunk_with_stride_equal_max_length_tiles_the_prefix(n, L, extra):
    """stride == max_length gives non-overlapping windows covering ids[:k*L] exactly."""
    ids = torch.arange(n * L + extra % L + 1)
    inputs, _ = chunk(ids, L, L)
    k = inputs.shape[0]
    assert torch.equal(inputs.reshape(-1), ids[: k * L])
    assert k == num_chunks(ids.numel(), L, L)


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


@given(n=st.integers(0, 60), b=batch_sizes, shuffle=st.booleans(), seed=seeds, epoch=epochs)
def test_batch_order_partitions_range_without_drop_last(n, b, shuffle, seed, epoch):
    """Without drop_last the batches are a partition of range(n) into ceil(n/b) batches."""
    order = batch_order(n, b, shuffle=shuffle, seed=seed, epoch=epoch)
    assert len(order) == math.ceil(n / b)
    flat = torch.cat(order).tolist() if order else []
    assert sorted(flat) == list(range(n))
    assert all(len(x) == b for x in order[:-1]) and all(0 < len(x) <= b for x in order)


@given(n=st.integers(0, 60), b=batch_sizes, shuffle=st.booleans(), seed=seeds, epoch=epochs)
def test_batch_order_with_drop_last_keeps_n_minus_remainder_distinct_samples(
    n, b, shuffle, seed, epoch
):
    """With drop_last: n // b full batches of distinct indices, n - n % b in all."""
    order = batch_order(n, b, shuffle=shuffle, drop_last=True, seed=seed, epoch=epoch)
    assert len(order) == n // b
    assert all(len(x) == b for x in order)
    flat = torch.cat(order).tolist() if order else []
    assert len(set(flat)) == len(flat) == n - n % b
    assert set(flat) <= set(range(n))


@given(n=st.integers(0, 60), b=batch_sizes, drop_last=st.booleans())
def test_batch_order_without_shuffle_is_the_identity_order(n, b, drop_last):
    """Unshuffled batches are consecutive slices of 0..n-1 (the oracle loader's order)."""
    order = batch_order(n, b, drop_last=drop_last)
    flat = torch.cat(order).tolist() if order else []
    assert flat == list(range(len(flat)))


@given(n=st.integers(0, 60), b=batch_sizes, seed=seeds, epoch=epochs, drop_last=st.booleans())
def test_batch_order_is_a_pure_function_of_its_arguments(n, b, seed, epoch, drop_last):
    """Equal arguments give equal batches, whatever the global RNG did in between."""
    kw = dict(shuffle=True, drop_last=drop_last, seed=seed, epoch=epoch)
    first = batch_order(n, b, **kw)
    torch.rand(7)  # disturb the global RNG
    state = torch.get_rng_state()
    second = batch_order(n, b, **kw)
    assert torch.equal(torch.get_rng_state(), state), "batch_order touched the global RNG"
    assert len(first) == len(second) and all(
        torch.equal(x, y) for x, y in zip(first, second, strict=True)
    )


def test_batch_order_epochs_and_seeds_give_different_orders():
    """Different epochs (and seeds) shuffle differently; seed/epoch do not alias (0,1) vs (1,0)."""
    orders = {
        (seed, epoch): torch.cat(batch_order(50, 5, shuffle=True, seed=seed, epoch=epoch)).tolist()
        for seed, epoch in [(0, 0), (0, 1), (1, 0), (1, 1)]
    }
    assert len({tuple(v) for v in orders.values()}) == 4, orders


@given(
    n=st.integers(0, 60),
    b=batch_sizes,
    world_size=st.integers(1, 5),
    shuffle=st.booleans(),
    drop_last=st.booleans(),
    seed=seeds,
)
def test_batch_order_shards_are_disjoint_equal_and_cover_the_single_process_order(
    n, b, world_size, shuffle, drop_last, seed
):
    """Ranks get disjoint shards of n // world_size samples each whose union is the first
    n - n % world_size samples of the world_size=1 order; the ranks' j-th batches together
    form the j-th block of world_size * b samples of that order (the global batch)."""
    kw = dict(shuffle=shuffle, drop_last=drop_last, seed=seed)
    single = batch_order(n, 1, **kw)
    single_flat = torch.cat(single).tolist() if single else []
    shards = [batch_order(n, b, rank=r, world_size=world_size, **kw) for r in range(world_size)]
    flats = [torch.cat(s).tolist() if s else [] for s in shards]
    per_rank = n // world_size
    kept = per_rank - per_rank % b if drop_last else per_rank
    assert all(len(f) == kept for f in flats)
    union = [i for f in flats for i in f]
    assert len(set(union)) == len(union), "shards overlap"
    assert set(union) <= set(single_flat[: per_rank * world_size])
    if not drop_last:
        assert set(union) == set(single_flat[: per_rank * world_size])
    assert len({len(s) for s in shards}) <= 1, "ranks disagree on the number of batches"
    used = single_flat[: per_rank * world_size]  # the remainder n % world_size is dropped
    for j in range(len(shards[0])):
        block = used[j * b * world_size : (j + 1) * b * world_size]
        assert sorted(i for s in shards for i in s[j].tolist()) == sorted(block)


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


@given(
    rows=st.integers(1, 6),
    width=st.integers(1, 12),
    data=st.data(),
)
def test_collate_of_equal_lengths_equals_default_collate(rows, width, data):
    """Equal-length pairs stack exactly as torch's default_collate does."""
    samples = [
        (
            torch.tensor(data.draw(token_lists(width, width))),
            torch.tensor(data.draw(token_lists(width, width))),
        )
        for _ in range(rows)
    ]
    got = collate(samples)
    want = default_collate(samples)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


ragged_pairs = st.lists(
    st.integers(1, 15).flatmap(lambda k: st.tuples(token_lists(k, k), token_lists(k, k))),
    min_size=1,
    max_size=6,
)


@given(
    pairs=ragged_pairs,
    max_length=st.none() | st.integers(1, 15),
    pad=st.integers(0, 50256),
    ignore=st.integers(-200, -1),
)
def test_collate_pads_inputs_with_pad_and_targets_with_ignore_index(pairs, max_length, pad, ignore):
    """Ragged pairs are truncated to max_length, then right-padded: inputs with pad_token_id,
    targets with ignore_index; the unpadded prefix is unchanged (the oracle's padding)."""
    inputs, targets = collate(
        [(torch.tensor(x), torch.tensor(y)) for x, y in pairs],
        pad_token_id=pad,
        ignore_index=ignore,
        max_length=max_length,
    )
    want_in, want_out = oracle_pad(pairs, pad, ignore, max_length)
    assert inputs.tolist() == want_in and targets.tolist() == want_out
    assert inputs.dtype == targets.dtype == torch.int64


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
