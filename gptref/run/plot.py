"""Plots: the book's loss figure (training and validation loss over epochs, tokens seen on a
twin axis), and matplotlib when it is installed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gptref._io import atomic_write


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (files, no screen); None when matplotlib is not
    installed (it is optional: ``pip install 'gptref[plot]'``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_losses(
    path: str | Path,
    epochs_seen: Sequence[float],
    tokens_seen: Sequence[int],
    train_losses: Sequence[float],
    val_losses: Sequence[float],
) -> Path | None:
    """Write the chapter-5 figure to ``path`` (PNG) -> path, or None without matplotlib.

    ``epochs_seen[i]``: fractional epochs done at evaluation ``i`` (the book spaces its
    points evenly with ``linspace``; exact positions are plotted here).
    """
    plt = pyplot()
    if plt is None:
        return None
    fig, ax1 = plt.subplots(figsize=(6, 3.5))
    ax1.plot(epochs_seen, train_losses, label="Training loss")
    ax1.plot(epochs_seen, val_losses, linestyle="-.", label="Validation loss")
    ax1.set_xlabel("Epochs")
    ax1.set_ylabel("Loss")
    ax1.legend(loc="upper right")
    ax2 = ax1.twiny()  # same losses against tokens seen: an invisible line sets the scale
    ax2.plot(tokens_seen, train_losses, alpha=0)
    ax2.set_xlabel("Tokens seen")
    return save_figure(fig, path)


def save_figure(fig, path: str | Path) -> Path:
    """Lay ``fig`` out, write it to ``path`` (PNG, atomically) and close it -> path."""
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120), suffix=".png")
    finally:
        pyplot().close(fig)
