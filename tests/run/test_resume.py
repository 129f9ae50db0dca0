"""Resuming a run from a checkpoint (``gptref.run.resume``): bitwise the run that was not
interrupted, in book mode and seeded."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gptref.loop import train
from gptref.run.resume import train_checkpointed
from tests.helpers import adamw, assert_same_parameters, loaders, micro_model


def _run(tmp_path, total: int, stop_at: int | None, book_mode: bool):
    """Train `total` steps straight, or `stop_at` steps, checkpoint, and continue in a
    freshly built (differently seeded) model and optimizer."""
    seed = None if book_mode else 3
    torch.manual_seed(21)
    train_loader, val_loader = loaders(seed=seed)
    model = micro_model(21)
    common = dict(num_epochs=100, eval_freq=3, eval_iter=2, log=None, max_steps=total)
    if stop_at is None:
        h = train(model, train_loader, val_loader, adamw(model), "cpu", **common)
        return h, model
    ckpt = tmp_path / "ckpt"
    train_checkpointed(model, train_loader, val_loader, adamw(model), "cpu", **common | dict(max_steps=stop_at), checkpoint_dir=ckpt)  # fmt: skip
    torch.manual_seed(999)  # the resumed run must not depend on anything but the checkpoint
    train_loader, val_loader = loaders(seed=seed)
    fresh = micro_model(12345)
    h = train_checkpointed(fresh, train_loader, val_loader, adamw(fresh), "cpu", **common,
                           checkpoint_dir=None, resume_from=ckpt)  # fmt: skip
    return h, fresh


@given(k=st.integers(1, 11), book_mode=st.booleans())
@settings(max_examples=8)
def test_resume_from_a_checkpoint_is_bitwise_equal_to_training_straight(
    tmp_path_factory, k, book_mode
):
    """N steps straight == k steps, save, load into fresh model and optimizer, N - k more:
    equal per-step losses, evaluations and parameters (dropout on, shuffled loaders, k
    anywhere, mid-epoch included; seeded and book-mode loaders alike)."""
    total = 12  # the loaders have 6 batches per epoch: k crosses epoch boundaries
    tmp = tmp_path_factory.mktemp("resume")
    straight, m1 = _run(tmp, total, None, book_mode)
    resumed, m2 = _run(tmp, total, k, book_mode)
    assert resumed.step_losses == straight.step_losses
    assert (resumed.train_losses, resumed.val_losses, resumed.tokens_seen) == (straight.train_losses, straight.val_losses, straight.tokens_seen)  # fmt: skip
    assert_same_parameters(m1, m2, f"resume at step {k}")
