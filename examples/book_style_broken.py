"""examples/book_style.py with one deliberate bug, to show what a conformance failure looks like:

    gptref conformance examples.book_style_broken

The window loop keeps back one token too many ("leave room for the last target", counted
twice), so every text loses its last window. Everything else is the book-style module's.
"""

from __future__ import annotations

import torch

from examples.book_style import *  # noqa: F403 - all but the windows is the book's
from examples.book_style import LOADER_LOSS_WEIGHTING, LR_SCHEDULE  # noqa: F401

__version__ = "book-style example 2.0, broken on purpose"


def window_starts(n_tokens, max_length, stride):
    return range(0, n_tokens - max_length - 1, stride)  # the bug: should be n_tokens - max_length


def num_chunks(n_tokens, max_length, stride):
    return len(window_starts(n_tokens, max_length, stride))


def chunk(ids, max_length, stride):
    ids = ids.tolist()
    starts = window_starts(len(ids), max_length, stride)
    inputs = torch.tensor([ids[i : i + max_length] for i in starts], dtype=torch.int64)
    targets = torch.tensor([ids[i + 1 : i + max_length + 1] for i in starts], dtype=torch.int64)
    return inputs.reshape(-1, max_length), targets.reshape(-1, max_length)
