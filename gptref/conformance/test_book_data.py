"""Chapter 2 by the book's own names and signatures: ``GPTDatasetV1(txt, tokenizer, max_length,
stride)``, ``create_dataloader_v1(txt, batch_size=4, max_length=256, stride=128, shuffle=True,
drop_last=True, num_workers=0)`` with its global-RNG shuffle, and chapter 5's
``text_to_token_ids(text, tokenizer)`` / ``token_ids_to_text(ids, tokenizer)``.

The tokenizer is the book's, ``tiktoken.get_encoding("gpt2")`` (offline: see ``tokenizer.py``),
or ``IdsTokenizer`` to hand the dataset any token list. Only the tests about ``<|endoftext|>``
draw it: an implementation that refuses it fails those and still gets every other check.
Counts (windows, batches) are compared as counts before the contents.
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
from gptref.conformance.strategies import book_texts, seeds, synthetic_text, windowed_ids
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
    text = draw(book_texts(min_pieces=2))  # no <|endoftext|>: that is the dataset test's
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
    want = list(zip(*oracle_windows(ids, L, s), strict=True))
    call.equal(len(dataset), len(want), "len(dataset): the number of windows")
    items = [dataset[i] for i in range(len(dataset))]
    dtypes = sorted({str(t.dtype) for pair in items for t in pair})
    call.equal(dtypes, ["torch.int64"], "dtypes of the items")
    call.equal(_items(dataset), want, "items")


@st.composite
def texts_with_endoftext(draw):
    """(text, L, s): a text holding <|endoftext|> with room for at least one window of L."""
    head = draw(book_texts(min_pieces=0, max_pieces=20))
    tail = draw(book_texts(min_pieces=1, max_pieces=20, endoftext=True))
    text = head + ENDOFTEXT + tail
    n = len(_encode(text))  # >= 2: the token and at least one piece
    return text, draw(st.integers(1, min(8, n - 1))), draw(st.integers(1, 8))


@uses("GPTDatasetV1")
@given(case=texts_with_endoftext())
def test_gpt_dataset_v1_tokenizes_with_endoftext_allowed(impl, case):
    """On a text holding <|endoftext|>, the windows are those of tokenizer.encode(txt,
    allowed_special={"<|endoftext|>"}) with the book's tokenizer (the token is one id, 50256,
    not an error; every version of the book's GPTDatasetV1 allows it)."""
    text, L, s = case
    ids = _encode(text)
    call = Call(
        impl, "GPTDatasetV1", text, Code("tokenizer", gpt2()), L, s, setup=[TOKENIZER_SETUP]
    )
    want = list(zip(*oracle_windows(ids, L, s), strict=True))
    dataset = call()
    call.equal(len(dataset), len(want), "len(dataset): the number of windows")
    call.equal(_items(dataset), want, "items")


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
    call.equal(len(got), len(want), "the number of batches of one pass")
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
    call.equal([len(b) for b in got], [len(b) for b in want], "the number of batches of each of two passes")  # fmt: skip
    call.equal(got, want, "the batches of two passes (epochs)")
    same = torch.equal(torch.get_rng_state(), book_state)
    call.check(same, "the global RNG after two passes", "the book's loader's state", "another")


def _book_text() -> tuple[str, str]:
    """(text, the code that reads it): $GPTREF_BOOK_TEXT, else the book's the-verdict.txt
    beside this checkout (../shared/data), else ``strategies.synthetic_text()``."""
    candidates = [os.environ.get("GPTREF_BOOK_TEXT", "")]
    candidates.append(str(Path(__file__).resolve().parents[3] / "shared/data/the-verdict.txt"))
    for path in candidates:
        if path and Path(path).is_file():
            return Path(path).read_text(encoding="utf-8"), f"open({path!r}, encoding='utf-8').read()"  # fmt: skip
    return synthetic_text(), "strategies.synthetic_text()"


@uses("create_dataloader_v1")
def test_create_dataloader_v1_defaults_are_the_books(impl):
    """create_dataloader_v1(txt) uses batch_size=4, max_length=256, stride=128, shuffle=True,
    drop_last=True: after torch.manual_seed(123) it yields what the book's DataLoader does
    (over a text without <|endoftext|>: the defaults are checked whatever the tokenization)."""
    text, read = _book_text()
    inputs, targets = oracle_windows(_encode(text), 256, 128)
    pairs = [(torch.tensor(x), torch.tensor(y)) for x, y in zip(inputs, targets, strict=True)]
    torch.manual_seed(123)
    want = _batches(DataLoader(pairs, batch_size=4, shuffle=True, drop_last=True))
    setup = [f"txt = {read}", "torch.manual_seed(123)"]
    call = Call(impl, "create_dataloader_v1", Code("txt", text), setup=setup)
    torch.manual_seed(123)
    got = _batches(call())
    call.equal(len(got), len(want), "the number of batches (batch_size=4, max_length=256, stride=128, drop_last=True)")  # fmt: skip
    call.equal([len(x) for x, _ in got], [4] * len(want), "the rows of each batch (batch_size=4)")
    call.equal([len(x[0]) for x, _ in got], [256] * len(want), "the width of each batch (max_length=256)")  # fmt: skip
    call.equal(got, want, "the batches of the default loader (stride=128, shuffle=True)")


# ---------------------------------------------------------------- text <-> ids


@uses("text_to_token_ids", "token_ids_to_text")
@given(text=st.one_of(book_texts(min_pieces=1), st.text(min_size=1, max_size=40).filter(lambda t: ENDOFTEXT not in t)))  # fmt: skip
def test_text_to_token_ids_is_int64_1_by_t_and_token_ids_to_text_inverts_it(impl, text):
    """On a text without <|endoftext|> (where TEXT_TO_TOKEN_IDS makes no difference):
    text_to_token_ids(text, tokenizer) == tensor([tokenizer.encode(text)]), int64 (1, T);
    token_ids_to_text(that, tokenizer) gives text back."""
    tok = Code("tokenizer", gpt2())
    call = Call(impl, "text_to_token_ids", text, tok, setup=[TOKENIZER_SETUP])
    ids = call()
    n = len(_encode(text))
    call.equal(tuple(ids.shape), (1, n), "the shape: (1, the number of tokens)")
    call.equal(str(ids.dtype), "torch.int64", "the dtype")
    call.equal(ids, [_encode(text)], "ids")
    back = Call(impl, "token_ids_to_text", ids, tok, setup=[TOKENIZER_SETUP])
    back.equal(back(), text, "decoded text")


@uses("text_to_token_ids")
@pytest.mark.semantics(TEXT_TO_TOKEN_IDS="allow-endoftext")
@given(case=texts_with_endoftext())
def test_text_to_token_ids_allows_endoftext(impl, case):
    """TEXT_TO_TOKEN_IDS="allow-endoftext" (chapter 5's notebook, the book's package): a text
    holding <|endoftext|> gives tokenizer.encode(text, allowed_special={"<|endoftext|>"})."""
    text = case[0]
    call = Call(impl, "text_to_token_ids", text, Code("tokenizer", gpt2()), setup=[TOKENIZER_SETUP])  # fmt: skip
    call.equal(call(), [_encode(text)], "ids, <|endoftext|> as 50256")


@uses("text_to_token_ids")
@pytest.mark.semantics(TEXT_TO_TOKEN_IDS="encode")
@given(case=texts_with_endoftext())
def test_text_to_token_ids_refuses_endoftext_as_tokenizer_encode_does(impl, case):
    """TEXT_TO_TOKEN_IDS="encode" (the chapter-5 scripts: tokenizer.encode(text)): a text
    holding <|endoftext|> raises tiktoken's ValueError (a disallowed special token)."""
    text = case[0]
    call = Call(impl, "text_to_token_ids", text, Code("tokenizer", gpt2()), setup=[TOKENIZER_SETUP])  # fmt: skip
    try:
        ids = call()
    except ValueError:
        return
    call.fail("tokenizer.encode(text) refuses <|endoftext|> in the text (TEXT_TO_TOKEN_IDS='encode')", "ValueError", ids)  # fmt: skip
