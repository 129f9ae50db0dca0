"""The data path of chapters 2 and 5 as pure functions: split -> tokenize -> chunk ->
batch_order / collate -> batches.

Every function here is pure: randomness enters only as ``seed`` / ``epoch``, never from a
global RNG. The torch plumbing around them (``GPTDataset``, ``create_dataloader``) is
``gptref.loader``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import tiktoken
import torch

from gptref._check import FieldError, check_int
from gptref.tokenizer import ENDOFTEXT, ENDOFTEXT_ID, gpt2_tokenizer

T = TypeVar("T", str, list, torch.Tensor)


@runtime_checkable
class TokenSource(Protocol):
    """Token ids kept on disk (``gptref.corpus.tokens.TokenFile``): ``ids`` is a 1-D integer
    tensor over a memory map, used in place and never copied whole; pickled, such an object
    should carry its path rather than its ids (a DataLoader worker maps the file again)."""

    ids: torch.Tensor


INTEGER_DTYPES = frozenset({torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
                            torch.uint16, torch.uint32, torch.uint64})  # fmt: skip
SEED_LIMIT = 2**32  # torch's CPU generator uses 32 bits of its seed
GOLDEN = 0x9E3779B1  # odd: seed -> seed * GOLDEN mod 2**32 is a bijection


def split(data: T, train_ratio: float = 0.9) -> tuple[T, T]:
    """data: str, list or 1-D tensor of length N -> (data[:k], data[k:]), k = int(train_ratio * N).

    The book splits the *characters* of the text, then tokenizes each part.
    """
    if not isinstance(train_ratio, (int, float)) or not 0 < train_ratio < 1:
        raise ValueError(f"split: train_ratio must be in (0, 1), got {train_ratio!r}; e.g. 0.9")
    if isinstance(data, torch.Tensor) and data.dim() != 1:
        raise ValueError(f"split: a tensor must be 1-D, got shape {tuple(data.shape)}")
    k = int(train_ratio * len(data))
    return data[:k], data[k:]


def tokenize(
    text: str,
    tokenizer: tiktoken.Encoding | None = None,
    allowed_special: set[str] | frozenset[str] = frozenset({ENDOFTEXT}),
) -> torch.Tensor:
    """text -> int64 (N,): GPT-2 BPE ids, ``<|endoftext|>`` allowed by default (as in the book)."""
    if not isinstance(text, str):
        raise TypeError(f"tokenize: text must be str, got {type(text).__name__}")
    tok = tokenizer if tokenizer is not None else gpt2_tokenizer()
    # encode_to_numpy skips building a Python list of ints for large texts
    arr = tok.encode_to_numpy(text, allowed_special=set(allowed_special))
    return torch.from_numpy(arr.astype("int64", copy=False))


def num_chunks(n_tokens: int, max_length: int, stride: int) -> int:
    """The number of windows the book makes: ``len(range(0, n_tokens - max_length, stride))``."""
    check_positive("num_chunks", max_length=max_length, stride=stride)
    if n_tokens < 0:
        raise ValueError(f"num_chunks: n_tokens must be >= 0, got {n_tokens}")
    # the window must leave one token for the last target, hence the strict bound
    return max(0, -(-(n_tokens - max_length) // stride))


def chunk(
    token_ids: torch.Tensor | Sequence[int] | TokenSource | np.memmap, max_length: int, stride: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """ids: int (N,) -> (inputs, targets): int64 (n, max_length), n = num_chunks(N, max_length, stride).

    ``inputs[i] = ids[i*stride : i*stride + max_length]`` and ``targets[i]`` is the same
    window one token later. Both are strided *views* of ``ids`` (after a one-off
    conversion to int64 if it is another integer dtype): no memory per window.
    Memory-mapped ids (a ``TokenSource`` or an ``np.memmap``) are never converted: the
    windows are views of the file in its dtype (uint16); convert a batch with ``.long()``.
    """
    check_positive("chunk", max_length=max_length, stride=stride)
    return windows(as_token_tensor("chunk", token_ids), max_length, stride)


def windows(ids: torch.Tensor, max_length: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``chunk`` of ids that ``as_token_tensor`` already checked (no second pass over them)."""
    n = num_chunks(ids.numel(), max_length, stride)
    step = ids.stride(0)
    size, strides = (n, max_length), (stride * step, step)
    inputs = ids.as_strided(size, strides, ids.storage_offset())
    targets = ids.as_strided(size, strides, ids.storage_offset() + step)
    return inputs, targets


def as_token_tensor(
    where: str, token_ids: torch.Tensor | Sequence[int] | TokenSource | np.memmap
) -> torch.Tensor:
    """Validate token ids: 1-D, integer, non-negative -> int64 (N,) (a view when already int64).

    Memory-mapped ids (a ``TokenSource``, ``np.memmap``) -> a view in the file's dtype, never a
    copy.
    """
    # a tensor first: the protocol's isinstance is slow, and tensors are the common case
    mapped = not isinstance(token_ids, torch.Tensor) and isinstance(
        token_ids, (np.memmap, TokenSource)
    )
    if isinstance(token_ids, torch.Tensor):
        ids = token_ids
    elif isinstance(token_ids, np.memmap):
        if not token_ids.dtype.isnative:
            raise ValueError(
                f"{where}: a memmap must be in native byte order, got {token_ids.dtype}"
            )
        with warnings.catch_warnings():  # a read-only map: torch warns that it is not writable
            warnings.filterwarnings("ignore", message=".*not writable.*")
            ids = torch.from_numpy(token_ids)
    elif mapped:
        ids = token_ids.ids
    else:
        # an empty list would otherwise become float32
        ids = torch.as_tensor(token_ids) if len(token_ids) else torch.zeros(0, dtype=torch.int64)
    if ids.dim() != 1:
        raise ValueError(f"{where}: token_ids must be 1-D, got shape {tuple(ids.shape)}")
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"{where}: token_ids must be an integer tensor, got dtype {ids.dtype}")
    if ids.numel() and ids.dtype not in (torch.uint8, torch.uint16, torch.uint32, torch.uint64):
        low = int(ids.min())
        if low < 0:
            raise ValueError(f"{where}: token ids must be >= 0, got {low}")
    return ids if mapped else ids.to(torch.int64)


def batch_order(
    n_samples: int,
    batch_size: int,
    *,
    shuffle: bool = False,
    drop_last: bool = False,
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> list[torch.Tensor]:
    """-> the index batches (int64 (<= batch_size,)) of one epoch for one rank.

    A pure function of its arguments. With ``shuffle`` the order is
    ``torch.randperm(n_samples)`` from a private generator seeded with
    ``(seed * 0x9E3779B1 + epoch) mod 2**32`` (distinct for distinct epochs of one
    seed, and for distinct seeds at one epoch); otherwise ``0..n-1``. With ``world_size > 1`` the last
    ``n_samples % world_size`` indices of that order are dropped and rank ``r`` takes
    every ``world_size``-th index from position ``r``, so shards are disjoint and
    equal in length, and the ranks' ``j``-th batches together are one contiguous
    block of the single-process order (the global batch). Batch count per rank:
    ``m // batch_size`` with ``drop_last``, else ``ceil(m / batch_size)``, where
    ``m = n_samples // world_size``.
    """
    check_batch_order("batch_order", n_samples, batch_size, seed, rank, world_size)
    check_seed("batch_order", "epoch", epoch)
    return epoch_order(n_samples, batch_size, shuffle, drop_last, seed, epoch, rank, world_size)


def check_batch_order(
    where: str, n_samples: int, batch_size: int, seed: int, rank: int, world_size: int
) -> None:
    """The checks of ``batch_order``'s arguments, for a caller that makes many epochs' orders."""
    check_positive(where, batch_size=batch_size, world_size=world_size)
    check_int(where, "n_samples", n_samples, low=0)
    if not 0 <= rank < world_size:
        raise ValueError(f"{where}: rank must be in [0, world_size={world_size}), got {rank}")
    check_seed(where, "seed", seed)


def epoch_order(
    n_samples: int, batch_size: int, shuffle: bool, drop_last: bool, seed: int, epoch: int,
    rank: int, world_size: int,
) -> list[torch.Tensor]:  # fmt: skip
    """``batch_order`` of arguments already checked (``check_batch_order``)."""
    if shuffle:
        # torch's CPU generator (mt19937) keeps only 32 bits of its seed, so seed and epoch
        # are mixed into 32 bits: an odd multiplier makes the map one-to-one in each of them
        generator = torch.Generator().manual_seed((seed * GOLDEN + epoch) % SEED_LIMIT)
        order = torch.randperm(n_samples, generator=generator)
    else:
        order = torch.arange(n_samples)
    per_rank = n_samples // world_size
    mine = order[: per_rank * world_size][rank::world_size]
    n_batches = num_batches(n_samples, batch_size, drop_last=drop_last, world_size=world_size)
    return [mine[i * batch_size : (i + 1) * batch_size] for i in range(n_batches)]


def num_batches(n_samples: int, batch_size: int, *, drop_last: bool, world_size: int = 1) -> int:
    """How many batches ``batch_order`` gives each rank: ``m // batch_size`` with
    ``drop_last``, else ``ceil(m / batch_size)``, where ``m = n_samples // world_size``."""
    per_rank = n_samples // world_size
    return per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)


def collate(
    samples: Sequence[tuple[Any, Any]],
    *,
    pad_token_id: int = ENDOFTEXT_ID,
    ignore_index: int = -100,
    max_length: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """[(input (T_i,), target (T_i,)), ...] of integer ids -> (inputs, targets): int64 (b, T).

    T is the longest pair after truncation to ``max_length``; shorter inputs are
    right-padded with ``pad_token_id`` and targets with ``ignore_index`` (which the
    loss skips). Equal-length pairs stack as ``default_collate`` stacks int64 ids. Ids of
    any integer dtype come back int64, padded or not; float, complex or bool samples are a
    TypeError (they are not token ids).
    """
    if len(samples) == 0:
        raise ValueError("collate: got no samples; pass at least one (input, target) pair")
    if max_length is not None:
        check_positive("collate", max_length=max_length)
    pairs = []
    for i, (x, y) in enumerate(samples):
        x, y = torch.as_tensor(x), torch.as_tensor(y)
        if x.dim() != 1 or x.shape != y.shape:
            raise ValueError(
                f"collate: sample {i} must be a pair of equal-length 1-D sequences, "
                f"got shapes {tuple(x.shape)} and {tuple(y.shape)}"
            )
        if x.dtype not in INTEGER_DTYPES or y.dtype not in INTEGER_DTYPES:
            bad = x.dtype if x.dtype not in INTEGER_DTYPES else y.dtype
            raise TypeError(f"collate: sample {i} must hold integer token ids, got dtype {bad}")
        if max_length is not None:
            x, y = x[:max_length], y[:max_length]
        pairs.append((x, y))
    width = max(x.numel() for x, _ in pairs)
    if all(x.numel() == width for x, _ in pairs):  # (stack promotes mixed dtypes)
        inputs, targets = torch.stack([x for x, _ in pairs]), torch.stack([y for _, y in pairs])
        return inputs.to(torch.int64), targets.to(torch.int64)
    inputs = torch.full((len(pairs), width), pad_token_id, dtype=torch.int64)
    targets = torch.full((len(pairs), width), ignore_index, dtype=torch.int64)
    for i, (x, y) in enumerate(pairs):
        inputs[i, : x.numel()] = x
        targets[i, : y.numel()] = y
    return inputs, targets


def batches(
    inputs: torch.Tensor, targets: torch.Tensor, batch_size: int, **order: Any
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, targets): (n, L) -> iterator of (x, y): int64 (<= batch_size, L), in
    ``batch_order(n, batch_size, **order)`` (shuffle, drop_last, seed, epoch, rank, world_size)."""
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(
            f"batches: inputs and targets must have the same number of rows, "
            f"got {inputs.shape[0]} and {targets.shape[0]}"
        )
    for idx in batch_order(inputs.shape[0], batch_size, **order):
        yield inputs[idx].long(), targets[idx].long()  # windows of a token file are uint16


def check_seed(where: str, name: str, value: int) -> int:
    """A seed (or epoch) torch's CPU generator keeps whole: an int in [0, 2**32)."""
    check_int(where, name, value)
    if not 0 <= value < SEED_LIMIT:
        raise FieldError(where, name, f"must be in [0, 2**32), got {value}")
    return value


def check_positive(where: str, **values: int) -> None:
    """Each keyword an int >= 1."""
    for name, value in values.items():
        check_int(where, name, value, low=1)
