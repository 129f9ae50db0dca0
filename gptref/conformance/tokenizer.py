"""Tokenizers the suite hands to the book's functions, and the offline "gpt2" encoding.

The book's ``create_dataloader_v1`` calls ``tiktoken.get_encoding("gpt2")``, which downloads
``vocab.bpe`` and ``encoder.json`` on first use. Offline that raises, so the suite puts
``gptref.gpt2_tokenizer()`` into tiktoken's registry first: the same ``Encoding``, built from
byte-identical files checked against the SHA-256 digests tiktoken pins for "gpt2". Nothing
else about the implementation under test is changed, and an encoding tiktoken already holds
is left alone.
"""

from __future__ import annotations

from collections.abc import Sequence

ENDOFTEXT = "<|endoftext|>"


def install_offline_gpt2() -> str:
    """Make ``tiktoken.get_encoding("gpt2")`` work offline -> where the encoding came from."""
    try:
        import tiktoken.registry
    except ImportError:  # pragma: no cover - tiktoken is a dependency of gptref
        return "tiktoken is not installed"
    if "gpt2" in tiktoken.registry.ENCODINGS:
        return "tiktoken's own"
    from gptref.tokenizer import gpt2_tokenizer

    tiktoken.registry.ENCODINGS["gpt2"] = gpt2_tokenizer()
    return "gptref.gpt2_tokenizer() (tiktoken's pinned files, offline)"


def gpt2():
    """The book's tokenizer: ``tiktoken.get_encoding("gpt2")``."""
    import tiktoken

    install_offline_gpt2()
    return tiktoken.get_encoding("gpt2")


class IdsTokenizer:
    """A tokenizer whose ``encode`` returns the given ids whatever the text: it lets the suite
    hand any token list to the book's ``GPTDatasetV1(txt, tokenizer, max_length, stride)``."""

    def __init__(self, ids: Sequence[int]) -> None:
        self.ids = list(ids)

    def encode(self, text: str, allowed_special=()) -> list[int]:
        return list(self.ids)

    def __repr__(self) -> str:
        return f"tokenizer.IdsTokenizer({self.ids!r})"


class CharTokenizer:
    """One id per character (``ord(c) % vocab_size``); decode maps ids to letters. Enough for
    the book's ``text_to_token_ids`` / ``token_ids_to_text`` inside its training loop's
    per-epoch sample, with a model of a tiny vocabulary."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    def encode(self, text: str, allowed_special=()) -> list[int]:
        return [ord(c) % self.vocab_size for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(chr(ord("a") + int(i) % 26) for i in ids)

    def __repr__(self) -> str:
        return f"tokenizer.CharTokenizer({self.vocab_size})"
