"""The data path of chapters 2 and 5: split -> tokenize -> chunk -> batch_order / collate -> loaders.

Every function here is pure: randomness enters only as ``seed`` / ``epoch``. The one
exception is ``create_dataloader(..., seed=None)``, which reproduces the book's
``create_dataloader_v1`` *including* its use of the global torch RNG.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import tiktoken
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from gptref.tokenizer import ENDOFTEXT, ENDOFTEXT_ID, gpt2_tokenizer

T = TypeVar("T", str, list, torch.Tensor)

_SEED_LIMIT = 2**32  # torch's CPU generator uses 32 bits of its seed
_GOLDEN = 0x9E3779B1  # odd: seed -> seed * _GOLDEN mod 2**32 is a bijection


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
    _check_positive("num_chunks", max_length=max_length, stride=stride)
    if n_tokens < 0:
        raise ValueError(f"num_chunks: n_tokens must be >= 0, got {n_tokens}")
    # the window must leave one token for the last target, hence the strict bound
    return max(0, -(-(n_tokens - max_length) // stride))


def chunk(
    token_ids: torch.Tensor | Sequence[int] | TokenFile | np.memmap, max_length: int, stride: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """ids: int (N,) -> (inputs, targets): int64 (n, max_length), n = num_chunks(N, max_length, stride).

    ``inputs[i] = ids[i*stride : i*stride + max_length]`` and ``targets[i]`` is the same
    window one token later. Both are strided *views* of ``ids`` (after a one-off
    conversion to int64 if it is another integer dtype): no memory per window.
    Memory-mapped ids (a ``TokenFile`` or an ``np.memmap``) are never converted: the
    windows are views of the file in its dtype (uint16); convert a batch with ``.long()``.
    """
    _check_positive("chunk", max_length=max_length, stride=stride)
    return _windows(as_token_tensor("chunk", token_ids), max_length, stride)


def _windows(ids: torch.Tensor, max_length: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = num_chunks(ids.numel(), max_length, stride)
    step = ids.stride(0)
    size, strides = (n, max_length), (stride * step, step)
    inputs = ids.as_strided(size, strides, ids.storage_offset())
    targets = ids.as_strided(size, strides, ids.storage_offset() + step)
    return inputs, targets


class TokenFile:
    """A memory-mapped file of uint16 little-endian token ids (``gptref prepare``'s
    train.bin / val.bin): ``.ids`` is a uint16 (N,) tensor over an ``np.memmap``.

    Nothing is read up front: the OS reads pages as windows touch them (they count as
    file-backed, reclaimable resident memory). ``chunk``, ``GPTDataset`` and
    ``create_dataloader`` take it in place of ids; each window they hand out becomes
    int64 on its own, so memory does not grow with the file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            size = self.path.stat().st_size
        except OSError:
            raise ValueError(f"{self.path}: no such token file; run `gptref prepare`") from None
        if size % 2:
            raise ValueError(
                f"{self.path}: {size} bytes is not a whole number of uint16 tokens; it is "
                "truncated or not a token file: run `gptref prepare` again"
            )
        if sys.byteorder != "little":
            raise ValueError(f"{self.path}: token files are little-endian; this machine is not")
        if size == 0:  # mmap cannot map an empty file
            self.ids = torch.zeros(0, dtype=torch.uint16)
        else:
            # copy-on-write: writable as torch expects, yet a write never reaches the file
            self.ids = torch.from_numpy(np.memmap(self.path, dtype="<u2", mode="c"))

    def __len__(self) -> int:
        return self.ids.numel()

    def __repr__(self) -> str:
        return f"TokenFile({str(self.path)!r}, {len(self):,} tokens)"

    def __reduce__(self):  # a DataLoader worker re-maps the file instead of copying it
        return TokenFile, (self.path,)


def as_token_tensor(
    where: str, token_ids: torch.Tensor | Sequence[int] | TokenFile | np.memmap
) -> torch.Tensor:
    """Validate token ids: 1-D, integer, non-negative -> int64 (N,) (a view when already int64).

    Memory-mapped ids (``TokenFile``, ``np.memmap``) -> a view in the file's dtype, never a copy.
    """
    mapped = isinstance(token_ids, (TokenFile, np.memmap))
    if isinstance(token_ids, TokenFile):
        ids = token_ids.ids
    elif isinstance(token_ids, np.memmap):
        if not token_ids.dtype.isnative:
            raise ValueError(
                f"{where}: a memmap must be in native byte order, got {token_ids.dtype}"
            )
        with warnings.catch_warnings():  # a read-only map: torch warns that it is not writable
            warnings.filterwarnings("ignore", message=".*not writable.*")
            ids = torch.from_numpy(token_ids)
    elif isinstance(token_ids, torch.Tensor):
        ids = token_ids
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
    _check_positive("batch_order", batch_size=batch_size, world_size=world_size)
    if n_samples < 0:
        raise ValueError(f"batch_order: n_samples must be >= 0, got {n_samples}")
    if not 0 <= rank < world_size:
        raise ValueError(f"batch_order: rank must be in [0, world_size={world_size}), got {rank}")
    if shuffle:
        order = torch.randperm(n_samples, generator=_generator("batch_order", seed, epoch))
    else:
        order = torch.arange(n_samples)
    per_rank = n_samples // world_size
    mine = order[: per_rank * world_size][rank::world_size]
    n_batches = per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)
    return [mine[i * batch_size : (i + 1) * batch_size] for i in range(n_batches)]


def collate(
    samples: Sequence[tuple[Any, Any]],
    *,
    pad_token_id: int = ENDOFTEXT_ID,
    ignore_index: int = -100,
    max_length: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """[(input (T_i,), target (T_i,)), ...] -> (inputs, targets): int64 (b, T).

    T is the longest pair after truncation to ``max_length``; shorter inputs are
    right-padded with ``pad_token_id`` and targets with ``ignore_index`` (which the
    loss skips). Equal-length pairs stack exactly like ``default_collate``.
    """
    if len(samples) == 0:
        raise ValueError("collate: got no samples; pass at least one (input, target) pair")
    if max_length is not None:
        _check_positive("collate", max_length=max_length)
    pairs = []
    for i, (x, y) in enumerate(samples):
        x, y = torch.as_tensor(x), torch.as_tensor(y)
        if x.dim() != 1 or x.shape != y.shape:
            raise ValueError(
                f"collate: sample {i} must be a pair of equal-length 1-D sequences, "
                f"got shapes {tuple(x.shape)} and {tuple(y.shape)}"
            )
        if max_length is not None:
            x, y = x[:max_length], y[:max_length]
        pairs.append((x, y))
    width = max(x.numel() for x, _ in pairs)
    if all(x.numel() == width for x, _ in pairs):
        return torch.stack([x for x, _ in pairs]), torch.stack([y for _, y in pairs])
    inputs = torch.full((len(pairs), width), pad_token_id, dtype=torch.int64)
    targets = torch.full((len(pairs), width), ignore_index, dtype=torch.int64)
    for i, (x, y) in enumerate(pairs):
        inputs[i, : x.numel()] = x
        targets[i, : y.numel()] = y
    return inputs, targets


def batches(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    batch_size: int,
    *,
    shuffle: bool = False,
    drop_last: bool = False,
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, targets): (n, L) -> iterator of (x, y): int64 (<= batch_size, L), in ``batch_order``."""
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(
            f"batches: inputs and targets must have the same number of rows, "
            f"got {inputs.shape[0]} and {targets.shape[0]}"
        )
    order = batch_order(
        inputs.shape[0],
        batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        seed=seed,
        epoch=epoch,
        rank=rank,
        world_size=world_size,
    )
    for idx in order:
        yield inputs[idx].long(), targets[idx].long()  # windows of a token file are uint16


class GPTDataset(Dataset):
    """The book's ``GPTDatasetV1``: sliding windows over a text (or a 1-D tensor of ids,
    or a memory-mapped ``TokenFile`` / ``np.memmap``).

    ``dataset[i] -> (input, target): int64 (max_length,)``; the windows are views of one
    token tensor (``chunk``), not one copied tensor per window. Over a token file, each
    window is converted to int64 as it is handed out: only the batch, never the file.
    """

    def __init__(
        self,
        txt: str | torch.Tensor | TokenFile | np.memmap,
        tokenizer: tiktoken.Encoding | None,
        max_length: int,
        stride: int,
    ) -> None:
        _check_positive("GPTDataset", max_length=max_length, stride=stride)
        ids = tokenize(txt, tokenizer) if isinstance(txt, str) else txt
        self.token_ids = as_token_tensor("GPTDataset", ids)
        self.input_ids, self.target_ids = _windows(self.token_ids, max_length, stride)
        self._file = (txt, max_length, stride) if isinstance(txt, TokenFile) else None

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        # .long() is the identity on int64 windows; uint16 windows of a file become a copy
        return self.input_ids[idx].long(), self.target_ids[idx].long()

    def __getstate__(self) -> dict[str, Any]:
        if self._file is None:
            return self.__dict__
        # a spawned DataLoader worker maps the file again rather than receiving a copy of it
        return {"_file": self._file}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("_file") is not None and "token_ids" not in state:
            self.__init__(state["_file"][0], None, *state["_file"][1:])
        else:
            self.__dict__.update(state)


class BatchOrderSampler(Sampler[list[int]]):
    """A batch sampler yielding ``batch_order(...)``; ``set_epoch(e)`` picks the epoch's order.

    It never advances on its own: iterating twice gives the same batches, so an
    evaluation pass over the training loader cannot change training.
    """

    def __init__(
        self,
        n_samples: int,
        batch_size: int,
        *,
        shuffle: bool,
        drop_last: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.kwargs = dict(
            shuffle=shuffle, drop_last=drop_last, seed=seed, rank=rank, world_size=world_size
        )
        self.n_samples, self.batch_size, self.epoch = n_samples, batch_size, 0
        batch_order(0, batch_size, **self.kwargs)  # validate the arguments now

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        order = batch_order(self.n_samples, self.batch_size, epoch=self.epoch, **self.kwargs)
        for idx in order:
            yield idx.tolist()

    def __len__(self) -> int:
        per_rank = self.n_samples // self.kwargs["world_size"]
        if self.kwargs["drop_last"]:
            return per_rank // self.batch_size
        return math.ceil(per_rank / self.batch_size)


def create_dataloader(
    txt: str | torch.Tensor | TokenFile | np.memmap,
    batch_size: int = 4,
    max_length: int = 256,
    stride: int = 128,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    *,
    tokenizer: tiktoken.Encoding | None = None,
    seed: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """The book's ``create_dataloader_v1`` -> DataLoader of (x, y): int64 (batch_size, max_length).

    ``seed=None`` (book mode): a plain ``DataLoader(shuffle=..., drop_last=...)``,
    batch for batch the book's loader under the same global RNG state (each pass
    draws from the global RNG, exactly as the book's does). With a ``seed``: the
    batches are ``batch_order(seed=seed, epoch=loader.batch_sampler.epoch)`` and the
    global RNG is neither read nor advanced; call ``loader.batch_sampler.set_epoch(e)``
    to move to epoch ``e``. ``pin_memory=True`` (for CUDA training) hands out page-locked
    batches, which ``calc_loss_batch`` copies with ``non_blocking=True``.
    """
    _check_positive(
        "create_dataloader", batch_size=batch_size, max_length=max_length, stride=stride
    )
    if num_workers < 0:
        raise ValueError(f"create_dataloader: num_workers must be >= 0, got {num_workers}")
    dataset = GPTDataset(txt, tokenizer, max_length, stride)
    n_tokens = dataset.token_ids.numel()
    if len(dataset) == 0:
        raise ValueError(
            f"create_dataloader: the text has {n_tokens} tokens but max_length={max_length} "
            f"needs at least {max_length + 1}; use a smaller max_length or more text"
        )
    if world_size == 1 and seed is None and (len(dataset) < batch_size and drop_last):
        raise ValueError(
            f"create_dataloader: {len(dataset)} windows ({n_tokens} tokens) make no full batch "
            f"of batch_size={batch_size} with drop_last=True; use a smaller batch_size or "
            "drop_last=False"
        )
    if seed is None:
        if world_size != 1:
            raise ValueError(
                f"create_dataloader: world_size={world_size} needs a seed (book mode is one process)"
            )
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=num_workers,
            pin_memory=pin_memory,
        )
    _generator("create_dataloader", seed, 0)
    sampler = BatchOrderSampler(
        len(dataset),
        batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        seed=seed,
        rank=rank,
        world_size=world_size,
    )
    if len(sampler) == 0:
        raise ValueError(
            f"create_dataloader: {len(dataset)} windows ({n_tokens} tokens) make no batch of "
            f"batch_size={batch_size} per rank (world_size={world_size}, drop_last={drop_last}); "
            "use a smaller batch_size or more text"
        )
    # the loader draws a worker base seed each pass: give it its own generator too
    loader_rng = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        generator=loader_rng,
        pin_memory=pin_memory,
    )


def _generator(where: str, seed: int, epoch: int) -> torch.Generator:
    if not 0 <= seed < _SEED_LIMIT:
        raise ValueError(f"{where}: seed must be in [0, 2**32), got {seed}")
    if not 0 <= epoch < _SEED_LIMIT:
        raise ValueError(f"{where}: epoch must be in [0, 2**32), got {epoch}")
    # torch's CPU generator (mt19937) keeps only 32 bits of its seed, so seed and epoch
    # are mixed into 32 bits: an odd multiplier makes the map one-to-one in each of them
    return torch.Generator().manual_seed((seed * _GOLDEN + epoch) % _SEED_LIMIT)


def _check_positive(where: str, **values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{where}: {name} must be an int, got {value!r}")
        if value < 1:
            raise ValueError(f"{where}: {name} must be >= 1, got {value}")
