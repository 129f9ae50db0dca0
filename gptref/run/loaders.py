"""A run's device and loaders, as ``gptref train`` / ``eval`` set them up: ``--device`` resolved,
the corpus's two splits in sliding windows, batches of ``--batch-size``. A run's errors speak
of the flags that set it (``RunConfig``'s fields are ``gptref train``'s flags).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from gptref.run.config import RunConfig


def resolve_device(name: str) -> torch.device:
    """--device: auto -> cuda when available, else cpu; cuda without CUDA is an error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: this torch build or machine has no CUDA; use --device cpu")
    return torch.device(name)


def run_loaders(run: RunConfig, corpus, context: int, group=None, pin_memory: bool = False):
    """The book's recipe for a run: the corpus's two splits in sliding windows of ``context``
    tokens (stride ``--stride``, default the context), batches of ``--batch-size``. Seeded
    loaders, or with ``book_mode_loaders`` the book's global-RNG ones (seeded with ``--seed``
    first, as the book does). In a process group: this rank's shard of each epoch."""
    import torch

    from gptref.data import num_chunks
    from gptref.loader import create_dataloader

    train_ids, val_ids = corpus.splits()
    if len(train_ids) + len(val_ids) == 0:
        raise ValueError(f"the text is empty: {corpus.name} holds no tokens; give --text files "
                         "that hold text")  # fmt: skip
    for part, ids in (("training", train_ids), ("validation", val_ids)):
        if len(ids) < context + 1:
            raise ValueError(
                f"the {part} split has {len(ids)} tokens but --context {context} needs at "
                f"least {context + 1}; use a smaller --context (or more text"
                + (", or a smaller --train-ratio)" if part == "validation" else ")")
            )
    rank, world_size = (0, 1) if group is None else (group.rank, group.world_size)
    seed = None if run.book_mode_loaders else run.seed
    if seed is None:
        if world_size > 1:
            raise ValueError(
                "the book's loaders (--book) draw from each process's global RNG and cannot be "
                "sharded; under torchrun give the flags without --book (seeded loaders)"
            )
        torch.manual_seed(run.seed)  # the book seeds before building its loaders
    shard = {"seed": seed, "rank": rank, "world_size": world_size, "pin_memory": pin_memory}
    stride = run.stride or context
    try:
        train_loader = create_dataloader(
            train_ids, run.batch_size, context, stride, shuffle=True, drop_last=True, **shard
        )
    except ValueError:  # the arguments are valid: too few windows for one full batch
        windows = num_chunks(len(train_ids), context, stride)
        each = f" shared by {world_size} processes" if world_size > 1 else ""
        raise ValueError(
            f"--batch-size {run.batch_size}: the training split makes {windows} windows of "
            f"--context {context} (--stride {stride}){each}, no full batch; use a smaller "
            "--batch-size (or more text)"
        ) from None
    val_loader = create_dataloader(
        val_ids, run.batch_size, context, stride, shuffle=False, drop_last=False, **shard
    )
    return train_loader, val_loader
