"""Chapter 2 by the book's own names and signatures: ``GPTDatasetV1(txt, tokenizer, max_length,
stride)``, ``create_dataloader_v1(txt, batch_size=4, max_length=256, stride=128, shuffle=True,
drop_last=True, num_workers=0)`` with its global-RNG shuffle, and chapter 5's
``text_to_token_ids(text, tokenizer)`` / ``token_ids_to_text(ids, tokenizer)``.

The tokenizer is the book's, ``tiktoken.get_encoding("gpt2")`` (offline: see ``tokenizer.py``),
or ``IdsTokenizer`` to hand the dataset any token list.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from gptref.conformance.oracles import oracle_batches_of, oracle_windows
from gptref.conformance.repro import Call, Code
from gptref.conformance.strategies import book_texts, seeds, windowed_ids
from gptref.conformance.tokenizer import ENDOFTEXT, IdsTokenizer, gpt2

uses = pytest.mark.uses
pytestmark = pytest.mark.level("book")

TOKENIZER_SETUP = "from gptref import gpt2_tokenizer; tokenizer = gpt2_tokenizer()  # == tiktoken.get_encoding('gpt2')"  # fmt: skip


def _encode(text: str) -> list[int]:
    return gpt2().encode(text, allowed_special={ENDOFTEXT})


def _items(dataset) -> list[tuple[list[int], list[int]]]:
    return [(x.tolist(), y.tolist()) for x, y in (dataset[i] for i in range(len(dataset)))]


@st.composite
def loader_cases(draw, max_batch: int = 4):
    """(text, batch_size, max_length, stride) where the windows fill at least one batch (the
    loaders of fewer windows are test_edge_cases.py's)."""
    text = draw(book_texts(min_pieces=2))
    if len(_encode(text)) < 2:  # a single piece may tokenize to one token: add one more
        text += " the"
    n = len(_encode(text))
    L, s = draw(st.integers(1, min(16, n - 1))), draw(st.integers(1, 16))
    windows = len(range(0, n - L, s))
    return text, draw(st.integers(1, min(max_batch, windows))), L, s


# ---------------------------------------------------------------- GPTDatasetV1


@uses("GPTDatasetV1")
@given(case=windowed_ids())
def test_gpt_dataset_v1_windows_equal_the_books_loop(impl, case):
    """GPTDatasetV1(txt, tokenizer, L, s): item i is (ids[i*s : i*s+L], ids[i*s+1 : i*s+L+1])
    as int64 tensors, one per start of range(0, len(ids) - L, s), ids = tokenizer.encode(txt)."""
    ids, L, s = case
    call = Call(impl, "GPTDatasetV1", "any text", IdsTokenizer(ids), L, s)
    dataset = call()
    items = [dataset[i] for i in range(len(dataset))]
    dtypes = sorted({str(t.dtype) for pair in items for t in pair})
    call.equal(dtypes, ["torch.int64"], "dtypes of the items")
    call.equal(_items(dataset), list(zip(*oracle_windows(ids, L, s), strict=True)), "items")


@uses("GPTDatasetV1")
@given(text=book_texts(min_pieces=1), L=st.integers(1, 8), s=st.integers(1, 8))
def test_gpt_dataset_v1_tokenizes_with_endoftext_allowed(impl, text, L, s):
    """On text, the windows are those of tokenizer.encode(txt, allowed_special={"<|endoftext|>"})
    with the book's tokenizer (so <|endoftext|> is one token, 50256, not an error)."""
    ids = _encode(text)
    call = Call(
        impl, "GPTDatasetV1", text, Code("tokenizer", gpt2()), L, s, setup=[TOKENIZER_SETUP]
    )
    call.equal(_items(call()), list(zip(*oracle_windows(ids, L, s), strict=True)), "items")


# ---------------------------------------------------------------- create_dataloader_v1


def _loader_call(impl, text, b, L, s, shuffle, drop_last, setup=()) -> Call:
    return Call(impl, "create_dataloader_v1", text, batch_size=b, max_length=L, stride=s,
                shuffle=shuffle, drop_last=drop_last, num_workers=0, setup=setup)  # fmt: skip


def _batches(loader) -> list[tuple[list, list]]:
    return [(x.tolist(), y.tolist()) for x, y in loader]


@uses("create_dataloader_v1")
@given(case=loader_cases(), drop_last=st.booleans())
def test_create_dataloader_v1_without_shuffle_yields_the_windows_in_order(impl, case, drop_last):
    """shuffle=False: consecutive batches of the book's windows of the gpt2 tokens of txt,
    int64 (batch_size, max_length), the short last one dropped with drop_last."""
    text, b, L, s = case
    call = _loader_call(impl, text, b, L, s, False, drop_last)
    inputs, targets = oracle_windows(_encode(text), L, s)
    want = [
        ([inputs[i] for i in batch], [targets[i] for i in batch])
        for batch in oracle_batches_of(list(range(len(inputs))), b, drop_last)
    ]
    loader = call()
    got = list(loader)
    call.equal(sorted({str(t.dtype) for pair in got for t in pair}) or ["torch.int64"], ["torch.int64"], "dtypes")  # fmt: skip
    call.equal(_batches(got), want, "the batches of one pass")


@uses("create_dataloader_v1")
@given(case=loader_cases(), drop_last=st.booleans(), seed=seeds)
def test_create_dataloader_v1_shuffles_like_the_books_dataloader_under_the_global_rng(
    impl, case, drop_last, seed
):
    """shuffle=True after torch.manual_seed(seed): two passes give the batches, and leave the
    global RNG in the state, of the book's DataLoader(dataset, batch_size, shuffle=True,
    drop_last) over the same windows, created and iterated after the same manual_seed."""
    text, b, L, s = case
    call = _loader_call(impl, text, b, L, s, True, drop_last, setup=[f"torch.manual_seed({seed})"])
    inputs, targets = oracle_windows(_encode(text), L, s)
    pairs = [(torch.tensor(x), torch.tensor(y)) for x, y in zip(inputs, targets, strict=True)]
    torch.manual_seed(seed)
    book = DataLoader(pairs, batch_size=b, shuffle=True, drop_last=drop_last)
    want = [_batches(book), _batches(book)]
    book_state = torch.get_rng_state()
    torch.manual_seed(seed)
    loader = call()
    got = [_batches(loader), _batches(loader)]
    call.equal(got, want, "the batches of two passes (epochs)")
    same = torch.equal(torch.get_rng_state(), book_state)
    call.check(same, "the global RNG after two passes", "the book's loader's state", "another")


def _book_text() -> tuple[str, str]:
    """(text, where from): $GPTREF_BOOK_TEXT, else the book's the-verdict.txt beside this
    checkout (../shared/data), else a fixed synthetic text of about 3000 tokens."""
    candidates = [os.environ.get("GPTREF_BOOK_TEXT", "")]
    import gptref

    candidates.append(str(Path(gptref.__file__).resolve().parents[2] / "shared/data/the-verdict.txt"))  # fmt: skip
    for path in candidates:
        if path and Path(path).is_file():
            return Path(path).read_text(encoding="utf-8"), path
    g = torch.Generator().manual_seed(0)
    from gptref.conformance.strategies import TEXT_PIECES

    picks = torch.randint(0, len(TEXT_PIECES), (3000,), generator=g).tolist()
    return "".join(TEXT_PIECES[i] for i in picks), "(synthetic text)"


@uses("create_dataloader_v1")
def test_create_dataloader_v1_defaults_are_the_books(impl):
    """create_dataloader_v1(txt) uses batch_size=4, max_length=256, stride=128, shuffle=True,
    drop_last=True: after torch.manual_seed(123) it yields what the book's DataLoader does."""
    text, source = _book_text()
    inputs, targets = oracle_windows(_encode(text), 256, 128)
    pairs = [(torch.tensor(x), torch.tensor(y)) for x, y in zip(inputs, targets, strict=True)]
    torch.manual_seed(123)
    want = _batches(DataLoader(pairs, batch_size=4, shuffle=True, drop_last=True))
    setup = [f"txt = open({source!r}).read()", "torch.manual_seed(123)"]
    call = Call(impl, "create_dataloader_v1", Code("txt", text), setup=setup)
    torch.manual_seed(123)
    got = _batches(call())
    call.equal([len(got)] + [len(x) for x, _ in got], [len(want)] + [4] * len(want), "batch count and sizes")  # fmt: skip
    call.equal(got, want, f"the batches of the default loader over {source}")


# ---------------------------------------------------------------- text <-> ids


@uses("text_to_token_ids", "token_ids_to_text")
@given(text=st.one_of(book_texts(min_pieces=1), st.text(min_size=1, max_size=40)))
def test_text_to_token_ids_is_int64_1_by_t_and_token_ids_to_text_inverts_it(impl, text):
    """text_to_token_ids(text, tokenizer) == tensor([tokenizer.encode(text, allowed_special=
    {"<|endoftext|>"})]), int64 (1, T); token_ids_to_text(that, tokenizer) gives text back."""
    tok = Code("tokenizer", gpt2())
    call = Call(impl, "text_to_token_ids", text, tok, setup=[TOKENIZER_SETUP])
    ids = call()
    call.equal([str(ids.dtype), tuple(ids.shape)], ["torch.int64", (1, len(_encode(text)))], "dtype and shape")  # fmt: skip
    call.equal(ids, [_encode(text)], "ids")
    back = Call(impl, "token_ids_to_text", ids, tok, setup=[TOKENIZER_SETUP])
    back.equal(back(), text, "decoded text")
