"""The torch plumbing of the data path: the book's ``GPTDataset`` and ``create_dataloader``,
and ``BatchOrderSampler``, which hands a DataLoader the batches of ``batch_order``.

``create_dataloader(..., seed=None)`` is the book's ``create_dataloader_v1`` *including* its
use of the global torch RNG (book mode); with a ``seed`` the batches are a pure function of
``(seed, epoch)`` (seeded mode).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import tiktoken
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from gptref._check import check_int
from gptref.data import (
    TokenSource,
    as_token_tensor,
    check_batch_order,
    check_positive,
    check_seed,
    epoch_order,
    num_batches,
    tokenize,
    windows,
)


class GPTDataset(Dataset):
    """The book's ``GPTDatasetV1``: sliding windows over a text (or a 1-D tensor of ids,
    or memory-mapped ids: a ``TokenSource`` such as ``gptref.corpus.tokens.TokenFile``, an
    ``np.memmap``).

    ``dataset[i] -> (input, target): int64 (max_length,)``; the windows are views of one
    token tensor (``chunk``), not one copied tensor per window. Over a token file, each
    window is converted to int64 as it is handed out: only the batch, never the file.
    """

    def __init__(
        self,
        txt: str | torch.Tensor | TokenSource | np.memmap,
        tokenizer: tiktoken.Encoding | None,
        max_length: int,
        stride: int,
    ) -> None:
        check_positive("GPTDataset", max_length=max_length, stride=stride)
        ids = tokenize(txt, tokenizer) if isinstance(txt, str) else txt
        self.token_ids = as_token_tensor("GPTDataset", ids)
        self.input_ids, self.target_ids = windows(self.token_ids, max_length, stride)
        self._file = (txt, max_length, stride) if isinstance(txt, TokenSource) else None

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
        check_batch_order("BatchOrderSampler", n_samples, batch_size, seed, rank, world_size)
        self.n_samples, self.batch_size, self.epoch = n_samples, batch_size, 0
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.rank, self.world_size = rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = check_seed("BatchOrderSampler.set_epoch", "epoch", epoch)

    def __iter__(self) -> Iterator[list[int]]:
        order = epoch_order(
            self.n_samples, self.batch_size, self.shuffle, self.drop_last, self.seed,
            self.epoch, self.rank, self.world_size,
        )  # fmt: skip
        for idx in order:
            yield idx.tolist()

    def __len__(self) -> int:
        return num_batches(
            self.n_samples, self.batch_size, drop_last=self.drop_last, world_size=self.world_size
        )


def create_dataloader(
    txt: str | torch.Tensor | TokenSource | np.memmap,
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
    # each argument is checked once: here, or by GPTDataset / BatchOrderSampler
    check_int("create_dataloader", "num_workers", num_workers, low=0)
    dataset = GPTDataset(txt, tokenizer, max_length, stride)
    n_tokens = dataset.token_ids.numel()
    if len(dataset) == 0:
        raise ValueError(
            f"create_dataloader: the text has {n_tokens} tokens but max_length={max_length} "
            f"needs at least {max_length + 1}; use a smaller max_length or more text"
        )
    if seed is None:
        check_positive("create_dataloader", batch_size=batch_size)
        if world_size != 1:
            raise ValueError(
                f"create_dataloader: world_size={world_size} needs a seed (book mode is one process)"
            )
        if len(dataset) < batch_size and drop_last:
            raise ValueError(
                f"create_dataloader: {len(dataset)} windows ({n_tokens} tokens) make no full "
                f"batch of batch_size={batch_size} with drop_last=True; use a smaller "
                "batch_size or drop_last=False"
            )
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=num_workers,
            pin_memory=pin_memory,
        )
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
